"""Delta sync, state_dict and safetensors round-trips of the collisionless table."""

import json
import os
import threading

import pytest
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from subspace_recsys.table import CollisionlessEmbedding, TableDelta


def _train(table, steps, *, seed, now0=0, id_range=300, expire=True):
    """A few steps of training on random ids (admissions, updates and expiries)."""
    g = torch.Generator().manual_seed(seed)
    for t in range(steps):
        now = now0 + t
        ids = torch.randint(0, id_range, (40,), generator=g) * 1_000_003
        out = table(ids, now=now)
        (out * torch.randn(out.shape, generator=g)).sum().backward()
        table.step()
        if expire:
            table.expire(now)


def _all_lookups(table, ids):
    was = table.training
    table.eval()
    with torch.no_grad():
        out = table(ids)
    table.train(was)
    return out


def _make(**kw):
    base = {"admit_after": 2, "ttl": 3, "optimizer": "adam", "lr": 0.1, "init_std": 0.3}
    return CollisionlessEmbedding(4, **(base | kw))


def test_delta_replay_reproduces_lookups_including_evictions():
    source = _make()
    replica = CollisionlessEmbedding(4, optimizer="sgd", initial_capacity=1)  # serving copy
    universe = torch.arange(300) * 1_000_003
    evicted_total = 0
    for round_ in range(4):
        _train(source, 5, seed=round_, now0=5 * round_)
        delta = source.export_delta()
        evicted_total += delta.evicted.shape[0]
        replica.apply_delta(TableDelta.from_bytes(delta.to_bytes()))  # through the wire format
        assert torch.equal(_all_lookups(replica, universe), _all_lookups(source, universe))
        assert torch.equal(replica.keys(), source.keys())
    assert evicted_total > 0  # the scenario did exercise evictions
    empty = source.export_delta()  # nothing changed since the last export
    assert len(empty) == 0 and empty.evicted.numel() == 0


def test_delta_with_optimizer_state_lets_the_copy_continue_training():
    source = _make()
    _train(source, 6, seed=0)
    standby = _make(initial_capacity=1)
    standby.apply_delta(source.export_delta(include_optimizer_state=True))
    ids = source.keys()[:10]
    coeff = torch.randn(10, 4, generator=torch.Generator().manual_seed(9))
    for table in (source, standby):
        (table(ids, now=100) * coeff).sum().backward()
        table.step()
    assert torch.equal(_all_lookups(standby, ids), _all_lookups(source, ids))


def test_delta_rejects_mismatched_tables():
    delta = _make().export_delta()
    with pytest.raises(ValueError, match="delta: expected values of dim 3, got 4"):
        CollisionlessEmbedding(3).apply_delta(delta)
    source = _make()
    _train(source, 2, seed=1)
    with pytest.raises(ValueError, match=r"delta\.state: expected state of optimizer 'sgd'"):
        CollisionlessEmbedding(4, optimizer="sgd").apply_delta(
            source.export_delta(include_optimizer_state=True)
        )
    with pytest.raises(ValueError, match=r"values: expected a \[2, dim\] tensor"):
        TableDelta(torch.tensor([1, 2]), torch.zeros(3, 4), torch.zeros(0, dtype=torch.long))


