"""Image metrics and the 3DGS photometric loss.

Images are channel-last float tensors in [0, 1]: ``[H, W, C]`` or a batch ``[B, H, W, C]``.
SSIM follows Wang et al. 2004 (11x11 Gaussian window, sigma 1.5, K1 = 0.01, K2 = 0.03,
population statistics) and averages the SSIM map over the *valid* window positions only, as
the reference MATLAB code does; 3DGS zero-pads instead, which biases border windows.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

__all__ = ["SSIM_LAMBDA", "gaussian_window", "photometric_loss", "psnr", "ssim"]

#: Weight of the D-SSIM term in the 3DGS loss ``(1 - lambda) L1 + lambda (1 - SSIM)``.
SSIM_LAMBDA = 0.2


def _check_pair(pred: torch.Tensor, target: torch.Tensor) -> None:
    for name, t in (("pred", pred), ("target", target)):
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{name}: expected a torch.Tensor, got {type(t).__name__}")
        if t.ndim not in (3, 4):
            raise ValueError(f"{name}: expected [H, W, C] or [B, H, W, C], got {list(t.shape)}")
    if pred.shape != target.shape:
        raise ValueError(
            f"target: expected the shape of pred {list(pred.shape)}, got {list(target.shape)}"
        )


def psnr(
    pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None = None
) -> torch.Tensor:
    """Peak signal-to-noise ratio in dB for data range 1: ``-10 log10(MSE)``.

    Args:
        pred, target: ``[H, W, C]`` or ``[B, H, W, C]`` images.
        mask: optional bool ``[H, W]`` / ``[B, H, W]``; the MSE is taken over masked pixels only.

    Returns:
        A scalar tensor (one PSNR of the pooled MSE, also for batches).
    """
    _check_pair(pred, target)
    sq = (pred - target).square()
    if mask is None:
        return -10.0 * torch.log10(sq.mean())
    if mask.shape != pred.shape[:-1]:
        raise ValueError(f"mask: expected shape {list(pred.shape[:-1])}, got {list(mask.shape)}")
    if not bool(mask.any()):
        raise ValueError("mask: selects no pixel")
    return -10.0 * torch.log10(sq[mask.bool()].mean())


def gaussian_window(size: int = 11, sigma: float = 1.5, dtype=torch.float32) -> torch.Tensor:
    """Normalised 1-D Gaussian ``[size]`` centred on the middle tap."""
    x = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    g = torch.exp(-(x * x) / (2 * sigma * sigma))
    return (g / g.sum()).to(dtype)


def ssim(
    pred: torch.Tensor,
    target: torch.Tensor,
    *,
    window_size: int = 11,
    sigma: float = 1.5,
    k1: float = 0.01,
    k2: float = 0.03,
    data_range: float = 1.0,
) -> torch.Tensor:
    """Mean structural similarity (Wang et al. 2004), differentiable.

    Local means, variances and covariance come from a separable Gaussian window; the SSIM map
    ``((2 mu_x mu_y + C1)(2 s_xy + C2)) / ((mu_x^2 + mu_y^2 + C1)(s_x^2 + s_y^2 + C2))`` with
    ``C_i = (k_i * data_range)^2`` is averaged over valid window positions and channels.

    Args:
        pred, target: ``[H, W, C]`` or ``[B, H, W, C]`` images, ``H, W >= window_size``.

    Returns:
        A scalar tensor (mean over the batch too).
    """
    _check_pair(pred, target)
    h, w = pred.shape[-3], pred.shape[-2]
    if min(h, w) < window_size:
        raise ValueError(f"pred: expected H, W >= window_size {window_size}, got {h}x{w}")
    x = pred.reshape(-1, h, w, pred.shape[-1]).permute(0, 3, 1, 2)
    y = target.reshape(-1, h, w, pred.shape[-1]).permute(0, 3, 1, 2)
    b, c = x.shape[:2]
    # all five statistics in one depthwise pass: stack them along channels
    stats = torch.cat([x, y, x * x, y * y, x * y], dim=1).reshape(b * 5 * c, 1, h, w)
    g = gaussian_window(window_size, sigma, dtype=pred.dtype).to(pred.device)
    blurred = F.conv2d(F.conv2d(stats, g.view(1, 1, -1, 1)), g.view(1, 1, 1, -1))
    mu_x, mu_y, e_xx, e_yy, e_xy = blurred.reshape(b, 5, c, *blurred.shape[-2:]).unbind(1)
    var_x = e_xx - mu_x * mu_x
    var_y = e_yy - mu_y * mu_y
    cov = e_xy - mu_x * mu_y
    c1 = (k1 * data_range) ** 2
    c2 = (k2 * data_range) ** 2
    num = (2 * mu_x * mu_y + c1) * (2 * cov + c2)
    den = (mu_x * mu_x + mu_y * mu_y + c1) * (var_x + var_y + c2)
    return (num / den).mean()


def photometric_loss(
    pred: torch.Tensor, target: torch.Tensor, ssim_lambda: float = SSIM_LAMBDA
) -> torch.Tensor:
    """The 3DGS training loss ``(1 - lambda) * L1 + lambda * (1 - SSIM)`` (scalar)."""
    if not 0.0 <= ssim_lambda <= 1.0 or math.isnan(ssim_lambda):
        raise ValueError(f"ssim_lambda: expected in [0, 1], got {ssim_lambda}")
    _check_pair(pred, target)
    l1 = (pred - target).abs().mean()
    if ssim_lambda == 0.0:
        return l1
    return (1.0 - ssim_lambda) * l1 + ssim_lambda * (1.0 - ssim(pred, target))
