import itertools
import math

import pytest
import torch
from torch import nn

from subspace_recsys.data import CriteoLikeGenerator, CTRBatch
from subspace_recsys.metrics import auc
from subspace_recsys.stream import (
    EventSource,
    FileSource,
    IteratorSource,
    OnlineTrainer,
    save_shard,
)
from subspace_recsys.table import CollisionlessEmbedding, sparse_step

NUM_FIELDS, NUM_DENSE, BATCH = 4, 3, 32


class LogisticRegression(nn.Module):
    """``b + sum_f w[id_f] + v . dropout(dense)``: one table of dim 1 plus dense weights."""

    def __init__(self, *, seed=0, ttl=None, dropout=0.2):
        super().__init__()
        torch.manual_seed(seed)
        self.table = CollisionlessEmbedding(1, ttl=ttl, lr=0.1, init_std=0.1, seed=seed)
        self.dense = nn.Linear(NUM_DENSE, 1)
        self.dropout = nn.Dropout(dropout)  # consumes the global RNG: resume must restore it

    def forward(self, ids, dense=None, now=None):
        first_order = self.table(ids, now=now).squeeze(-1).sum(1)
        return first_order + self.dense(self.dropout(dense)).squeeze(-1)


def _data(num_batches=12, seed=0):
    generator = CriteoLikeGenerator(
        60, num_categorical=NUM_FIELDS, num_dense=NUM_DENSE, start_time=1.7e9, seed=seed
    )
    return generator.sample(num_batches * BATCH)


def _blocks(data):
    """The events as uneven (CTRBatch, event_ids) blocks, event ids 10_000 + row."""
    cuts = [c for c in (0, 5, 70, 71, 200) if c < len(data)] + [len(data)]
    return [
        (
            CTRBatch(data.ids[a:b], data.dense[a:b], data.label[a:b], data.timestamp[a:b]),
            torch.arange(10_000 + a, 10_000 + b),
        )
        for a, b in itertools.pairwise(cuts)
    ]


def _trainer(source, *, seed=0, serving=False, resume=False, **kwargs):
    model = LogisticRegression(seed=seed)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    serving_model = LogisticRegression(seed=seed + 100) if serving else None
    if resume:
        return OnlineTrainer.resume(
            model, source, dense_optimizer=optimizer, serving_model=serving_model, **kwargs
        )
    return OnlineTrainer(
        model, source, dense_optimizer=optimizer, serving_model=serving_model, **kwargs
    )


def _assert_same_state(a: nn.Module, b: nn.Module):
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for key in sa:
        assert torch.equal(sa[key], sb[key]), key


def _predict(model, batch):
    model.eval()
    with torch.no_grad():
        return model(batch.ids, batch.dense, now=batch.now)


class _Peek(EventSource):
    """Passes batches through, first recording the serving model's predictions on them."""

    def __init__(self, inner, serving):
        self.inner, self.serving, self.seen = inner, serving, []
        self.batch_size = inner.batch_size

    def resume_after(self, position):
        self.inner.resume_after(position)

    def __iter__(self):
        for item in self.inner:
            self.seen.append(_predict(self.serving, item.batch))
            yield item


def test_progressive_validation_scores_with_the_model_before_each_step():
    data = _data(6)
    serving = LogisticRegression(seed=7)
    source = _Peek(IteratorSource(_blocks(data), batch_size=BATCH), serving)
    model = LogisticRegression(seed=1)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    trainer = OnlineTrainer(
        model, source, dense_optimizer=optimizer, serving_model=serving, sync_every=1
    )
    trainer.run()
    # sync_every=1: the serving copy holds the model after batch k-1 when batch k arrives.
    window_logits, window_labels = trainer.metric._window()
    expected = torch.cat(source.seen).double()
    assert torch.equal(window_logits, expected)
    assert torch.equal(window_labels, data.label.double())
    assert trainer.metric.auc() == auc(expected, data.label)
    # ... and training did change the predictions (a score after the step would differ).
    first = _blocks(data)[0][0]
    assert not torch.equal(_predict(model, first), source.seen[0][:5])


@pytest.mark.parametrize("validation", ["eval", "train"])
def test_training_step_matches_a_hand_written_loop(validation):
    data = _data(5)
    trainer = _trainer(
        IteratorSource(_blocks(data), batch_size=BATCH), seed=3, validation=validation
    )
    trainer.run()

    model = LogisticRegression(seed=3)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    predictions = []
    for start in range(0, len(data), BATCH):
        sl = slice(start, start + BATCH)
        ids, dense, label = data.ids[sl], data.dense[sl], data.label[sl]
        now = float(data.timestamp[sl].max())
        if validation == "eval":  # a separate no-grad pass in eval mode (no dropout)
            model.eval()
            with torch.no_grad():
                predictions.append(model(ids, dense, now=now))
        model.train()
        logits = model(ids, dense, now=now)
        if validation == "train":  # the training forward's own logits
            predictions.append(logits.detach())
        loss = nn.functional.binary_cross_entropy_with_logits(logits, label)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        sparse_step(model)
    _assert_same_state(trainer.model, model)
    assert trainer.metric.auc() == auc(torch.cat(predictions), data.label)
    assert trainer.stats.events_applied == len(data) == trainer.stats.session_events
    assert trainer.stats.batches == 5
    assert trainer.stats.events_per_s > 0


