"""Reference (pure PyTorch) of ``projected_adam``: one GaLore / Fira optimizer step.

This module is the spec of the op; the Triton backend is tested against it.

Shapes (``W`` is ``[m, n]``, ``r`` is the rank of the basis ``P``)::

    side     P        R = projected G   M, V (Adam moments)   back-projection of X
    "left"   [m, r]   Pᵀ G    [r, n]    [r, n]                P X     [m, n]
    "right"  [n, r]   G P     [m, r]    [m, r]                X Pᵀ    [m, n]

GaLore's ``proj_type="std"`` picks the side by shape so that the basis spans the smaller
dimension: ``"right"`` when ``m >= n``, else ``"left"`` (:func:`projection_side`).

Maths of one step ``t`` (1-based; everything is computed in float32)::

    R  = project(G)
    M ← β1 M + (1 − β1) R
    V ← β2 V + (1 − β2) R²
    N  = m̂ / (√v̂ + ε),   m̂ = M / (1 − β1ᵗ),  v̂ = V / (1 − β2ᵗ)      (torch.optim.AdamW)
    D  = α · back(N)                                                  (GaLore)
    W ← W · (1 − lr · wd) − lr · D                                    (decoupled decay first,
                                                                       as torch.optim.AdamW)

Fira (enabled by passing ``fira_state``) adds the out-of-subspace gradient, rescaled::

    S  = G − back(R)                      the residual outside span(P) (not scaled by α)
    φ  = ‖N_j‖ / (‖R_j‖ + 1e-8)           one factor per vector j of the kept dimension:
                                          per column of R for "left" (φ ∈ ℝⁿ scales the
                                          columns of S), per row of R for "right" (φ ∈ ℝᵐ
                                          scales the rows of S)
    ν  = ‖φ ⊙ S‖_F / c_t,  c_t = √(1 − β2ᵗ) / (1 − β1ᵗ)
    s  = γ / max(ν / (ν_prev + 1e-8), γ)  if ν_prev > 0 else 1        norm-growth limiter
    ν_prev ← s · ν                        (stored in ``fira_state``)
    D  = α · back(N) + s · φ ⊙ S

How this relates to the Fira paper (Chen et al., 2024, arXiv:2410.01623) and its code
(github.com/xichen-fy/Fira, ``optimizer_torch/fira_adamw.py``):

* φ is column-level (one factor per column of R, i.e. per vector of the dimension the
  projection keeps), as in the paper and the official code (``norm_dim`` there reduces over
  the rank dimension of R whenever r is the smaller one).
* The official code folds Adam's bias correction into the step size, so its φ and its
  limiter see ``M / (√V + ε)`` without the factor c_t. Here N carries the bias correction
  (so that with ``P = I`` the op is exactly ``torch.optim.AdamW``), φ therefore carries c_t,
  and the limiter divides it back out (ν above). Without that, the bias-correction schedule
  alone grows ‖φ S‖ by up to 1.2 % per step around t ≈ 30 (default betas) and would trip
  γ = 1.01 where Fira does not. The only remaining difference to the official code is
  where ε enters (``m̂ / (√v̂ + ε)`` here, ``M / (√V + ε)`` there), as between
  ``torch.optim.AdamW`` and Hugging Face's AdamW.
* The residual is the paper's ``S = G − P R``. The official code computes
  ``G − α P R`` (its ``project_back`` applies α); the two agree for α = 1.
* α scales only the in-subspace part; the residual is applied with the learning rate
  alone, as in the paper and the code.
* The limiter is the code's: ``limiter = max(ν / (ν_prev + 1e-8), γ) / γ``, divide S by it,
  remember ``ν / limiter``. A ``fira_state`` of 0 (the initial value) means "no previous
  step": nothing is limited and ν is stored.
* Decoupled weight decay is applied to the *old* weights (``torch.optim.AdamW``'s order);
  GaLore's and Fira's code apply it after the update, which differs by O(lr² · wd).

The op is an optimizer step: it runs under ``torch.no_grad()`` and has no autograd formula.
"""

from __future__ import annotations

import math

import torch

__all__ = [
    "FIRA_GAMMA",
    "SIDES",
    "bias_corrections",
    "check_inputs",
    "fira_limiter_scale",
    "projected_adam_ref",
    "projection_side",
]

