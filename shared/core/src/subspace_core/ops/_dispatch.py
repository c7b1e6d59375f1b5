"""Backend selection for ops: ``auto | triton | torch``.

``auto`` runs the Triton kernel only for CUDA tensors, when Triton imports and the op
supports the shapes/dtypes; otherwise the pure-PyTorch reference. ``SUBZOO_BACKEND=torch``
makes ``auto`` pick the reference everywhere. An explicitly requested backend that cannot
run raises; it never falls back silently. Under ``TRITON_INTERPRET=1`` an explicit
``backend="triton"`` also runs on CPU tensors (the interpreter), which is how the kernels
are tested without a GPU.
"""

from __future__ import annotations

import importlib.util
import os
from functools import cache

import torch

__all__ = ["BACKENDS", "BackendUnavailable", "interpreter_enabled", "select_backend",
           "triton_available"]

BACKENDS = ("auto", "triton", "torch")


class BackendUnavailable(RuntimeError):
    """An explicitly requested backend cannot run these inputs."""


@cache
def triton_available() -> bool:
    """Whether ``triton`` can be imported (checked without importing it)."""
    return importlib.util.find_spec("triton") is not None


def interpreter_enabled() -> bool:
    """Whether Triton kernels run in the CPU interpreter (``TRITON_INTERPRET=1``)."""
    return os.environ.get("TRITON_INTERPRET") == "1"


def select_backend(
    op: str, backend: str, *tensors: torch.Tensor, supported: bool = True, reason: str = ""
) -> str:
    """Resolve ``backend`` to ``"triton"`` or ``"torch"`` for ``op`` on ``tensors``.

    Args:
        op: op name, for error messages.
        backend: ``"auto"``, ``"triton"`` or ``"torch"``.
        tensors: the op's tensor inputs (their devices decide).
        supported: whether the Triton kernel handles these shapes/dtypes.
        reason: why it does not, when ``supported`` is False (shown in the error).
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend: expected one of {BACKENDS}, got {backend!r}")
    if backend == "torch":
        return "torch"
    on_cuda = bool(tensors) and all(t.is_cuda for t in tensors)
    if backend == "auto":
        if os.environ.get("SUBZOO_BACKEND", "auto") == "torch":
            return "torch"
        return "triton" if on_cuda and supported and triton_available() else "torch"
    if not triton_available():
        raise BackendUnavailable(
            f"{op}: backend='triton' requested but triton is not installed "
            "(pip install 'subspace-core[triton]')"
        )
    if not (on_cuda or interpreter_enabled()):
        devices = sorted({str(t.device) for t in tensors})
        raise BackendUnavailable(
            f"{op}: backend='triton' needs CUDA tensors (or TRITON_INTERPRET=1), got {devices}"
        )
    if not supported:
        raise BackendUnavailable(f"{op}: backend='triton' does not support these inputs: {reason}")
    return "triton"
