"""Tests of ``subspace_core.linalg.spectra`` against the definitions."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from subspace_core.linalg.spectra import (
    TW1_QUANTILES,
    bbp_threshold,
    coding_rate,
    coding_rate_reduction,
    effective_rank,
    effective_rank_of_spectrum,
    marchenko_pastur_edges,
    marchenko_pastur_median,
    spike_sample_eigenvalue,
    spiked_outliers,
    spiked_outliers_from_eigenvalues,
)
from subspace_core.testing import assert_close_to_ref

F64 = torch.float64


def _randn(*shape, seed: int = 0, dtype=F64) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


# --- effective rank --------------------------------------------------------------------------


@pytest.mark.parametrize("k", [1, 3, 17])
def test_effective_rank_of_flat_spectrum_is_k(k):
    flat = torch.cat([torch.full((k,), 2.5, dtype=F64), torch.zeros(5, dtype=F64)])
    assert float(effective_rank_of_spectrum(flat, eps=0.0)) == pytest.approx(k, rel=1e-12)
    assert float(effective_rank_of_spectrum(flat)) == pytest.approx(k, rel=1e-4)


def test_effective_rank_of_one_hot_is_one_and_of_zeros_is_zero():
    one_hot = torch.tensor([0.0, 3.0, 0.0, 0.0], dtype=F64)
    assert float(effective_rank_of_spectrum(one_hot)) == pytest.approx(1.0, rel=1e-5)
    assert float(effective_rank_of_spectrum(torch.zeros(4))) == 0.0


def test_effective_rank_matches_rankme_formula_and_batches():
    S = torch.tensor([[4.0, 2.0, 1.0, 0.5], [1.0, 1.0, 0.0, 0.0]], dtype=F64)
    p = S / S.sum(-1, keepdim=True) + 1e-7
    expected = torch.exp(-(p * p.log()).sum(-1))
    assert_close_to_ref(effective_rank_of_spectrum(S), expected)


def test_effective_rank_of_a_matrix():
    Q = torch.linalg.qr(_randn(40, 6)).Q
    assert float(effective_rank(3 * Q)) == pytest.approx(6, rel=1e-4)
    X = _randn(3, 20, 8, dtype=torch.float32)
    ranks = effective_rank(X)
    assert ranks.shape == (3,) and ranks.dtype == torch.float32
    assert_close_to_ref(ranks, effective_rank_of_spectrum(torch.linalg.svdvals(X)), scale=10)
    assert effective_rank(X.bfloat16()).dtype == torch.bfloat16


def test_effective_rank_errors():
    with pytest.raises(ValueError, match="S: expected non-negative"):
        effective_rank_of_spectrum(torch.tensor([1.0, -1.0]))
    with pytest.raises(ValueError, match="X: expected finite values"):
        effective_rank(torch.full((3, 3), math.nan))
    with pytest.raises(TypeError, match="X: expected a real floating tensor"):
        effective_rank(torch.ones(3, 3, dtype=torch.complex64))


@settings(max_examples=30, deadline=None)
@given(st.lists(st.floats(0.0, 1e3), min_size=1, max_size=20).filter(lambda v: sum(v) > 1e-3))
def test_effective_rank_lies_between_one_and_the_support(values):
    S = torch.tensor(values, dtype=F64)
    rank = float(effective_rank_of_spectrum(S, eps=0.0))
    assert 1 - 1e-9 <= rank <= int((S > 0).sum()) + 1e-9


# --- coding rate (MCR²) ----------------------------------------------------------------------


def _direct_rate(Z: torch.Tensor, eps: float) -> float:
    d, n = Z.shape
    return 0.5 * float(torch.logdet(torch.eye(d, dtype=F64) + d / (n * eps**2) * Z @ Z.T))


@pytest.mark.parametrize(("d", "n"), [(5, 12), (12, 5)])
def test_coding_rate_matches_direct_logdet(d, n):
    Z = _randn(d, n)
    assert float(coding_rate(Z, 0.5)) == pytest.approx(_direct_rate(Z, 0.5), rel=1e-10)


def test_coding_rate_known_values_and_batch():
    assert float(coding_rate(torch.zeros(4, 6), 0.5)) == 0.0
    # Z Zᵀ = (n/d) I for orthonormal rows scaled by √(n/d): R = (d/2) log(1 + 1/ε²)
    d, n, eps = 4, 16, 0.5
    Z = torch.linalg.qr(_randn(n, d)).Q.T * math.sqrt(n / d)
    assert float(coding_rate(Z, eps)) == pytest.approx(d / 2 * math.log(1 + 1 / eps**2))
    batch = _randn(3, 5, 7, dtype=torch.float32)
    rates = coding_rate(batch, 0.3)
    assert rates.shape == (3,) and rates.dtype == torch.float32
    assert float(rates[1]) == pytest.approx(_direct_rate(batch[1].double(), 0.3), rel=1e-5)
    with pytest.raises(ValueError, match="eps: expected a positive finite number"):
        coding_rate(batch, 0.0)


def _class_subspace_features(overlap: bool, d: int = 12, per_class: int = 10, k: int = 3,
                             dim: int = 3, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Unit-norm features of k classes, each spread within a dim-dimensional subspace;
    orthogonal subspaces, or all classes in the same subspace."""
    basis = torch.linalg.qr(_randn(d, k * dim, seed=seed)).Q
    columns, labels = [], []
    for j in range(k):
        sub = basis[:, :dim] if overlap else basis[:, j * dim:(j + 1) * dim]
        z = sub @ _randn(dim, per_class, seed=seed + 1 + j)
        columns.append(z / z.norm(dim=0, keepdim=True))
        labels.append(torch.full((per_class,), j))
    return torch.cat(columns, dim=1), torch.cat(labels)


