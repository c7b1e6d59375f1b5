"""EoRA maths and layer: low-rank compensation of ``ΔW = W - W_c`` in the eigenspace of
the layer's input activations.

Notation (one linear layer): ``W [out, in]`` the original weight, ``W_c`` its compressed
version, ``ΔW = W - W_c``; ``X [N, in]`` the layer's inputs over ``N`` calibration tokens and
``X̃ = XᵀX [in, in]`` (summed, float64). The layer's output error on the calibration tokens
is ``ΔW Xᵀ`` and ``||M Xᵀ||_F² = tr(M X̃ Mᵀ)``, so the error that matters is ``ΔW`` measured
in the activation-weighted norm ``||M||_X̃ = ||M X̃^{1/2}||_F``.

**EoRA** (Liu et al., 2024, arXiv:2410.21271): eigendecompose ``X̃ = Q Λ Qᵀ``, set
``Q' = Q Λ^{1/2}`` (so ``Q' Q'ᵀ = X̃``), take the rank-``r`` truncated SVD
``ΔW Q' ≈ U_r Σ_r V_rᵀ`` and map it back: ``B = U_r Σ_r [out, r]``,
``A = V_rᵀ Q'⁻¹ [r, in]``. Then ``(ΔW - B A) Q' = ΔW Q' - U_r Σ_r V_rᵀ`` is the
Eckart-Young residual, so ``B A`` is the best rank-``r`` approximation of ``ΔW`` in
``||·||_X̃`` (never worse there than plain SVD), and the residual is orthogonal to
``U_r`` (``U_rᵀ (ΔW - B A) Q' = 0``). With ``X̃ ∝ I`` it *is* plain SVD.

Since ``V_rᵀ = Σ_r⁻¹ U_rᵀ ΔW Q'``, ``A = V_rᵀ Q'⁻¹ = Σ_r⁻¹ U_rᵀ ΔW`` and
``B A = U_r U_rᵀ ΔW``: EoRA projects ``ΔW`` onto the top-``r`` left singular subspace of
``ΔW Q'``, plain SVD onto that of ``ΔW``. The default ``solver="projection"`` computes ``A``
that way, without ``Λ^{-1/2}``; ``solver="inverse"`` uses ``Q'⁻¹ = Λ^{-1/2} Qᵀ`` literally
as the reference code (GPTQModel's ``eora_compute_lora``) does.

Tiny eigenvalues. LLM activations have eigenvalues spread over many decades, and with
fewer calibration tokens than ``in`` some are zero (or slightly negative from rounding).
Eigenvalues below ``eig_floor * λ_max`` are raised to that floor (the reference clamps
negative ones to the smallest positive one), which keeps ``Q'`` invertible and bounds the
entries of ``A`` by ``||ΔW|| / sqrt(eig_floor λ_max)``; an optional ridge ``damp`` adds
``damp * mean(λ)`` to every eigenvalue first. The covariance's overall scale does not
matter (a sum or a mean gives the same factors).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from subspace_core.linalg import robust_svd
from subspace_peft.adapters.base import AdapterLayer, InputCovariance, lowrank_forward

__all__ = [
    "EigenScaling",
    "EoRALinear",
    "LowRankFit",
    "activation_weighted_error",
    "as_eigen_scaling",
    "eigen_scaling",
    "eora_fit",
    "svd_fit",
    "weighted_residuals",
]

_F64 = torch.float64


def _check_delta(delta: torch.Tensor) -> torch.Tensor:
    if not isinstance(delta, torch.Tensor):
        raise TypeError(f"delta: expected a torch.Tensor, got {type(delta).__name__}")
    if delta.dim() != 2 or delta.numel() == 0:
        raise ValueError(f"delta: expected a non-empty [out, in] matrix, got shape "
                         f"{tuple(delta.shape)}")
    if not delta.is_floating_point():
        raise TypeError(f"delta: expected a floating dtype, got {delta.dtype}")
    d = delta.detach().to(_F64)
    if not bool(torch.isfinite(d).all()):
        raise ValueError("delta: contains NaN or inf")
    return d


def _check_rank(rank: int) -> int:
    if isinstance(rank, bool) or not isinstance(rank, int) or rank < 1:
        raise ValueError(f"rank: expected an int >= 1, got {rank!r}")
    return rank


# --------------------------------------------------------------------------- eigenspace
@dataclass(frozen=True)
class EigenScaling:
    """The eigenspace scaling ``Q' = Q Λ^{1/2}`` of one input covariance.

    Attributes:
        eigenvectors: ``Q [in, in]`` float64, orthonormal columns.
        eigenvalues: ``λ [in]`` float64, ascending, after damping and flooring (all > 0).
        num_floored: how many eigenvalues were raised to the floor.
    """

    eigenvectors: torch.Tensor
    eigenvalues: torch.Tensor
    num_floored: int

    @property
    def in_features(self) -> int:
        return self.eigenvalues.numel()

    @property
    def matrix(self) -> torch.Tensor:
        """``Q' = Q Λ^{1/2} [in, in]`` (``Q' Q'ᵀ`` = the floored covariance)."""
        return self.eigenvectors * self.eigenvalues.sqrt()[None, :]

    @property
    def inverse(self) -> torch.Tensor:
        """``Q'⁻¹ = Λ^{-1/2} Qᵀ [in, in]``."""
        return (self.eigenvectors / self.eigenvalues.sqrt()[None, :]).T

    def weigh(self, delta: torch.Tensor) -> torch.Tensor:
        """``delta Q' [out, in]`` (float64): a matrix in the activation-weighted coordinates,
        where the Frobenius norm is ``||delta X̃^{1/2}||_F``."""
        return delta.to(_F64) @ self.matrix


