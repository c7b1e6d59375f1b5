"""HashedEmbedding: the hash against a pure-Python SplitMix64, collision statistics, memory."""

from __future__ import annotations

import math

import pytest
import torch

from subspace_recsys.hashed import (
    HashedEmbedding,
    equal_memory_rows,
    expected_colliding_ids,
    mix64,
)

M64 = (1 << 64) - 1


def splitmix64_ref(x: int, seed: int) -> int:
    """SplitMix64 as published (unsigned 64-bit Python ints), state = x + (seed+1)*golden."""
    z = (x + (seed + 1) * 0x9E3779B97F4A7C15) & M64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & M64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & M64
    return z ^ (z >> 31)


def test_mix64_matches_unsigned_reference():
    g = torch.Generator().manual_seed(0)
    ids = torch.cat(
        [
            torch.tensor([0, 1, 2, (1 << 40) | 7, (1 << 63) - 1]),
            torch.randint(0, 1 << 62, (200,), generator=g),
        ]
    )
    for seed in (0, 3):
        got = mix64(ids, seed).tolist()
        want = [splitmix64_ref(v, seed) for v in ids.tolist()]
        assert [v & M64 for v in got] == want


def test_rows_are_the_hash_modulo_rows():
    table = HashedEmbedding(1000, 4, seed=5)
    ids = torch.arange(0, 5000, 7)
    want = [(splitmix64_ref(v, 5) >> 1) % 1000 for v in ids.tolist()]
    assert table.rows(ids).tolist() == want


def test_forward_reads_rows_and_gradients_reach_them():
    table = HashedEmbedding(64, 3, seed=1)
    ids = torch.tensor([[5, 9], [5, (2 << 40) | 11]])
    out = table(ids, now=123.0)
    assert out.shape == (2, 2, 3) and out.dtype == torch.float32
    rows = table.rows(ids)
    torch.testing.assert_close(out, table.weight[rows])
    out.sum().backward()
    expected = torch.zeros(64)
    expected.index_add_(0, rows.reshape(-1), torch.ones(4))
    torch.testing.assert_close(table.weight.grad[:, 0], expected)


def test_same_seed_same_buckets_and_init():
    a, b = HashedEmbedding(97, 2, seed=4), HashedEmbedding(97, 2, seed=4)
    c = HashedEmbedding(97, 1, seed=4, init_std=0.0)
    ids = torch.arange(500)
    assert torch.equal(a.rows(ids), b.rows(ids)) and torch.equal(a.rows(ids), c.rows(ids))
    assert torch.equal(a.weight, b.weight)
    assert not torch.equal(a.rows(ids), HashedEmbedding(97, 2, seed=5).rows(ids))
    assert torch.count_nonzero(c.weight) == 0
    big = HashedEmbedding(20000, 8, seed=0, init_std=0.1)
    assert abs(float(big.weight.detach().std()) - 0.1) < 0.005


def test_consecutive_ids_spread_uniformly():
    rows = HashedEmbedding(100, 1).rows(torch.arange(100_000))
    counts = torch.bincount(rows, minlength=100).double()
    # Poisson-ish counts around 1000: 5 sigma is about 160.
    assert float((counts - 1000).abs().max()) < 160
    # field tags in the top bits must not land in the same rows
    f0 = HashedEmbedding(100, 1).rows(torch.arange(1000))
    f1 = HashedEmbedding(100, 1).rows(torch.arange(1000) | (1 << 40))
    assert float((f0 == f1).double().mean()) < 0.03


def test_collision_count_matches_the_birthday_formula():
    num_rows, n = 10_000, 5_000
    ids = torch.randint(0, 1 << 40, (2 * n,), generator=torch.Generator().manual_seed(1))
    ids = torch.unique(ids)[:n]
    assert len(ids) == n
    rows = HashedEmbedding(num_rows, 1).rows(ids)
    per_row = torch.bincount(rows, minlength=num_rows)
    colliding = int(per_row[per_row > 1].sum())
    want = expected_colliding_ids(n, num_rows)
    assert want == pytest.approx(n * (1 - math.exp(-(n - 1) / num_rows)), rel=1e-3)
    assert abs(colliding - want) < 0.08 * want


def test_memory_accounting():
    table = HashedEmbedding(1000, 16)
    assert table.memory_bytes() == 1000 * 16 * 4
    assert table.bytes_per_entry() == 64
    assert equal_memory_rows(1000, 100.0, 16) == math.floor(1000 * 100 / 64)
    assert equal_memory_rows(1000, 64.0, 16) == 1000
    assert equal_memory_rows(0, 64.0, 16) == 1
    with pytest.raises(ValueError, match="bytes_per_entry"):
        equal_memory_rows(10, 0, 16)
    with pytest.raises(ValueError, match="num_ids"):
        equal_memory_rows(-1, 8.0, 16)


def test_bad_input():
    table = HashedEmbedding(10, 2)
    with pytest.raises(TypeError, match="ids"):
        table(torch.tensor([1.0]))
    with pytest.raises(TypeError, match="ids"):
        table(torch.tensor([1], dtype=torch.int32))
    with pytest.raises(ValueError, match="non-negative"):
        table(torch.tensor([3, -1]))
    with pytest.raises(ValueError, match="num_rows"):
        HashedEmbedding(0, 2)
    with pytest.raises(ValueError, match="init_std"):
        HashedEmbedding(4, 2, init_std=-1.0)
