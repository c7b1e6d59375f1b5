"""CTR data: global ids, batches, MovieLens-100K as CTR, the Criteo-shaped generator."""

from __future__ import annotations

import csv
import datetime

import numpy as np
import pytest
import torch

from subspace_recsys.data import (
    AGE_GROUPS,
    GENRES,
    MOVIELENS_FIELDS,
    OCCUPATIONS,
    CriteoLikeGenerator,
    CTRBatch,
    field_of,
    global_ids,
    iter_batches,
    load_movielens_ctr,
    value_of,
)
from subspace_recsys.metrics import auc

# ---------------------------------------------------------------- global ids and batches


def test_global_ids_formula_and_inverse():
    values = torch.tensor([[0, 5, (1 << 40) - 1], [7, 0, 123456789]])
    ids = global_ids(values)
    for b in range(2):
        for f in range(3):
            assert int(ids[b, f]) == (f << 40) | int(values[b, f])
    assert torch.equal(field_of(ids), torch.tensor([[0, 1, 2], [0, 1, 2]]))
    assert torch.equal(value_of(ids), values)
    assert global_ids(values.clamp(max=1000).int()).dtype == torch.int64  # any int dtype
    assert len(set(global_ids(torch.zeros(1, 4, dtype=torch.int64)).tolist()[0])) == 4


def test_global_ids_bad_input():
    with pytest.raises(TypeError, match="values"):
        global_ids(torch.zeros(2, 2))
    with pytest.raises(ValueError, match=r"\[B, F\]"):
        global_ids(torch.zeros(4, dtype=torch.int64))
    with pytest.raises(ValueError, match="range"):
        global_ids(torch.tensor([[1, -1]]))
    with pytest.raises(ValueError, match="range"):
        global_ids(torch.tensor([[1 << 40]]))


def _batch(n=10, f=3):
    return CTRBatch(
        ids=global_ids(torch.arange(n * f).reshape(n, f)),
        dense=None,
        label=(torch.arange(n) % 2).float(),
        timestamp=torch.arange(n, dtype=torch.float64),
    )


def test_ctrbatch_validates():
    b = _batch()
    assert len(b) == 10 and b.num_fields == 3 and b.now == 9.0
    with pytest.raises(ValueError, match="label"):
        CTRBatch(ids=b.ids, dense=None, label=b.label + 0.5, timestamp=b.timestamp)
    with pytest.raises(ValueError, match="timestamp"):
        CTRBatch(ids=b.ids, dense=None, label=b.label, timestamp=b.timestamp[:3])
    with pytest.raises(TypeError, match="ids"):
        CTRBatch(ids=b.ids.float(), dense=None, label=b.label, timestamp=b.timestamp)
    with pytest.raises(ValueError, match="dense"):
        CTRBatch(ids=b.ids, dense=torch.zeros(3, 2), label=b.label, timestamp=b.timestamp)


def test_iter_batches_order_and_seeded_shuffle():
    b = _batch(n=23)
    plain = list(iter_batches(b, 5))
    assert [len(x) for x in plain] == [5, 5, 5, 5, 3]
    assert torch.equal(torch.cat([x.ids for x in plain]), b.ids)
    shuffled = torch.cat([x.ids for x in iter_batches(b, 5, shuffle=True, seed=3)])
    again = torch.cat([x.ids for x in iter_batches(b, 5, shuffle=True, seed=3)])
    other = torch.cat([x.ids for x in iter_batches(b, 5, shuffle=True, seed=4)])
    assert torch.equal(shuffled, again) and not torch.equal(shuffled, other)
    assert not torch.equal(shuffled, b.ids)
    assert sorted(shuffled[:, 0].tolist()) == b.ids[:, 0].tolist()  # a permutation
    with pytest.raises(ValueError, match="batch_size"):
        next(iter_batches(b, 0))


# ---------------------------------------------------------------- MovieLens-100K


@pytest.fixture(scope="module")
def movielens():
    from subspace_core.data import DatasetUnavailable, fetch

    try:
        files = fetch("movielens_100k")
    except DatasetUnavailable as err:  # pragma: no cover - offline without the cache
        pytest.skip(str(err))
    splits = {s: load_movielens_ctr(s) for s in ("train", "validation", "test")}
    return files, splits


