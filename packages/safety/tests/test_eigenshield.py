"""EigenShield and the PCA baseline against random-matrix closed forms and planted spikes."""

from __future__ import annotations

import math

import pytest
import torch

from subspace_core.linalg import bbp_threshold, marchenko_pastur_edges, spike_sample_eigenvalue
from subspace_safety.eigenshield import EigenShield, PCAProjection


def _orthonormal(d: int, k: int, gen: torch.Generator) -> torch.Tensor:
    Q, _ = torch.linalg.qr(torch.randn(d, k, generator=gen, dtype=torch.float64))
    return Q


def _spiked(n: int, d: int, spikes: list[float], sigma2: float, seed: int):
    """Samples of N(0, σ² I + Σ_j (ℓ_j − σ²) u_j u_jᵀ) and the planted directions u [d, k]."""
    gen = torch.Generator().manual_seed(seed)
    U = _orthonormal(d, len(spikes), gen)
    Z = torch.randn(n, d, generator=gen, dtype=torch.float64) * math.sqrt(sigma2)
    extra = torch.tensor([math.sqrt(ell) - math.sqrt(sigma2) for ell in spikes],
                         dtype=torch.float64)
    # along u_j the variance becomes (√σ² + (√ℓ − √σ²))² = ℓ; orthogonal to U it stays σ²
    X = Z + ((Z @ U) / math.sqrt(sigma2) * extra) @ U.mT
    return X, U


@pytest.mark.parametrize(("n", "p", "sigma2"), [(2000, 200, 1.0), (1000, 400, 2.5)])
def test_white_noise_spectrum_stays_inside_mp_edges(n, p, sigma2):
    gamma = p / n
    lo, hi = marchenko_pastur_edges(gamma, sigma2)
    root = math.sqrt(gamma)
    assert lo == pytest.approx(sigma2 * (1 - root) ** 2, rel=1e-12)
    assert hi == pytest.approx(sigma2 * (1 + root) ** 2, rel=1e-12)
    gen = torch.Generator().manual_seed(0)
    X = torch.randn(n, p, generator=gen, dtype=torch.float64) * math.sqrt(sigma2)
    eig = torch.linalg.eigvalsh(X.mT @ X / n)
    # finite-n edges fluctuate by O(n^{-2/3}); 6 % of the bulk width is ample at these sizes
    tol = 0.06 * (hi - lo)
    assert float(eig.min()) > lo - tol and float(eig.max()) < hi + tol
    # and the bulk really reaches both edges (the law is not narrower than claimed)
    assert float(eig.min()) < lo + tol and float(eig.max()) > hi - tol


def test_planted_spikes_above_bbp_are_kept_and_noise_removed():
    n, d, sigma2 = 2000, 200, 1.0
    gamma = d / n
    assert bbp_threshold(gamma, sigma2) == pytest.approx(1 + math.sqrt(gamma))
    spikes = [4.0, 2.2, 1.1]  # the last is below the BBP threshold 1.316: invisible
    X, U = _spiked(n, d, spikes, sigma2, seed=1)
    shield = EigenShield().fit(X, quantile=1.0)
    assert shield.rank == 2
    assert shield.sigma2 == pytest.approx(sigma2, rel=0.05)
    # centring leaves n − 1 degrees of freedom, so the edge uses γ = d / (n − 1)
    gamma_eff = d / (n - 1)
    assert shield.bulk_edge == pytest.approx((1 + math.sqrt(gamma_eff)) ** 2 * shield.sigma2)
    # sample eigenvalues sit where Baik–Silverstein puts them, not at the population spike
    for value, ell in zip(shield.candidate_eigenvalues.tolist(), spikes[:2], strict=True):
        assert value == pytest.approx(spike_sample_eigenvalue(ell, gamma, sigma2), rel=0.1)
    # kept subspace = the two strong planted directions (cosines of principal angles ≈ 1)
    cosines = torch.linalg.svdvals(U[:, :2].mT @ shield.basis)
    assert float(cosines.min()) > 0.9
    # pure-noise directions (orthogonal to every planted spike) are almost entirely removed
    noise_dirs = _orthonormal(d, 20, torch.Generator().manual_seed(7))
    noise_dirs = noise_dirs - U @ (U.mT @ noise_dirs)
    noise_dirs = noise_dirs / noise_dirs.norm(dim=0)
    kept_energy = (shield.projector() @ noise_dirs).norm(dim=0)
    assert float(kept_energy.max()) < 0.2
    # PCA at the same rank, the baseline, finds the same top-2 subspace here
    pca = PCAProjection().fit(X, rank=shield.rank)
    assert float(torch.linalg.svdvals(pca.basis.mT @ shield.basis).min()) > 0.999


