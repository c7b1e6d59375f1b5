"""``selective_scan``: the Mamba-1 selective state-space scan, forward and backward.

Public entry point :func:`selective_scan` validates its inputs and dispatches to the
pure-PyTorch reference (:func:`selective_scan_ref`, the spec; maths and shapes in
``reference.py``) or to the Triton kernels (``triton.py``, registered as the custom ops
``torch.ops.subzoo.selective_scan_fwd`` / ``selective_scan_bwd``). The Triton module is
imported only when chosen. Both backends are differentiable in every tensor argument;
the Triton backward is deterministic (no atomics: partial sums are reduced in torch).
"""

from __future__ import annotations

import torch

from subspace_core.ops._dispatch import select_backend
from subspace_core.ops.selective_scan.reference import check_inputs, selective_scan_ref

__all__ = ["selective_scan", "selective_scan_ref", "triton_supports"]

#: Dtypes the kernels read and write (the arithmetic is always float32).
TRITON_DTYPES = (torch.float16, torch.bfloat16, torch.float32)
#: Largest state size N of the kernels (the state tile is held in registers).
TRITON_MAX_N = 256


def triton_supports(*tensors: torch.Tensor, n: int) -> tuple[bool, str]:
    """Whether the kernels handle these inputs (state size ``n``), and why not."""
    for t in tensors:
        if t.dtype not in TRITON_DTYPES:
            return False, f"dtype {t.dtype} (supported: float16, bfloat16, float32)"
        if t.dtype == torch.bfloat16 and not t.is_cuda:
            return False, "bfloat16 is computed wrongly by the Triton CPU interpreter"
    if n > TRITON_MAX_N:
        return False, f"state size N={n} > {TRITON_MAX_N}"
    return True, ""


def selective_scan(
    u: torch.Tensor,
    delta: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    D: torch.Tensor | None = None,
    z: torch.Tensor | None = None,
    delta_bias: torch.Tensor | None = None,
    delta_softplus: bool = False,
    initial_state: torch.Tensor | None = None,
    return_final_state: bool = False,
    *,
    backend: str = "auto",
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Mamba-1 selective scan ``h_t = exp(Δ_t A) h_{t-1} + Δ_t B_t u_t``, ``y_t = C_t h_t + D u_t``.

    Args:
        u: input ``[batch, dim, L]``.
        delta: step sizes ``[batch, dim, L]`` (before ``delta_bias`` and softplus).
        A: state matrix ``[dim, N]`` (real; Mamba stores ``-exp(A_log)``).
        B, C: input-dependent projections ``[batch, N, L]``.
        D: skip ``[dim]`` or None.
        z: gate ``[batch, dim, L]`` or None: ``out = y · silu(z)``.
        delta_bias: ``[dim]`` added to delta, or None.
        delta_softplus: apply softplus to ``delta + delta_bias``.
        initial_state: ``[batch, dim, N]`` state before the first step, or None (zeros).
        return_final_state: also return the float32 state after the last step (pass it as
            the next call's ``initial_state`` to scan a sequence in pieces).
        backend: ``"auto"``, ``"triton"`` or ``"torch"`` (see ``subspace_core.ops``).

    Returns:
        ``out [batch, dim, L]`` in u's dtype, or ``(out, final_state [batch, dim, N])``.
    """
    _, _, _, n = check_inputs(u, delta, A, B, C, D, z, delta_bias, initial_state)
    tensors = [t for t in (u, delta, A, B, C, D, z, delta_bias, initial_state) if t is not None]
    supported, reason = triton_supports(*tensors, n=n)
    chosen = select_backend("selective_scan", backend, *tensors, supported=supported,
                            reason=reason)
    kwargs = dict(D=D, z=z, delta_bias=delta_bias, delta_softplus=delta_softplus,
                  initial_state=initial_state, return_final_state=return_final_state)
    if chosen == "torch":
        return selective_scan_ref(u, delta, A, B, C, **kwargs)
    from subspace_core.ops.selective_scan.triton import selective_scan_triton

    return selective_scan_triton(u, delta, A, B, C, **kwargs)
