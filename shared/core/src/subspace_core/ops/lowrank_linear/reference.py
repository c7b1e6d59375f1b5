"""Linear layers with a low-rank part: the pure-PyTorch references (the spec).

Convention: weights are stored ``[d_in, d_out]`` and applied as ``x @ W`` (the maths
convention; ``nn.Linear.weight`` is ``[d_out, d_in]``, so pass ``linear.weight.T``, a
view, no copy). ``x`` is ``[..., d_in]``; every leading dim is a batch dim.

``lowrank_linear`` (LoRA-style, or a frozen base plus a trained low-rank update)::

    y = x W + s · (x A) B + b          W [d_in, d_out], A [d_in, r], B [r, d_out], b [d_out]

Gradients, with ``X = x`` flattened to ``[M, d_in]``, ``G = ∂L/∂y`` flattened to
``[M, d_out]``, ``H = X A`` and ``P = s · G Bᵀ`` (``[M, r]``)::

    ∂x = G Wᵀ + P Aᵀ      ∂W = Xᵀ G      ∂A = Xᵀ P      ∂B = s · Hᵀ G      ∂b = Σ_m G

``svd_linear`` (SVFit / SST: the singular values ``σ`` are trained; ``U``, ``Vh`` may be
frozen)::

    y = x U diag(σ) Vh + b             U [d_in, k], σ [k], Vh [k, d_out], b [d_out]

i.e. the layer's weight is ``W = U diag(σ) Vh``; ``torch.linalg.svd(W, full_matrices=False)``
returns ``(U, σ, Vh)`` in exactly this layout (for an ``nn.Linear``, take the SVD of
``linear.weight.T``). Gradients, with ``H = X U`` and ``T = G Vhᵀ`` (``[M, k]``)::

    ∂x = (T ⊙ σ) Uᵀ    ∂U = Xᵀ (T ⊙ σ)    ∂σ = Σ_m H ⊙ T    ∂Vh = diag(σ) Hᵀ G    ∂b = Σ_m G

(``⊙ σ`` scales the k columns.) The references below are plain compositions of torch
matmuls, so torch's autograd gives exactly these gradients.
"""

from __future__ import annotations

import torch

__all__ = ["check_lowrank_args", "check_svd_args", "lowrank_linear_ref", "svd_linear_ref"]


def _shape(t: torch.Tensor) -> tuple[int, ...]:
    return tuple(t.shape)


def _check_common(x: torch.Tensor, named: dict[str, torch.Tensor | None]) -> None:
    tensors = {"x": x, **named}
    for name, t in tensors.items():
        if t is not None and not isinstance(t, torch.Tensor):
            raise TypeError(f"{name}: expected a torch.Tensor, got {type(t).__name__}")
    if not x.is_floating_point():
        raise TypeError(f"x: expected a floating dtype, got {x.dtype}")
    if x.dim() < 1:
        raise ValueError(f"x: expected shape [..., d_in], got {_shape(x)}")
    for name, t in named.items():
        if t is None:
            continue
        if t.dtype != x.dtype:
            raise TypeError(f"{name}: expected dtype {x.dtype} (the dtype of x), got {t.dtype}")
        if t.device != x.device:
            raise ValueError(f"{name}: expected device {x.device} (the device of x), "
                             f"got {t.device}")


def _check_bias(bias: torch.Tensor | None, d_out: int) -> None:
    if bias is not None and _shape(bias) != (d_out,):
        raise ValueError(f"bias: expected shape ({d_out},) (d_out), got {_shape(bias)}")


