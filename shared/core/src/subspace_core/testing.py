"""Test helpers shared by every package: tolerance-aware comparison and golden outputs."""

from __future__ import annotations

import os
from pathlib import Path

import torch

from subspace_core.io import atomic_path

__all__ = ["TOLERANCES", "assert_close_to_ref", "assert_matches_golden", "tolerance_for"]

#: (rtol, atol) per dtype for comparing a kernel or fast path against its reference.
TOLERANCES: dict[torch.dtype, tuple[float, float]] = {
    torch.float64: (1e-10, 1e-12),
    torch.float32: (1e-5, 1e-6),
    torch.float16: (1e-3, 1e-3),
    torch.bfloat16: (1.6e-2, 1e-2),
    torch.complex128: (1e-10, 1e-12),
    torch.complex64: (1e-5, 1e-6),
}

GOLDEN_UPDATE_ENV = "SUBZOO_UPDATE_GOLDEN"


def tolerance_for(dtype: torch.dtype) -> tuple[float, float]:
    """(rtol, atol) for ``dtype``; exact comparison for integer and bool dtypes."""
    if dtype in TOLERANCES:
        return TOLERANCES[dtype]
    if dtype.is_floating_point or dtype.is_complex:
        raise KeyError(f"dtype: expected one of {sorted(map(str, TOLERANCES))}, got {dtype}")
    return (0.0, 0.0)


def assert_close_to_ref(
    actual: torch.Tensor,
    expected: torch.Tensor,
    *,
    rtol: float | None = None,
    atol: float | None = None,
    scale: float = 1.0,
    msg: str = "",
) -> None:
    """Assert ``actual`` matches the reference ``expected`` within the dtype's tolerance.

    The tolerance comes from :data:`TOLERANCES` for the *less precise* of the two dtypes,
    multiplied by ``scale`` (for ops that accumulate error, e.g. long reductions); explicit
    ``rtol``/``atol`` override it. Shapes must match exactly (no broadcasting).
    """
    if actual.shape != expected.shape:
        raise AssertionError(f"{msg}shape: expected {tuple(expected.shape)}, got {tuple(actual.shape)}")
    worse = actual.dtype if _eps(actual.dtype) >= _eps(expected.dtype) else expected.dtype
    base_rtol, base_atol = tolerance_for(worse)
    rtol = base_rtol * scale if rtol is None else rtol
    atol = base_atol * scale if atol is None else atol
    common = torch.promote_types(actual.dtype, expected.dtype)
    a = actual.detach().to("cpu", common)
    e = expected.detach().to("cpu", common)
    torch.testing.assert_close(a, e, rtol=rtol, atol=atol, equal_nan=True, msg=lambda m: f"{msg}{m}")


def _eps(dtype: torch.dtype) -> float:
    if dtype.is_complex:
        dtype = torch.float64 if dtype == torch.complex128 else torch.float32
    return torch.finfo(dtype).eps if dtype.is_floating_point else 0.0


def assert_matches_golden(
    tensors: dict[str, torch.Tensor], golden_file: str | os.PathLike, *, scale: float = 1.0
) -> None:
    """Compare ``tensors`` with a golden safetensors file.

    With ``SUBZOO_UPDATE_GOLDEN=1`` the file is (re)written instead and the test passes;
    a missing golden file without that variable is a failure, never a silent pass.
    """
    from safetensors.torch import load_file, save_file

    golden_file = Path(golden_file)
    if os.environ.get(GOLDEN_UPDATE_ENV) == "1":
        with atomic_path(golden_file) as tmp:
            save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, str(tmp))
        return
    if not golden_file.exists():
        raise AssertionError(
            f"golden file {golden_file} is missing; create it with {GOLDEN_UPDATE_ENV}=1"
        )
    golden = load_file(golden_file)
    if sorted(golden) != sorted(tensors):
        raise AssertionError(f"golden keys: expected {sorted(golden)}, got {sorted(tensors)}")
    for key, value in tensors.items():
        assert_close_to_ref(value, golden[key], scale=scale, msg=f"{key}: ")