#: Valid values of ``side``.
SIDES = ("left", "right")
#: Fira's norm-growth limit γ (the paper's value).
FIRA_GAMMA = 1.01
#: Added to ‖R_j‖ and to the previous norm, as in the Fira code.
_FIRA_TINY = 1e-8
_FLOATS = (torch.float32, torch.float16, torch.bfloat16)


def projection_side(shape: tuple[int, ...] | torch.Size) -> str:
    """GaLore's ``"std"`` rule: ``"right"`` (P is ``[n, r]``) when ``m >= n``, else ``"left"``.

    The basis then spans the smaller dimension of the ``[m, n]`` weight, which keeps P and
    the moments ``[m, r]`` / ``[r, n]`` as small as possible.
    """
    if len(shape) != 2:
        raise ValueError(f"shape: expected a 2-D weight shape (m, n), got {tuple(shape)}")
    m, n = shape
    return "right" if m >= n else "left"


def _dtype_names(dtypes) -> str:
    return ", ".join(str(d).removeprefix("torch.") for d in dtypes)


def check_inputs(
    W: torch.Tensor,
    G: torch.Tensor,
    P: torch.Tensor,
    M: torch.Tensor,
    V: torch.Tensor,
    *,
    step: int,
    side: str,
    beta1: float,
    beta2: float,
    fira_state: torch.Tensor | None,
    fira_gamma: float,
) -> int:
    """Validate the arguments of ``projected_adam``; return the rank ``r``.

    Every error names the argument, what was expected and what was given.
    """
    if side not in SIDES:
        raise ValueError(f"side: expected one of {SIDES}, got {side!r}")
    if isinstance(step, bool) or not isinstance(step, int) or step < 1:
        raise ValueError(f"step: expected an int >= 1 (1-based, for bias correction), got {step!r}")
    for name, beta in (("beta1", beta1), ("beta2", beta2)):
        if not 0.0 <= beta < 1.0:
            raise ValueError(f"{name}: expected a value in [0, 1), got {beta!r}")
    if not fira_gamma >= 1.0:
        raise ValueError(f"fira_gamma: expected a growth limit >= 1, got {fira_gamma!r}")
    for name, t in (("W", W), ("G", G), ("P", P), ("M", M), ("V", V)):
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{name}: expected a torch.Tensor, got {type(t).__name__}")
        if t.dim() != 2:
            raise ValueError(f"{name}: expected a 2-D tensor, got shape {tuple(t.shape)}")
    for name, t in (("W", W), ("G", G), ("P", P)):
        if t.dtype not in _FLOATS:
            raise TypeError(f"{name}: expected dtype {_dtype_names(_FLOATS)}, got {t.dtype}")
    m, n = W.shape
    if G.shape != W.shape:
        raise ValueError(f"G: expected shape {(m, n)} (the shape of W), got {tuple(G.shape)}")
    basis_rows, dim_name = (m, "m") if side == "left" else (n, "n")
    r = P.shape[1]
    if P.shape[0] != basis_rows or not 1 <= r <= basis_rows:
        raise ValueError(
            f"P: expected shape ({dim_name}={basis_rows}, r) with 1 <= r <= {basis_rows} for "
            f"side={side!r} and W of shape {(m, n)}, got {tuple(P.shape)}"
        )
    moment_shape = (r, n) if side == "left" else (m, r)
    for name, t in (("M", M), ("V", V)):
        if t.shape != moment_shape:
            raise ValueError(
                f"{name}: expected shape {moment_shape} (the projected gradient for "
                f"side={side!r}), got {tuple(t.shape)}"
            )
        if t.dtype != torch.float32:
            raise TypeError(f"{name}: expected dtype torch.float32, got {t.dtype}")
    if fira_state is not None:
        if not isinstance(fira_state, torch.Tensor):
            raise TypeError(
                f"fira_state: expected a torch.Tensor or None, got {type(fira_state).__name__}"
            )
        if fira_state.shape != () or fira_state.dtype != torch.float32:
            raise ValueError(
                "fira_state: expected a float32 scalar tensor (shape ()), got "
                f"{fira_state.dtype} of shape {tuple(fira_state.shape)}"
            )
    named = [("G", G), ("P", P), ("M", M), ("V", V)]
    if fira_state is not None:
        named.append(("fira_state", fira_state))
    for name, t in named:
        if t.device != W.device:
            raise ValueError(f"{name}: expected device {W.device} (the device of W), got {t.device}")
    return r


