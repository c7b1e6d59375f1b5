"""Adaptive density control of Kerbl et al. 2023 (3DGS), with Adam-state surgery.

The schedule and rules follow the reference implementation and gsplat's ``DefaultStrategy``:

* After every backward pass, the norm of the gradient of the loss w.r.t. each visible
  Gaussian's projected 2-D centre is accumulated (:meth:`DensityController.accumulate`).
  The rasterizer's ``means2d`` are in pixels while 3DGS thresholds gradients w.r.t. NDC
  coordinates (``x_ndc = 2 x_pix / W - 1``), so the pixel gradient is multiplied by
  ``(W / 2, H / 2)`` before taking the norm; that makes the 3DGS threshold 2e-4 meaningful
  at any image size.
* Every ``densify_every`` steps in ``[densify_from, densify_until)``, Gaussians whose mean
  accumulated gradient exceeds ``grad_threshold`` are densified: *cloned* (an identical copy)
  if their largest scale is at most ``percent_dense * scene_extent``, otherwise *split* into
  ``2`` samples drawn from the Gaussian itself with scales divided by 1.6 (the original is
  removed). Then Gaussians with opacity below ``min_opacity`` are pruned, and, after the
  first opacity reset, those whose largest scale exceeds ``max_scale_fraction *
  scene_extent``.
* Two guards against runaway growth at low resolution, both off by default (3DGS
  behaviour). At 32-128 px a Gaussian covers far more of the image than at 3DGS's ~800 px,
  so nearly every Gaussian passes the 2e-4 threshold and the count doubles at each densify
  step. ``reference_size`` makes the threshold resolution-aware: the NDC gradient is
  multiplied by ``max(W, H) / reference_size`` before accumulation (so the threshold is
  ``grad_threshold x reference_size / max(W, H)`` at the training size); ``max_gaussians``
  caps the count: when the candidates would exceed it, only the ones with the largest mean
  gradient are densified (a budget in the spirit of Taming 3DGS, Mallick et al. 2024).
* Every ``reset_every`` steps (while densifying) opacities are clamped to at most
  ``reset_opacity`` so that occluded / floating Gaussians can be pruned afterwards.

Whenever the parameter tensors change size, the Adam state is kept aligned row by row: rows
of surviving Gaussians keep their moments, new Gaussians start with zero moments
(:func:`select_rows`, :func:`append_rows`).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from .gaussians import Gaussians, quat_to_rotmat
from .rasterize import RenderOutput

__all__ = [
    "PARAM_NAMES",
    "DensifyConfig",
    "DensityController",
    "append_rows",
    "reset_opacity",
    "select_rows",
    "within_budget",
]

#: Per-Gaussian parameters of :class:`Gaussians` (``features`` only when present).
PARAM_NAMES = ("means", "quats", "log_scales", "opacity_logits", "sh", "features")


@dataclass
class DensifyConfig:
    """Adaptive density control schedule and thresholds (3DGS defaults for a 30k-step run
    are ``densify_from=500, densify_every=100, densify_until=15000, reset_every=3000``).

    ``max_gaussians``: upper bound on the count after densification (None: unbounded).
    ``reference_size``: image size (pixels, longest side) at which ``grad_threshold`` holds;
    gradients of smaller renders are scaled down proportionally (None: no scaling, 3DGS).
    """

    densify_from: int = 500
    densify_until: int = 15_000
    densify_every: int = 100
    reset_every: int = 3_000
    grad_threshold: float = 2e-4
    percent_dense: float = 0.01
    min_opacity: float = 0.005
    max_scale_fraction: float = 0.1
    split_factor: float = 1.6
    num_split: int = 2
    reset_opacity: float = 0.01
    max_gaussians: int | None = None
    reference_size: int | None = None

    def __post_init__(self) -> None:
        for name in ("densify_from", "densify_until", "densify_every", "reset_every"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 0:
                raise ValueError(f"{name}: expected a non-negative int, got {v!r}")
        if self.densify_every == 0 or self.reset_every == 0:
            raise ValueError("densify_every / reset_every: expected positive ints, got 0")
        if self.num_split < 2:
            raise ValueError(f"num_split: expected >= 2, got {self.num_split}")
        if self.split_factor <= 0:
            raise ValueError(f"split_factor: expected > 0, got {self.split_factor}")
        for name in ("max_gaussians", "reference_size"):
            v = getattr(self, name)
            if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v <= 0):
                raise ValueError(f"{name}: expected None or a positive int, got {v!r}")


def _params(gaussians: Gaussians) -> list[tuple[str, nn.Parameter]]:
    return [(n, getattr(gaussians, n)) for n in PARAM_NAMES if getattr(gaussians, n) is not None]


def _replace(
    gaussians: Gaussians,
    optimizer: torch.optim.Optimizer | None,
    new_value: Callable[[str, torch.Tensor], torch.Tensor],
    new_state: Callable[[torch.Tensor], torch.Tensor],
) -> None:
    """Swap every per-Gaussian Parameter for ``new_value(name, old)`` and carry its optimizer
    state over with ``new_state`` applied to each per-row state tensor (Adam's moments);
    scalar entries such as Adam's ``step`` are kept."""
    for name, old in _params(gaussians):
        new = nn.Parameter(new_value(name, old.detach()), requires_grad=old.requires_grad)
        if optimizer is not None:
            for group in optimizer.param_groups:
                group["params"] = [new if p is old else p for p in group["params"]]
            state = optimizer.state.pop(old, None)
            if state is not None:
                optimizer.state[new] = {
                    k: new_state(v)
                    if isinstance(v, torch.Tensor) and v.ndim > 0 and v.shape == old.shape
                    else v
                    for k, v in state.items()
                }
        setattr(gaussians, name, new)


def select_rows(
    gaussians: Gaussians, optimizer: torch.optim.Optimizer | None, rows: torch.Tensor
) -> None:
    """Keep only Gaussians ``rows`` (bool mask ``[N]`` or index ``[M]``), in place, together
    with their optimizer state rows."""
    if rows.dtype == torch.bool and rows.shape != (gaussians.num_gaussians,):
        raise ValueError(
            f"rows: expected a bool mask of shape [{gaussians.num_gaussians}], "
            f"got {list(rows.shape)}"
        )
    _replace(gaussians, optimizer, lambda _, t: t[rows], lambda s: s[rows])


def append_rows(
    gaussians: Gaussians, optimizer: torch.optim.Optimizer | None, new: dict[str, torch.Tensor]
) -> None:
    """Append Gaussians given as ``{parameter name: [M, ...] tensor}`` (every parameter the
    module has), in place; their optimizer moments start at zero, as in 3DGS."""
    names = [n for n, _ in _params(gaussians)]
    if sorted(new) != sorted(names):
        raise ValueError(f"new: expected keys {sorted(names)}, got {sorted(new)}")
    m = next(iter(new.values())).shape[0]
    for n, p in _params(gaussians):
        if new[n].shape != (m, *p.shape[1:]):
            raise ValueError(f"new[{n!r}]: expected shape {[m, *p.shape[1:]]}, got "
                             f"{list(new[n].shape)}")  # fmt: skip

    def zeros_after(s: torch.Tensor) -> torch.Tensor:
        return torch.cat([s, s.new_zeros(m, *s.shape[1:])])

    _replace(gaussians, optimizer, lambda n, t: torch.cat([t, new[n].to(t)]), zeros_after)


def reset_opacity(
    gaussians: Gaussians, optimizer: torch.optim.Optimizer | None, max_opacity: float
) -> None:
    """Clamp every opacity to at most ``max_opacity`` and zero the opacity optimizer state."""
    if not 0.0 < max_opacity < 1.0:
        raise ValueError(f"max_opacity: expected in (0, 1), got {max_opacity}")
    cap = math.log(max_opacity / (1.0 - max_opacity))
    old = gaussians.opacity_logits
    with torch.no_grad():
        old.clamp_(max=cap)
    if optimizer is not None and old in optimizer.state:
        for v in optimizer.state[old].values():
            if isinstance(v, torch.Tensor) and v.shape == old.shape:
                v.zero_()


def within_budget(
    candidates: torch.Tensor, priority: torch.Tensor, growth: torch.Tensor, room: int
) -> torch.Tensor:
    """The subset of ``candidates`` (bool ``[N]``) with the highest ``priority`` ``[N]`` whose
    total ``growth`` ``[N]`` (Gaussians each one adds) is at most ``room``; ties keep the
    lower index. Returns a bool mask ``[N]``."""
    if room <= 0:
        return torch.zeros_like(candidates)
    idx = torch.nonzero(candidates, as_tuple=True)[0]
    # stable sort: equal priorities keep index order, so the result is deterministic
    order = idx[torch.sort(priority[idx], descending=True, stable=True).indices]
    take = order[torch.cumsum(growth[order], 0) <= room]
    out = torch.zeros_like(candidates)
    out[take] = True
    return out


class DensityController:
    """Holds the per-Gaussian gradient statistics and applies :class:`DensifyConfig`.

    Use: after ``loss.backward()`` call :meth:`accumulate` with the render (whose ``means2d``
    had ``retain_grad()`` called before the backward), after ``optimizer.step()`` call
    :meth:`step`.

    Args:
        config: the schedule and thresholds.
        scene_extent: scene radius (3DGS: 1.1 x the largest camera distance from the mean
            camera centre); scale thresholds are fractions of it.
    """

    def __init__(self, config: DensifyConfig, scene_extent: float) -> None:
        if not scene_extent > 0:
            raise ValueError(f"scene_extent: expected > 0, got {scene_extent}")
        self.config = config
        self.scene_extent = float(scene_extent)
        self.grad_accum = torch.zeros(0)
        self.count = torch.zeros(0)

    def reset_stats(self, n: int, device: torch.device | str | None = None) -> None:
        """Zero statistics for ``n`` Gaussians (on ``device``, default: where they were)."""
        device = self.grad_accum.device if device is None else device
        self.grad_accum = torch.zeros(n, device=device)
        self.count = torch.zeros(n, device=device)

    def accumulate(self, render: RenderOutput, width: int, height: int) -> None:
        """Add ``||d loss / d means2d||`` (in NDC units, times ``max(W, H) / reference_size``
        when that is set; see module doc) of visible Gaussians."""
        grad = render.means2d.grad
        if grad is None:
            raise ValueError(
                "render: means2d has no gradient; call render.means2d.retain_grad() before "
                "loss.backward()"
            )
        n = grad.shape[0]
        if self.grad_accum.shape[0] != n or self.grad_accum.device != grad.device:
            self.reset_stats(n, grad.device)
        scale = torch.tensor([width / 2.0, height / 2.0], dtype=grad.dtype, device=grad.device)
        norm = (grad.detach() * scale).norm(dim=-1).to(self.grad_accum.dtype)
        if self.config.reference_size is not None:
            norm = norm * (max(width, height) / self.config.reference_size)
        vis = render.visible & (render.radii > 0)
        self.grad_accum[vis] += norm[vis]
        self.count[vis] += 1

    def step(
        self,
        step: int,
        gaussians: Gaussians,
        optimizer: torch.optim.Optimizer | None,
        generator: torch.Generator | None = None,
    ) -> dict[str, int]:
        """Run the density control due at ``step`` (1-based count of finished optimizer
        steps). Returns counts ``{"cloned", "split", "pruned", "reset"}`` (zeros if idle)."""
        cfg = self.config
        out = {"cloned": 0, "split": 0, "pruned": 0, "reset": 0}
        if step >= cfg.densify_until:
            return out
        if step >= cfg.densify_from and step % cfg.densify_every == 0:
            out.update(self.densify_and_prune(gaussians, optimizer, step, generator))
        if step % cfg.reset_every == 0:
            reset_opacity(gaussians, optimizer, cfg.reset_opacity)
            out["reset"] = 1
        return out

    @torch.no_grad()
    def densify_and_prune(
        self,
        gaussians: Gaussians,
        optimizer: torch.optim.Optimizer | None,
        step: int,
        generator: torch.Generator | None = None,
    ) -> dict[str, int]:
        """Clone, split and prune once, then clear the gradient statistics."""
        cfg = self.config
        n = gaussians.num_gaussians
        if self.grad_accum.shape[0] != n:
            self.reset_stats(n, gaussians.means.device)
        mean_grad = self.grad_accum / self.count.clamp_min(1)
        high = mean_grad > cfg.grad_threshold
        max_scale = gaussians.scales().max(dim=-1).values
        small = max_scale <= cfg.percent_dense * self.scene_extent
        if cfg.max_gaussians is not None:
            growth = torch.where(small, 1, cfg.num_split - 1)
            high = within_budget(high, mean_grad, growth, cfg.max_gaussians - n)
        clone, split = high & small, high & ~small
        n_clone, n_split = int(clone.sum()), int(split.sum())

        new = {name: p[clone] for name, p in _params(gaussians)}
        if n_split:
            k = cfg.num_split
            scales = gaussians.scales()[split].repeat(k, 1)
            rot = quat_to_rotmat(gaussians.quats[split]).repeat(k, 1, 1)
            noise = torch.randn(scales.shape, generator=generator).to(scales) * scales
            samples = {name: p[split].repeat(k, *([1] * (p.ndim - 1))) for name, p in
                       _params(gaussians)}  # fmt: skip
            samples["means"] = samples["means"] + (rot @ noise[..., None])[..., 0]
            samples["log_scales"] = (scales / cfg.split_factor).log()
            new = {name: torch.cat([new[name], samples[name]]) for name in new}
        if n_clone or n_split:
            append_rows(gaussians, optimizer, new)
            # the split originals are replaced by their samples
            keep = torch.cat([~split, split.new_ones(new["means"].shape[0])])
            select_rows(gaussians, optimizer, keep)

        prune = gaussians.opacities() < cfg.min_opacity
        if step > cfg.reset_every:
            big = gaussians.scales().max(dim=-1).values > cfg.max_scale_fraction * self.scene_extent
            prune |= big
        n_prune = int(prune.sum())
        if n_prune:
            select_rows(gaussians, optimizer, ~prune)
        self.reset_stats(gaussians.num_gaussians)
        return {"cloned": n_clone, "split": n_split, "pruned": n_prune}