def _assert_same_table(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        assert sa[k].dtype == sb[k].dtype and torch.equal(sa[k], sb[k]), k


def _continue_identically(a, b):
    # the same new batches (fresh ids need the generator state too) give the same tables
    _train(a, 3, seed=42, now0=100, id_range=600)
    _train(b, 3, seed=42, now0=100, id_range=600)
    _assert_same_table(a, b)


def test_state_dict_round_trip_into_a_table_of_another_size():
    source = _make()
    _train(source, 8, seed=3)
    target = _make(initial_capacity=1, seed=123)
    assert target.num_rows != source.num_rows
    target.load_state_dict(source.state_dict())
    _assert_same_table(source, target)
    universe = torch.arange(300) * 1_000_003
    assert torch.equal(_all_lookups(target, universe), _all_lookups(source, universe))
    _continue_identically(source, target)


def test_whole_model_state_dict_round_trip_through_safetensors(tmp_path):
    def model():
        m = nn.Module()
        m.emb = _make(initial_capacity=2)
        m.head = nn.Linear(4, 1)
        return m

    a = model()
    _train(a.emb, 5, seed=5)
    path = tmp_path / "model.safetensors"
    save_file({k: v.contiguous() for k, v in a.state_dict().items()}, path)
    b = model()
    b.load_state_dict(load_file(path))
    _assert_same_table(a.emb, b.emb)
    assert torch.equal(a.head.weight, b.head.weight)


def test_save_load_round_trip_is_exact_and_atomic(tmp_path):
    source = _make(ttl=None, optimizer="adagrad", admit_after=1)
    _train(source, 6, seed=7)
    path = tmp_path / "table.safetensors"
    path.write_bytes(b"old content")  # overwritten atomically
    source.save(path)
    assert os.listdir(tmp_path) == ["table.safetensors"]  # no temp file left behind
    loaded = CollisionlessEmbedding.load(path)
    assert loaded.config() == source.config()
    _assert_same_table(source, loaded)
    _continue_identically(source, loaded)


def _tamper(tmp_path, change):
    source = _make()
    _train(source, 4, seed=8)
    path = tmp_path / "t.safetensors"
    source.save(path)
    from safetensors import safe_open

    with safe_open(path, framework="pt") as f:
        metadata = f.metadata()
        tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118
    change(tensors, metadata)
    bad = tmp_path / "bad.safetensors"
    save_file(tensors, bad, metadata=metadata)
    return bad


def _duplicate_row(tensors, _):
    rows = tensors["index.rows"].view(-1)
    owned = torch.nonzero(rows >= 0).view(-1)
    rows[owned[1]] = rows[owned[0]]  # two ids sharing a row: a collision


def _truncate_weight(tensors, _):
    tensors["weight"] = tensors["weight"][:, :3].contiguous()


def _shrink_index_keys(tensors, _):
    tensors["index.keys"] = tensors["index.keys"][:1].contiguous()


def _move_key(tensors, _):
    keys = tensors["index.keys"].view(-1)
    live = torch.nonzero(keys >= 0).view(-1)
    keys[live[0]] += 1  # no longer in one of its own buckets


def _bad_config(_, metadata):
    metadata["config"] = json.dumps(json.loads(metadata["config"]) | {"dim": 0})


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (_duplicate_row, "owned by exactly one id"),
        (_truncate_weight, r"weight: expected shape \['\*', 4\]"),
        (_shrink_index_keys, "keys/rows/counts/last_seen: expected one shared shape"),
        (_move_key, "not in one of their two hash buckets"),
        (_bad_config, "dim: expected an int >= 1"),
    ],
)
def test_load_refuses_inconsistent_files(tmp_path, change, message):
    with pytest.raises(ValueError, match=message):
        CollisionlessEmbedding.load(_tamper(tmp_path, change))


def test_load_refuses_foreign_files(tmp_path):
    path = tmp_path / "other.safetensors"
    save_file({"x": torch.zeros(2)}, path)
    with pytest.raises(ValueError, match="expected metadata format"):
        CollisionlessEmbedding.load(path)
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"\x00" * 16)
    with pytest.raises(ValueError, match="not a readable safetensors file"):
        CollisionlessEmbedding.load(garbage)


def test_load_refuses_index_slots_that_are_not_a_power_of_two():
    # lookups pick a slot with bit masks: a 3-slot bucket would break every later lookup
    state = _make().state_dict()
    for name, fill in (("keys", -1), ("rows", -1), ("counts", 0), ("last_seen", 0)):
        dtype = state[f"index.{name}"].dtype
        state[f"index.{name}"] = torch.full((4, 3), fill, dtype=dtype)
    with pytest.raises(RuntimeError, match=r"both powers of two.*got \[4, 3\]"):
        _make().load_state_dict(state)


def test_a_loaded_table_without_rows_grows_on_its_first_admission():
    state = _make(admit_after=1).state_dict()
    for name in ("weight", "row_dirty", "opt_exp_avg", "opt_exp_avg_sq", "opt_step"):
        state[name] = state[name][:0]
    table = _make(admit_after=1)
    table.load_state_dict(state)
    assert table.num_rows == 0
    result = []
    # run in a thread: growth from zero rows used to double 0 forever
    worker = threading.Thread(target=lambda: result.append(table(torch.arange(5), now=0)))
    worker.daemon = True
    worker.start()
    worker.join(timeout=10)
    assert result, "the first admission into a table without rows did not finish"
    assert table.num_rows >= 5 and len(table) == 5
    assert bool((result[0].abs().sum(dim=1) > 0).all())  # fresh rows ~ N(0, init_std)