@torch.no_grad()
def eigen_scaling(covariance: torch.Tensor | InputCovariance, *, eig_floor: float = 1e-8,
                  damp: float = 0.0) -> EigenScaling:
    """Eigendecompose an input covariance ``X̃ [in, in]`` for EoRA (float64).

    Args:
        covariance: ``XᵀX`` as a symmetric PSD ``[in, in]`` tensor or an
            :class:`~subspace_peft.adapters.base.InputCovariance` (its ``xtx``).
        eig_floor: eigenvalues below ``eig_floor * λ_max`` are raised to it.
        damp: ridge ``damp * mean(λ)`` added to every eigenvalue before flooring.
    """
    c = covariance.xtx if isinstance(covariance, InputCovariance) else covariance
    if not isinstance(c, torch.Tensor):
        raise TypeError(f"covariance: expected a tensor or InputCovariance, got "
                        f"{type(covariance).__name__}")
    if c.dim() != 2 or c.shape[0] != c.shape[1] or c.shape[0] == 0:
        raise ValueError(f"covariance: expected a square [in, in] matrix, got shape "
                         f"{tuple(c.shape)}")
    if not 0.0 < float(eig_floor) < 1.0:
        raise ValueError(f"eig_floor: expected a fraction in (0, 1), got {eig_floor!r}")
    if not float(damp) >= 0.0:
        raise ValueError(f"damp: expected a value >= 0, got {damp!r}")
    c = c.detach().to(_F64)
    if not bool(torch.isfinite(c).all()):
        raise ValueError("covariance: contains NaN or inf")
    c = 0.5 * (c + c.T)  # accumulated sums are symmetric only up to rounding
    lam, q = torch.linalg.eigh(c)
    top = float(lam[-1])
    if top <= 0.0:
        raise ValueError("covariance: has no positive eigenvalue (no calibration input "
                         "reached this layer, or it was all zeros)")
    if damp:
        lam = lam + float(damp) * float(lam.clamp(min=0).mean())
        top = float(lam[-1])
    floor = float(eig_floor) * top
    floored = lam < floor
    lam = torch.where(floored, torch.full_like(lam, floor), lam)
    return EigenScaling(q, lam, int(floored.sum()))


