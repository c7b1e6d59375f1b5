"""Kill-and-restart of the online trainer on a real Redis stream.

The trainer runs in forked child processes that die by SIGKILL (no exception handlers,
no finally blocks, no flush), at three kinds of moments: two batches past the last
checkpoint, between a checkpoint and its XACK, and at a random time. Each restart resumes
from the checkpoint on disk; the result must equal an uninterrupted run bit for bit.
"""

import os
import random
import signal
import time
import uuid

import pytest
import torch

from subspace_recsys.data import CriteoLikeGenerator
from subspace_recsys.models import DeepFM
from subspace_recsys.stream import (
    OnlineTrainer,
    RedisStreamProducer,
    RedisStreamSource,
    measure_stream_throughput,
)
from subspace_recsys.stream.checkpoint import load_checkpoint
from subspace_recsys.table import CollisionlessEmbedding

pytest.importorskip("redis", reason="the redis extra (redis-py) is not installed")
pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork (POSIX)")

BATCH, NUM_BATCHES, CHECKPOINT_EVERY = 40, 16, 3
FIRST_EVENT_ID = 5000


@pytest.fixture(autouse=True)
def _deterministic():
    before = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    yield
    torch.use_deterministic_algorithms(before)


def _build(seed=0):
    torch.manual_seed(seed)
    model = DeepFM(
        4,
        4,
        dense_dim=3,
        hidden=(16,),
        dropout=0.1,  # draws from the global RNG: a resume must restore its state
        embedding_factory=lambda dim: CollisionlessEmbedding(dim, seed=seed),
    )
    return model, torch.optim.Adam(model.parameters(), lr=0.01)


def _trainer(url, stream, group, checkpoint_dir, *, seed=0, on_batch=None, kill_in_ack=False):
    model, optimizer = _build(seed)
    source = RedisStreamSource(
        url, stream, group, "worker-1", BATCH, block_ms=20, stop_when_idle=True
    )
    if kill_in_ack:  # the checkpoint is on disk, the XACK never happens
        source.ack = lambda position: os.kill(os.getpid(), signal.SIGKILL)
    return OnlineTrainer.resume(
        model,
        source,
        dense_optimizer=optimizer,
        checkpoint_dir=checkpoint_dir,
        missing_ok=True,
        checkpoint_every=CHECKPOINT_EVERY,
        sync_every=2,
        record_event_ids=True,
        on_batch=on_batch,
    )


def _fork(work):
    """Run ``work()`` in a forked child; returns its pid. The child never returns here."""
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child process
        code = 0
        try:
            work()
        except BaseException:
            import traceback

            traceback.print_exc()
            code = 3
        finally:
            os._exit(code)
    return pid


def _wait(pid):
    _, status = os.waitpid(pid, 0)
    if os.WIFSIGNALED(status):
        return -os.WTERMSIG(status)
    return os.WEXITSTATUS(status)


def _checkpoint_batches(directory):
    return load_checkpoint(directory / "online.safetensors")[1]["stats"]["batches"]


def test_sigkill_at_any_moment_then_resume_equals_an_uninterrupted_run(redis_url, tmp_path):
    stream = f"crash-{uuid.uuid4().hex[:8]}"
    data = CriteoLikeGenerator(50, num_categorical=4, num_dense=3, seed=1).sample(
        BATCH * NUM_BATCHES
    )
    event_ids = torch.arange(FIRST_EVENT_ID, FIRST_EVENT_ID + len(data))
    RedisStreamProducer(redis_url, stream).publish_batch(data, event_ids)

    reference = _trainer(redis_url, stream, "reference", tmp_path / "reference")
    reference.run()
    assert reference.stats.batches == NUM_BATCHES

    run_dir = tmp_path / "run"

    def die_at(batch, delay=0.0):
        def on_batch(trainer, item):
            time.sleep(delay)
            if trainer.stats.batches == batch:
                os.kill(os.getpid(), signal.SIGKILL)

        return on_batch

    def pending():
        probe = RedisStreamSource(redis_url, stream, "crashy", "worker-1", BATCH)
        return probe.pending_count()

    # 1. Killed two batches past the checkpoint at batch 6: batches 7 and 8 are pending.
    pid = _fork(lambda: _trainer(redis_url, stream, "crashy", run_dir, on_batch=die_at(8)).run())
    assert _wait(pid) == -signal.SIGKILL
    assert _checkpoint_batches(run_dir) == 6
    assert pending() == 2 * BATCH

    # 2. Restarted, retrains 7 and 8 from the PEL, then dies after checkpoint 9, before XACK.
    pid = _fork(lambda: _trainer(redis_url, stream, "crashy", run_dir, kill_in_ack=True).run())
    assert _wait(pid) == -signal.SIGKILL
    assert _checkpoint_batches(run_dir) == 9
    assert pending() == 3 * BATCH  # 7, 8, 9: applied and checkpointed, not acknowledged

    # 3. Restarted (skips 7..9), killed from outside at a random moment.
    slow = die_at(-1, delay=0.03)
    pid = _fork(lambda: _trainer(redis_url, stream, "crashy", run_dir, on_batch=slow).run())
    time.sleep(random.Random(0).uniform(0.05, 0.2))
    os.kill(pid, signal.SIGKILL)
    assert _wait(pid) in (-signal.SIGKILL, 0)  # 0: it had already finished

    # 4. Restarted in this process with another initialisation, runs to the end.
    resumed = _trainer(redis_url, stream, "crashy", run_dir, seed=123)
    assert resumed.stats.batches >= 9
    resumed.run()

    assert resumed.stats.batches == NUM_BATCHES
    assert resumed.stats.events_applied == len(data)
    assert dict(resumed.event_counts) == dict.fromkeys(event_ids.tolist(), 1)
    ref_state, state = reference.model.state_dict(), resumed.model.state_dict()
    assert ref_state.keys() == state.keys()
    for key, value in ref_state.items():
        assert torch.equal(state[key], value), key
    ref_opt, opt = reference.dense_optimizer.state_dict(), resumed.dense_optimizer.state_dict()
    for index, entry in ref_opt["state"].items():
        for name, value in entry.items():
            assert torch.equal(opt["state"][index][name], value), (index, name)
    assert resumed.metric.auc() == reference.metric.auc()
    assert resumed.metric.logloss() == reference.metric.logloss()
    assert pending() == 0


def test_measure_stream_throughput_counts_every_event(redis_url):
    result = measure_stream_throughput(
        300, batch_size=100, num_fields=4, num_dense=2, num_ids_per_field=50, url=redis_url
    )
    assert result["events"] == 300
    for key in ("produce_events_per_s", "consume_events_per_s", "train_events_per_s"):
        assert result[key] > 0
    assert result["train_s"] == pytest.approx(300 / result["train_events_per_s"])
    assert 0 <= result["window_auc"] <= 1
