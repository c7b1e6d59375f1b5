"""Similarity of two representations of the same examples: linear CKA and SVCCA.

Both compare activations ``X [n, d1]`` and ``Y [n, d2]`` of ``n`` shared examples (rows)
through the subspaces their centred feature columns span in ``R^n``:

* linear CKA (Kornblith, Norouzi, Lee & Hinton 2019) is invariant to orthogonal transforms
  and isotropic scaling of either side, but not to arbitrary invertible linear maps;
* SVCCA (Raghu, Gilmer, Yosinski & Sohl-Dickstein 2017) is invariant to any invertible
  linear map of the kept directions (CCA whitens them).
"""

from __future__ import annotations

from typing import NamedTuple

import torch

__all__ = ["SVCCAResult", "linear_cka", "svcca"]


def _check_pair(X: object, Y: object, *, batched: bool) -> tuple[torch.Tensor, torch.Tensor]:
    for name, value in (("X", X), ("Y", Y)):
        if not isinstance(value, torch.Tensor):
            raise TypeError(f"{name}: expected a torch.Tensor [n, d], got {type(value).__name__}")
        if not value.dtype.is_floating_point:
            raise TypeError(f"{name}: expected a real floating-point tensor, got {value.dtype}")
        if value.ndim < 2 or (not batched and value.ndim != 2):
            expected = "[..., n, d]" if batched else "[n, d]"
            raise ValueError(f"{name}: expected features {expected}, got shape {tuple(value.shape)}")
    if X.shape[-2] != Y.shape[-2]:
        raise ValueError(
            f"Y: expected the same number of examples n={X.shape[-2]} as X, got shape {tuple(Y.shape)}"
        )
    return X, Y


def _centre(X: torch.Tensor) -> torch.Tensor:
    return X - X.mean(dim=-2, keepdim=True)


def _hsic_biased(X: torch.Tensor, Y: torch.Tensor) -> torch.Tensor:
    """``‖YᵀX‖²_F = tr(K L)`` for centred features, ``K = XXᵀ``, ``L = YYᵀ`` (scale omitted)."""
    return (Y.mT @ X).square().sum(dim=(-2, -1))


def _hsic_unbiased(X: torch.Tensor, Y: torch.Tensor) -> torch.Tensor:
    """Unbiased HSIC estimator (Song et al. 2012) of linear kernels, times ``n(n−3)``.

    With ``K̃ = XXᵀ − diag``, ``L̃ = YYᵀ − diag``:
    ``tr(K̃L̃) + (1ᵀK̃1)(1ᵀL̃1)/((n−1)(n−2)) − 2/(n−2) · 1ᵀK̃L̃1``, evaluated in feature space
    (``O(n d)`` memory, never ``n×n``).
    """
    n = X.shape[-2]
    k_diag = X.square().sum(-1)  # [..., n]
    l_diag = Y.square().sum(-1)
    trace = (Y.mT @ X).square().sum(dim=(-2, -1)) - (k_diag * l_diag).sum(-1)
    k_rows = (X @ X.sum(-2, keepdim=True).mT).squeeze(-1) - k_diag  # K̃ 1
    l_rows = (Y @ Y.sum(-2, keepdim=True).mT).squeeze(-1) - l_diag  # L̃ 1
    return (trace + k_rows.sum(-1) * l_rows.sum(-1) / ((n - 1) * (n - 2))
            - 2.0 / (n - 2) * (k_rows * l_rows).sum(-1))


