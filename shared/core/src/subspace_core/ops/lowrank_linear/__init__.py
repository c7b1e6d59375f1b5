"""Linear layers with a low-rank part, forward and backward.

* ``lowrank_linear(x, W, A, B, bias, scale)``: ``y = x W + scale · (x A) B + bias``.
* ``svd_linear(x, U, S, Vh, bias)``: ``y = x U diag(S) Vh + bias``.

Weights are ``[d_in, d_out]`` (``x @ W``; for an ``nn.Linear`` pass ``weight.T``). Shapes,
maths and gradients are specified in :mod:`subspace_core.ops.lowrank_linear.reference`.
Both are differentiable in every tensor argument; frozen ones (``requires_grad=False``)
get no gradient and cost nothing in the backward.

Backends: ``"torch"`` (the reference: composed torch matmuls), ``"triton"`` (one fused
tiled-matmul kernel for the output and for ``∂x``, torch matmuls for the weight
gradients; ``torch.ops.subzoo.lowrank_linear`` / ``torch.ops.subzoo.svd_linear``),
``"auto"`` (Triton for CUDA tensors when it imports and supports them, else the reference).
"""

from __future__ import annotations

import torch

from subspace_core.ops._dispatch import select_backend
from subspace_core.ops.lowrank_linear.reference import (
    check_lowrank_args,
    check_svd_args,
    lowrank_linear_ref,
    svd_linear_ref,
)

__all__ = [
    "lowrank_linear",
    "lowrank_linear_ref",
    "svd_linear",
    "svd_linear_ref",
    "triton_supports",
]

#: Dtypes the fused kernel reads and writes (accumulation is always fp32).
TRITON_DTYPES = (torch.float16, torch.bfloat16, torch.float32)


def triton_supports(dtype: torch.dtype, on_cuda: bool) -> tuple[bool, str]:
    """Whether the kernels handle ``dtype`` (on CUDA, or on CPU in the interpreter)."""
    if dtype not in TRITON_DTYPES:
        return False, f"dtype {dtype} (supported: float16, bfloat16, float32)"
    if dtype == torch.bfloat16 and not on_cuda:
        return False, "bfloat16 is computed wrongly by the Triton CPU interpreter"
    return True, ""


def lowrank_linear(
    x: torch.Tensor,
    W: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    bias: torch.Tensor | None = None,
    scale: float = 1.0,
    *,
    backend: str = "auto",
) -> torch.Tensor:
    """``y = x W + scale · (x A) B (+ bias)``.

    Args:
        x: ``[..., d_in]``.
        W: ``[d_in, d_out]`` base weight (often frozen).
        A: ``[d_in, r]``; B: ``[r, d_out]`` (the low-rank factors).
        bias: ``[d_out]`` or None.
        scale: factor of the low-rank branch (e.g. LoRA's ``alpha / r``).
        backend: ``"auto"``, ``"torch"`` or ``"triton"``.

    Returns:
        ``[..., d_out]`` in the dtype of ``x``; all tensors share dtype and device.
    """
    check_lowrank_args(x, W, A, B, bias, scale)
    tensors = [t for t in (x, W, A, B, bias) if t is not None]
    supported, reason = triton_supports(x.dtype, x.is_cuda)
    chosen = select_backend("lowrank_linear", backend, *tensors, supported=supported,
                            reason=reason)
    if chosen == "torch":
        return lowrank_linear_ref(x, W, A, B, bias, scale)
    from subspace_core.ops.lowrank_linear import triton as _impl

    return _impl.lowrank_linear_triton(x, W, A, B, bias, scale)


def svd_linear(
    x: torch.Tensor,
    U: torch.Tensor,
    S: torch.Tensor,
    Vh: torch.Tensor,
    bias: torch.Tensor | None = None,
    *,
    backend: str = "auto",
) -> torch.Tensor:
    """``y = x U diag(S) Vh (+ bias)`` (the weight in singular-value form).

    Args:
        x: ``[..., d_in]``.
        U: ``[d_in, k]``; S: ``[k]``; Vh: ``[k, d_out]`` — ``torch.linalg.svd(W,
            full_matrices=False)`` of a ``[d_in, d_out]`` weight, possibly truncated to k.
        bias: ``[d_out]`` or None.
        backend: ``"auto"``, ``"torch"`` or ``"triton"``.

    Returns:
        ``[..., d_out]`` in the dtype of ``x``; all tensors share dtype and device.
    """
    check_svd_args(x, U, S, Vh, bias)
    tensors = [t for t in (x, U, S, Vh, bias) if t is not None]
    supported, reason = triton_supports(x.dtype, x.is_cuda)
    chosen = select_backend("svd_linear", backend, *tensors, supported=supported,
                            reason=reason)
    if chosen == "torch":
        return svd_linear_ref(x, U, S, Vh, bias)
    from subspace_core.ops.lowrank_linear import triton as _impl

    return _impl.svd_linear_triton(x, U, S, Vh, bias)
