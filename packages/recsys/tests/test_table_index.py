"""CuckooIndex and the collisionless table's id -> row mapping against a dict model."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from subspace_recsys.table import CollisionlessEmbedding, CuckooIndex, mix64
from subspace_recsys.table.cuckoo import _count_true, _first_true


def _fmix64_reference(x: int) -> int:
    """murmur3 fmix64 on Python ints (the reference for the int64 torch version)."""
    mask = (1 << 64) - 1
    x &= mask
    x ^= x >> 33
    x = (x * 0xFF51AFD7ED558CCD) & mask
    x ^= x >> 33
    x = (x * 0xC4CEB9FE1A85EC53) & mask
    x ^= x >> 33
    return x - (1 << 64) if x >= 1 << 63 else x


def test_mix64_matches_python_reference_including_sign_bit():
    values = [0, 1, 2, 12345, 2**40 + 7, 2**62 + 3, 2**63 - 1]
    got = mix64(torch.tensor(values, dtype=torch.int64)).tolist()
    assert got == [_fmix64_reference(v) for v in values]


def test_first_true_and_count_true_match_reductions():
    g = torch.Generator().manual_seed(0)
    for k in (4, 8, 16, 24):
        for p in (0.0, 0.1, 0.5, 1.0):
            hit = torch.rand(3000, k, generator=g) < p
            first, any_hit = _first_true(hit)
            assert torch.equal(any_hit, hit.any(dim=1))
            assert torch.equal(first[any_hit], hit.to(torch.uint8).argmax(dim=1)[any_hit])
            assert bool(((first >= 0) & (first < k)).all())
            assert torch.equal(_count_true(hit), hit.sum(dim=1))


@pytest.mark.parametrize("slots", [1, 2, 4, 8, 16])
def test_index_holds_every_key_through_displacement_and_growth(slots):
    # tiny buckets and a high load force displacement chains, failures and rehashes
    index = CuckooIndex(4, slots_per_bucket=slots, max_load=0.95)
    g = torch.Generator().manual_seed(slots)
    keys = torch.randint(0, 2**62, (6000,), generator=g).unique()
    keys = keys[torch.randperm(keys.shape[0], generator=g)]
    for chunk in keys.split(700):
        index.insert(chunk)
        index.rows.view(-1)[index.find(chunk)] = chunk % 1000  # a payload to carry
    slots_found = index.find(keys)
    assert bool((slots_found >= 0).all())
    assert slots_found.unique().shape[0] == keys.shape[0]
    assert len(index) == keys.shape[0]
    assert torch.equal(index.lookup_rows(keys), keys % 1000)  # payload moved with its key
    assert len(index) <= 0.95 * index.capacity
    index.check_consistency()
    absent = torch.randint(0, 2**62, (2000,), generator=g)
    absent = absent[~torch.isin(absent, keys)]
    assert bool((index.find(absent) == -1).all())


class _OneTagIndex(CuckooIndex):
    """Every key gets the same fingerprint, so every occupied slot is a tag clash."""

    def _candidates(self, keys):
        h, buckets, tag = super()._candidates(keys)
        return h, buckets, torch.ones_like(tag)


def test_lookup_survives_tag_clashes():
    index = _OneTagIndex(64, slots_per_bucket=8)
    keys = torch.arange(0, 3000, dtype=torch.int64) * 7919
    index.insert(keys)
    index.rows.view(-1)[index.find(keys)] = torch.arange(3000)
    assert torch.equal(index.lookup_rows(keys), torch.arange(3000))
    assert bool((index.lookup_rows(keys + 1) == -1).all())
    index.check_consistency()


def test_batch_insert_is_deterministic():
    keys = torch.randint(0, 2**62, (5000,), generator=torch.Generator().manual_seed(3)).unique()
    a, b = CuckooIndex(8, slots_per_bucket=4), CuckooIndex(8, slots_per_bucket=4)
    for chunk in keys.split(999):
        a.insert(chunk)
        b.insert(chunk)
    assert torch.equal(a.keys, b.keys)


# -- the table against a dict model ------------------------------------------------------

_op = st.one_of(
    st.tuples(st.just("insert"), st.lists(st.integers(0, 40), min_size=1, max_size=25)),
    st.tuples(st.just("tick"), st.integers(1, 4)),
    st.tuples(st.just("expire"), st.just(0)),
    st.tuples(st.just("big"), st.lists(st.integers(2**40, 2**62), min_size=1, max_size=8)),
    st.tuples(st.just("lookup"), st.just(0)),
)


def _check_against_model(table, universe, row_of, counts):
    ids = torch.tensor(sorted(universe), dtype=torch.int64).reshape(-1)
    rows = table.lookup_rows(ids, insert=False).tolist()
    assert rows == [row_of.get(i, -1) for i in ids.tolist()]  # evicted/counting ids: -1
    live = [r for r in rows if r >= 0]
    assert len(live) == len(set(live))  # no two live ids share a row
    assert len(table) == len(row_of)
    assert table.keys().tolist() == sorted(row_of)
    assert len(table.index) == len(counts)
    held = torch.tensor(sorted(counts), dtype=torch.int64).reshape(-1)
    slots = table.index.find(held)
    assert table.index.counts.view(-1)[slots].tolist() == [counts[i] for i in sorted(counts)]


@settings(max_examples=60, deadline=None)
@given(ops=st.lists(_op, min_size=1, max_size=30), admit_after=st.integers(1, 3))
def test_table_matches_dict_model(ops, admit_after):
    ttl = 3.0
    table = CollisionlessEmbedding(
        2, initial_capacity=2, admit_after=admit_after, ttl=ttl, slots_per_bucket=2
    )
    counts: dict[int, int] = {}  # every id the table holds (admitted or counting)
    seen: dict[int, float] = {}
    row_of: dict[int, int] = {}  # admitted id -> its row (must never change while admitted)
    universe: set[int] = set()
    now, peak = 0.0, 0
    for op, arg in ops:
        if op == "tick":
            now += arg
            continue
        if op == "expire":
            evicted = table.expire(now)
            gone = [i for i, t in seen.items() if t < now - ttl]
            assert evicted == len(gone)
            for i in gone:
                del counts[i], seen[i]
                row_of.pop(i, None)
            continue
        if op == "lookup":
            _check_against_model(table, universe, row_of, counts)
            continue
        universe.update(arg)
        rows = table.lookup_rows(torch.tensor(arg), insert=True, now=now)
        for i in arg:
            counts[i] = counts.get(i, 0) + 1
            seen[i] = now
        for i, r in zip(arg, rows.tolist(), strict=True):
            if counts[i] >= admit_after:
                assert row_of.setdefault(i, r) == r  # admitted ids keep their row
            else:
                assert r == -1
        peak = max(peak, len(row_of))
        # every row ever handed out is live or free: freed rows were reused first
        assert int(table.rows_used) == peak
    _check_against_model(table, universe, row_of, counts)
    table.check_consistency()


def test_admission_after_exactly_k_sightings():
    table = CollisionlessEmbedding(3, admit_after=3)
    ids = torch.tensor([5])
    assert table.lookup_rows(ids, insert=True).item() == -1
    assert table.lookup_rows(ids, insert=True).item() == -1
    assert not bool(table.contains(ids).item())
    assert table.lookup_rows(ids, insert=True).item() >= 0
    assert len(table) == 1
    # duplicates within one batch count separately
    assert table.lookup_rows(torch.tensor([9, 9, 9]), insert=True).tolist() == [1, 1, 1]


def test_expired_rows_are_reused_with_fresh_state():
    table = CollisionlessEmbedding(4, ttl=10, optimizer="adagrad", initial_capacity=4)
    first = table.lookup_rows(torch.arange(4), insert=True, now=0)
    table(torch.arange(4), now=0).sum().backward()
    table.step()
    assert bool((table.opt_sum[first] > 0).all())
    table.lookup_rows(torch.tensor([0, 1]), insert=True, now=15)
    assert table.expire(now=15) == 2  # ids 2 and 3 were last seen at 0 < 15 - 10
    assert table.contains(torch.arange(4)).tolist() == [True, True, False, False]
    new_rows = table.lookup_rows(torch.tensor([100, 101]), insert=True, now=15)
    assert sorted(new_rows.tolist()) == sorted(first[2:].tolist())  # freed rows reused
    assert table.num_rows == 4
    assert bool((table.opt_sum[new_rows] == 0).all())  # no optimizer state inherited


def test_growth_keeps_every_mapping_and_value():
    table = CollisionlessEmbedding(3, initial_capacity=1, slots_per_bucket=2)
    first = torch.arange(50) * 1000003
    rows = table.lookup_rows(first, insert=True)
    values = table.gather_rows(rows).detach().clone()
    table.lookup_rows(torch.arange(5000) + 2**50, insert=True)  # many rehashes and regrowths
    assert table.num_rows >= 5050
    assert torch.equal(table.lookup_rows(first, insert=False), rows)
    assert torch.equal(table.gather_rows(rows).detach(), values)


def test_eval_mode_records_nothing_and_unknown_ids_are_zero():
    table = CollisionlessEmbedding(3, admit_after=2)
    table(torch.tensor([1, 1, 2]))
    before = {k: v.clone() for k, v in table.state_dict().items()}
    table.eval()
    out = table(torch.tensor([1, 2, 3]), now=50)
    assert torch.equal(out[1], torch.zeros(3)) and torch.equal(out[2], torch.zeros(3))
    assert not torch.equal(out[0], torch.zeros(3))
    after = table.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert table.lookup_rows(torch.tensor([3]), insert=False).item() == -1


def test_evict_frees_rows_and_reserve_avoids_later_growth():
    table = CollisionlessEmbedding(2, initial_capacity=1)
    table.reserve(3000)
    capacity, num_rows = table.index.capacity, table.num_rows
    assert num_rows >= 3000 and 0.9 * capacity >= 3000
    ids = torch.arange(3000) * 3
    rows = table.lookup_rows(ids, insert=True)
    assert (table.index.capacity, table.num_rows) == (capacity, num_rows)
    assert table.evict(torch.tensor([0, 3, 3, 1])) == 2  # id 1 is unknown, 3 is repeated
    assert table.contains(torch.tensor([0, 3, 6])).tolist() == [False, False, True]
    assert sorted(table.free_rows.tolist()) == sorted(rows[:2].tolist())
    assert table.export_delta().evicted.tolist() == [0, 3]