def _read(path):
    with open(path, newline="", encoding="utf-8") as fh:
        rows = list(csv.reader(fh, delimiter="\t", quoting=csv.QUOTE_NONE))
    return rows[0], rows[1:]


def test_movielens_time_ordered_split(movielens):
    files, splits = movielens
    assert [len(splits[s]) for s in ("train", "validation", "test")] == [80_000, 10_000, 10_000]
    stamps = torch.cat([splits[s].timestamp for s in ("train", "validation", "test")])
    assert bool((stamps[1:] >= stamps[:-1]).all())
    assert splits["train"].timestamp.dtype == torch.float64
    _, inter = _read(files["ml-100k.inter"])
    # the same multiset of (user, item, click, time) as the raw file
    raw = sorted((int(u), int(i), int(float(r) >= 4), float(t)) for u, i, r, t in inter)
    ours = sorted(
        (int(v[0]), int(v[1]), int(y), float(t))
        for s in splits.values()
        for v, y, t in zip(s.values.tolist(), s.label.tolist(), s.timestamp.tolist(), strict=True)
    )
    assert ours == raw
    # the first 80 % by time: nothing in train is later than anything in test
    assert float(splits["train"].timestamp.max()) <= float(splits["test"].timestamp.min())


def test_movielens_fields_follow_the_side_files(movielens):
    files, splits = movielens
    train = splits["train"]
    assert train.field_names == MOVIELENS_FIELDS
    assert torch.equal(train.ids, global_ids(train.values))
    _, users = _read(files["ml-100k.user"])
    _, items = _read(files["ml-100k.item"])
    users = {int(r[0]): r for r in users}
    items = {int(r[0]): r for r in items}
    rng = np.random.default_rng(0)
    for i in rng.choice(len(train), 50, replace=False).tolist():
        v = train.values[i].tolist()
        u, it = users[v[0]], items[v[1]]
        age = int(u[1])
        assert AGE_GROUPS[v[2] - 1] <= age and (v[2] == len(AGE_GROUPS) or age < AGE_GROUPS[v[2]])
        assert v[3] == {"F": 1, "M": 2}[u[2]]
        assert OCCUPATIONS[v[4] - 1] == u[3]
        assert v[5] == (int(u[4][0]) + 1 if u[4][0].isdigit() else 11)
        assert v[6] == int(it[2]) // 10 * 10
        genres = it[3].split()
        assert GENRES[v[7] - 1] == genres[0]
        assert v[8] == (GENRES.index(genres[1]) + 1 if len(genres) > 1 else 0)
        when = datetime.datetime.fromtimestamp(float(train.timestamp[i]), datetime.UTC)
        assert (v[9], v[10]) == (when.hour, when.weekday())


def test_movielens_registered_view_and_options(movielens):
    from subspace_core.data import load_dataset

    _, splits = movielens
    view = load_dataset("movielens_100k", "validation", progress=False)
    assert view.x.dtype == torch.int64 and view.x.shape == (10_000, 11)
    assert torch.equal(view.x, splits["validation"].values)
    assert torch.equal(view.y.float(), splits["validation"].label)
    short = load_movielens_ctr("test", time_fields=False)
    assert short.num_fields == 9 and torch.equal(short.values, splits["test"].values[:, :9])
    with pytest.raises(ValueError, match="split"):
        load_movielens_ctr("dev")


# ---------------------------------------------------------------- Criteo-shaped generator


def test_generator_shapes_and_timestamps():
    gen = CriteoLikeGenerator(1000, seed=0)
    a, b = gen.sample(500), gen.sample(300)
    assert a.ids.shape == (500, 26) and a.dense.shape == (500, 13)
    assert torch.equal(field_of(a.ids)[0], torch.arange(26))
    t = torch.cat([a.timestamp, b.timestamp])
    assert bool((t[1:] > t[:-1]).all()) and gen.now == float(t[-1])
    assert bool((a.dense >= 0).all())
    # the imputed missing values: each dense column has zeros at about its missing rate
    big = gen.sample(20_000).dense
    zero_rate = (big == 0).double().mean(0)
    assert bool((zero_rate >= gen.dense_missing - 0.02).all())
    assert [len(x) for x in gen.batches(64, 3)] == [64, 64, 64]


