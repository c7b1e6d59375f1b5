"""Linear recurrences ``h_t = a_t ⊙ h_{t-1} + b_t`` as a parallel (associative) scan in PyTorch.

The pairs ``(a, b)`` compose associatively: applying ``(a₁, b₁)`` then ``(a₂, b₂)`` is
``(a₂a₁, a₂b₁ + b₂)``. :func:`linear_scan` is the Hillis–Steele inclusive scan over that
operator: ⌈log₂ L⌉ rounds, each one vectorised over the whole sequence (O(L log L) work,
log depth), out of place so autograd differentiates through it. Works on real and complex
tensors. :func:`linear_scan_ref` is the sequential loop it is tested against.
"""

from __future__ import annotations

import torch

__all__ = ["linear_scan", "linear_scan_ref"]


def _check(a: torch.Tensor, b: torch.Tensor, dim: int) -> tuple[torch.Tensor, torch.Tensor]:
    if a.dim() != b.dim():
        a = a.expand_as(b)
    if dim < 0:
        dim += b.dim()
    if not 0 <= dim < b.dim():
        raise ValueError(f"dim: expected a dimension of b (shape {tuple(b.shape)}), got {dim}")
    return torch.broadcast_tensors(a, b)


def linear_scan(a: torch.Tensor, b: torch.Tensor, dim: int = -2,
                h0: torch.Tensor | None = None) -> torch.Tensor:
    """All states ``h_t = a_t h_{t-1} + b_t`` along ``dim`` (h₋₁ = ``h0`` or 0).

    Args:
        a: decays, broadcastable to b.
        b: inputs; the scanned dimension is ``dim``.
        h0: state before the first step, b's shape without ``dim``, or None.

    Returns the states, shape of b.
    """
    a, b = _check(a, b, dim)
    dim = dim % b.dim()
    if h0 is not None:
        first = b.narrow(dim, 0, 1) + a.narrow(dim, 0, 1) * h0.unsqueeze(dim)
        b = torch.cat([first, b.narrow(dim, 1, b.shape[dim] - 1)], dim)
    L = b.shape[dim]
    offset = 1
    while offset < L:
        # element t absorbs the composed window ending at t − offset (identity before 0)
        a_prev = torch.cat([torch.ones_like(a.narrow(dim, 0, offset)),
                            a.narrow(dim, 0, L - offset)], dim)
        b_prev = torch.cat([torch.zeros_like(b.narrow(dim, 0, offset)),
                            b.narrow(dim, 0, L - offset)], dim)
        b = a * b_prev + b
        a = a * a_prev
        offset *= 2
    return b


def linear_scan_ref(a: torch.Tensor, b: torch.Tensor, dim: int = -2,
                    h0: torch.Tensor | None = None) -> torch.Tensor:
    """Sequential loop computing the same as :func:`linear_scan`."""
    a, b = _check(a, b, dim)
    dim = dim % b.dim()
    h = torch.zeros_like(b.select(dim, 0)) if h0 is None else h0
    out = []
    for t in range(b.shape[dim]):
        h = a.select(dim, t) * h + b.select(dim, t)
        out.append(h)
    return torch.stack(out, dim)
