"""Tests of ``subspace_core.testing``: tolerance table, ``assert_close_to_ref``, golden files."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

from subspace_core.testing import (
    GOLDEN_UPDATE_ENV,
    TOLERANCES,
    assert_close_to_ref,
    assert_matches_golden,
    tolerance_for,
)


@pytest.fixture(autouse=True)
def _no_golden_update(monkeypatch):
    monkeypatch.delenv(GOLDEN_UPDATE_ENV, raising=False)


def _ref(dtype=torch.float32) -> torch.Tensor:
    return torch.linspace(1.0, 2.0, 12, dtype=torch.float64).reshape(3, 4).to(dtype)


# --- tolerance table -----------------------------------------------------------------------


def test_testing_tolerance_table_ordering():
    order = [torch.float64, torch.float32, torch.float16, torch.bfloat16]
    rtols = [TOLERANCES[d][0] for d in order]
    assert rtols == sorted(rtols)  # less precise dtypes get looser tolerances
    assert tolerance_for(torch.float32) == TOLERANCES[torch.float32]
    assert tolerance_for(torch.int64) == (0.0, 0.0)
    assert tolerance_for(torch.bool) == (0.0, 0.0)
    with pytest.raises(KeyError, match="dtype"):
        tolerance_for(torch.float8_e4m3fn)


# --- assert_close_to_ref -------------------------------------------------------------------


def test_testing_fp32_within_tolerance_passes():
    ref = _ref()
    assert_close_to_ref(ref * (1 + 2e-6), ref)
    assert_close_to_ref(ref.clone(), ref)


def test_testing_fp32_outside_tolerance_fails():
    ref = _ref()
    with pytest.raises(AssertionError):
        assert_close_to_ref(ref * (1 + 1e-4), ref)
    bad = ref.clone()
    bad[1, 2] += 1e-3  # a single element off
    with pytest.raises(AssertionError, match="ctx: "):
        assert_close_to_ref(bad, ref, msg="ctx: ")


def test_testing_shape_mismatch_fails():
    ref = _ref()
    with pytest.raises(AssertionError, match="shape"):
        assert_close_to_ref(ref.reshape(4, 3), ref)
    with pytest.raises(AssertionError, match="shape"):  # no broadcasting
        assert_close_to_ref(ref[:1], ref)
    with pytest.raises(AssertionError, match="shape"):
        assert_close_to_ref(ref.flatten(), ref)


def test_testing_bf16_looser_than_fp32():
    ref = _ref()
    off = ref * (1 + 4e-3)  # ~ one bf16 ulp, far beyond fp32 tolerance
    with pytest.raises(AssertionError):
        assert_close_to_ref(off, ref)
    assert_close_to_ref(off.to(torch.bfloat16), ref)  # the less precise dtype sets the bar
    assert_close_to_ref(off, ref.to(torch.bfloat16))  # whichever side it is on
    with pytest.raises(AssertionError):
        assert_close_to_ref((ref * 1.1).to(torch.bfloat16), ref)  # bf16 still has a bar


def test_testing_fp16_between_fp32_and_bf16():
    ref = _ref()
    assert_close_to_ref((ref * (1 + 5e-4)).half(), ref)
    with pytest.raises(AssertionError):
        assert_close_to_ref((ref * (1 + 8e-3)).half(), ref)
    assert_close_to_ref((ref * (1 + 8e-3)).bfloat16(), ref)


def test_testing_fp64_is_strict():
    ref = _ref(torch.float64)
    assert_close_to_ref(ref * (1 + 1e-12), ref)
    with pytest.raises(AssertionError):
        assert_close_to_ref(ref * (1 + 1e-7), ref)


def test_testing_scale_and_overrides():
    ref = _ref()
    off = ref * (1 + 5e-5)
    with pytest.raises(AssertionError):
        assert_close_to_ref(off, ref)
    assert_close_to_ref(off, ref, scale=10.0)
    assert_close_to_ref(off, ref, rtol=1e-4, atol=0.0)
    with pytest.raises(AssertionError):
        assert_close_to_ref(ref * (1 + 1e-6), ref, rtol=0.0, atol=0.0)


def test_testing_integers_exact_and_nan_equal():
    a = torch.arange(6)
    assert_close_to_ref(a.clone(), a)
    with pytest.raises(AssertionError):
        assert_close_to_ref(a + 1, a)
    x = torch.tensor([1.0, float("nan")])
    assert_close_to_ref(x.clone(), x)
    with pytest.raises(AssertionError):
        assert_close_to_ref(torch.tensor([1.0, 0.0]), x)


def test_testing_complex():
    z = torch.randn(5, dtype=torch.complex64, generator=torch.Generator().manual_seed(0))
    assert_close_to_ref(z * (1 + 1e-7), z)
    with pytest.raises(AssertionError):
        assert_close_to_ref(z * (1 + 1e-3), z)


def test_testing_grad_tensors_accepted():
    ref = _ref().requires_grad_()
    assert_close_to_ref(ref * 1.0, ref)


# --- golden files --------------------------------------------------------------------------


def test_testing_golden_missing_file_fails(tmp_path):
    golden = tmp_path / "golden" / "out.safetensors"
    with pytest.raises(AssertionError) as info:
        assert_matches_golden({"y": _ref()}, golden)
    assert str(golden) in str(info.value) and GOLDEN_UPDATE_ENV in str(info.value)
    assert not golden.exists()


def test_testing_golden_update_then_compare(tmp_path, monkeypatch):
    golden = tmp_path / "golden" / "out.safetensors"
    tensors = {"y": _ref(), "idx": torch.arange(4), "t": _ref().t()}  # t is non-contiguous
    monkeypatch.setenv(GOLDEN_UPDATE_ENV, "1")
    assert_matches_golden(tensors, golden)
    stored = load_file(golden)
    assert sorted(stored) == ["idx", "t", "y"]
    assert torch.equal(stored["t"], tensors["t"])

    monkeypatch.delenv(GOLDEN_UPDATE_ENV)
    assert_matches_golden({k: v.clone() for k, v in tensors.items()}, golden)
    assert_matches_golden({**tensors, "y": tensors["y"] * (1 + 2e-6)}, golden)

    perturbed = tensors["y"].clone()
    perturbed[0, 0] += 1e-2
    with pytest.raises(AssertionError, match="y: "):
        assert_matches_golden({**tensors, "y": perturbed}, golden)
    assert_matches_golden({**tensors, "y": perturbed}, golden, scale=1e4)
    with pytest.raises(AssertionError):
        assert_matches_golden({**tensors, "idx": torch.arange(4) + 1}, golden)
    with pytest.raises(AssertionError, match="shape"):
        assert_matches_golden({**tensors, "y": tensors["y"][:2]}, golden)


def test_testing_golden_key_mismatch_fails(tmp_path, monkeypatch):
    golden = tmp_path / "g.safetensors"
    monkeypatch.setenv(GOLDEN_UPDATE_ENV, "1")
    assert_matches_golden({"a": _ref(), "b": _ref()}, golden)
    monkeypatch.delenv(GOLDEN_UPDATE_ENV)
    with pytest.raises(AssertionError, match="keys"):
        assert_matches_golden({"a": _ref()}, golden)
    with pytest.raises(AssertionError, match="keys"):
        assert_matches_golden({"a": _ref(), "b": _ref(), "c": _ref()}, golden)


def test_testing_golden_update_overwrites(tmp_path, monkeypatch):
    golden = tmp_path / "g.safetensors"
    monkeypatch.setenv(GOLDEN_UPDATE_ENV, "1")
    assert_matches_golden({"a": torch.zeros(2)}, golden)
    assert_matches_golden({"a": torch.ones(2)}, golden)  # rewritten, passes
    monkeypatch.delenv(GOLDEN_UPDATE_ENV)
    assert_matches_golden({"a": torch.ones(2)}, golden)
    with pytest.raises(AssertionError):
        assert_matches_golden({"a": torch.zeros(2)}, golden)


def test_testing_golden_env_must_be_exactly_one(tmp_path, monkeypatch):
    golden = tmp_path / "g.safetensors"
    monkeypatch.setenv(GOLDEN_UPDATE_ENV, "0")
    with pytest.raises(AssertionError, match="missing"):
        assert_matches_golden({"a": torch.zeros(2)}, golden)
    assert not golden.exists()