def test_rate_reduction_matches_definition():
    Z, labels = _class_subspace_features(overlap=False)
    d, n = Z.shape
    eps = 0.5
    compression = 0.0
    for j in range(3):
        Zj = Z[:, labels == j]
        nj = Zj.shape[1]
        compression += nj / (2 * n) * float(
            torch.logdet(torch.eye(d, dtype=F64) + d / (nj * eps**2) * Zj @ Zj.T))
    result = coding_rate_reduction(Z, labels, eps=eps)
    assert float(result.compression) == pytest.approx(compression, rel=1e-10)
    assert float(result.expansion) == pytest.approx(_direct_rate(Z, eps), rel=1e-10)
    assert float(result.reduction) == pytest.approx(_direct_rate(Z, eps) - compression,
                                                    rel=1e-10)


def test_rate_reduction_is_larger_for_orthogonal_class_subspaces():
    orthogonal = coding_rate_reduction(*_class_subspace_features(overlap=False), eps=0.5)
    overlapping = coding_rate_reduction(*_class_subspace_features(overlap=True), eps=0.5)
    assert float(overlapping.reduction) >= 0
    assert float(orthogonal.reduction) > float(overlapping.reduction) + 1.0


def test_soft_membership_equals_hard_labels_and_empty_classes_are_skipped():
    Z, labels = _class_subspace_features(overlap=False)
    hard = coding_rate_reduction(Z, labels, eps=0.5, num_classes=5)  # classes 3, 4 empty
    pi = torch.nn.functional.one_hot(labels, 3).T.to(F64)
    soft = coding_rate_reduction(Z, membership=pi, eps=0.5)
    assert float(hard.reduction) == pytest.approx(float(soft.reduction), rel=1e-12)


def test_rate_reduction_argument_errors():
    Z, labels = _class_subspace_features(overlap=False)
    with pytest.raises(ValueError, match="pass exactly one"):
        coding_rate_reduction(Z, eps=0.5)
    with pytest.raises(ValueError, match=r"labels: expected an integer tensor of shape \(30,\)"):
        coding_rate_reduction(Z, labels[:-1], eps=0.5)
    with pytest.raises(ValueError, match="columns sum to 1"):
        coding_rate_reduction(Z, membership=torch.ones(2, 30), eps=0.5)
    with pytest.raises(ValueError, match="num_classes: expected >= 3"):
        coding_rate_reduction(Z, labels, eps=0.5, num_classes=2)


@settings(max_examples=25, deadline=None)
@given(d=st.integers(1, 8), n=st.integers(2, 20), k=st.integers(1, 4), seed=st.integers(0, 999))
def test_rate_reduction_is_non_negative(d, n, k, seed):
    g = torch.Generator().manual_seed(seed)
    Z = torch.randn(d, n, generator=g, dtype=F64)
    labels = torch.randint(0, k, (n,), generator=g)
    result = coding_rate_reduction(Z, labels, eps=0.7)
    assert float(result.reduction) >= -1e-10


# --- Marchenko–Pastur, BBP and spikes --------------------------------------------------------


def test_marchenko_pastur_edges_formula():
    assert marchenko_pastur_edges(0.25, 2.0) == pytest.approx((2 * 0.5**2, 2 * 1.5**2))
    assert marchenko_pastur_edges(1.0) == pytest.approx((0.0, 4.0))
    with pytest.raises(ValueError, match="aspect_ratio: expected a positive"):
        marchenko_pastur_edges(0.0)
    with pytest.raises(ValueError, match="sigma2: expected a positive"):
        marchenko_pastur_edges(0.5, -1.0)


def _noise_eigenvalues(n: int, p: int, sigma2: float = 1.0, seed: int = 0) -> torch.Tensor:
    X = math.sqrt(sigma2) * _randn(n, p, seed=seed)
    return torch.linalg.eigvalsh(X.T @ X / n)