def test_serving_copy_equals_the_model_after_a_sync_and_only_then():
    data = _data(8)
    probe = _data(1, seed=9)
    trainer = _trainer(IteratorSource(_blocks(data), batch_size=BATCH), serving=True, sync_every=3)
    # The constructor makes a full copy, so even the untrained serving model agrees.
    assert torch.equal(_predict(trainer.serving_model, probe), _predict(trainer.model, probe))
    trainer.run(max_batches=6)
    assert [r.batches for r in trainer.stats.history] == [3, 6]
    assert torch.equal(_predict(trainer.serving_model, probe), _predict(trainer.model, probe))
    _assert_same_state(trainer.serving_model.dense, trainer.model.dense)
    trainer.run(max_batches=1)
    assert not torch.equal(_predict(trainer.serving_model, probe), _predict(trainer.model, probe))
    # The second delta carried every id looked up in batches 4..6 (all got a gradient).
    touched = data.ids[3 * BATCH : 6 * BATCH].unique().numel()
    assert trainer.stats.history[1].delta_ids == touched
    assert trainer.stats.history[0].delta_ids == data.ids[: 3 * BATCH].unique().numel()
    assert trainer.stats.deltas_pushed == 2
    assert trainer.stats.delta_bytes == sum(r.delta_bytes for r in trainer.stats.history) > 0
    assert all(0 <= r.window_auc <= 1 and r.window_logloss > 0 for r in trainer.stats.history)


def test_ttl_tables_expire_at_each_batch_time():
    data = _data(10)
    ttl = 1.5  # seconds; the generator emits ~100 events/s, so ~5 batches
    model = LogisticRegression(ttl=ttl)
    trainer = OnlineTrainer(
        model, IteratorSource(_blocks(data), batch_size=BATCH), dense_optimizer=None
    )
    trainer.run()
    final_now = float(data.timestamp.max())
    recent = set()
    for start in range(0, len(data), BATCH):
        now = float(data.timestamp[start : start + BATCH].max())
        if now >= final_now - ttl:
            recent.update(data.ids[start : start + BATCH].unique().tolist())
    every = data.ids.unique()
    alive = set(every[model.table.contains(every)].tolist())
    assert alive == recent
    assert len(recent) < every.numel()  # the test would notice expiry not happening


@pytest.mark.parametrize("kind", ["iterator", "file"])
def test_crash_and_resume_equals_an_uninterrupted_run(tmp_path, kind):
    data = _data(12)
    blocks = _blocks(data)
    for number, (batch, event_ids) in enumerate(blocks):
        save_shard(tmp_path / "shards" / f"{number:02d}.npz", batch, event_ids)

    def source():
        if kind == "file":
            return FileSource(tmp_path / "shards", batch_size=BATCH)
        return IteratorSource(blocks, batch_size=BATCH)

    options = {"sync_every": 2, "checkpoint_every": 3, "record_event_ids": True}
    reference = _trainer(source(), serving=True, checkpoint_dir=tmp_path / "ref", **options)
    reference.run()

    class Crash(RuntimeError):
        pass

    def crash_at_batch_8(trainer, item):
        if trainer.stats.batches == 8:  # two batches past the checkpoint at 6
            raise Crash

    crashed = _trainer(
        source(), serving=True, checkpoint_dir=tmp_path / "run", on_batch=crash_at_batch_8,
        **options,
    )  # fmt: skip
    with pytest.raises(Crash):
        crashed.run()
    # A new process: fresh objects with another initialisation, restored from disk.
    resumed = _trainer(
        source(), seed=5, serving=True, resume=True, checkpoint_dir=tmp_path / "run", **options
    )
    assert resumed.stats.batches == 6 and resumed.stats.events_applied == 6 * BATCH
    resumed.run()

    _assert_same_state(resumed.model, reference.model)
    # Serving tables may differ in layout (a full copy after resume vs deltas): compare
    # what they serve.
    every_id = data.ids.unique()
    for serving in (resumed.serving_model, reference.serving_model):
        serving.eval()
    with torch.no_grad():
        assert torch.equal(
            resumed.serving_model.table(every_id), reference.serving_model.table(every_id)
        )
    assert torch.equal(_predict(resumed.serving_model, data), _predict(reference.model, data))
    ref_opt, res_opt = reference.dense_optimizer.state_dict(), resumed.dense_optimizer.state_dict()
    for index, state in ref_opt["state"].items():
        for name, value in state.items():
            assert torch.equal(res_opt["state"][index][name], value)
    assert resumed.stats.events_applied == reference.stats.events_applied == len(data)
    assert resumed.stats.batches == 12
    assert resumed.metric.auc() == reference.metric.auc()
    assert [r.window_auc for r in resumed.stats.history] == [
        r.window_auc for r in reference.stats.history
    ]
    all_ids = set(range(10_000, 10_000 + len(data)))
    assert set(resumed.event_counts) == all_ids
    assert set(resumed.event_counts.values()) == {1}
    # The final checkpoint holds the same ledger (a second resume would continue it).
    again = _trainer(source(), resume=True, checkpoint_dir=tmp_path / "run", **options)
    assert again.event_counts == resumed.event_counts
    assert again.position == resumed.position