def as_eigen_scaling(covariance: torch.Tensor | InputCovariance | EigenScaling, *,
                     eig_floor: float = 1e-8, damp: float = 0.0) -> EigenScaling:
    """``covariance`` itself if it already is an :class:`EigenScaling`, else
    :func:`eigen_scaling` of it."""
    if isinstance(covariance, EigenScaling):
        return covariance
    return eigen_scaling(covariance, eig_floor=eig_floor, damp=damp)


# --------------------------------------------------------------------------- fits
@dataclass(frozen=True)
class LowRankFit:
    """A rank-``R`` compensation ``ΔW ≈ B A`` whose rank-``r`` truncations (``r <= R``) are
    the leading ``r`` columns of ``B`` / rows of ``A`` (nested truncated SVDs).

    Attributes:
        lora_B: ``[out, R]`` float64 (``U_R Σ_R``).
        lora_A: ``[R, in]`` float64.
        singular_values: ``σ [R]`` of ``ΔW Q'`` (EoRA) or of ``ΔW`` (SVD), descending.
        basis: ``U_R [out, R]`` orthonormal; ``B_r A_r = U_r U_rᵀ ΔW`` for both methods
            (components with ``σ ≈ 0`` have zero ``B``/``A``).
        compensation: ``"eora"`` or ``"svd"``.
    """

    lora_B: torch.Tensor
    lora_A: torch.Tensor
    singular_values: torch.Tensor
    basis: torch.Tensor
    compensation: str

    @property
    def rank(self) -> int:
        return self.lora_A.shape[0]

    def factors(self, rank: int | None = None, dtype: torch.dtype | None = None
                ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(B [out, r], A [r, in])`` of the rank-``r`` truncation (``r <= R``; all when
        None), in ``dtype`` (float64 when None)."""
        r = self.rank if rank is None else _check_rank(rank)
        if r > self.rank:
            raise ValueError(f"rank: expected at most the fitted rank {self.rank}, got {r}")
        B, A = self.lora_B[:, :r], self.lora_A[:r]
        return (B, A) if dtype is None else (B.to(dtype), A.to(dtype))

    def delta(self, rank: int | None = None) -> torch.Tensor:
        """``B_r A_r [out, in]`` (float64)."""
        B, A = self.factors(rank)
        return B @ A


def _truncate(rank: int, shape: Sequence[int]) -> int:
    # A rank above min(out, in) adds nothing: cap it (the compensation is then exact).
    return min(_check_rank(rank), min(shape))


def _nonzero(s: torch.Tensor, shape: Sequence[int]) -> torch.Tensor:
    """Mask of singular values above the numerical-rank tolerance of an SVD of ``shape``."""
    if s.numel() == 0 or float(s[0]) == 0.0:
        return torch.zeros_like(s, dtype=torch.bool)
    tol = float(s[0]) * max(shape) * torch.finfo(_F64).eps
    return s > tol


@torch.no_grad()
def svd_fit(delta: torch.Tensor, rank: int) -> LowRankFit:
    """Plain truncated SVD of ``delta [out, in]`` at ``rank`` (capped at ``min(out, in)``):
    ``B = U_r Σ_r``, ``A = V_rᵀ`` (the baseline EoRA is compared with)."""
    d = _check_delta(delta)
    r = _truncate(rank, d.shape)
    U, S, Vh = robust_svd(d)
    keep = _nonzero(S[:r], d.shape).to(_F64)
    B = U[:, :r] * (S[:r] * keep)[None, :]
    A = Vh[:r] * keep[:, None]
    return LowRankFit(B, A, S[:r].clone(), U[:, :r].clone(), "svd")


@torch.no_grad()
def eora_fit(delta: torch.Tensor,
             covariance: torch.Tensor | InputCovariance | EigenScaling,
             rank: int, *, eig_floor: float = 1e-8, damp: float = 0.0,
             solver: str = "projection") -> LowRankFit:
    """EoRA: rank-``r`` compensation of ``delta = W - W_c [out, in]`` that is optimal in the
    activation-weighted norm ``||M X̃^{1/2}||_F`` (see the module docstring).

    Args:
        delta: compression error ``ΔW [out, in]``.
        covariance: the layer's input covariance ``X̃ = XᵀX [in, in]`` (tensor or
            :class:`~subspace_peft.adapters.base.InputCovariance`), or its precomputed
            :class:`EigenScaling` (then ``eig_floor``/``damp`` are not used).
        rank: ``r``, capped at ``min(out, in)``.
        eig_floor, damp: eigenvalue handling (:func:`eigen_scaling`).
        solver: ``"projection"`` (``A = Σ_r⁻¹ U_rᵀ ΔW``) or ``"inverse"``
            (``A = V_rᵀ Q'⁻¹``); equal up to rounding.

    Returns:
        :class:`LowRankFit` with ``B = U_r Σ_r``, ``A`` as above, ``σ`` of ``ΔW Q'``.
    """
    d = _check_delta(delta)
    if solver not in ("projection", "inverse"):
        raise ValueError(f"solver: expected 'projection' or 'inverse', got {solver!r}")
    scaling = as_eigen_scaling(covariance, eig_floor=eig_floor, damp=damp)
    if scaling.in_features != d.shape[1]:
        raise ValueError(f"covariance: expected [{d.shape[1]}, {d.shape[1]}] (in_features of "
                         f"delta), got [{scaling.in_features}, {scaling.in_features}]")
    q = scaling.eigenvectors.to(d.device)
    lam = scaling.eigenvalues.to(d.device)
    r = _truncate(rank, d.shape)
    weighted = d @ (q * lam.sqrt()[None, :])  # ΔW Q'
    U, S, Vh = robust_svd(weighted)
    U, S, Vh = U[:, :r], S[:r], Vh[:r]
    keep = _nonzero(S, weighted.shape)
    if solver == "projection":
        inv_s = torch.where(keep, 1.0 / torch.where(keep, S, 1.0), 0.0)
        A = inv_s[:, None] * (U.T @ d)
    else:
        A = (Vh / lam.sqrt()[None, :]) @ q.T * keep.to(_F64)[:, None]
    B = U * (S * keep.to(_F64))[None, :]
    return LowRankFit(B, A, S.clone(), U.clone(), "eora")


@torch.no_grad()
def weighted_residuals(fit: LowRankFit, weighted_delta: torch.Tensor,
                       ranks: Sequence[int]) -> list[float]:
    """Relative activation-weighted residuals ``||(ΔW - B_r A_r) Q'||_F / ||ΔW Q'||_F`` for
    each ``r`` in ``ranks`` (each ``<= fit.rank``), from ``weighted_delta = ΔW Q'`` (or
    ``ΔW Xᵀ``, ``ΔW X̃^{1/2}``: any right factor of ``X̃``).

    Uses ``B_r A_r = U_r U_rᵀ ΔW`` (true for both fits), so the residual energy is
    ``||M||² - ||U_rᵀ M||²``: one ``[R, out] @ [out, in]`` product for all ranks.
    """
    m = weighted_delta.detach().to(_F64)
    if m.shape[0] != fit.basis.shape[0]:
        raise ValueError(f"weighted_delta: expected {fit.basis.shape[0]} rows (out_features), "
                         f"got shape {tuple(m.shape)}")
    total = float((m * m).sum())
    if total == 0.0:
        return [0.0 for _ in ranks]
    captured = ((fit.basis.T.to(m.device) @ m) ** 2).sum(dim=1).cumsum(0)
    out = []
    for r in ranks:
        r = _check_rank(r)
        if r > fit.rank:
            raise ValueError(f"ranks: expected values <= the fitted rank {fit.rank}, got {r}")
        out.append(max(0.0, 1.0 - float(captured[r - 1]) / total) ** 0.5)
    return out


@torch.no_grad()
def activation_weighted_error(delta: torch.Tensor, B: torch.Tensor, A: torch.Tensor,
                              covariance: torch.Tensor | InputCovariance) -> float:
    """``||(ΔW - B A) X̃^{1/2}||_F = sqrt(tr(E X̃ Eᵀ))``, ``E = ΔW - B A`` (float64): the
    Frobenius norm of the output error on the calibration tokens."""
    c = covariance.xtx if isinstance(covariance, InputCovariance) else covariance
    e = _check_delta(delta) - B.detach().to(_F64) @ A.detach().to(_F64)
    c = c.detach().to(_F64).to(e.device)
    if c.shape != (e.shape[1], e.shape[1]):
        raise ValueError(f"covariance: expected [{e.shape[1]}, {e.shape[1]}], got "
                         f"{tuple(c.shape)}")
    return max(0.0, float(((e @ c) * e).sum())) ** 0.5


# --------------------------------------------------------------------------- layer
class EoRALinear(AdapterLayer):
    """A compressed linear plus its low-rank compensation: ``y = W_c x + b + B (A x)``.

    ``base_layer`` holds the compressed weight ``W_c [out, in]`` (frozen); ``lora_A [r, in]``
    and ``lora_B [out, r]`` are ``nn.Parameter`` s in the base weight's dtype. They are
    computed without training (:func:`eora_fit` / :func:`svd_fit`), but left trainable
    like LoRA's so that the compensation can initialise fine-tuning of the compressed model.
    ``original_weight()`` is ``W_c`` and ``lora_factors()`` is ``(B, A)``: merging gives
    ``W_c + B A ≈ W``.
    """

    trainable_names = ("lora_A", "lora_B")

    def __init__(self, base_layer: nn.Linear, lora_B: torch.Tensor, lora_A: torch.Tensor, *,
                 compensation: str = "eora") -> None:
        super().__init__(base_layer)
        self.compensation = compensation
        self.lora_A = nn.Parameter(torch.empty(0))
        self.lora_B = nn.Parameter(torch.empty(0))
        self.set_factors(lora_B, lora_A)

    @torch.no_grad()
    def set_factors(self, lora_B: torch.Tensor, lora_A: torch.Tensor) -> None:
        """Replace the factors (``B [out, r]``, ``A [r, in]``; any rank ``r >= 1``), keeping
        their ``requires_grad`` flag."""
        if lora_A.dim() != 2 or lora_A.shape[1] != self.in_features:
            raise ValueError(f"lora_A: expected [r, {self.in_features}], got "
                             f"{tuple(lora_A.shape)}")
        r = lora_A.shape[0]
        if r < 1 or tuple(lora_B.shape) != (self.out_features, r):
            raise ValueError(f"lora_B: expected [{self.out_features}, {r}] (r from lora_A), got "
                             f"{tuple(lora_B.shape)}")
        w = self.base_layer.weight
        grad = self.lora_A.requires_grad
        self.lora_A = nn.Parameter(lora_A.detach().to(w.device, w.dtype).clone(),
                                   requires_grad=grad)
        self.lora_B = nn.Parameter(lora_B.detach().to(w.device, w.dtype).clone(),
                                   requires_grad=grad)

    @property
    def rank(self) -> int:
        return self.lora_A.shape[0]

    def original_weight(self) -> torch.Tensor:
        return self.base_layer.weight.detach()

    def lora_factors(self) -> tuple[torch.Tensor, torch.Tensor]:
        dtype = self.base_layer.weight.dtype
        return self.lora_B.detach().to(dtype), self.lora_A.detach().to(dtype)

    def extra_metadata(self) -> dict:
        return {"rank": self.rank, "compensation": self.compensation}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.base_layer(x) + lowrank_forward(x, self.lora_A.to(x.dtype),
                                                    self.lora_B.to(x.dtype))

    def extra_repr(self) -> str:
        return super().extra_repr() + f", compensation={self.compensation}"
