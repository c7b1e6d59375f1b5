import math

import numpy as np
import pytest
import torch
from numpy.lib.stride_tricks import sliding_window_view

from subspace_3dgs.metrics import photometric_loss, psnr, ssim


def _ssim_reference(x: np.ndarray, y: np.ndarray) -> float:
    """Wang et al. 2004 written out window by window (float64): 11x11 Gaussian weights with
    sigma 1.5, weighted population moments, mean over valid windows and channels."""
    r = np.arange(11) - 5.0
    g = np.exp(-(r[:, None] ** 2 + r[None, :] ** 2) / (2 * 1.5**2))
    w = g / g.sum()
    c1, c2 = 0.01**2, 0.03**2
    vals = []
    for ch in range(x.shape[-1]):
        px = sliding_window_view(x[..., ch], (11, 11))  # [H-10, W-10, 11, 11]
        py = sliding_window_view(y[..., ch], (11, 11))
        mx = (px * w).sum((-1, -2))
        my = (py * w).sum((-1, -2))
        vx = (w * (px - mx[..., None, None]) ** 2).sum((-1, -2))
        vy = (w * (py - my[..., None, None]) ** 2).sum((-1, -2))
        cxy = (w * (px - mx[..., None, None]) * (py - my[..., None, None])).sum((-1, -2))
        s = ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx**2 + my**2 + c1) * (vx + vy + c2))
        vals.append(s.mean())
    return float(np.mean(vals))


@pytest.fixture
def pair():
    rng = np.random.default_rng(0)
    # a smooth image plus a noisy, shifted copy: SSIM well inside (0, 1)
    yy, xx = np.mgrid[0:24, 0:20] / 10.0
    base = np.stack([np.sin(xx + yy), np.cos(2 * xx), xx * yy / 5.0], -1) * 0.4 + 0.5
    noisy = np.clip(base * 0.9 + 0.05 + rng.normal(0, 0.08, base.shape), 0, 1)
    return torch.tensor(base, dtype=torch.float64), torch.tensor(noisy, dtype=torch.float64)


def test_psnr_matches_formula_and_mask(pair):
    a, b = pair
    mse = float(((a - b) ** 2).mean())
    assert float(psnr(a, b)) == pytest.approx(-10 * math.log10(mse), rel=1e-10)
    mask = torch.zeros(a.shape[:2], dtype=torch.bool)
    mask[3:10, 5:] = True
    mse_m = float(((a - b)[3:10, 5:] ** 2).mean())
    assert float(psnr(a, b, mask)) == pytest.approx(-10 * math.log10(mse_m), rel=1e-10)
    # a uniform error of 0.1 is exactly 20 dB
    assert float(psnr(a, a + 0.1)) == pytest.approx(20.0, abs=1e-9)


def test_ssim_matches_reference(pair):
    a, b = pair
    ref = _ssim_reference(a.numpy(), b.numpy())
    assert 0.2 < ref < 0.95
    assert float(ssim(a, b)) == pytest.approx(ref, abs=1e-10)
    assert float(ssim(a, a)) == pytest.approx(1.0, abs=1e-12)
    # batch = mean of the per-image values (same valid-window count each)
    batch = ssim(torch.stack([a, a]), torch.stack([b, a]))
    assert float(batch) == pytest.approx((ref + 1.0) / 2, abs=1e-10)


def test_loss_is_weighted_l1_and_dssim_and_differentiable(pair):
    a, b = pair
    a = a.clone().requires_grad_(True)
    loss = photometric_loss(a, b)
    l1 = float((a.detach() - b).abs().mean())
    ref = 0.8 * l1 + 0.2 * (1 - _ssim_reference(a.detach().numpy(), b.numpy()))
    assert float(loss.detach()) == pytest.approx(ref, abs=1e-10)
    loss.backward()
    assert a.grad is not None and torch.isfinite(a.grad).all() and a.grad.abs().sum() > 0
    assert float(photometric_loss(a.detach(), b, 0.0)) == pytest.approx(l1, abs=1e-12)


def test_bad_inputs_are_named(pair):
    a, b = pair
    with pytest.raises(ValueError, match="target"):
        psnr(a, b[:-1])
    with pytest.raises(ValueError, match="mask"):
        psnr(a, b, torch.ones(3, 3, dtype=torch.bool))
    with pytest.raises(ValueError, match="window_size"):
        ssim(a[:8], b[:8])
    with pytest.raises(ValueError, match="ssim_lambda"):
        photometric_loss(a, b, 1.5)
