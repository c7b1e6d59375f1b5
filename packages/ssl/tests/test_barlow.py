"""Barlow Twins / Mixed Barlow Twins losses against their formulas on small tensors."""

from __future__ import annotations

import pytest
import torch

from subspace_ssl.barlow import (
    MixedBarlowLoss,
    barlow_twins_loss,
    cross_correlation,
    mixup_regulariser,
    standardize,
)


def _decorrelated(n: int, d: int, seed: int = 0) -> torch.Tensor:
    """[n, d] with zero-mean, unit-variance, mutually orthogonal columns."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g, dtype=torch.float64)
    q, _ = torch.linalg.qr(x - x.mean(0))
    q = q - q.mean(0)  # QR of centred data keeps the columns centred up to rounding
    return q * (n**0.5) / q.norm(dim=0)


def _loop_loss(z1, z2, lambd):
    a, b = standardize(z1), standardize(z2)
    n, d = a.shape
    total = 0.0
    for i in range(d):
        for j in range(d):
            c = float((a[:, i] * b[:, j]).sum() / n)
            total += (1 - c) ** 2 if i == j else lambd * c**2
    return total


def test_perfectly_correlated_decorrelated_views_give_zero_loss():
    z = _decorrelated(64, 8)
    assert barlow_twins_loss(z, z.clone(), 0.01).item() == pytest.approx(0.0, abs=1e-8)


def test_redundant_dimensions_pay_lambda_per_off_diagonal_pair():
    base = torch.randn(50, 1, dtype=torch.float64)
    z = base.repeat(1, 6)  # every dimension identical: C is all ones
    expected = 0.02 * 6 * 5
    assert barlow_twins_loss(z, z, 0.02).item() == pytest.approx(expected, rel=1e-4)


def test_anticorrelated_views_pay_four_per_dimension():
    z = _decorrelated(40, 5)
    assert barlow_twins_loss(z, -z, 0.0).item() == pytest.approx(4 * 5, rel=1e-4)


def test_loss_matches_elementwise_formula_on_random_inputs():
    g = torch.Generator().manual_seed(3)
    z1 = torch.randn(32, 6, generator=g, dtype=torch.float64)
    z2 = z1 + 0.5 * torch.randn(32, 6, generator=g, dtype=torch.float64)
    assert barlow_twins_loss(z1, z2, 0.05).item() == pytest.approx(_loop_loss(z1, z2, 0.05),
                                                                  rel=1e-6)


def test_standardize_gives_unit_diagonal_correlation():
    scales = torch.tensor([1.0, 10.0, 0.5, 3.0], dtype=torch.float64)
    z = torch.randn(100, 4, dtype=torch.float64) * scales + 5
    c = cross_correlation(standardize(z), standardize(z))
    assert torch.allclose(torch.diagonal(c), torch.ones(4, dtype=torch.float64), atol=1e-4)


def test_mixup_regulariser_vanishes_at_the_endpoints():
    g = torch.Generator().manual_seed(1)
    z1 = torch.randn(20, 5, generator=g, dtype=torch.float64)
    z2 = torch.randn(20, 5, generator=g, dtype=torch.float64)
    perm = torch.randperm(20, generator=g)
    assert mixup_regulariser(z1, z2, z1.clone(), 1.0, perm).item() == pytest.approx(0, abs=1e-9)
    assert mixup_regulariser(z1, z2, z2[perm], 0.0, perm).item() == pytest.approx(0, abs=1e-9)
    # a mixed embedding unrelated to the mix pays
    assert mixup_regulariser(z1, z2, torch.randn(20, 5, dtype=torch.float64), 0.5, perm) > 0.1


def test_mixup_regulariser_matches_its_formula():
    g = torch.Generator().manual_seed(2)
    z1, z2, zm = (torch.randn(16, 4, generator=g, dtype=torch.float64) for _ in range(3))
    perm = torch.randperm(16, generator=g)
    alpha = 0.3
    s1, s2, sm = standardize(z1), standardize(z2), standardize(zm)
    expected = 0.0
    for sv in (s1, s2):
        target = alpha * s1.T @ sv / 16 + (1 - alpha) * s2[perm].T @ sv / 16
        expected += float(((sm.T @ sv / 16) - target).pow(2).sum())
    assert mixup_regulariser(z1, z2, zm, alpha, perm).item() == pytest.approx(expected, rel=1e-9)


def test_mixed_loss_combines_terms_with_scale_times_lambda():
    g = torch.Generator().manual_seed(4)
    z1, z2, zm = (torch.randn(16, 4, generator=g, dtype=torch.float64) for _ in range(3))
    perm = torch.randperm(16, generator=g)
    terms = MixedBarlowLoss(lambd=0.01, mixup_scale=3.0)(z1, z2, zm, 0.4, perm)
    assert terms.loss.item() == pytest.approx(terms.barlow.item() + 3.0 * 0.01 * terms.mixup.item())
    plain = MixedBarlowLoss(lambd=0.01, mixup_scale=0.0)(z1, z2)
    assert plain.loss.item() == pytest.approx(barlow_twins_loss(z1, z2, 0.01).item())


def test_bad_inputs_raise_clear_errors():
    with pytest.raises(ValueError, match="z1/z2"):
        barlow_twins_loss(torch.randn(4, 3), torch.randn(4, 2))
    with pytest.raises(ValueError, match=">= 2 samples"):
        barlow_twins_loss(torch.randn(1, 3), torch.randn(1, 3))
    with pytest.raises(ValueError, match="alpha"):
        mixup_regulariser(torch.randn(4, 3), torch.randn(4, 3), torch.randn(4, 3), 1.5,
                          torch.arange(4))
    with pytest.raises(ValueError, match="z_mixed"):
        MixedBarlowLoss(mixup_scale=1.0)(torch.randn(4, 3), torch.randn(4, 3))