def linear_cka(X: torch.Tensor, Y: torch.Tensor, *, debiased: bool = False) -> torch.Tensor:
    """Linear centred kernel alignment between features ``X [..., n, d1]`` and ``Y [..., n, d2]``.

    Returns ``[...]`` in ``[0, 1]`` (the debiased estimate may dip slightly below 0).

    Maths: centre the columns, then
    ``CKA = HSIC(K, L) / sqrt(HSIC(K, K) · HSIC(L, L))`` with ``K = XXᵀ``, ``L = YYᵀ``; for
    linear kernels ``HSIC ∝ tr(KL) = ‖YᵀX‖²_F``, so
    ``CKA = ‖YᵀX‖²_F / (‖XᵀX‖_F ‖YᵀY‖_F)``, computed from ``d×d`` products. ``debiased=True``
    uses the unbiased HSIC estimator instead (Song et al. 2012; Nguyen, Raghu & Kornblith
    2021), which removes the bias towards 1 when ``d`` is not small relative to ``n``;
    it needs ``n >= 4``. A representation with zero variance has no CKA and raises.
    """
    X, Y = _check_pair(X, Y, batched=True)
    X, Y = _centre(X), _centre(Y)
    if debiased:
        if X.shape[-2] < 4:
            raise ValueError(f"X: the debiased estimator needs n >= 4 examples, got {X.shape[-2]}")
        hsic = _hsic_unbiased
    else:
        hsic = _hsic_biased
    xx, yy = hsic(X, X), hsic(Y, Y)
    for name, self_similarity in (("X", xx), ("Y", yy)):
        if (self_similarity <= 0).any():
            raise ValueError(f"{name}: expected features with nonzero variance, got constant columns")
    return hsic(X, Y) / torch.sqrt(xx * yy)


class SVCCAResult(NamedTuple):
    """``mean``: mean canonical correlation; ``correlations``: all of them, descending;
    ``dims_x`` / ``dims_y``: SVD directions kept for each side."""

    mean: torch.Tensor
    correlations: torch.Tensor
    dims_x: int
    dims_y: int


def _kept_directions(name: str, X: torch.Tensor, keep: float | int) -> torch.Tensor:
    """Orthonormal left singular vectors ``[n, k]`` of the centred ``X`` that ``keep`` selects."""
    U, sigma, _ = torch.linalg.svd(X, full_matrices=False)
    variance = sigma.square()
    if variance[0] == 0:
        raise ValueError(f"{name}: expected features with nonzero variance, got constant columns")
    if isinstance(keep, int):
        rank_tol = sigma[0] * max(X.shape) * torch.finfo(sigma.dtype).eps  # numerical rank, as LAPACK
        k = min(keep, int((sigma > rank_tol).sum()))
    else:
        fraction = torch.cumsum(variance, 0) / variance.sum()
        # Smallest k whose leading directions explain at least `keep` of the variance.
        k = int((fraction < keep - 1e-12).sum()) + 1
    return U[:, : min(k, sigma.numel())]


def svcca(X: torch.Tensor, Y: torch.Tensor, keep: float | int = 0.99) -> SVCCAResult:
    """Singular vector CCA between features ``X [n, d1]`` and ``Y [n, d2]`` (unbatched).

    Maths: centre the columns; reduce each side by SVD to its top directions — the fewest
    explaining a fraction ``keep`` of the variance (``0 < keep <= 1``) or the top ``keep``
    (an ``int >= 1``, capped by the numerical rank); then CCA between the reduced sides.
    CCA only depends on the spans of the reduced columns, so the canonical correlations are
    the cosines of the principal angles between them: the singular values of ``U_xᵀ U_y``
    for the kept left singular vectors ``U_x [n, k_x]``, ``U_y [n, k_y]``.

    ``n`` should well exceed ``k_x + k_y``: two subspaces of ``R^n`` with ``k_x + k_y > n``
    intersect, which forces ``k_x + k_y − n`` correlations to 1.
    """
    X, Y = _check_pair(X, Y, batched=False)
    if isinstance(keep, bool) or not isinstance(keep, int | float):
        raise TypeError(f"keep: expected a float in (0, 1] or an int >= 1, got {keep!r}")
    if isinstance(keep, int) and keep < 1:
        raise ValueError(f"keep: expected an int >= 1 directions, got {keep}")
    if isinstance(keep, float) and not 0.0 < keep <= 1.0:
        raise ValueError(f"keep: expected a variance fraction in (0, 1], got {keep}")
    Ux = _kept_directions("X", _centre(X), keep)
    Uy = _kept_directions("Y", _centre(Y), keep)
    correlations = torch.linalg.svdvals(Ux.mT @ Uy).clamp(0.0, 1.0)
    return SVCCAResult(correlations.mean(), correlations, Ux.shape[-1], Uy.shape[-1])