def test_file_and_iterator_sources_train_the_same_model(tmp_path):
    data = _data(6)
    for number, (batch, event_ids) in enumerate(_blocks(data)):
        save_shard(tmp_path / f"{number:02d}.safetensors", batch, event_ids)
    # One after the other: each _trainer call reseeds the global RNG that dropout draws from.
    from_files = _trainer(FileSource(tmp_path, batch_size=BATCH))
    from_files.run()
    from_memory = _trainer(IteratorSource(_blocks(data), batch_size=BATCH))
    from_memory.run()
    _assert_same_state(from_files.model, from_memory.model)
    assert len(data) == 192  # shards 00..03 start at rows 0, 5, 70, 71
    assert from_files.position == ["03.safetensors", 192 - 71]
    assert from_memory.position == len(data)


def test_checkpoint_guards(tmp_path):
    data = _data(2)
    first = _trainer(IteratorSource(_blocks(data), batch_size=BATCH), checkpoint_dir=tmp_path)
    first.run()
    assert first.checkpoint_path.exists()
    fresh = _trainer(IteratorSource(_blocks(data), batch_size=BATCH), checkpoint_dir=tmp_path)
    with pytest.raises(FileExistsError, match=r"OnlineTrainer\.resume"):
        fresh.run()
    with pytest.raises(FileNotFoundError, match=r"no online\.safetensors"):
        _trainer(IteratorSource([]), resume=True, checkpoint_dir=tmp_path / "empty")
    started = _trainer(IteratorSource([]), resume=True, missing_ok=True,
                       checkpoint_dir=tmp_path / "empty")  # fmt: skip
    assert started.stats.batches == 0
    raw = first.checkpoint_path.read_bytes()
    first.checkpoint_path.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(ValueError, match="unreadable checkpoint, refused"):
        _trainer(IteratorSource([]), resume=True, checkpoint_dir=tmp_path)


def test_argument_errors():
    source = IteratorSource([])
    model = LogisticRegression()
    with pytest.raises(ValueError, match="sync_every: expected a positive int, got 0"):
        OnlineTrainer(model, source, dense_optimizer=None, sync_every=0)
    with pytest.raises(TypeError, match="source: expected an EventSource, got list"):
        OnlineTrainer(model, [], dense_optimizer=None)
    with pytest.raises(ValueError, match="validation: expected 'eval' or 'train'"):
        OnlineTrainer(model, source, dense_optimizer=None, validation="test")

    class Wrong(nn.Module):
        def __init__(self):
            super().__init__()
            self.table = CollisionlessEmbedding(1)

        def forward(self, ids, dense=None, now=None):
            return self.table(ids, now=now).sum(-1)  # [B, F] instead of [B]

    trainer = OnlineTrainer(
        Wrong(), IteratorSource(_blocks(_data(1))[:1], batch_size=5), dense_optimizer=None
    )
    with pytest.raises(ValueError, match=r"model: expected logits of shape \[5\], got \(5, 4\)"):
        trainer.run()
    assert math.isnan(OnlineTrainer(model, source, dense_optimizer=None).stats.events_per_s)


def test_run_after_the_source_ended_trains_the_events_added_since():
    data = _data(10)
    cut = 6 * BATCH  # a batch boundary, so both runs cut the same micro-batches

    def block(a, b):
        batch = CTRBatch(data.ids[a:b], data.dense[a:b], data.label[a:b], data.timestamp[a:b])
        return batch, torch.arange(a, b)

    reference = _trainer(IteratorSource([block(0, len(data))], batch_size=BATCH))
    reference.run()
    items = [block(0, cut)]  # a live list: the producer appends to it later
    trainer = _trainer(IteratorSource(items, batch_size=BATCH), record_event_ids=True)
    trainer.run()
    assert trainer.stats.events_applied == cut
    items.append(block(cut, len(data)))
    trainer.run()
    assert trainer.stats.events_applied == len(data)
    assert trainer.event_counts == {i: 1 for i in range(len(data))}  # none lost, none twice
    assert trainer.stats.batches == reference.stats.batches
    _assert_same_state(trainer.model, reference.model)
