"""Spectral statistics: effective rank, coding rates, Marchenko–Pastur bulk and spikes.

* :func:`effective_rank` — RankMe (Garrido et al., ICML 2023), ``exp`` of the entropy of the
  normalised singular values; a smooth count of the directions an embedding uses.
* :func:`coding_rate`, :func:`coding_rate_reduction` — MCR² (Yu et al., NeurIPS 2020): the
  number of bits to code features up to distortion ``ε``, overall and per class.
* :func:`marchenko_pastur_edges`, :func:`marchenko_pastur_median`, :func:`bbp_threshold`,
  :func:`spike_sample_eigenvalue` — the random-matrix law of a white-noise sample
  covariance and the Baik–Ben Arous–Péché phase transition of a planted spike.
* :func:`spiked_outliers` — eigen-directions of a sample covariance that stand above the
  noise bulk (the "causal" directions EigenShield keeps, separated from the noise bulk).

Layouts: a data matrix ``X`` for covariance statistics is ``[n, p]`` (rows are the ``n``
samples, columns the ``p`` features), while MCR²'s ``Z`` is ``[d, n]`` (columns are samples)
as in its paper; pass ``X.mT`` to switch. Real tensors only; half inputs are computed in
float32 and results returned in the input dtype.
"""

from __future__ import annotations

import math
from functools import lru_cache
from typing import NamedTuple

import torch

from subspace_core.linalg.bases import check_matrix, working_dtype
from subspace_core.linalg.svd import robust_svd

__all__ = [
    "RateReduction",
    "SpikedOutliers",
    "bbp_threshold",
    "coding_rate",
    "coding_rate_reduction",
    "effective_rank",
    "effective_rank_of_spectrum",
    "marchenko_pastur_edges",
    "marchenko_pastur_median",
    "spike_sample_eigenvalue",
    "spiked_outliers",
    "spiked_outliers_from_eigenvalues",
]

#: Tracy–Widom (β = 1) upper quantiles used as edge margins: P(TW₁ > q) = level.
TW1_QUANTILES = {0.10: 0.4501, 0.05: 0.9793, 0.01: 2.0234}


def _check_real(name: str, value: object, *, min_ndim: int) -> torch.Tensor:
    tensor = check_matrix(name, value, min_ndim=min_ndim)
    if tensor.dtype.is_complex:
        raise TypeError(f"{name}: expected a real floating tensor, got {tensor.dtype}")
    return tensor


def _check_finite(name: str, value: torch.Tensor) -> None:
    if not bool(torch.isfinite(value).all()):
        raise ValueError(f"{name}: expected finite values, got NaN/Inf")