@pytest.mark.parametrize(("n", "p"), [(2000, 400), (600, 900)])
def test_marchenko_pastur_law_matches_an_empirical_spectrum(n, p):
    sigma2 = 2.0
    values = _noise_eigenvalues(n, p, sigma2)
    gamma = p / n
    lo, hi = marchenko_pastur_edges(gamma, sigma2)
    nonzero = values[-min(n, p):]
    assert float(nonzero.max()) == pytest.approx(hi, rel=0.05)
    assert float(nonzero.min()) == pytest.approx(lo, rel=0.1, abs=0.02)
    empirical_median = float(nonzero.quantile(0.5))
    assert empirical_median == pytest.approx(sigma2 * marchenko_pastur_median(gamma), rel=0.02)


def test_marchenko_pastur_median_known_values():
    # γ → 0: the law concentrates at 1; γ > 1: non-zero part = γ · MP(1/γ).
    assert marchenko_pastur_median(1e-4) == pytest.approx(1.0, abs=1e-2)
    assert marchenko_pastur_median(2.0) == pytest.approx(2 * marchenko_pastur_median(0.5),
                                                         rel=1e-6)
    lo, hi = marchenko_pastur_edges(0.3)
    assert lo < marchenko_pastur_median(0.3) < hi


def test_bbp_threshold_and_spike_location_formulas():
    assert bbp_threshold(0.25, 2.0) == pytest.approx(3.0)
    assert spike_sample_eigenvalue(5.0, 0.25) == pytest.approx(5 * (1 + 0.25 / 4))
    assert spike_sample_eigenvalue(1.2, 0.25) == pytest.approx(marchenko_pastur_edges(0.25)[1])
    # At the threshold the spike's sample eigenvalue meets the bulk edge continuously.
    assert spike_sample_eigenvalue(bbp_threshold(0.25) + 1e-9, 0.25) == pytest.approx(
        marchenko_pastur_edges(0.25)[1])


def _spiked_data(n: int, p: int, spikes: list[float], seed: int = 0):
    """Rows x = Σ_j √(ℓ_j − 1) z_j u_j + g: population covariance I + Σ (ℓ_j − 1) u_j u_jᵀ."""
    U = torch.linalg.qr(_randn(p, len(spikes), seed=seed + 100)).Q
    scales = torch.tensor(spikes, dtype=F64).sub(1).sqrt()
    return _randn(n, p, seed=seed) + (_randn(n, len(spikes), seed=seed + 1) * scales) @ U.T, U


def test_spiked_outliers_finds_planted_spikes_above_bbp():
    n, p = 1000, 200
    gamma = p / n
    spikes = [12.0, 6.0, 3.0]
    assert min(spikes) > bbp_threshold(gamma)
    X, U = _spiked_data(n, p, spikes)
    found = spiked_outliers(X.float())
    assert found.indices.tolist() == [0, 1, 2]
    assert found.sigma2 == pytest.approx(1.0, rel=0.05)
    assert found.eigenvectors.shape == (p, 3) and found.eigenvectors.dtype == torch.float32
    alignment = (found.eigenvectors.double().T @ U).abs().diagonal()
    assert bool((alignment > 0.8).all())
    for value, ell in zip(found.eigenvalues.tolist(), spikes, strict=True):
        assert value == pytest.approx(spike_sample_eigenvalue(ell, gamma), rel=0.15)


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize(("n", "p"), [(1000, 200), (300, 500)])
def test_spiked_outliers_finds_none_in_pure_noise(seed, n, p):
    found = spiked_outliers(_randn(n, p, seed=seed))
    assert found.indices.numel() == 0
    assert found.eigenvectors.shape == (p, 0)
    assert found.threshold > found.bulk_edge


def test_spiked_outliers_from_eigenvalues_and_given_sigma2():
    n, p = 1000, 200
    X, _ = _spiked_data(n, p, [10.0, 5.0], seed=3)
    values = torch.linalg.eigvalsh(torch.cov(X.T))  # ascending
    found = spiked_outliers_from_eigenvalues(values, n - 1)
    assert found.indices.tolist() == [p - 1, p - 2]
    assert found.eigenvectors is None
    given = spiked_outliers_from_eigenvalues(values, n - 1, sigma2=6.0)
    assert given.sigma2 == 6.0 and given.indices.numel() == 0
    loose = spiked_outliers_from_eigenvalues(values, n - 1, tw_margin=TW1_QUANTILES[0.10])
    assert loose.threshold < found.threshold


def test_spiked_outliers_argument_errors():
    with pytest.raises(ValueError, match=r"X: expected a data matrix \[n, p\]"):
        spiked_outliers(torch.randn(2, 10, 5))
    with pytest.raises(ValueError, match="n_samples: expected an int >= 2"):
        spiked_outliers_from_eigenvalues(torch.ones(5), 1)
    with pytest.raises(ValueError, match="cannot estimate sigma2"):
        spiked_outliers_from_eigenvalues(torch.zeros(5), 10)