def test_pure_white_noise_has_nothing_to_keep():
    X = torch.randn(1500, 150, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    with pytest.raises(ValueError, match="Marchenko"):
        EigenShield().fit(X)


def test_transform_is_an_orthogonal_projection():
    X, _ = _spiked(1500, 100, [6.0, 4.0, 3.0], 1.0, seed=2)
    shield = EigenShield().fit(X)
    P = shield.projector()
    assert torch.allclose(P, P.mT, atol=1e-12)
    assert torch.allclose(P @ P, P, atol=1e-10)
    assert torch.allclose(shield.basis.mT @ shield.basis, torch.eye(shield.rank,
                                                                    dtype=P.dtype), atol=1e-10)
    Y = shield(X)
    assert torch.allclose(shield(Y), Y, atol=1e-10)
    # what is removed is orthogonal to what is kept (about the fitted mean)
    residual = X - Y
    assert float(((Y - shield.mean) @ residual.mT).abs().max()) < 1e-8


@pytest.mark.parametrize("quantile", [0.25, 0.5, 0.8, 1.0])
def test_quantile_threshold_keeps_documented_fraction(quantile):
    spikes = [12.0, 10.0, 8.0, 6.0, 5.0, 4.0, 3.5, 3.0]
    X, _ = _spiked(3000, 120, spikes, 1.0, seed=4)
    cal, _ = _spiked(1000, 120, spikes, 1.0, seed=4)  # same directions (same seed), fresh
    cal = cal[torch.randperm(1000, generator=torch.Generator().manual_seed(5))]
    shield = EigenShield().fit(X, calibration=cal, quantile=quantile)
    k = shield.scores.numel()
    assert k == len(spikes)
    assert shield.rank == math.ceil(quantile * k) == int(shield.kept.sum())
    # the kept ones are exactly those with the lowest scores, at or below the threshold
    kept_scores = shield.scores[shield.kept]
    assert float(kept_scores.max()) == pytest.approx(shield.score_threshold)
    if not bool(shield.kept.all()):
        assert float(shield.scores[~shield.kept].min()) > float(kept_scores.max())


def test_rbns_drops_the_direction_an_attack_pushes_along():
    spikes = [6.0, 5.0, 4.0, 3.0]
    X, U = _spiked(2000, 80, spikes, 1.0, seed=6)
    gen = torch.Generator().manual_seed(8)
    # the "attack" moves calibration embeddings along the *strongest* spike only
    attacked = X + 2.0 * torch.randn(2000, 1, generator=gen, dtype=torch.float64) * U[:, :1].mT
    attacked = attacked + 0.05 * torch.randn(X.shape, generator=gen, dtype=torch.float64)
    shield = EigenShield().fit(X, perturbed=attacked, quantile=0.75)
    assert shield.rank == 3
    # the strongest variance direction is gone (PCA would keep it first) ...
    assert float((U[:, 0] @ shield.basis).norm()) < 0.2
    pca = PCAProjection().fit(X, rank=shield.rank)
    assert float((U[:, 0] @ pca.basis).norm()) > 0.9
    # ... and the three robust spikes are kept
    assert float(torch.linalg.svdvals(U[:, 1:].mT @ shield.basis).min()) > 0.9
    assert int(shield.scores.argmax()) == 0  # candidates are ordered by eigenvalue


def test_save_load_roundtrip(tmp_path):
    X, _ = _spiked(800, 60, [5.0, 3.0], 1.0, seed=9)
    shield = EigenShield().fit(X.float())
    digest = shield.save(tmp_path / "shield.safetensors")
    loaded = EigenShield.load(tmp_path / "shield.safetensors", sha256=digest)
    assert torch.equal(loaded.basis, shield.basis) and torch.equal(loaded.kept, shield.kept)
    assert loaded.score_threshold == shield.score_threshold
    assert torch.equal(loaded(X[:5].float()), shield(X[:5].float()))
    with pytest.raises(ValueError, match="kind"):
        PCAProjection.load(tmp_path / "shield.safetensors")
    pca = PCAProjection().fit(X, rank=2)
    pca.save(tmp_path / "pca.safetensors")
    assert torch.equal(PCAProjection.load(tmp_path / "pca.safetensors").basis, pca.basis)


def test_bad_inputs_raise_clear_errors():
    X, _ = _spiked(500, 40, [5.0], 1.0, seed=10)
    with pytest.raises(ValueError, match="quantile"):
        EigenShield().fit(X, quantile=0.0)
    with pytest.raises(ValueError, match="calibration"):
        EigenShield().fit(X, calibration=X[:, :30])
    with pytest.raises(ValueError, match="perturbed"):
        EigenShield().fit(X, perturbed=X[:10])
    with pytest.raises(TypeError, match="embeddings"):
        EigenShield().fit(X.numpy())
    with pytest.raises(ValueError, match="rank"):
        PCAProjection().fit(X, rank=0)
    with pytest.raises(RuntimeError, match="fit"):
        EigenShield()(X)
    shield = EigenShield().fit(X)
    with pytest.raises(ValueError, match=r"x: expected shape \[..., 40\]"):
        shield(X[:, :10])
