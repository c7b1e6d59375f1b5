"""Reference (pure PyTorch) of ``selective_scan``: the Mamba-1 selective state-space scan.

This module is the spec of the op; the Triton backend is tested against it, and it is
itself tested against an independent per-element loop.

Shapes (``batch`` = b, channels ``dim`` = d, sequence length L, state size N)::

    u, delta, z        [b, d, L]     input, step size (before bias/softplus), gate
    A                  [d, N]        real state matrix (diagonal per channel, usually < 0)
    B, C               [b, N, L]     input-dependent input and output projections
    D, delta_bias      [d]
    initial_state      [b, d, N]     state before the first step (default zeros)
    out                [b, d, L]     dtype of u
    final_state        [b, d, N]     float32 (float64 for float64 u), state after the last step

Maths (computed in float32, or float64 for float64 inputs; for each b, d and n)::

    Δ_t   = δ_t + delta_bias            (then softplus(Δ_t) if delta_softplus)
    h_t   = exp(Δ_t A) ⊙ h_{t-1} + Δ_t B_t u_t          h_{-1} = initial_state
    y_t   = Σ_n C_t[n] h_t[n] + D u_t
    out_t = y_t · silu(z_t)             (only when z is given)

This is Mamba's zero-order-hold discretisation of A with the simplified (Euler) input
matrix ``Δ B``, exactly as in ``mamba_ssm.ops.selective_scan_interface.selective_scan_ref``.
Only real A with B and C of shape ``[b, N, L]`` are supported (Mamba-1's configuration).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["check_inputs", "selective_scan_ref"]

_FLOATS = (torch.float32, torch.float16, torch.bfloat16, torch.float64)


def _need_tensor(name: str, t, dims: int) -> None:
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name}: expected a torch.Tensor, got {type(t).__name__}")
    if t.dim() != dims:
        raise ValueError(f"{name}: expected a {dims}-D tensor, got shape {tuple(t.shape)}")
    if t.dtype not in _FLOATS:
        raise TypeError(f"{name}: expected a real floating dtype, got {t.dtype}")


def check_inputs(
    u: torch.Tensor,
    delta: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    D: torch.Tensor | None = None,
    z: torch.Tensor | None = None,
    delta_bias: torch.Tensor | None = None,
    initial_state: torch.Tensor | None = None,
) -> tuple[int, int, int, int]:
    """Validate the arguments of ``selective_scan``; return ``(batch, dim, L, N)``.

    Every error names the argument, what was expected and what was given.
    """
    _need_tensor("u", u, 3)
    b, d, L = u.shape
    _need_tensor("A", A, 2)
    if A.shape[0] != d:
        raise ValueError(f"A: expected shape (dim={d}, N), got {tuple(A.shape)}")
    n = A.shape[1]
    if n < 1:
        raise ValueError(f"A: expected a state size N >= 1, got shape {tuple(A.shape)}")
    expected = {"delta": (b, d, L), "B": (b, n, L), "C": (b, n, L), "D": (d,), "z": (b, d, L),
                "delta_bias": (d,), "initial_state": (b, d, n)}
    named = (("delta", delta), ("B", B), ("C", C), ("D", D), ("z", z),
             ("delta_bias", delta_bias), ("initial_state", initial_state))
    for name, t in named:
        if t is None:
            if name in ("delta", "B", "C"):
                raise TypeError(f"{name}: expected a torch.Tensor, got None")
            continue
        _need_tensor(name, t, len(expected[name]))
        if tuple(t.shape) != expected[name]:
            raise ValueError(f"{name}: expected shape {expected[name]}, got {tuple(t.shape)}")
        if t.device != u.device:
            raise ValueError(f"{name}: expected device {u.device} (the device of u), got {t.device}")
    if A.device != u.device:
        raise ValueError(f"A: expected device {u.device} (the device of u), got {A.device}")
    return b, d, L, n


def selective_scan_ref(
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
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Selective scan, sequential over L in float32 (differentiable by autograd).

    Args:
        u: input ``[b, d, L]``.
        delta: step sizes ``[b, d, L]`` (before ``delta_bias`` and softplus).
        A: state matrix ``[d, N]`` (real).
        B, C: input-dependent projections ``[b, N, L]``.
        D: skip connection ``[d]`` or None.
        z: gate ``[b, d, L]`` or None (``out = y · silu(z)``).
        delta_bias: ``[d]`` added to delta, or None.
        delta_softplus: apply softplus to ``delta + delta_bias``.
        initial_state: ``[b, d, N]`` state before the first step, or None (zeros).
        return_final_state: also return the state after the last step.

    Returns:
        ``out [b, d, L]`` in u's dtype, or ``(out, final_state [b, d, N])`` (float32, or
        float64 for float64 inputs).
    """
    check_inputs(u, delta, A, B, C, D, z, delta_bias, initial_state)
    b, d, L = u.shape
    n = A.shape[1]
    # float32 accumulation whatever the input dtype; float64 stays float64 (gradcheck)
    acc = torch.float64 if u.dtype == torch.float64 else torch.float32
    uf, dt = u.to(acc), delta.to(acc)
    if delta_bias is not None:
        dt = dt + delta_bias.to(acc)[None, :, None]
    if delta_softplus:
        dt = F.softplus(dt)
    Af, Bf, Cf = A.to(acc), B.to(acc), C.to(acc)
    # The discretised operators for all steps at once, time-major so that each step's slice
    # is contiguous (strided [b, d, N] slices made every per-step multiply ~10x slower);
    # only the recurrence is sequential.
    dt_t, Bf_t = dt.permute(2, 0, 1), Bf.permute(2, 0, 1)        # [L, b, d], [L, b, N]
    decay = torch.exp(dt_t[..., None] * Af)                       # [L, b, d, N]
    drive = (dt_t * uf.permute(2, 0, 1))[..., None] * Bf_t[:, :, None, :]  # [L, b, d, N]
    h = u.new_zeros((b, d, n), dtype=acc) if initial_state is None else initial_state.to(acc)
    ys = []
    # unbind once: indexing ``decay[..., t]`` per step makes autograd scatter each step's
    # gradient into a zeroed full-length tensor (O(L²) backward); unbind's backward stacks
    for decay_t, drive_t, c_t in zip(decay.unbind(0), drive.unbind(0), Cf.unbind(-1),
                                     strict=True):
        h = decay_t * h + drive_t
        ys.append(torch.einsum("bdn,bn->bd", h, c_t))
    y = torch.stack(ys, dim=-1) if L > 0 else uf.new_zeros((b, d, 0))
    if D is not None:
        y = y + D.to(acc)[None, :, None] * uf
    if z is not None:
        y = y * F.silu(z.to(acc))
    out = y.to(u.dtype)
    return (out, h) if return_final_state else out
