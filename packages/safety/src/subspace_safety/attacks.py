"""Projected gradient descent (PGD) image attacks under an L∞ budget.

Madry et al. 2018, "Towards Deep Learning Models Resistant to Adversarial Attacks"
(ICLR 2018, arXiv:1706.06083): start at a uniformly random point of the ``eps``-ball around
the image, then repeat ``x ← Π(x + step · sign(∇ₓ loss))`` where ``Π`` clips back into the
ball and into the valid pixel box ``[0, 1]``. The loss is the cross-entropy of the model's
logits against the true labels (untargeted: any wrong class counts).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F

__all__ = ["pgd_linf"]


def _check_budget(name: str, value: object, *, allow_zero: bool) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) \
            or not math.isfinite(value) or value < 0 or (value == 0 and not allow_zero):
        bound = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"{name}: expected a finite float {bound}, got {value!r}")
    return float(value)


def pgd_linf(
    model_fn: Callable[[torch.Tensor], torch.Tensor],
    images: torch.Tensor,
    labels: torch.Tensor,
    eps: float,
    step: float,
    steps: int,
    seed: int = 0,
    *,
    random_start: bool = True,
    stop_on_success: bool = False,
) -> torch.Tensor:
    """Untargeted L∞ PGD on ``model_fn``'s logits.

    Args:
        model_fn: differentiable map ``images [B, C, H, W] -> logits [B, K]``.
        images: float images ``[B, C, H, W]`` with values in ``[0, 1]``.
        labels: true classes ``[B]`` (int64), in ``0..K-1``.
        eps: L∞ radius in pixel units of the ``[0, 1]`` scale (e.g. ``8 / 255``); ``0``
            returns the images unchanged.
        step: step size of each signed-gradient ascent step (e.g. ``eps / 4``).
        steps: number of ascent steps (``>= 0``).
        seed: seed of the random start (a private generator: global RNG state untouched).
        random_start: start at a uniform point of the ball (Madry et al.) instead of at
            ``images``.
        stop_on_success: freeze an example at the first iterate that ``model_fn``
            misclassifies (the strongest white-box success count); otherwise every example
            takes all ``steps`` (pushes past the boundary, which transfers better).

    Returns:
        adversarial images ``[B, C, H, W]`` (detached, ``images``' dtype), with
        ``|adv - images| <= eps`` elementwise and values in ``[0, 1]``.
    """
    if not isinstance(images, torch.Tensor) or not images.dtype.is_floating_point:
        raise TypeError(f"images: expected a float torch.Tensor [B, C, H, W] in [0, 1], got "
                        f"{getattr(images, 'dtype', type(images).__name__)}")
    if images.dim() != 4:
        raise ValueError(f"images: expected shape [B, C, H, W], got {tuple(images.shape)}")
    if images.numel() and (float(images.min()) < 0 or float(images.max()) > 1):
        raise ValueError(f"images: expected values in [0, 1], got range "
                         f"[{float(images.min()):.4g}, {float(images.max()):.4g}]")
    if not isinstance(labels, torch.Tensor) or labels.dtype != torch.int64:
        raise TypeError(f"labels: expected an int64 torch.Tensor [{len(images)}], got "
                        f"{getattr(labels, 'dtype', type(labels).__name__)}")
    if labels.shape != (len(images),):
        raise ValueError(f"labels: expected shape [{len(images)}], got {tuple(labels.shape)}")
    eps = _check_budget("eps", eps, allow_zero=True)
    step = _check_budget("step", step, allow_zero=False)
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 0:
        raise ValueError(f"steps: expected an int >= 0, got {steps!r}")

    clean = images.detach()
    labels = labels.to(clean.device)
    low, high = (clean - eps).clamp_min(0), (clean + eps).clamp_max(1)
    if eps == 0 or len(clean) == 0:
        return clean.clone()
    adv = clean.clone()
    if random_start:
        gen = torch.Generator(device="cpu").manual_seed(int(seed))
        noise = torch.rand(clean.shape, generator=gen, dtype=clean.dtype) * 2 - 1
        adv = torch.max(torch.min(adv + eps * noise.to(clean.device), high), low)
    active = torch.ones(len(clean), dtype=torch.bool, device=clean.device)
    for _ in range(steps):
        x = adv.clone().requires_grad_(True)
        logits = model_fn(x)
        if logits.dim() != 2 or logits.shape[0] != len(clean):
            raise ValueError(f"model_fn: expected logits [{len(clean)}, K], got "
                             f"{tuple(logits.shape)}")
        if stop_on_success:
            active &= logits.detach().argmax(1) == labels
            if not bool(active.any()):
                break
        # sum, not mean: the sign of the gradient is per example either way, and a sum
        # keeps tiny per-example gradients away from float underflow in large batches
        loss = F.cross_entropy(logits, labels, reduction="sum")
        (grad,) = torch.autograd.grad(loss, x)
        moved = torch.max(torch.min(adv + step * grad.sign(), high), low)
        mask = active.view(-1, *([1] * (clean.dim() - 1)))
        adv = torch.where(mask, moved, adv).detach()
    return adv