def check_lowrank_args(
    x: torch.Tensor, W: torch.Tensor, A: torch.Tensor, B: torch.Tensor,
    bias: torch.Tensor | None = None, scale: float = 1.0,
) -> tuple[int, int, int]:
    """Validate :func:`lowrank_linear_ref` arguments; return ``(d_in, d_out, r)``."""
    _check_common(x, {"W": W, "A": A, "B": B, "bias": bias})
    d_in = x.shape[-1]
    if W.dim() != 2 or W.shape[0] != d_in:
        raise ValueError(f"W: expected shape ({d_in}, d_out) (d_in of x first; pass "
                         f"nn.Linear.weight.T), got {_shape(W)}")
    d_out = W.shape[1]
    if A.dim() != 2 or A.shape[0] != d_in:
        raise ValueError(f"A: expected shape ({d_in}, r) (d_in of x first), got {_shape(A)}")
    r = A.shape[1]
    if _shape(B) != (r, d_out):
        hint = (f"; rank mismatch: A has r={r} columns, B has {B.shape[0]} rows"
                if B.dim() == 2 and B.shape[0] != r else "")
        raise ValueError(f"B: expected shape ({r}, {d_out}) (r of A, d_out of W), "
                         f"got {_shape(B)}{hint}")
    _check_bias(bias, d_out)
    if isinstance(scale, torch.Tensor) or not isinstance(scale, (int, float)):
        raise TypeError(f"scale: expected a Python float, got {type(scale).__name__}")
    return d_in, d_out, r


def check_svd_args(
    x: torch.Tensor, U: torch.Tensor, S: torch.Tensor, Vh: torch.Tensor,
    bias: torch.Tensor | None = None,
) -> tuple[int, int, int]:
    """Validate :func:`svd_linear_ref` arguments; return ``(d_in, d_out, k)``."""
    _check_common(x, {"U": U, "S": S, "Vh": Vh, "bias": bias})
    d_in = x.shape[-1]
    if U.dim() != 2 or U.shape[0] != d_in:
        raise ValueError(f"U: expected shape ({d_in}, k) (d_in of x first), got {_shape(U)}")
    k = U.shape[1]
    if _shape(S) != (k,):
        raise ValueError(f"S: expected shape ({k},) (k of U), got {_shape(S)}")
    if Vh.dim() != 2 or Vh.shape[0] != k:
        raise ValueError(f"Vh: expected shape ({k}, d_out) (k of U), got {_shape(Vh)}")
    d_out = Vh.shape[1]
    _check_bias(bias, d_out)
    return d_in, d_out, k


def lowrank_linear_ref(
    x: torch.Tensor, W: torch.Tensor, A: torch.Tensor, B: torch.Tensor,
    bias: torch.Tensor | None = None, scale: float = 1.0,
) -> torch.Tensor:
    """``y = x W + scale · (x A) B (+ bias)``.

    Args:
        x: ``[..., d_in]``.
        W: ``[d_in, d_out]`` base weight (may be frozen).
        A: ``[d_in, r]`` down projection.
        B: ``[r, d_out]`` up projection.
        bias: ``[d_out]`` or None.
        scale: the low-rank branch's factor ``s`` (e.g. LoRA's ``alpha / r``).

    Returns:
        ``[..., d_out]`` in the dtype of ``x``.
    """
    check_lowrank_args(x, W, A, B, bias, scale)
    y = x @ W + scale * ((x @ A) @ B)
    return y if bias is None else y + bias


def svd_linear_ref(
    x: torch.Tensor, U: torch.Tensor, S: torch.Tensor, Vh: torch.Tensor,
    bias: torch.Tensor | None = None,
) -> torch.Tensor:
    """``y = x U diag(S) Vh (+ bias)``.

    Args:
        x: ``[..., d_in]``.
        U: ``[d_in, k]`` left factor (columns: left singular vectors of ``W``).
        S: ``[k]`` singular values.
        Vh: ``[k, d_out]`` right factor (rows: right singular vectors of ``W``).
        bias: ``[d_out]`` or None.

    Returns:
        ``[..., d_out]`` in the dtype of ``x``.
    """
    check_svd_args(x, U, S, Vh, bias)
    y = ((x @ U) * S) @ Vh
    return y if bias is None else y + bias
