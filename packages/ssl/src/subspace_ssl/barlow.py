"""Barlow Twins and Mixed Barlow Twins objectives.

Barlow Twins (Zbontar et al. 2021, arXiv:2103.03230): with the two views' projections
standardised over the batch (``ẑ = (z − mean) / std``), the cross-correlation
``C = ẑ₁ᵀ ẑ₂ / N`` [D, D] is driven to the identity:

    L_BT = Σ_i (1 − C_ii)² + λ Σ_{i≠j} C_ij²

Mixed Barlow Twins (Bandara et al. 2023, "Guarding Barlow Twins Against Overfitting with
Mixed Samples", arXiv:2312.02151) adds a mixup regulariser: a mixed input
``x_m = α x₁ + (1 − α) x₂[π]`` (α ~ Beta(1, 1), π a batch permutation) should have the
cross-correlations with each view that linearity predicts,

    C(ẑ_m, ẑ_v) ≈ α C(ẑ₁, ẑ_v) + (1 − α) C(ẑ₂[π], ẑ_v),   v ∈ {1, 2},

penalised as ``scale · λ · Σ_v ‖C(ẑ_m, ẑ_v) − target_v‖²_F``.
"""

from __future__ import annotations

from typing import NamedTuple

import torch

__all__ = ["MixedBarlowLoss", "barlow_twins_loss", "cross_correlation", "mixup_regulariser",
           "standardize"]


def _check_pair(z1: torch.Tensor, z2: torch.Tensor) -> None:
    for name, z in (("z1", z1), ("z2", z2)):
        if not isinstance(z, torch.Tensor) or z.ndim != 2:
            raise ValueError(f"{name}: expected a tensor [N, D], got "
                             f"{tuple(getattr(z, 'shape', ())) or type(z).__name__}")
    if z1.shape != z2.shape:
        raise ValueError(f"z1/z2: expected equal shapes, got {tuple(z1.shape)} and "
                         f"{tuple(z2.shape)}")
    if z1.shape[0] < 2:
        raise ValueError(f"z1: expected a batch of >= 2 samples to standardise, got {z1.shape[0]}")


def standardize(z: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """Per-dimension batch standardisation ``(z − mean) / sqrt(var + eps)`` of [N, D].

    The biased variance is used (BatchNorm without affine), so ``diag(ẑᵀẑ/N) = 1`` up to eps.
    """
    centred = z - z.mean(dim=0)
    return centred / (centred.pow(2).mean(dim=0) + eps).sqrt()


def cross_correlation(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``aᵀ b / N`` of two standardised batches [N, D] → [D, D]."""
    return a.mT @ b / a.shape[0]


def _off_diagonal_sq(c: torch.Tensor) -> torch.Tensor:
    return c.pow(2).sum() - torch.diagonal(c).pow(2).sum()


def barlow_twins_loss(z1: torch.Tensor, z2: torch.Tensor, lambd: float = 0.0078125
                      ) -> torch.Tensor:
    """Barlow Twins loss of two views' projections ``z1``, ``z2`` [N, D] (scalar).

    0 exactly when the standardised views are perfectly correlated per dimension and
    decorrelated across dimensions (``C = I``).
    """
    _check_pair(z1, z2)
    c = cross_correlation(standardize(z1), standardize(z2))
    on = (1 - torch.diagonal(c)).pow(2).sum()
    return on + lambd * _off_diagonal_sq(c)


def mixup_regulariser(z1: torch.Tensor, z2: torch.Tensor, z_mixed: torch.Tensor,
                      alpha: float, permutation: torch.Tensor) -> torch.Tensor:
    """``Σ_v ‖C(ẑ_m, ẑ_v) − α C(ẑ₁, ẑ_v) − (1 − α) C(ẑ₂[π], ẑ_v)‖²_F`` over v ∈ {1, 2}.

    Args:
        z1, z2: projections of the two views [N, D].
        z_mixed: projection of ``α x₁ + (1 − α) x₂[permutation]`` [N, D].
        alpha: the mixing weight in [0, 1].
        permutation: the batch permutation π [N] used to build the mixed input.
    """
    _check_pair(z1, z2)
    _check_pair(z1, z_mixed)
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha: expected a value in [0, 1], got {alpha}")
    if permutation.shape != (z1.shape[0],):
        raise ValueError(f"permutation: expected shape ({z1.shape[0]},), got "
                         f"{tuple(permutation.shape)}")
    s1, s2, sm = standardize(z1), standardize(z2), standardize(z_mixed)
    s2p = s2[permutation]
    total = z1.new_zeros(())
    for sv in (s1, s2):
        target = alpha * cross_correlation(s1, sv) + (1 - alpha) * cross_correlation(s2p, sv)
        total = total + (cross_correlation(sm, sv) - target).pow(2).sum()
    return total


class MixedBarlowTerms(NamedTuple):
    """The Mixed Barlow Twins loss and its parts (scalars)."""

    loss: torch.Tensor
    barlow: torch.Tensor
    mixup: torch.Tensor


class MixedBarlowLoss:
    """``L_BT + scale · λ · mixup_regulariser`` (Bandara et al.; scale 0 is plain Barlow Twins).

    Args:
        lambd: off-diagonal weight λ of Barlow Twins.
        mixup_scale: weight of the regulariser relative to λ (the paper's CIFAR setting 4).
    """

    def __init__(self, lambd: float = 0.0078125, mixup_scale: float = 4.0):
        if lambd < 0 or mixup_scale < 0:
            raise ValueError(f"lambd/mixup_scale: expected >= 0, got {lambd}, {mixup_scale}")
        self.lambd, self.mixup_scale = float(lambd), float(mixup_scale)

    def __call__(self, z1: torch.Tensor, z2: torch.Tensor, z_mixed: torch.Tensor | None = None,
                 alpha: float = 0.5, permutation: torch.Tensor | None = None
                 ) -> MixedBarlowTerms:
        barlow = barlow_twins_loss(z1, z2, self.lambd)
        if self.mixup_scale == 0:
            return MixedBarlowTerms(barlow, barlow, barlow.new_zeros(()))
        if z_mixed is None or permutation is None:
            raise ValueError("z_mixed/permutation: required when mixup_scale > 0")
        mix = mixup_regulariser(z1, z2, z_mixed, alpha, permutation)
        return MixedBarlowTerms(barlow + self.mixup_scale * self.lambd * mix, barlow, mix)
