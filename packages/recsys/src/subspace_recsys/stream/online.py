"""Online (real-time) training from an event source, Monolith-style.

For every micro-batch, in log order: predict, score the predictions on a sliding window
(progressive validation: each event is scored by the model that has not trained on it
yet), train one step (BCE with logits; the dense optimizer for ordinary parameters, the
tables' own sparse optimizers through :func:`~subspace_recsys.table.sparse_step`), then
expire stale ids on tables with a ``ttl``. Every ``sync_every`` batches the serving copy
receives the tables' deltas and the dense parameters.

Crash safety (effectively-once model updates)
    A checkpoint (model incl. tables, dense optimizer, metric window, RNG state, counters
    and the *position* of the last applied event) is written atomically every
    ``checkpoint_every`` batches, and only *after* it is durable are the events up to that
    position acknowledged to the source. The source redelivers every unacknowledged event
    after a crash (Redis: the consumer's pending entries list; files/iterators: reading
    again from the position). :meth:`OnlineTrainer.resume` loads the checkpoint and makes
    the source drop every event at or before the checkpoint's position. Hence:

    * no event is lost: an event is acknowledged only once a checkpoint that includes its
      update is on disk, and unacknowledged events are redelivered;
    * no event is applied twice: a redelivered event is either after the checkpoint (the
      restored model has not seen it) or at/before it (dropped, and acknowledged).

    So the model after a crash and restart is the model of an uninterrupted run over the
    same events (bit-identical under deterministic kernels: the RNG state is restored and
    micro-batch boundaries do not depend on redelivery). This assumes one trainer per
    consumer name, a source that redelivers in log order, and a stream that is not
    trimmed past unacknowledged entries (``MAXLEN`` trimming loses them; the source warns).
    Without ``checkpoint_dir`` events are acknowledged right after training and a crash
    loses the model (at-most-once).
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn

from subspace_recsys.metrics import SlidingWindowAUC
from subspace_recsys.stream.checkpoint import (
    load_checkpoint,
    optimizer_state_from_flat,
    optimizer_state_to_flat,
    save_checkpoint,
)
from subspace_recsys.stream.sources import EventSource, SourceBatch
from subspace_recsys.table import sparse_step

__all__ = ["CHECKPOINT_NAME", "OnlineStats", "OnlineTrainer", "SyncRecord", "find_tables"]

#: File name of the trainer's checkpoint inside ``checkpoint_dir``.
CHECKPOINT_NAME = "online.safetensors"
_FORMAT = 1


def find_tables(model: nn.Module) -> dict[str, nn.Module]:
    """Sub-modules of ``model`` that sync by deltas (``export_delta`` and ``apply_delta``,
    i.e. :class:`~subspace_recsys.table.CollisionlessEmbedding`), by module name."""
    return {
        name: module
        for name, module in model.named_modules()
        if callable(getattr(module, "export_delta", None))
        and callable(getattr(module, "apply_delta", None))
    }


def _delta_size(delta: Any) -> tuple[int, int, int]:
    """(upserted ids, evicted ids, bytes of all tensors) of a table delta."""
    if callable(getattr(delta, "nbytes", None)):
        return int(delta.ids.numel()), int(delta.evicted.numel()), int(delta.nbytes())
    values = (
        [getattr(delta, f.name) for f in dataclasses.fields(delta)]
        if dataclasses.is_dataclass(delta)
        else list(vars(delta).values())
    )
    size = sum(v.numel() * v.element_size() for v in values if isinstance(v, torch.Tensor))
    return int(delta.ids.numel()), int(delta.evicted.numel()), int(size)


@dataclass
class SyncRecord:
    """State at one sync point (every ``sync_every`` batches): progress, the window metrics
    (NaN while one class is missing) and what the serving copy received (zeros without a
    serving model)."""

    batches: int
    events: int
    window_auc: float
    window_logloss: float
    window_events: int
    delta_ids: int = 0
    delta_evicted: int = 0
    delta_bytes: int = 0


@dataclass
class OnlineStats:
    """Counters of a trainer; ``batches``, ``events_applied``, ``events_skipped``,
    ``deltas_pushed``, ``delta_bytes`` and ``history`` survive restarts (checkpointed);
    ``session_*`` count this process only (``events_per_s`` uses them)."""

    batches: int = 0
    events_applied: int = 0
    events_skipped: int = 0
    deltas_pushed: int = 0
    delta_bytes: int = 0
    history: list[SyncRecord] = field(default_factory=list)
    session_events: int = 0
    session_seconds: float = 0.0

    @property
    def events_per_s(self) -> float:
        """Events trained per second of :meth:`OnlineTrainer.run` in this process."""
        return self.session_events / self.session_seconds if self.session_seconds else math.nan

    def to_dict(self) -> dict:
        out = dataclasses.asdict(self)
        out["events_per_s"] = self.events_per_s
        return out


def _check_count(name: str, value: int | None, *, optional: bool = False) -> None:
    if value is None and optional:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name}: expected a positive int, got {value!r}")


class OnlineTrainer:
    """Trains ``model`` on ``source`` one micro-batch at a time (see the module docstring).

    Args:
        model: ``model(ids [B, F], dense [B, D] | None, now=float) -> logits [B]``.
        source: an :class:`~subspace_recsys.stream.sources.EventSource`.
        dense_optimizer: a ``torch.optim`` optimizer over the model's ordinary parameters
            (``None`` if it has none); table rows are updated by the tables themselves.
        serving_model: a copy (same architecture) that receives table deltas and dense
            parameters every ``sync_every`` batches; it starts as a full copy.
        sync_every: batches between syncs and between :attr:`stats` history records.
        checkpoint_dir: where ``online.safetensors`` lives; ``None`` disables checkpoints.
        checkpoint_every: batches between checkpoint-then-acknowledge steps.
        auc_window: events in the progressive-validation window.
        validation: ``"eval"`` scores each batch with a separate no-grad forward in eval
            mode (what the serving copy would predict: no admission, no dropout);
            ``"train"`` reuses the training forward's logits (cheaper).
        record_event_ids: keep (and checkpoint) how many times each event id was applied,
            for audits and tests (memory grows with the number of events).
        on_batch: called as ``on_batch(trainer, source_batch)`` after each trained batch,
            before sync, checkpoint and acknowledgement.
    """

    def __init__(
        self,
        model: nn.Module,
        source: EventSource,
        *,
        dense_optimizer: torch.optim.Optimizer | None,
        serving_model: nn.Module | None = None,
        sync_every: int = 100,
        checkpoint_dir: str | Path | None = None,
        checkpoint_every: int = 100,
        auc_window: int = 10_000,
        validation: Literal["eval", "train"] = "eval",
        record_event_ids: bool = False,
        on_batch: Callable[[OnlineTrainer, SourceBatch], None] | None = None,
    ) -> None:
        if not isinstance(model, nn.Module):
            raise TypeError(f"model: expected an nn.Module, got {type(model).__name__}")
        if not isinstance(source, EventSource):
            raise TypeError(f"source: expected an EventSource, got {type(source).__name__}")
        if dense_optimizer is not None and not isinstance(dense_optimizer, torch.optim.Optimizer):
            raise TypeError(
                "dense_optimizer: expected a torch.optim.Optimizer or None, "
                f"got {type(dense_optimizer).__name__}"
            )
        _check_count("sync_every", sync_every)
        _check_count("checkpoint_every", checkpoint_every)
        if validation not in ("eval", "train"):
            raise ValueError(f"validation: expected 'eval' or 'train', got {validation!r}")
        if serving_model is model:
            raise ValueError("serving_model: expected a separate copy, got the training model")
        self.model = model
        self.source = source
        self.dense_optimizer = dense_optimizer
        self.serving_model = serving_model
        self.sync_every = sync_every
        self.checkpoint_dir = None if checkpoint_dir is None else Path(checkpoint_dir)
        self.checkpoint_every = checkpoint_every
        self.validation = validation
        self.on_batch = on_batch
        self.metric = SlidingWindowAUC(auc_window)
        self.stats = OnlineStats()
        #: Position of the last applied event (``None`` before the first batch).
        self.position: Any = None
        self.event_counts: Counter[int] | None = Counter() if record_event_ids else None
        self._tables = find_tables(model)
        self._iterator = None
        self._skip_offset = 0
        self._unacked = False
        self._may_overwrite = False
        if serving_model is not None:
            serving_tables = find_tables(serving_model)
            if sorted(serving_tables) != sorted(self._tables):
                raise ValueError(
                    f"serving_model: expected delta-syncing tables {sorted(self._tables)} like "
                    f"model, got {sorted(serving_tables)}"
                )
            self._full_sync()

    # ------------------------------------------------------------------ checkpoint paths

    @property
    def checkpoint_path(self) -> Path | None:
        """``checkpoint_dir / "online.safetensors"`` (``None`` without a checkpoint_dir)."""
        return None if self.checkpoint_dir is None else self.checkpoint_dir / CHECKPOINT_NAME

    @classmethod
    def resume(
        cls,
        model: nn.Module,
        source: EventSource,
        *,
        checkpoint_dir: str | Path,
        missing_ok: bool = False,
        **kwargs: Any,
    ) -> OnlineTrainer:
        """A trainer restored from ``checkpoint_dir`` (arguments as the constructor's).

        The model, dense optimizer, metric window, RNG state and counters come back as they
        were at the checkpoint; ``source`` then drops every event at or before the
        checkpoint's position (acknowledging it), and the serving model gets a full copy.
        Without a checkpoint: ``FileNotFoundError``, or a fresh trainer when ``missing_ok``.
        """
        trainer = cls(model, source, checkpoint_dir=checkpoint_dir, **kwargs)
        path = trainer.checkpoint_path
        if path.exists():
            trainer._load(path)
        elif not missing_ok:
            raise FileNotFoundError(f"checkpoint_dir: no {CHECKPOINT_NAME} in {checkpoint_dir}")
        trainer._may_overwrite = True
        return trainer

    def checkpoint(self) -> Path:
        """Write the checkpoint now (atomically); returns its path."""
        path = self.checkpoint_path
        if path is None:
            raise ValueError("checkpoint_dir: this trainer was built without one")
        if path.exists() and not self._may_overwrite:
            raise FileExistsError(
                f"checkpoint_dir: {path} already exists; continue it with OnlineTrainer.resume "
                "or choose an empty directory"
            )
        tensors = {f"model/{k}": v for k, v in self.model.state_dict().items()}
        optim_meta = None
        if self.dense_optimizer is not None:
            optim_tensors, optim_meta = optimizer_state_to_flat(self.dense_optimizer.state_dict())
            tensors.update(optim_tensors)
        window_logits, window_labels = self.metric._window()
        tensors["metric/logits"] = window_logits
        tensors["metric/labels"] = window_labels
        tensors["rng/torch"] = torch.get_rng_state()
        if self.event_counts is not None:
            ids = sorted(self.event_counts)
            tensors["ledger/event_ids"] = torch.tensor(ids, dtype=torch.int64)
            tensors["ledger/counts"] = torch.tensor(
                [self.event_counts[i] for i in ids], dtype=torch.int64
            )
        stats = self.stats
        meta = {
            "format": _FORMAT,
            "position": self.position,
            "auc_window": self.metric.window,
            "optimizer": optim_meta,
            "stats": {
                "batches": stats.batches,
                "events_applied": stats.events_applied,
                "events_skipped": stats.events_skipped,
                "deltas_pushed": stats.deltas_pushed,
                "delta_bytes": stats.delta_bytes,
                "history": [dataclasses.asdict(r) for r in stats.history],
            },
        }
        save_checkpoint(path, tensors, meta)
        self._may_overwrite = True
        return path

    def _load(self, path: Path) -> None:
        tensors, meta = load_checkpoint(path)
        if meta.get("format") != _FORMAT:
            raise ValueError(
                f"{path}: expected checkpoint format {_FORMAT}, got {meta.get('format')}"
            )
        model_state = {k[len("model/") :]: v for k, v in tensors.items() if k.startswith("model/")}
        self.model.load_state_dict(model_state)
        has_optimizer = meta["optimizer"] is not None
        if has_optimizer != (self.dense_optimizer is not None):
            raise ValueError(
                f"dense_optimizer: the checkpoint was written "
                f"{'with' if has_optimizer else 'without'} one, got "
                f"{type(self.dense_optimizer).__name__ if self.dense_optimizer else None}"
            )
        if self.dense_optimizer is not None:
            self.dense_optimizer.load_state_dict(
                optimizer_state_from_flat(
                    tensors, meta["optimizer"], self.dense_optimizer.state_dict()
                )
            )
        self.metric = SlidingWindowAUC(meta["auc_window"])
        if tensors["metric/logits"].numel():
            self.metric.update(tensors["metric/logits"], tensors["metric/labels"])
        torch.set_rng_state(tensors["rng/torch"])
        if self.event_counts is not None:
            if "ledger/event_ids" not in tensors:
                raise ValueError(
                    "record_event_ids: the checkpoint has no event-id ledger to continue"
                )
            self.event_counts = Counter(
                dict(
                    zip(
                        tensors["ledger/event_ids"].tolist(),
                        tensors["ledger/counts"].tolist(),
                        strict=True,
                    )
                )
            )
        saved = meta["stats"]
        self.stats = OnlineStats(
            batches=saved["batches"],
            events_applied=saved["events_applied"],
            events_skipped=saved["events_skipped"],
            deltas_pushed=saved["deltas_pushed"],
            delta_bytes=saved["delta_bytes"],
            history=[SyncRecord(**r) for r in saved["history"]],
        )
        self.position = meta["position"]
        if self.serving_model is not None:
            self._full_sync()

    # ------------------------------------------------------------------ sync

    def _full_sync(self) -> None:
        """Make the serving model an exact copy (tables included) of the training model."""
        self.serving_model.load_state_dict(self.model.state_dict())

    def _dense_tensors(self, model: nn.Module) -> dict[str, torch.Tensor]:
        """Parameters and buffers of ``model`` outside its delta-syncing tables."""
        prefixes = tuple(f"{name}." for name in self._tables if name)
        if "" in self._tables:  # the model is itself a table: nothing dense
            return {}
        named = [*model.named_parameters(), *model.named_buffers()]
        return {k: v for k, v in named if not k.startswith(prefixes)}

    def sync(self) -> tuple[int, int, int]:
        """Push every table's delta and the dense state to the serving model now.

        Returns (upserted ids, evicted ids, delta bytes) summed over the tables.
        """
        if self.serving_model is None:
            raise ValueError("serving_model: this trainer was built without one")
        serving_tables = find_tables(self.serving_model)
        totals = [0, 0, 0]
        for name, table in self._tables.items():
            delta = table.export_delta()
            serving_tables[name].apply_delta(delta)
            for i, value in enumerate(_delta_size(delta)):
                totals[i] += value
            self.stats.deltas_pushed += 1
        # Copied tensor by tensor: a whole-model load_state_dict would also run the tables'
        # loaders, which expect complete table state.
        source, target = self._dense_tensors(self.model), self._dense_tensors(self.serving_model)
        if source.keys() != target.keys():
            raise ValueError(
                f"serving_model: expected the dense tensors {sorted(source)}, got {sorted(target)}"
            )
        with torch.no_grad():
            for name, tensor in source.items():
                if target[name].shape != tensor.shape:
                    raise ValueError(
                        f"serving_model: {name} has shape {tuple(target[name].shape)}, "
                        f"expected {tuple(tensor.shape)}"
                    )
                target[name].copy_(tensor)
        self.stats.delta_bytes += totals[2]
        return totals[0], totals[1], totals[2]

    def _record(self) -> None:
        ids = evicted = size = 0
        if self.serving_model is not None:
            ids, evicted, size = self.sync()
        self.stats.history.append(
            SyncRecord(
                batches=self.stats.batches,
                events=self.stats.events_applied,
                window_auc=self.metric.auc(),
                window_logloss=self.metric.logloss(),
                window_events=len(self.metric),
                delta_ids=ids,
                delta_evicted=evicted,
                delta_bytes=size,
            )
        )

    # ------------------------------------------------------------------ training

    def _train_batch(self, item: SourceBatch) -> torch.Tensor:
        batch = item.batch
        now = float(batch.timestamp.max())
        dense = batch.dense
        if self.validation == "eval":
            self.model.eval()
            with torch.no_grad():
                predicted = self.model(batch.ids, dense, now=now)
        self.model.train()
        logits = self.model(batch.ids, dense, now=now)
        if tuple(logits.shape) != (len(item),):
            raise ValueError(
                f"model: expected logits of shape [{len(item)}], got {tuple(logits.shape)}"
            )
        if self.validation == "train":
            predicted = logits.detach()
        loss = nn.functional.binary_cross_entropy_with_logits(logits, batch.label.to(logits.dtype))
        if self.dense_optimizer is not None:
            self.dense_optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if self.dense_optimizer is not None:
            self.dense_optimizer.step()
        sparse_step(self.model)
        self.metric.update(predicted, batch.label)
        for table in self._tables.values():
            if getattr(table, "ttl", None) is not None:
                table.expire(now)
        return loss.detach()

    def _acknowledge(self) -> None:
        if self._unacked and self.position is not None:
            self.source.ack(self.position)
        self._unacked = False

    def flush(self) -> None:
        """Checkpoint (when configured) and acknowledge everything applied so far."""
        if self.checkpoint_dir is not None and self._unacked:
            self.checkpoint()
        self._acknowledge()

    def run(self, *, max_batches: int | None = None, max_events: int | None = None) -> OnlineStats:
        """Train until the source ends or ``max_batches`` / ``max_events`` (counted in this
        call; a batch is never split) are reached; returns :attr:`stats`.

        When the source ends, a final checkpoint and acknowledgement are made (:meth:`flush`);
        after a limit, call :meth:`flush` yourself if needed. A call after a limit continues
        the same iteration of the source; a call after the source ended iterates it again
        from just after :attr:`position` (e.g. a Redis source with ``stop_when_idle`` picks
        up the entries added since).
        """
        _check_count("max_batches", max_batches, optional=True)
        _check_count("max_events", max_events, optional=True)
        if self._iterator is None:
            if self.position is not None:
                self.source.resume_after(self.position)
            self._skip_offset = self.stats.events_skipped - self.source.skipped
            self._iterator = iter(self.source)
        batches = events = 0
        start = time.perf_counter()
        try:
            while (max_batches is None or batches < max_batches) and (
                max_events is None or events < max_events
            ):
                item = next(self._iterator, None)
                if item is None:
                    self.stats.events_skipped = self._skipped_total()
                    self.flush()
                    # the next run() re-opens the source after self.position (a stream that
                    # went idle, or a list that grew), instead of an exhausted iterator
                    self._iterator = None
                    break
                self._train_batch(item)
                batches += 1
                events += len(item)
                self._after_batch(item)
        finally:
            self.stats.session_seconds += time.perf_counter() - start
            self.stats.session_events += events
        return self.stats

    def _skipped_total(self) -> int:
        # Skips counted before this iteration (restored from the checkpoint) plus the source's.
        return self._skip_offset + self.source.skipped

    def _after_batch(self, item: SourceBatch) -> None:
        stats = self.stats
        stats.batches += 1
        stats.events_applied += len(item)
        stats.events_skipped = self._skipped_total()
        self.position = item.position
        self._unacked = True
        if self.event_counts is not None:
            self.event_counts.update(item.event_ids.tolist())
        if self.on_batch is not None:
            self.on_batch(self, item)
        if stats.batches % self.sync_every == 0:
            self._record()
        if self.checkpoint_dir is None:
            self._acknowledge()
        elif stats.batches % self.checkpoint_every == 0:
            self.checkpoint()
            self._acknowledge()
