"""The throughput helper: sane numbers and zero collisions on a small fill."""

import math

import pytest

from subspace_recsys.throughput import measure_table_throughput


def test_small_fill_has_no_collisions_and_positive_rates():
    result = measure_table_throughput(20_000, batch=4096, dim=4, repeats=2)
    assert result["num_ids"] == 20_000
    assert result["collisions"] == 0
    assert result["missing"] == 0
    for key in ("lookups_per_s", "inserts_per_s", "dict_lookups_per_s", "dict_inserts_per_s"):
        assert math.isfinite(result[key]) and result[key] > 0, key
    # index slots (34 B, load <= 0.9) + a 4-float row (16 B), amortised over doubling growth
    assert 16 + 34 < result["bytes_per_entry"] < 4 * (16 + 34 / 0.45)


def test_rejects_bad_arguments():
    with pytest.raises(ValueError, match="num_ids: expected an int >= 1, got 0"):
        measure_table_throughput(0)
    with pytest.raises(ValueError, match="repeats: expected an int >= 1"):
        measure_table_throughput(10, repeats=0)
