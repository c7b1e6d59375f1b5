"""Momentum-GS (Fan et al. 2024, arXiv:2412.04887) adapted to plain 3DGS.

Momentum-GS trains a large scene as spatial blocks. Its three ingredients, and how they
map onto plain 3DGS here:

1. **Blocks decoupled from devices.** The reference trains ``num_blocks`` blocks on
   ``num_gpus`` devices by cycling through the blocks of each device for
   ``block_training_interval`` (500) steps at a time. Here one process cycles through all
   blocks (:class:`MomentumConfig` ``block_interval`` steps per turn), so any number of
   blocks runs on one CPU or GPU. Blocks come from :mod:`subspace_3dgs.blocks` (quantile
   grid, overlap margin, visibility-based camera assignment).
2. **Momentum teacher and self-distillation.** The reference keeps an EMA copy of the
   *shared* Scaffold-GS decoder MLPs, ``teacher <- m * teacher + (1 - m) * student`` with
   ``m = 0.9`` every step, and adds ``50 x`` the MSE between the Gaussian attributes decoded
   by the student and by the teacher. Plain 3DGS has no decoder shared by the blocks, so
   the teacher here is an EMA copy of the *Gaussians* (every block's, updated with the same
   rule, :func:`ema_update`, without gradient). Two things carry the teacher's global view
   into a block's step: (a) the block is rendered together with the teacher Gaussians of the
   rest of the scene (detached, only those outside the block's grown box), so a training
   view that also shows neighbouring blocks is explained by them instead of by floaters of
   the block being trained; (b) the consistency loss (:func:`consistency_loss`) is the MSE
   between the student's render and the teacher's render of the same view (the block's
   teacher Gaussians with the same context), weighted ``consistency_weight`` (default 1, not
   the reference's 50: see :class:`MomentumConfig`). Only the active block's teacher is
   updated (the other blocks' students do not change during its turn). Densification
   changes a block's Gaussian count; the teacher rows follow (:func:`align_teacher`).
3. **Reconstruction-guided block weighting.** The reference tracks each block's PSNR and
   SSIM (EMA, factor 0.9) and scales the block's loss by
   ``w = 2 - exp(-((P_max - P)^2 + (10 S_max - 10 S)^2) / (2 sigma^2))`` (``sigma = 10``,
   ``w = 1`` for the first 1000 steps), so the gradients the worse blocks send into the
   shared decoder weigh more. With per-block parameters and per-block Adam a loss scale
   cancels out (Adam is invariant to it), so here ``w`` (:func:`block_weights`, the same
   formula) sets each block's share of the steps of the next round: a block with worse
   PSNR / SSIM is trained more often. The PSNR / SSIM are measured on a few of the block's
   own *training* views (the reference uses validation views; held-out views must not leak
   into training here).

The baseline of the benchmark, blocks trained independently (no teacher, no context, equal
steps), is the same function with :meth:`MomentumConfig.independent`. After training, each
block keeps the Gaussians it owns (:func:`~subspace_3dgs.blocks.block_index`) and the
blocks are concatenated (:func:`merge_blocks`).
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

import torch
from torch import nn

from .blocks import (
    BlockPartition,
    assign_cameras,
    block_index,
    block_membership,
    partition_points,
)
from .densify import PARAM_NAMES, DensityController, reset_opacity
from .gaussians import Gaussians
from .metrics import photometric_loss, psnr, ssim
from .rasterize import RenderOutput, rasterize_gaussians
from .scenes import Scene, View
from .train import TrainConfig, initial_points, scene_extent

__all__ = [
    "MomentumConfig",
    "align_teacher",
    "block_weights",
    "consistency_loss",
    "ema_update",
    "make_teacher",
    "merge_blocks",
    "train_momentum_gs",
]

_RENDER_PARAMS = ("means", "quats", "log_scales", "opacity_logits", "sh")


@dataclass
class MomentumConfig:
    """Hyper-parameters of :func:`train_momentum_gs` (reference values where it has them).

    ``train.steps`` is the *total* number of optimisation steps over all blocks; the per-block
    schedules (means learning-rate decay, density control, SH degree) run on each block's own
    step count and are laid out for ``train.steps / num_blocks`` steps per block.

    Attributes:
        train: the 3DGS recipe of each block (:class:`~subspace_3dgs.train.TrainConfig`).
        dims: blocks along x, y, z (:func:`~subspace_3dgs.blocks.partition_points`).
        split: ``"quantile"`` or ``"uniform"`` cut positions (same function).
        overlap: block margin as a fraction of the block width.
        min_visible: camera assignment threshold (:func:`~subspace_3dgs.blocks.assign_cameras`).
        block_interval: steps per block per turn (reference: 500 of 150k; scaled down).
        momentum: EMA factor ``m`` of the teacher (reference: 0.9, applied every step).
        consistency_weight: weight of :func:`consistency_loss`; 0 disables it. The
            reference's 50 weighs an MSE of decoded Gaussian attributes; on the pixel MSE used
            here 50 pins the student to its lagging teacher and stalls early training (a
            2-block toy scene: train PSNR 10.3 dB after 60 steps with 50, 11.2 dB with 1 or
            5), so the default is 1.
        context: render the other blocks' teacher Gaussians behind / beside the block.
        weighting: reconstruction-guided block weighting of the step budget.
        sigma: the weighting's ``sigma`` (reference: 10).
        weight_warmup: steps before the weighting starts (reference: 1000 of 150k).
        metric_momentum: EMA factor of the per-block PSNR / SSIM (reference: 0.9).
        eval_views: training views per block that the PSNR / SSIM are measured on.
    """

    train: TrainConfig = field(default_factory=TrainConfig)
    dims: tuple[int, int, int] = (2, 1, 1)
    split: str = "quantile"
    overlap: float = 0.2
    min_visible: float = 0.25
    block_interval: int = 50
    momentum: float = 0.9
    consistency_weight: float = 1.0
    context: bool = True
    weighting: bool = True
    sigma: float = 10.0
    weight_warmup: int = 200
    metric_momentum: float = 0.9
    eval_views: int = 2

    def __post_init__(self) -> None:
        if not isinstance(self.train, TrainConfig):
            raise TypeError(f"train: expected a TrainConfig, got {type(self.train).__name__}")
        for name in ("block_interval", "eval_views"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v <= 0:
                raise ValueError(f"{name}: expected a positive int, got {v!r}")
        for name in ("momentum", "metric_momentum"):
            v = getattr(self, name)
            if not 0.0 <= v < 1.0:
                raise ValueError(f"{name}: expected in [0, 1), got {v!r}")
        if not self.consistency_weight >= 0.0:
            raise ValueError(f"consistency_weight: expected >= 0, got {self.consistency_weight}")
        if not self.sigma > 0.0:
            raise ValueError(f"sigma: expected > 0, got {self.sigma!r}")
        if isinstance(self.weight_warmup, bool) or self.weight_warmup < 0:
            raise ValueError(f"weight_warmup: expected an int >= 0, got {self.weight_warmup!r}")

    def independent(self) -> MomentumConfig:
        """The block-wise baseline: the same partition and steps, every block trained on its
        own (no teacher, no context, equal step shares)."""
        return replace(self, consistency_weight=0.0, context=False, weighting=False)


# ---------------------------------------------------------------- teacher


def make_teacher(student: Gaussians) -> Gaussians:
    """A copy of ``student`` whose parameters need no gradient (the momentum teacher)."""
    teacher = copy.deepcopy(student)
    teacher.requires_grad_(False)
    return teacher


def _param_pairs(teacher: Gaussians, student: Gaussians):
    for name in PARAM_NAMES:
        t, s = getattr(teacher, name), getattr(student, name)
        if (t is None) != (s is None):
            raise ValueError(f"teacher, student: {name} is present in only one of them")
        if t is None:
            continue
        if t.shape != s.shape:
            raise ValueError(
                f"teacher.{name}: expected the student's shape {list(s.shape)}, got {list(t.shape)}"
            )
        yield name, t, s


@torch.no_grad()
def ema_update(teacher: Gaussians, student: Gaussians, momentum: float) -> None:
    """In place, for every parameter: ``teacher <- momentum * teacher + (1 - momentum) *
    student`` (Momentum-GS's update of its teacher decoder, here on Gaussians ``[N, ...]``
    of equal shapes). No gradient flows into the teacher."""
    if not 0.0 <= momentum <= 1.0:
        raise ValueError(f"momentum: expected in [0, 1], got {momentum!r}")
    for _, t, s in _param_pairs(teacher, student):
        t.mul_(momentum).add_(s.detach(), alpha=1.0 - momentum)


@torch.no_grad()
def align_teacher(teacher: Gaussians, old_means: torch.Tensor, student: Gaussians) -> None:
    """Re-index ``teacher`` (rows aligned with ``old_means [M, 3]``, the student's centres
    before density control) to the student's current rows, in place.

    Density control keeps surviving rows unchanged and appends exact clones, so a student row
    whose centre equals an old centre takes that old row's teacher values; rows that do not
    (samples of a split) start with teacher = student, i.e. without a momentum lag.
    """
    if old_means.shape != (teacher.num_gaussians, 3):
        raise ValueError(
            f"old_means: expected shape [{teacher.num_gaussians}, 3], got {list(old_means.shape)}"
        )
    new_means = student.means.detach()
    source = torch.full((new_means.shape[0],), -1, dtype=torch.long)
    if old_means.shape[0]:
        for start in range(0, new_means.shape[0], 1024):
            d = torch.cdist(new_means[start : start + 1024], old_means)
            dist, idx = d.min(dim=1)
            source[start : start + 1024] = torch.where(dist == 0, idx, -1)
    known = source >= 0
    for name in PARAM_NAMES:
        s = getattr(student, name)
        if s is None:
            continue
        value = s.detach().clone()
        value[known] = getattr(teacher, name)[source[known]]
        setattr(teacher, name, nn.Parameter(value, requires_grad=False))


def consistency_loss(student_rgb: torch.Tensor, teacher_rgb: torch.Tensor) -> torch.Tensor:
    """Self-distillation loss: mean squared difference of the student's render and the
    teacher's render ``[H, W, C]`` of the same view; the teacher side is a fixed target (no
    gradient). Zero when the two renders are equal."""
    if student_rgb.shape != teacher_rgb.shape:
        raise ValueError(
            f"teacher_rgb: expected the student's shape {list(student_rgb.shape)}, "
            f"got {list(teacher_rgb.shape)}"
        )
    return (student_rgb - teacher_rgb.detach()).square().mean()


def block_weights(psnrs: torch.Tensor, ssims: torch.Tensor, sigma: float = 10.0) -> torch.Tensor:
    """Reconstruction-guided block weights ``[B]`` from per-block PSNR (dB) and SSIM ``[B]``:
    ``w_b = 2 - exp(-((P_max - P_b)^2 + (10 S_max - 10 S_b)^2) / (2 sigma^2))``, in
    ``[1, 2)``; the best block gets 1, worse blocks more (Momentum-GS, eq. of its block
    weighting; the SSIM gap is scaled by 10 to be commensurate with dB)."""
    psnrs, ssims = (
        torch.as_tensor(psnrs, dtype=torch.float64),
        torch.as_tensor(ssims, dtype=torch.float64),
    )
    if psnrs.ndim != 1 or psnrs.shape != ssims.shape:
        raise ValueError(
            f"psnrs, ssims: expected two [B] tensors, got {list(psnrs.shape)} and "
            f"{list(ssims.shape)}"
        )
    if not sigma > 0:
        raise ValueError(f"sigma: expected > 0, got {sigma!r}")
    gap = (psnrs.max() - psnrs).square() + (10.0 * (ssims.max() - ssims)).square()
    return 2.0 - torch.exp(-gap / (2.0 * sigma**2))


def merge_blocks(blocks: Sequence[Gaussians], partition: BlockPartition) -> Gaussians:
    """One :class:`Gaussians` holding, from each block ``b``, the Gaussians whose centre
    block ``b`` owns (:func:`~subspace_3dgs.blocks.block_index`); the overlap copies are
    dropped, so the seams are not doubled. The blocks must share one ``eps2d``."""
    if len(blocks) != partition.num_blocks:
        raise ValueError(
            f"blocks: expected {partition.num_blocks} (the partition's), got {len(blocks)}"
        )
    parts: dict[str, list[torch.Tensor]] = {n: [] for n in PARAM_NAMES}
    for b, g in enumerate(blocks):
        keep = block_index(partition, g.means.detach()) == b
        for n in PARAM_NAMES:
            p = getattr(g, n)
            if p is not None:
                parts[n].append(p.detach()[keep])
    cat = {n: torch.cat(v) for n, v in parts.items() if v}
    if cat["means"].shape[0] == 0:
        raise ValueError("blocks: no block owns any of its Gaussians")
    filters = sorted({g.eps2d for g in blocks})
    if len(filters) != 1:
        raise ValueError(f"blocks: expected one eps2d for every block, got {filters}")
    return Gaussians(**cat, eps2d=filters[0])


# ---------------------------------------------------------------- training


@dataclass
class _Block:
    views: list[View]
    gaussians: Gaussians
    teacher: Gaussians | None
    optimizer: torch.optim.Adam
    controller: DensityController
    steps: int = 0
    psnr: float = 0.0
    ssim: float = 0.0


def _optimizer(g: Gaussians, cfg: TrainConfig, extent: float) -> torch.optim.Adam:
    lrs = {"means": cfg.lr_means * extent, "quats": cfg.lr_quats, "log_scales": cfg.lr_scales,
           "opacity_logits": cfg.lr_opacity, "sh": cfg.lr_sh_dc,
           "features": cfg.lr_features}  # fmt: skip
    groups = [{"params": [getattr(g, n)], "lr": lrs[n], "name": n}
              for n in PARAM_NAMES if getattr(g, n) is not None]  # fmt: skip
    return torch.optim.Adam(groups, lr=0.0, eps=1e-15)  # eps as 3DGS: tiny gradients


def _cat(*sets: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {n: torch.cat([s[n] for s in sets]) for n in _RENDER_PARAMS}


def _params(g: Gaussians, rows: torch.Tensor | None = None, detach: bool = False):
    out = {n: getattr(g, n) for n in _RENDER_PARAMS}
    if detach:
        out = {n: t.detach() for n, t in out.items()}
    if rows is not None:
        out = {n: t[rows] for n, t in out.items()}
    return out


def _render(params: dict[str, torch.Tensor], view: View, bg: torch.Tensor, degree: int,
            eps2d: float):  # fmt: skip
    cam = view.camera
    return rasterize_gaussians(
        params["means"], params["quats"], params["log_scales"], params["opacity_logits"],
        params["sh"], cam.viewmat, cam.K, cam.width, cam.height,
        background=bg, sh_degree=degree, eps2d=eps2d, checkpoint=False,
    )  # fmt: skip


class _StudentSlice:
    """The student's rows of a render of student + context, in the form
    :meth:`DensityController.accumulate` reads (``means2d.grad``, ``visible``, ``radii``)."""

    def __init__(self, out: RenderOutput, n: int) -> None:
        self.means2d = out.means2d.detach()[:n]
        self.means2d.grad = out.means2d.grad[:n]
        self.visible, self.radii = out.visible[:n], out.radii[:n]


def _context(blocks: list[_Block], part: BlockPartition, b: int):
    """Teacher Gaussians of the other blocks that they own and that lie outside block b's
    grown box (inside it, block b's own Gaussians are the ones trained)."""
    sets = []
    for o, blk in enumerate(blocks):
        if o == b:
            continue
        src = blk.teacher if blk.teacher is not None else blk.gaussians
        means = src.means.detach()
        keep = block_index(part, means) == o
        keep &= ~block_membership(part, means)[b]
        sets.append(_params(src, keep, detach=True))
    return _cat(*sets) if sets else None


def _round_lengths(cfg: MomentumConfig, blocks: list[_Block], step: int) -> list[int]:
    n = len(blocks)
    if not cfg.weighting or step < cfg.weight_warmup:
        return [cfg.block_interval] * n
    w = block_weights(torch.tensor([b.psnr for b in blocks]), torch.tensor([b.ssim for b in
                      blocks]), cfg.sigma)  # fmt: skip
    return [max(1, round(cfg.block_interval * n * float(x) / float(w.sum()))) for x in w]


def train_momentum_gs(
    scene: Scene,
    config: MomentumConfig | None = None,
    *,
    log_every: int = 100,
) -> tuple[Gaussians, list[dict], dict]:
    """Train ``scene`` block-wise with Momentum-GS (see the module docstring).

    Args:
        scene: views with ``rgb`` (and depth / mask for the ``"depth"`` init).
        config: :class:`MomentumConfig`; :meth:`MomentumConfig.independent` gives the
            independent-blocks baseline.
        log_every: a history entry every this many (total) steps.

    Returns:
        ``(gaussians, history, info)``: the merged Gaussians; history entries ``{"step",
        "block", "loss", "consistency", "psnr", "num_gaussians", "seconds"}`` (means since
        the previous entry; ``psnr`` on the trained views); ``info`` with ``"partition"``
        (:class:`~subspace_3dgs.blocks.BlockPartition`), ``"block_views"`` (training views
        per block), ``"block_steps"`` (steps each block got) and ``"weights"`` (last block
        weights).
    """
    config = config or MomentumConfig()
    if not isinstance(config, MomentumConfig):
        raise TypeError(f"config: expected a MomentumConfig, got {type(config).__name__}")
    if log_every <= 0:
        raise ValueError(f"log_every: expected a positive int, got {log_every!r}")
    tcfg = config.train
    views = [v for v in scene.train_views if v.rgb is not None]
    if not views:
        raise ValueError("scene: expected at least one training view with rgb")
    extent = scene_extent([v.camera for v in scene.views])
    bg = torch.tensor(tcfg.background if tcfg.background is not None else scene.background,
                      dtype=torch.float32)  # fmt: skip
    gen = torch.Generator().manual_seed(tcfg.seed)

    xyz, rgb = initial_points(scene, tcfg.init, tcfg.num_init_points, gen)
    part = partition_points(xyz, config.dims, config.overlap, config.split)
    member = block_membership(part, xyz)
    cams = assign_cameras(part, [v.camera for v in views], xyz, config.min_visible)
    per_block_steps = max(1, tcfg.steps // part.num_blocks)
    bcfg = replace(tcfg, steps=per_block_steps)
    use_teacher = config.consistency_weight > 0 or config.context
    blocks: list[_Block] = []
    for b in range(part.num_blocks):
        rows = member[b]
        if int(rows.sum()) < 2:
            raise ValueError(f"config.dims: block {b} holds {int(rows.sum())} initial points; "
                             "use fewer blocks or more points")  # fmt: skip
        g = Gaussians.from_points(xyz[rows], None if rgb is None else rgb[rows],
                                  sh_degree=tcfg.sh_degree,
                                  initial_opacity=tcfg.initial_opacity,
                                  eps2d=tcfg.eps2d)  # fmt: skip
        blocks.append(_Block(
            [v for v, on in zip(views, cams[b].tolist(), strict=True) if on], g,
            make_teacher(g) if use_teacher else None, _optimizer(g, bcfg, extent),
            DensityController(bcfg.densify, extent),
        ))  # fmt: skip
    rest_ratio = tcfg.lr_sh_rest / tcfg.lr_sh_dc
    history: list[dict] = []
    window: list[tuple[float, float, float, int]] = []
    tic = time.perf_counter()
    step, weights = 0, torch.ones(part.num_blocks)

    while step < tcfg.steps:
        lengths = _round_lengths(config, blocks, step)
        for b, blk in enumerate(blocks):
            ctx = _context(blocks, part, b) if config.context else None
            for _ in range(lengths[b]):
                if step >= tcfg.steps:
                    break
                step += 1
                loss_v, cons_v, psnr_v = _block_step(blk, ctx, config, bcfg, extent, bg, gen,
                                                     rest_ratio)  # fmt: skip
                window.append((loss_v, cons_v, psnr_v, b))
                if step % log_every == 0 or step == tcfg.steps:
                    history.append({
                        "step": step, "block": b,
                        "loss": sum(w[0] for w in window) / len(window),
                        "consistency": sum(w[1] for w in window) / len(window),
                        "psnr": sum(w[2] for w in window) / len(window),
                        "num_gaussians": sum(k.gaussians.num_gaussians for k in blocks),
                        "seconds": time.perf_counter() - tic,
                    })  # fmt: skip
                    window = []
        if config.weighting:
            _measure_blocks(blocks, part, config, bg)
            weights = block_weights(
                torch.tensor([k.psnr for k in blocks]),
                torch.tensor([k.ssim for k in blocks]),
                config.sigma,
            )
    merged = merge_blocks([k.gaussians for k in blocks], part)
    info = {
        "partition": part,
        "block_views": [len(k.views) for k in blocks],
        "block_steps": [k.steps for k in blocks],
        "weights": weights.tolist(),
    }
    return merged, history, info


def _block_step(blk: _Block, ctx, config: MomentumConfig, bcfg: TrainConfig, extent: float,
                bg: torch.Tensor, gen: torch.Generator, rest_ratio: float):  # fmt: skip
    """One optimisation step of one block; returns (loss, consistency, psnr) as floats."""
    blk.steps += 1
    g, opt = blk.gaussians, blk.optimizer
    t = min(max((blk.steps - 1) / bcfg.steps, 0.0), 1.0)
    means_lr = math.exp((1 - t) * math.log(bcfg.lr_means) + t * math.log(bcfg.lr_means_final))
    for group in opt.param_groups:
        if group["name"] == "means":
            group["lr"] = means_lr * extent
    view = blk.views[int(torch.randint(len(blk.views), (1,), generator=gen))]
    degree = min((blk.steps - 1) // bcfg.sh_degree_interval, bcfg.sh_degree, g.sh_degree)
    n = g.num_gaussians
    own = _params(g)
    out = _render(own if ctx is None else _cat(own, ctx), view, bg, degree, bcfg.eps2d)
    out.means2d.retain_grad()
    loss = photometric_loss(out.rgb, view.rgb, bcfg.ssim_lambda)
    cons = torch.zeros(())
    if config.consistency_weight > 0 and blk.teacher is not None:
        with torch.no_grad():
            tp = _params(blk.teacher, detach=True)
            t_out = _render(tp if ctx is None else _cat(tp, ctx), view, bg, degree, bcfg.eps2d)
        cons = consistency_loss(out.rgb, t_out.rgb)
        loss = loss + config.consistency_weight * cons
    opt.zero_grad(set_to_none=True)
    loss.backward()
    if blk.steps < bcfg.densify.densify_until:
        blk.controller.accumulate(_StudentSlice(out, n), view.camera.width, view.camera.height)
    rest_before = g.sh.detach()[:, 1:].clone() if rest_ratio != 1.0 else None
    opt.step()
    if rest_before is not None:
        # Adam's moments do not depend on lr: scaling the step of the higher SH orders is
        # Adam with lr_sh_rest on them (as train.py does)
        with torch.no_grad():
            rest = g.sh[:, 1:]
            rest.copy_(rest_before + rest_ratio * (rest - rest_before))
    if blk.teacher is not None:
        ema_update(blk.teacher, g, config.momentum)
        old_means = g.means.detach().clone()
    done = blk.controller.step(blk.steps, g, opt, gen)
    if blk.teacher is not None:
        if g.num_gaussians != old_means.shape[0] or done["cloned"] or done["split"]:
            align_teacher(blk.teacher, old_means, g)
        if done["reset"]:
            # the student's opacities were capped; the teacher must not pull them back up
            reset_opacity(blk.teacher, None, bcfg.densify.reset_opacity)
    return float(loss.detach()), float(cons.detach()), float(psnr(out.rgb.detach(), view.rgb))


@torch.no_grad()
def _measure_blocks(blocks: list[_Block], part: BlockPartition, config: MomentumConfig,
                    bg: torch.Tensor) -> None:  # fmt: skip
    """Update each block's PSNR / SSIM EMA on its first ``eval_views`` training views,
    rendered the way the block is trained (with the context when enabled)."""
    m = config.metric_momentum
    for b, blk in enumerate(blocks):
        ctx = _context(blocks, part, b) if config.context else None
        own = _params(blk.gaussians, detach=True)
        degree = min((blk.steps - 1) // config.train.sh_degree_interval,
                     config.train.sh_degree, blk.gaussians.sh_degree)  # fmt: skip
        ps, ss = [], []
        for view in blk.views[: config.eval_views]:
            out = _render(own if ctx is None else _cat(own, ctx), view, bg, max(degree, 0),
                          config.train.eps2d)
            rgb = out.rgb.clamp(0.0, 1.0)
            ps.append(float(psnr(rgb, view.rgb)))
            ss.append(float(ssim(rgb, view.rgb)))
        p, s = sum(ps) / len(ps), sum(ss) / len(ss)
        first = blk.psnr == 0.0 and blk.ssim == 0.0
        blk.psnr = p if first else m * blk.psnr + (1 - m) * p
        blk.ssim = s if first else m * blk.ssim + (1 - m) * s