def test_generator_zipf_slope():
    a = 1.2
    gen = CriteoLikeGenerator(2000, zipf_a=a, num_categorical=2, num_dense=1, seed=1)
    ids = gen.sample(100_000).ids[:, 0]
    counts = torch.unique(ids, return_counts=True)[1].sort(descending=True).values.double()
    ranks = torch.arange(1, 51, dtype=torch.float64)
    x, y = ranks.log(), counts[:50].log()
    slope = float(((x - x.mean()) * (y - y.mean())).sum() / ((x - x.mean()) ** 2).sum())
    assert abs(slope + a) < 0.1
    # and the most frequent id has its Zipf share 1 / H(2000, a)
    share = float(counts[0] / counts.sum())
    harmonic = float(torch.arange(1, 2001, dtype=torch.float64).pow(-a).sum())
    assert share == pytest.approx(1 / harmonic, rel=0.05)


def test_generator_ranks_invert_the_value_map():
    gen = CriteoLikeGenerator([50, 70, 30], num_categorical=3, num_dense=2, seed=2)
    batch = gen.sample(3000)
    ranks = gen.ranks_of(batch.ids)
    for f, v in enumerate((50, 70, 30)):
        assert int(ranks[:, f].max()) < v
        # rank 0 is the most frequent value of the field
        values, counts = torch.unique(batch.ids[:, f], return_counts=True)
        top = values[counts.argmax()]
        assert int(ranks[batch.ids[:, f] == top, f][0]) == 0


def test_planted_model_separates_and_interactions_matter():
    gen = CriteoLikeGenerator(5000, seed=3)
    b = gen.sample(30_000)
    z = gen.planted_logits(b.ids, b.dense, b.timestamp)
    first_order = gen.planted_logits(b.ids, b.dense, b.timestamp, interactions=False)
    assert auc(z, b.label) > 0.8
    assert auc(first_order, b.label) < auc(z, b.label) - 0.05
    noise = torch.randn(len(b), generator=torch.Generator().manual_seed(0))
    assert abs(auc(noise, b.label) - 0.5) < 0.02
    # labels really are Bernoulli(sigmoid(z)): predicted vs observed click rate
    assert float(torch.sigmoid(z).mean()) == pytest.approx(float(b.label.mean()), abs=0.01)


def test_generator_is_deterministic_by_seed():
    one = CriteoLikeGenerator(300, seed=7).sample(200)
    two = CriteoLikeGenerator(300, seed=7).sample(200)
    other = CriteoLikeGenerator(300, seed=8).sample(200)
    for name in ("ids", "dense", "label", "timestamp"):
        assert torch.equal(getattr(one, name), getattr(two, name))
    assert not torch.equal(one.ids, other.ids)


def test_drift_changes_the_planted_model_over_time():
    still = CriteoLikeGenerator(300, seed=4)
    moving = CriteoLikeGenerator(300, seed=4, drift=0.5)
    b = still.sample(2000)
    day = torch.full_like(b.timestamp, 86400.0 * 3)
    z0 = moving.planted_logits(b.ids, b.dense, torch.zeros_like(b.timestamp))
    torch.testing.assert_close(
        z0, still.planted_logits(b.ids, b.dense, torch.zeros_like(b.timestamp))
    )
    z3 = moving.planted_logits(b.ids, b.dense, day)
    assert float(np.corrcoef(z0.numpy(), z3.numpy())[0, 1]) < 0.9
    torch.testing.assert_close(still.planted_logits(b.ids, b.dense, day), z0)


def test_generator_bad_arguments():
    with pytest.raises(ValueError, match="num_ids_per_field"):
        CriteoLikeGenerator([10, 20], num_categorical=3)
    with pytest.raises(ValueError, match="zipf_a"):
        CriteoLikeGenerator(10, zipf_a=0.0)
    with pytest.raises(ValueError, match="num_interactions"):
        CriteoLikeGenerator(10, num_categorical=2, num_interactions=2)
    with pytest.raises(ValueError, match="n"):
        CriteoLikeGenerator(10).sample(0)