def fira_limiter_scale(nu: torch.Tensor, prev: torch.Tensor, gamma: float) -> torch.Tensor:
    """Fira's norm-growth limiter factor ``s`` (a float32 scalar tensor, no host sync).

    ``nu`` is this step's bias-correction-free residual norm, ``prev`` the stored one (0 =
    no previous step). ``s = γ / max(nu / (prev + 1e-8), γ)``, or 1 without history.
    """
    ratio = nu / (prev + _FIRA_TINY)
    limited = gamma / torch.clamp(ratio, min=gamma)
    return torch.where(prev > 0, limited, torch.ones_like(limited))


def bias_corrections(step: int, beta1: float, beta2: float) -> tuple[float, float]:
    """``(1 − β1ᵗ, 1 − β2ᵗ)``."""
    return 1.0 - beta1**step, 1.0 - beta2**step


@torch.no_grad()
def projected_adam_ref(
    W: torch.Tensor,
    G: torch.Tensor,
    P: torch.Tensor,
    M: torch.Tensor,
    V: torch.Tensor,
    *,
    step: int,
    side: str,
    lr: float = 1e-3,
    beta1: float = 0.9,
    beta2: float = 0.999,
    eps: float = 1e-8,
    weight_decay: float = 0.0,
    alpha: float = 1.0,
    fira_state: torch.Tensor | None = None,
    fira_gamma: float = FIRA_GAMMA,
) -> None:
    """One GaLore (or, with ``fira_state``, Fira) Adam step, in place. Returns None.

    Args:
        W: weight ``[m, n]`` (float32/float16/bfloat16), updated in place.
        G: its gradient ``[m, n]`` (float32/float16/bfloat16).
        P: orthonormal basis, ``[m, r]`` for ``side="left"``, ``[n, r]`` for ``"right"``.
        M: first moment of the projected gradient, float32, ``[r, n]`` (left) or
            ``[m, r]`` (right); updated in place.
        V: second moment, same shape and dtype as ``M``; updated in place.
        step: 1-based step count ``t`` of these moments (bias correction).
        side: ``"left"`` (R = Pᵀ G) or ``"right"`` (R = G P); see :func:`projection_side`.
        lr: learning rate.
        beta1, beta2, eps: Adam's coefficients (``torch.optim.AdamW`` conventions).
        weight_decay: decoupled weight decay ``wd`` (``W ← W (1 − lr wd)`` first).
        alpha: GaLore's scale of the back-projected update.
        fira_state: enables Fira; a float32 scalar tensor holding the previous step's
            limited residual norm (start from ``torch.zeros(())``); updated in place.
        fira_gamma: Fira's norm-growth limit γ.

    See the module docstring for the maths. No autograd: this is an optimizer step.
    """
    check_inputs(W, G, P, M, V, step=step, side=side, beta1=beta1, beta2=beta2,
                 fira_state=fira_state, fira_gamma=fira_gamma)
    left = side == "left"
    g = G.float()
    p = P.float()

    def back(x: torch.Tensor) -> torch.Tensor:
        return p @ x if left else x @ p.T

    R = p.T @ g if left else g @ p
    M.mul_(beta1).add_(R, alpha=1.0 - beta1)
    V.mul_(beta2).addcmul_(R, R, value=1.0 - beta2)
    bc1, bc2 = bias_corrections(step, beta1, beta2)
    N = (M / bc1) / ((V / bc2).sqrt() + eps)
    update = back(N).mul_(alpha)

    if fira_state is not None:
        residual = g - back(R)
        rank_dim = 0 if left else 1  # reduce over r: one factor per kept vector
        phi = torch.linalg.vector_norm(N, dim=rank_dim) / (
            torch.linalg.vector_norm(R, dim=rank_dim) + _FIRA_TINY
        )
        scaled = residual * (phi[None, :] if left else phi[:, None])
        nu = torch.linalg.vector_norm(scaled) / (math.sqrt(bc2) / bc1)
        scale = fira_limiter_scale(nu, fira_state, fira_gamma)
        fira_state.copy_(nu * scale)
        update.add_(scaled * scale)

    w = W.float()
    if weight_decay != 0.0:
        w.mul_(1.0 - lr * weight_decay)
    w.add_(update, alpha=-lr)
    W.copy_(w)
