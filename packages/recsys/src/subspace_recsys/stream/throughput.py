"""End-to-end throughput of the Redis path: produce, consume, consume + train."""

from __future__ import annotations

import contextlib
import time
import uuid
from collections.abc import Callable

import torch
from torch import nn

__all__ = ["measure_stream_throughput"]


def _default_model(num_fields: int, num_dense: int, embed_dim: int) -> nn.Module:
    from subspace_recsys.models import DeepFM
    from subspace_recsys.table import CollisionlessEmbedding

    return DeepFM(
        num_fields,
        embed_dim,
        dense_dim=num_dense,
        hidden=(64, 32),
        embedding_factory=lambda dim: CollisionlessEmbedding(dim),
    )


def measure_stream_throughput(
    num_events: int = 20_000,
    *,
    batch_size: int = 512,
    num_fields: int = 26,
    num_dense: int = 13,
    num_ids_per_field: int = 10_000,
    embed_dim: int = 8,
    url: str | None = None,
    model_factory: Callable[[], nn.Module] | None = None,
    validation: str = "eval",
    seed: int = 0,
) -> dict:
    """Publish ``num_events`` Criteo-shaped events to Redis, then read them back twice
    through :class:`~subspace_recsys.stream.redis_source.RedisStreamSource`: once only
    decoding and acknowledging, once training with :class:`OnlineTrainer` (no checkpoints,
    no serving copy).

    ``url=None`` starts a private ``redis-server`` (:func:`~subspace_recsys.testing_redis.
    redis_server`). The default model is DeepFM (``embed_dim``, MLP 64-32) over a
    :class:`~subspace_recsys.table.CollisionlessEmbedding` with Adam (lr 1e-3) for the
    dense part. Events come from :class:`~subspace_recsys.data.CriteoLikeGenerator`.

    Returns a dict: ``events``, ``batch_size``, ``produce_events_per_s`` (encode + pipelined
    XADD), ``consume_events_per_s`` (XREADGROUP + decode + XACK), ``train_events_per_s``
    (consume + progressive validation + training step), ``window_auc`` and
    ``window_logloss`` (progressive validation over the last 10,000 events) and the
    seconds of each phase.
    """
    from subspace_recsys.data import CriteoLikeGenerator
    from subspace_recsys.stream.online import OnlineTrainer
    from subspace_recsys.stream.redis_source import RedisStreamProducer, RedisStreamSource
    from subspace_recsys.testing_redis import redis_server

    if isinstance(num_events, bool) or not isinstance(num_events, int) or num_events < 1:
        raise ValueError(f"num_events: expected a positive int, got {num_events!r}")
    generator = CriteoLikeGenerator(
        num_ids_per_field, num_dense=num_dense, num_categorical=num_fields, seed=seed
    )
    batches = [generator.sample(min(batch_size, num_events - s))
               for s in range(0, num_events, batch_size)]  # fmt: skip
    torch.manual_seed(seed)
    model = model_factory() if model_factory else _default_model(num_fields, num_dense, embed_dim)
    stream = f"subzoo-bench-{uuid.uuid4().hex[:12]}"

    with contextlib.ExitStack() as stack:
        if url is None:
            url = stack.enter_context(redis_server()).url
        producer = stack.enter_context(RedisStreamProducer(url, stream, chunk=batch_size))
        stack.callback(producer.client.delete, stream)

        start = time.perf_counter()
        first = 0
        for batch in batches:
            producer.publish_batch(batch, torch.arange(first, first + len(batch)))
            first += len(batch)
        produce_s = time.perf_counter() - start

        def source(group: str) -> RedisStreamSource:
            return stack.enter_context(
                RedisStreamSource(
                    url, stream, group, "bench", batch_size, block_ms=10, stop_when_idle=True
                )
            )

        consume = source("consume-only")
        start = time.perf_counter()
        consumed = 0
        for item in consume:
            consumed += len(item)
            consume.ack(item.position)
        consume_s = time.perf_counter() - start

        dense_params = [p for p in model.parameters() if p.requires_grad]
        optimizer = torch.optim.Adam(dense_params, lr=1e-3) if dense_params else None
        trainer = OnlineTrainer(
            model, source("consume-train"), dense_optimizer=optimizer, validation=validation
        )
        start = time.perf_counter()
        stats = trainer.run()
        train_s = time.perf_counter() - start

    if consumed != num_events or stats.events_applied != num_events:
        raise RuntimeError(
            f"expected {num_events} events read back, got {consumed} (consume) and "
            f"{stats.events_applied} (train)"
        )
    return {
        "events": num_events,
        "batch_size": batch_size,
        "produce_events_per_s": num_events / produce_s,
        "consume_events_per_s": num_events / consume_s,
        "train_events_per_s": num_events / train_s,
        "produce_s": produce_s,
        "consume_s": consume_s,
        "train_s": train_s,
        "window_auc": trainer.metric.auc(),
        "window_logloss": trainer.metric.logloss(),
    }
