"""Batched augmentations for small greyscale images (one call augments a whole batch).

Self-supervised training on CPU cannot afford a per-image PIL pipeline; here every
transform acts on a batch tensor [N, 1, H, W] with per-image random parameters drawn from
an explicit ``torch.Generator`` (so a recipe's views are reproducible):

* random resized crop + horizontal flip in one ``affine_grid``/``grid_sample`` call
  (bilinear, zero padding never needed: crops stay inside the image);
* brightness and contrast jitter (applied with probability ``p_jitter``);
* random erasing of one rectangle (probability ``p_erase``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

__all__ = ["AugmentConfig", "augment"]


@dataclass(frozen=True)
class AugmentConfig:
    """Parameters of :func:`augment` (defaults: the Fashion-MNIST recipes')."""

    crop_scale: tuple[float, float] = (0.35, 1.0)  # area fraction kept by the crop
    crop_ratio: tuple[float, float] = (3 / 4, 4 / 3)  # aspect ratio of the crop
    p_flip: float = 0.5
    p_jitter: float = 0.8
    brightness: float = 0.4  # multiplicative factor in [1 − b, 1 + b]
    contrast: float = 0.4  # contrast factor in [1 − c, 1 + c] around the image mean
    p_erase: float = 0.25
    erase_scale: tuple[float, float] = (0.02, 0.15)

    def __post_init__(self):
        lo, hi = self.crop_scale
        if not 0 < lo <= hi <= 1:
            raise ValueError(f"crop_scale: expected 0 < lo <= hi <= 1, got {self.crop_scale}")
        for name in ("p_flip", "p_jitter", "p_erase"):
            value = getattr(self, name)
            if not 0 <= value <= 1:
                raise ValueError(f"{name}: expected a probability in [0, 1], got {value}")


def _uniform(n: int, lo: float, hi: float, generator: torch.Generator) -> torch.Tensor:
    return lo + (hi - lo) * torch.rand(n, generator=generator)


def _crop_and_flip(x: torch.Tensor, cfg: AugmentConfig, generator: torch.Generator
                   ) -> torch.Tensor:
    n = x.shape[0]
    area = _uniform(n, *cfg.crop_scale, generator)
    log_ratio = _uniform(n, math.log(cfg.crop_ratio[0]), math.log(cfg.crop_ratio[1]), generator)
    ratio = log_ratio.exp()
    # crop width/height as fractions of the image, clipped so the crop fits inside
    w = (area * ratio).sqrt().clamp(max=1.0)
    h = (area / ratio).sqrt().clamp(max=1.0)
    # centre in normalised coordinates [-1, 1] so that the crop stays inside the image
    cx = (1 - w) * (2 * torch.rand(n, generator=generator) - 1)
    cy = (1 - h) * (2 * torch.rand(n, generator=generator) - 1)
    flip = torch.where(torch.rand(n, generator=generator) < cfg.p_flip, -1.0, 1.0)
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0] = w * flip
    theta[:, 0, 2] = cx
    theta[:, 1, 1] = h
    theta[:, 1, 2] = cy
    grid = F.affine_grid(theta.to(x.dtype), list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


def _jitter(x: torch.Tensor, cfg: AugmentConfig, generator: torch.Generator) -> torch.Tensor:
    n = x.shape[0]
    apply = (torch.rand(n, generator=generator) < cfg.p_jitter).to(x.dtype)
    b = 1 + apply * _uniform(n, -cfg.brightness, cfg.brightness, generator)
    c = 1 + apply * _uniform(n, -cfg.contrast, cfg.contrast, generator)
    x = x * b.view(n, 1, 1, 1)
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    return ((x - mean) * c.view(n, 1, 1, 1) + mean).clamp(0, 1)


def _erase(x: torch.Tensor, cfg: AugmentConfig, generator: torch.Generator) -> torch.Tensor:
    n, _, height, width = x.shape
    area = _uniform(n, *cfg.erase_scale, generator)
    ratio = _uniform(n, math.log(0.3), math.log(3.3), generator).exp()
    eh = (area * ratio).sqrt().mul(height).round().clamp(1, height)
    ew = (area / ratio).sqrt().mul(width).round().clamp(1, width)
    top = (torch.rand(n, generator=generator) * (height - eh + 1)).floor()
    left = (torch.rand(n, generator=generator) * (width - ew + 1)).floor()
    apply = torch.rand(n, generator=generator) < cfg.p_erase
    rows = torch.arange(height).view(1, height, 1)
    cols = torch.arange(width).view(1, 1, width)
    inside = ((rows >= top.view(n, 1, 1)) & (rows < (top + eh).view(n, 1, 1))
              & (cols >= left.view(n, 1, 1)) & (cols < (left + ew).view(n, 1, 1)))
    mask = (inside & apply.view(n, 1, 1)).unsqueeze(1)
    return x.masked_fill(mask, 0.0)


def augment(images: torch.Tensor, cfg: AugmentConfig = AugmentConfig(), *,
            generator: torch.Generator | None = None) -> torch.Tensor:
    """One random view of each image.

    Args:
        images: uint8 [N, H, W] or float [N, 1, H, W] in [0, 1].
        cfg: the transform parameters.
        generator: source of randomness (default: a fresh one seeded from torch's RNG).

    Returns:
        float32 [N, 1, H, W] in [0, 1] (normalise with :func:`subspace_ssl.data.to_input`).
    """
    if images.dtype == torch.uint8:
        if images.ndim != 3:
            raise ValueError(f"images: expected uint8 [N, H, W], got {tuple(images.shape)}")
        x = images.float().div(255.0).unsqueeze(1)
    else:
        if images.ndim != 4 or images.shape[1] != 1:
            raise ValueError(f"images: expected float [N, 1, H, W], got {tuple(images.shape)}")
        x = images.float()
    if generator is None:
        generator = torch.Generator().manual_seed(int(torch.randint(2**62, ())))
    x = _crop_and_flip(x, cfg, generator)
    x = _jitter(x, cfg, generator)
    return _erase(x, cfg, generator)