def _positive(name: str, value: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0 \
            or not math.isfinite(value):
        raise ValueError(f"{name}: expected a positive finite number, got {value!r}")
    return float(value)


# --- effective rank (RankMe) ---------------------------------------------------------------


def effective_rank_of_spectrum(S: torch.Tensor, *, eps: float = 1e-7) -> torch.Tensor:
    """RankMe of singular values ``S`` [..., k]: ``exp(−Σ_k p_k log p_k)``, ``p_k = σ_k/‖σ‖₁ + ε``.

    Garrido et al. (2023) add ``ε`` to every ``p_k`` so the entropy is smooth; with
    ``eps=0`` a flat spectrum of ``k`` non-zero values gives exactly ``k`` and a one-hot
    spectrum exactly 1 (with the default the deviation is ~1e-5). Ranges over ``[1, k]``
    (up to ``ε``); an all-zero spectrum has effective rank 0.

    Returns:
        [...] tensor in ``S``'s dtype.
    """
    _check_real("S", S, min_ndim=1)
    if not (isinstance(eps, (int, float)) and eps >= 0):
        raise ValueError(f"eps: expected a non-negative float, got {eps!r}")
    _check_finite("S", S)
    if bool((S < 0).any()):
        raise ValueError("S: expected non-negative singular values, got negative entries")
    s = S.to(working_dtype(S.dtype))
    total = s.sum(dim=-1, keepdim=True)
    p = s / total.clamp_min(torch.finfo(s.dtype).tiny) + eps
    entropy = -torch.special.xlogy(p, p).sum(dim=-1)
    rank = torch.where(total[..., 0] > 0, entropy.exp(), torch.zeros_like(entropy))
    return rank.to(S.dtype)


def effective_rank(X: torch.Tensor, *, eps: float = 1e-7) -> torch.Tensor:
    """RankMe of a matrix ``X`` [..., m, n] (e.g. a batch of embeddings [N, D]); see
    :func:`effective_rank_of_spectrum`. Returns [...] in ``X``'s dtype."""
    _check_real("X", X, min_ndim=2)
    _check_finite("X", X)
    S = robust_svd(X.to(working_dtype(X.dtype))).S
    return effective_rank_of_spectrum(S, eps=eps).to(X.dtype)


# --- coding rate (MCR²) --------------------------------------------------------------------


def _logdet_identity_plus(Z: torch.Tensor, scale: torch.Tensor | float) -> torch.Tensor:
    """``logdet(I_d + scale · Z Zᵀ)`` for ``Z`` [..., d, n] via the smaller Gram matrix.

    Sylvester's identity ``det(I_d + c Z Zᵀ) = det(I_n + c Zᵀ Z)`` lets the factorised matrix
    be ``min(d, n)`` square; it is symmetric positive definite, so a Cholesky factor gives
    ``logdet = 2 Σ log L_ii`` stably.
    """
    d, n = Z.shape[-2:]
    gram = Z @ Z.mT if d <= n else Z.mT @ Z
    eye = torch.eye(gram.shape[-1], dtype=gram.dtype, device=gram.device)
    if isinstance(scale, torch.Tensor):
        scale = scale[..., None, None]
    L = torch.linalg.cholesky(eye + scale * gram)
    return 2 * torch.log(torch.diagonal(L, dim1=-2, dim2=-1)).sum(dim=-1)


def coding_rate(Z: torch.Tensor, eps: float) -> torch.Tensor:
    """MCR² coding rate ``R(Z) = ½ logdet(I_d + d/(n ε²) Z Zᵀ)`` (nats).

    Args:
        Z: features [..., d, n] — **columns are the n samples** (the paper's layout).
        eps: the distortion ``ε > 0`` (``ε²`` enters the formula; the MCR² reference code's
            ``eps`` argument is ``ε²``).

    Returns:
        [...] tensor in ``Z``'s dtype.
    """
    _check_real("Z", Z, min_ndim=2)
    _check_finite("Z", Z)
    eps = _positive("eps", eps)
    d, n = Z.shape[-2:]
    work = Z.to(working_dtype(Z.dtype))
    return (0.5 * _logdet_identity_plus(work, d / (n * eps**2))).to(Z.dtype)


class RateReduction(NamedTuple):
    """``reduction = expansion − compression`` (``ΔR = R(Z) − R_c(Z, Π)``), each [...]."""

    reduction: torch.Tensor
    expansion: torch.Tensor
    compression: torch.Tensor


def _membership(labels: torch.Tensor | None, membership: torch.Tensor | None, n: int,
                num_classes: int | None, device: torch.device) -> torch.Tensor:
    """Class membership Π as [k, n] non-negative weights whose columns sum to 1."""
    if (labels is None) == (membership is None):
        raise ValueError("labels/membership: pass exactly one of them")
    if labels is not None:
        if not isinstance(labels, torch.Tensor) or labels.dtype.is_floating_point \
                or labels.dtype.is_complex or labels.shape != (n,):
            raise ValueError(f"labels: expected an integer tensor of shape ({n},), got "
                             f"{getattr(labels, 'dtype', type(labels).__name__)} of shape "
                             f"{tuple(getattr(labels, 'shape', ()))}")
        if n and int(labels.min()) < 0:
            raise ValueError("labels: expected non-negative class indices")
        k = int(labels.max()) + 1 if n else 0
        if num_classes is not None:
            if num_classes < k:
                raise ValueError(f"num_classes: expected >= {k} (largest label + 1), got "
                                 f"{num_classes}")
            k = num_classes
        return torch.nn.functional.one_hot(labels.long().to(device), k).mT.to(torch.float64)
    check_matrix("membership", membership)
    if membership.ndim != 2 or membership.shape[1] != n:
        raise ValueError(f"membership: expected [k, {n}], got shape {tuple(membership.shape)}")
    pi = membership.to(device, torch.float64)
    if bool((pi < 0).any()) or not torch.allclose(pi.sum(0), torch.ones_like(pi[0]), atol=1e-4):
        raise ValueError("membership: expected non-negative weights whose columns sum to 1 "
                         "(Σ_j Π_j = I)")
    return pi


def coding_rate_reduction(
    Z: torch.Tensor,
    labels: torch.Tensor | None = None,
    *,
    eps: float,
    membership: torch.Tensor | None = None,
    num_classes: int | None = None,
) -> RateReduction:
    """MCR² rate reduction ``ΔR(Z, Π, ε) = R(Z) − R_c(Z, Π)``.

    ``R_c = Σ_j (tr Π_j / 2n) logdet(I_d + d/(tr Π_j ε²) Z Π_j Zᵀ)`` is the rate of coding
    each class separately; ``Π_j = diag(π_j)`` holds the (hard or soft) membership of the
    ``n`` samples in class ``j``. ``ΔR >= 0``, and it is large when classes are spread out
    within themselves but occupy mutually orthogonal subspaces. Empty classes contribute 0.

    Args:
        Z: features [..., d, n], columns are samples.
        labels: hard labels [n] (integers ``0..k−1``); or
        membership: soft membership Π [k, n], non-negative, columns summing to 1.
        eps: distortion ``ε > 0`` (as in :func:`coding_rate`).
        num_classes: ``k`` for ``labels`` (default: largest label + 1).

    Returns:
        :class:`RateReduction` of [...] tensors in ``Z``'s dtype.
    """
    _check_real("Z", Z, min_ndim=2)
    _check_finite("Z", Z)
    eps = _positive("eps", eps)
    d, n = Z.shape[-2:]
    work = Z.to(working_dtype(Z.dtype))
    pi = _membership(labels, membership, n, num_classes, Z.device)
    counts = pi.sum(dim=1)
    pi = pi[counts > 0].to(work.dtype)
    counts = counts[counts > 0].to(work.dtype)
    expansion = 0.5 * _logdet_identity_plus(work, d / (n * eps**2))
    # Z Π_j Zᵀ = (Z √Π_j)(Z √Π_j)ᵀ: one batched logdet over the classes.
    per_class = work.unsqueeze(-3) * pi.sqrt()[:, None, :]  # [..., k, d, n]
    logdets = _logdet_identity_plus(per_class, d / (counts * eps**2))  # [..., k]
    compression = (counts / (2 * n) * logdets).sum(dim=-1)
    reduction = expansion - compression
    return RateReduction(reduction.to(Z.dtype), expansion.to(Z.dtype), compression.to(Z.dtype))


# --- Marchenko–Pastur bulk and spikes ------------------------------------------------------


def marchenko_pastur_edges(aspect_ratio: float, sigma2: float = 1.0) -> tuple[float, float]:
    """Edges ``λ± = σ² (1 ± √γ)²`` of the Marchenko–Pastur law.

    The law is the limit (``n, p → ∞``, ``p/n → γ``) of the eigenvalue distribution of the
    sample covariance ``XᵀX / n`` of ``X`` [n, p] with i.i.d. entries of variance ``σ²``. For
    ``γ > 1`` there are also ``p − n`` zero eigenvalues (a point mass ``1 − 1/γ`` at 0) and
    the non-zero ones fill ``[λ₋, λ₊]``.

    Args:
        aspect_ratio: ``γ = p / n > 0``.
        sigma2: noise variance ``σ² > 0``.

    Returns:
        ``(λ₋, λ₊)``.
    """
    gamma = _positive("aspect_ratio", aspect_ratio)
    sigma2 = _positive("sigma2", sigma2)
    root = math.sqrt(gamma)
    return sigma2 * (1 - root) ** 2, sigma2 * (1 + root) ** 2


@lru_cache(maxsize=256)
def marchenko_pastur_median(aspect_ratio: float) -> float:
    """Median of the continuous part of the Marchenko–Pastur law with ``σ² = 1``.

    The density ``f(x) = √((λ₊ − x)(x − λ₋)) / (2π γ x)`` on ``[λ₋, λ₊]`` (normalised to a
    probability; for ``γ > 1`` this is the law of the non-zero eigenvalues) has no
    closed-form quantiles; this integrates it numerically in float64 after the change of
    variable ``x = λ₋ + (λ₊ − λ₋)(1 − cos θ)/2``, which removes the square-root endpoints
    (midpoint rule, relative error < 1e-6). Used to estimate ``σ²`` as
    ``median(eigenvalues) / median_MP`` (robust to a few spikes, cf. Gavish & Donoho 2014).
    """
    lo, hi = marchenko_pastur_edges(aspect_ratio)
    gamma = float(aspect_ratio)
    steps = 20_000
    theta = (torch.arange(steps, dtype=torch.float64) + 0.5) * (math.pi / steps)
    x = lo + (hi - lo) * (1 - torch.cos(theta)) / 2
    density = ((hi - lo) / 2) ** 2 * torch.sin(theta) ** 2 / (2 * math.pi * gamma * x)
    cdf = torch.cumsum(density, 0)
    cdf = cdf / cdf[-1]
    i = int(torch.searchsorted(cdf, torch.tensor(0.5, dtype=torch.float64)))
    # Linear interpolation between the two grid points around the median.
    c0 = float(cdf[i - 1]) if i > 0 else 0.0
    x0 = float(x[i - 1]) if i > 0 else lo
    return x0 + (0.5 - c0) / (float(cdf[i]) - c0) * (float(x[i]) - x0)


def bbp_threshold(aspect_ratio: float, sigma2: float = 1.0) -> float:
    """BBP phase transition ``σ² (1 + √γ)``: the smallest *population* spike that separates.

    In the spiked covariance model ``Σ = σ² I + Σ_j (ℓ_j − σ²) u_j u_jᵀ``, a spike
    ``ℓ > σ²(1 + √γ)`` produces a sample eigenvalue outside the bulk (Baik, Ben Arous &
    Péché 2005); weaker spikes are invisible in the eigenvalues.
    """
    gamma = _positive("aspect_ratio", aspect_ratio)
    return _positive("sigma2", sigma2) * (1 + math.sqrt(gamma))


def spike_sample_eigenvalue(spike: float, aspect_ratio: float, sigma2: float = 1.0) -> float:
    """Limit of the sample eigenvalue of a population spike ``ℓ`` (Baik & Silverstein 2006).

    ``ℓ (1 + γ σ² / (ℓ − σ²))`` above :func:`bbp_threshold`, the bulk edge ``λ₊`` below it.
    """
    ell = _positive("spike", spike)
    gamma = _positive("aspect_ratio", aspect_ratio)
    sigma2 = _positive("sigma2", sigma2)
    if ell <= bbp_threshold(gamma, sigma2):
        return marchenko_pastur_edges(gamma, sigma2)[1]
    return ell * (1 + gamma * sigma2 / (ell - sigma2))


class SpikedOutliers(NamedTuple):
    """Eigen-directions above the noise bulk of a sample covariance.

    Attributes:
        indices: [k] positions of the outlier eigenvalues in the input (eigenvalue path) or
            in the descending spectrum (data path), largest first.
        eigenvalues: [k] the outlier eigenvalues, descending.
        eigenvectors: [p, k] their unit eigenvectors (data path), else None.
        sigma2: noise variance used (given, or estimated from the median eigenvalue).
        threshold: the cut-off used, ``λ₊`` plus the Tracy–Widom margin.
        bulk_edge: ``λ₊ = σ² (1 + √γ)²``.
    """

    indices: torch.Tensor
    eigenvalues: torch.Tensor
    eigenvectors: torch.Tensor | None
    sigma2: float
    threshold: float
    bulk_edge: float


def _edge_threshold(n: int, p: int, sigma2: float, tw_margin: float) -> float:
    """``σ² (μ + s·σ_TW) / n``: Johnstone's (2001) centring and scaling of the largest
    eigenvalue of a white Wishart ``XᵀX`` [p, p], ``μ = (√(n−1) + √p)²``,
    ``σ_TW = (√(n−1) + √p)(1/√(n−1) + 1/√p)^{1/3}``, shifted by ``s`` TW₁ units."""
    a, b = math.sqrt(max(n - 1, 1)), math.sqrt(p)
    mu = (a + b) ** 2
    scale = (a + b) * (1 / a + 1 / b) ** (1 / 3)
    return sigma2 * (mu + tw_margin * scale) / n


def spiked_outliers_from_eigenvalues(
    eigenvalues: torch.Tensor,
    n_samples: int,
    *,
    sigma2: float | None = None,
    tw_margin: float = TW1_QUANTILES[0.01],
) -> SpikedOutliers:
    """Which eigenvalues [p] of a ``p × p`` sample covariance (from ``n_samples`` samples) lie
    above the Marchenko–Pastur bulk.

    ``γ = p / n``. Unless given, ``σ²`` is estimated as the median of the ``min(n, p)``
    largest eigenvalues (the others are structurally zero) divided by
    :func:`marchenko_pastur_median` — a handful of spikes barely moves a median. An
    eigenvalue is an outlier when it exceeds ``λ₊`` plus ``tw_margin`` Tracy–Widom units
    (finite-``n`` fluctuations of the largest noise eigenvalue are of that size, order
    ``n^{-2/3}``): ``TW1_QUANTILES`` gives margins for a 10/5/1 % false-alarm level (the
    default is 1 %).

    Returns:
        :class:`SpikedOutliers` with ``eigenvectors=None``.
    """
    _check_real("eigenvalues", eigenvalues, min_ndim=1)
    if eigenvalues.ndim != 1 or eigenvalues.numel() < 2:
        raise ValueError(f"eigenvalues: expected a 1-D tensor with >= 2 entries, got shape "
                         f"{tuple(eigenvalues.shape)}")
    _check_finite("eigenvalues", eigenvalues)
    if isinstance(n_samples, bool) or not isinstance(n_samples, int) or n_samples < 2:
        raise ValueError(f"n_samples: expected an int >= 2, got {n_samples!r}")
    if not (isinstance(tw_margin, (int, float)) and math.isfinite(tw_margin)):
        raise ValueError(f"tw_margin: expected a finite float, got {tw_margin!r}")
    p = eigenvalues.numel()
    gamma = p / n_samples
    values = eigenvalues.detach().to(torch.float64)
    ordered, order = torch.sort(values, descending=True)
    if sigma2 is None:
        nonzero = ordered[: min(n_samples, p)]
        median = float(nonzero.median()) if nonzero.numel() % 2 else float(nonzero.quantile(0.5))
        if not median > 0:
            raise ValueError("eigenvalues: the median non-zero eigenvalue is not positive; "
                             "cannot estimate sigma2, pass it explicitly")
        sigma2 = median / marchenko_pastur_median(gamma)
    sigma2 = _positive("sigma2", sigma2)
    threshold = _edge_threshold(n_samples, p, sigma2, float(tw_margin))
    above = ordered > threshold
    return SpikedOutliers(
        indices=order[above].to(eigenvalues.device),
        eigenvalues=ordered[above].to(eigenvalues.device, eigenvalues.dtype),
        eigenvectors=None,
        sigma2=sigma2,
        threshold=threshold,
        bulk_edge=marchenko_pastur_edges(gamma, sigma2)[1],
    )


def spiked_outliers(
    X: torch.Tensor,
    *,
    center: bool = True,
    sigma2: float | None = None,
    tw_margin: float = TW1_QUANTILES[0.01],
) -> SpikedOutliers:
    """Spike directions of the sample covariance of data ``X`` [n, p] (rows are samples).

    ``C = X̃ᵀ X̃ / n'`` with ``X̃`` the column-centred data and ``n' = n − 1`` (``X̃ = X``,
    ``n' = n`` with ``center=False``). Its eigenpairs come from the SVD ``X̃/√n' = U Σ Vᵀ``
    (``λ = σ²``, eigenvectors the columns of ``V``), never forming ``C``. Outliers are chosen
    by :func:`spiked_outliers_from_eigenvalues`; their eigenvectors span the signal subspace
    (EigenShield projects onto it and discards the noise bulk).

    Returns:
        :class:`SpikedOutliers` with ``eigenvectors`` [p, k] in ``X``'s dtype.
    """
    _check_real("X", X, min_ndim=2)
    if X.ndim != 2:
        raise ValueError(f"X: expected a data matrix [n, p], got shape {tuple(X.shape)}")
    n, p = X.shape
    n_eff = n - 1 if center else n
    if n_eff < 2 or p < 2:
        raise ValueError(f"X: expected at least 3 samples (2 without centering) and 2 "
                         f"features, got shape {tuple(X.shape)}")
    work = X.to(working_dtype(X.dtype))
    if center:
        work = work - work.mean(dim=0, keepdim=True)
    _, S, Vh = robust_svd(work / math.sqrt(n_eff))
    eigenvalues = S**2
    if p > S.numel():  # p > n: the remaining p − n' eigenvalues are exactly zero
        eigenvalues = torch.cat([eigenvalues, eigenvalues.new_zeros(p - S.numel())])
    found = spiked_outliers_from_eigenvalues(eigenvalues, n_eff, sigma2=sigma2,
                                             tw_margin=tw_margin)
    vectors = Vh.mT[:, found.indices.to(Vh.device)]
    return found._replace(eigenvalues=found.eigenvalues.to(X.dtype), eigenvectors=vectors.to(X.dtype))
