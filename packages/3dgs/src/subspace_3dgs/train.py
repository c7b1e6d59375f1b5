"""3DGS optimisation of a :class:`~subspace_3dgs.scenes.Scene`: init, Adam, density control,
evaluation and atomic checkpoint / resume.

The recipe is Kerbl et al. 2023: one random training view per step, loss
``0.8 L1 + 0.2 (1 - SSIM)``, a separate Adam learning rate per parameter group (means:
``1.6e-4 x scene extent`` decaying exponentially to ``1.6e-6 x extent`` over the run, SH DC
``2.5e-3``, SH rest ``2.5e-3 / 20``, opacity ``5e-2``, scales ``5e-3``, rotations ``1e-3``),
the SH degree raised by one every ``sh_degree_interval`` steps, and adaptive density control
(:mod:`subspace_3dgs.densify`). The default schedule is the 30k-step one divided by 10 so a
CPU run of a few thousand steps goes through the whole densification cycle.
"""

from __future__ import annotations

import copy
import json
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from subspace_core.io import atomic_path

from .cameras import Camera
from .densify import PARAM_NAMES, DensifyConfig, DensityController
from .gaussians import EPS2D_3DGS, Gaussians, check_eps2d
from .metrics import photometric_loss, psnr, ssim
from .rasterize import rasterize
from .scenes import Scene, View

__all__ = [
    "CHECKPOINT_NAME",
    "TrainConfig",
    "evaluate",
    "initial_points",
    "load_checkpoint",
    "save_checkpoint",
    "scene_extent",
    "train_gaussians",
]

CHECKPOINT_NAME = "checkpoint.safetensors"
INIT_METHODS = ("depth", "points", "random", "vertices")


def _cpu_schedule() -> DensifyConfig:
    return DensifyConfig(densify_from=100, densify_until=1500, densify_every=100, reset_every=1000)


@dataclass
class TrainConfig:
    """Hyper-parameters of :func:`train_gaussians` (3DGS values unless noted).

    ``lr_means`` / ``lr_means_final`` are multiplied by the scene extent. ``init``: how to
    seed the Gaussians when no ``init`` is passed (see :func:`initial_points`).
    ``checkpoint_every``: steps between checkpoints when a ``checkpoint_dir`` is given (one is
    always written at the end). ``background``: None uses the scene's background colour.
    ``coarse_until`` / ``coarse_factor``: coarse-to-fine training; steps ``1..coarse_until``
    render at ``1 / coarse_factor`` of the view size (intrinsics scaled, targets
    box-downsampled), which costs less per step (fewer pixels per tile pass); 0 disables it.
    ``eps2d``: the screen-space low-pass filter (px^2) training renders with; the returned
    Gaussians carry it (``Gaussians.eps2d``), so they render later as they were fitted.
    3DGS's 0.3 keeps every splat at least about a pixel wide; a smaller value lets splats
    draw sharper silhouettes at the training resolution.
    """

    steps: int = 3000
    lr_means: float = 1.6e-4
    lr_means_final: float = 1.6e-6
    lr_sh_dc: float = 2.5e-3
    lr_sh_rest: float = 2.5e-3 / 20
    lr_opacity: float = 5e-2
    lr_scales: float = 5e-3
    lr_quats: float = 1e-3
    lr_features: float = 2.5e-3
    sh_degree: int = 3
    sh_degree_interval: int = 1000
    ssim_lambda: float = 0.2
    densify: DensifyConfig = field(default_factory=_cpu_schedule)
    init: str = "depth"
    num_init_points: int = 5000
    initial_opacity: float = 0.1
    background: tuple[float, float, float] | None = None
    seed: int = 0
    checkpoint_every: int = 500
    coarse_until: int = 0
    coarse_factor: int = 2
    eps2d: float = EPS2D_3DGS

    def __post_init__(self) -> None:
        check_eps2d(self.eps2d)
        for name in ("steps", "sh_degree_interval", "num_init_points", "checkpoint_every"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v <= 0:
                raise ValueError(f"{name}: expected a positive int, got {v!r}")
        if self.sh_degree not in (0, 1, 2, 3):
            raise ValueError(f"sh_degree: expected 0..3, got {self.sh_degree!r}")
        if isinstance(self.coarse_until, bool) or not isinstance(self.coarse_until, int) or (
            self.coarse_until < 0
        ):
            raise ValueError(f"coarse_until: expected a non-negative int, got {self.coarse_until!r}")
        if isinstance(self.coarse_factor, bool) or not isinstance(self.coarse_factor, int) or (
            self.coarse_factor < 1
        ):
            raise ValueError(f"coarse_factor: expected a positive int, got {self.coarse_factor!r}")
        if self.init not in INIT_METHODS:
            raise ValueError(f"init: expected one of {INIT_METHODS}, got {self.init!r}")


def scene_extent(cameras: Sequence[Camera]) -> float:
    """3DGS's scene radius: 1.1 x the largest distance of a camera centre from their mean
    (falls back to 1.1 x the camera distance from the origin for a single camera)."""
    if not cameras:
        raise ValueError("cameras: expected at least one camera, got none")
    centres = torch.stack([c.center for c in cameras]).double()
    spread = (centres - centres.mean(0)).norm(dim=-1).max()
    if spread <= 0:
        spread = centres.norm(dim=-1).max()
    return 1.1 * float(spread)


def _backproject(view: View) -> tuple[torch.Tensor, torch.Tensor]:
    """World points ``[M, 3]`` and colours ``[M, 3]`` of a view's masked pixels (pixel centres
    at integer + 0.5, ``depth`` = camera z)."""
    cam = view.camera
    v, u = torch.nonzero(view.mask & (view.depth > 0), as_tuple=True)
    z = view.depth[v, u]
    x = (u + 0.5 - cam.K[0, 2]) / cam.K[0, 0] * z
    y = (v + 0.5 - cam.K[1, 2]) / cam.K[1, 1] * z
    rot, t = cam.viewmat[:3, :3], cam.viewmat[:3, 3]
    pts_cam = torch.stack([x, y, z], dim=-1)
    return (pts_cam - t) @ rot, view.rgb[v, u]


def initial_points(
    scene: Scene, method: str, num_points: int, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Seed points ``xyz [M, 3]`` and colours ``[M, 3]`` (or None = grey) for the Gaussians.

    ``"depth"``: back-project the masked pixels of every *training* view with their depth
    and colour, using the scene's known cameras, then subsample ``num_points`` of them
    uniformly (a dense coloured surface sample, a stronger start than SfM points).
    ``"points"``: the capture's structure-from-motion points and their colours
    (``scene.points`` / ``scene.point_colors``, e.g. from :func:`~subspace_3dgs.scenes.
    load_colmap`), the usual 3DGS start for real captures, subsampled to ``num_points`` if
    there are more. ``"vertices"``: a subsample of the mesh vertices, grey. ``"random"``: uniform in the ball
    that bounds the mesh (radius 1 for :func:`~subspace_3dgs.scenes.make_scene` scenes, else
    half the scene extent) with random colours, like 3DGS's random init of synthetic scenes.
    """
    if method == "depth":
        views = [v for v in scene.train_views if v.depth is not None and v.mask is not None]
        if not views:
            raise ValueError("scene: init 'depth' needs training views with depth and mask")
        xyz, rgb = (torch.cat(t) for t in zip(*(_backproject(v) for v in views), strict=True))
    elif method == "points":
        if scene.points is None or len(scene.points) == 0:
            raise ValueError("scene: init 'points' needs a scene with structure-from-motion "
                             "points (scene.points), e.g. from load_colmap")
        xyz = torch.as_tensor(scene.points, dtype=torch.float32)
        rgb = None if scene.point_colors is None else torch.as_tensor(scene.point_colors,
                                                                     dtype=torch.float32)
    elif method == "vertices":
        if scene.vertices is None:
            raise ValueError("scene: init 'vertices' needs a scene with a mesh")
        xyz, rgb = torch.as_tensor(scene.vertices, dtype=torch.float32), None
    elif method == "random":
        if scene.vertices is not None:
            radius = float(torch.as_tensor(scene.vertices).norm(dim=-1).max())
        else:
            radius = 0.5 * scene_extent([v.camera for v in scene.views])
        d = torch.randn(num_points, 3, generator=generator)
        r = radius * torch.rand(num_points, 1, generator=generator) ** (1 / 3)
        return d / d.norm(dim=-1, keepdim=True) * r, torch.rand(num_points, 3, generator=generator)
    else:
        raise ValueError(f"method: expected one of {INIT_METHODS}, got {method!r}")
    if xyz.shape[0] > num_points:
        pick = torch.randperm(xyz.shape[0], generator=generator)[:num_points]
        xyz = xyz[pick]
        rgb = None if rgb is None else rgb[pick]
    return xyz.float(), None if rgb is None else rgb.float()


def _make_optimizer(gaussians: Gaussians, config: TrainConfig, extent: float) -> torch.optim.Adam:
    lrs = {
        "means": config.lr_means * extent,
        "quats": config.lr_quats,
        "log_scales": config.lr_scales,
        "opacity_logits": config.lr_opacity,
        # one tensor holds DC and rest; the rest's smaller rate is applied in _scale_sh_rest
        "sh": config.lr_sh_dc,
        "features": config.lr_features,
    }
    groups = [
        {"params": [getattr(gaussians, n)], "lr": lrs[n], "name": n}
        for n in PARAM_NAMES
        if getattr(gaussians, n) is not None
    ]
    # eps 1e-15 as in 3DGS: gradients of far-away Gaussians are tiny
    return torch.optim.Adam(groups, lr=0.0, eps=1e-15)


def _means_lr(config: TrainConfig, extent: float, step: int) -> float:
    """Log-linear decay from ``lr_means`` to ``lr_means_final`` over the run (3DGS)."""
    t = min(max(step / config.steps, 0.0), 1.0)
    log_lr = (1 - t) * math.log(config.lr_means) + t * math.log(config.lr_means_final)
    return math.exp(log_lr) * extent


def _coarse_view(view: View, factor: int) -> tuple[torch.Tensor, int, int, torch.Tensor]:
    """Intrinsics ``[3, 3]``, width, height and box-averaged target ``[H/f, W/f, 3]`` of
    ``view`` at ``1 / factor`` resolution. Pixel ``(u, v)`` of the small image covers the
    ``factor x factor`` block whose centre maps to ``(u + 0.5) * factor``, so dividing
    ``fx, fy, cx, cy`` by ``factor`` keeps the two images aligned."""
    cam = view.camera
    if cam.width % factor or cam.height % factor:
        raise ValueError(
            f"coarse_factor: expected a divisor of the view size {cam.width}x{cam.height}, "
            f"got {factor}"
        )
    k = cam.K.clone()
    k[:2] /= factor
    rgb = torch.nn.functional.avg_pool2d(view.rgb.permute(2, 0, 1), factor).permute(1, 2, 0)
    return k, cam.width // factor, cam.height // factor, rgb.contiguous()


def _background(config: TrainConfig, scene: Scene) -> torch.Tensor:
    bg = config.background if config.background is not None else scene.background
    return torch.tensor(bg, dtype=torch.float32)


# ---------------------------------------------------------------- checkpoints


def save_checkpoint(
    path: str | Path,
    gaussians: Gaussians,
    optimizer: torch.optim.Optimizer,
    step: int,
    *,
    controller: DensityController | None = None,
    generator: torch.Generator | None = None,
    history: list[dict] | None = None,
) -> None:
    """Write parameters, Adam state, step, density statistics and RNG state to one
    safetensors file, atomically (a crash leaves the previous checkpoint intact)."""
    tensors: dict[str, torch.Tensor] = {"step": torch.tensor([step], dtype=torch.int64)}
    for group in optimizer.param_groups:
        name, (param,) = group["name"], group["params"]
        tensors[f"param.{name}"] = param.detach()
        for key, value in optimizer.state.get(param, {}).items():
            value = torch.as_tensor(value)
            # safetensors wants at least 1-d; Adam's step is a 0-d tensor
            tensors[f"adam.{name}.{key}"] = value.reshape(1) if value.ndim == 0 else value
    if controller is not None:
        tensors["density.grad_accum"] = controller.grad_accum
        tensors["density.count"] = controller.count
    if generator is not None:
        tensors["rng"] = generator.get_state()
    tensors = {k: v.contiguous().clone() for k, v in tensors.items()}
    meta = {"history": json.dumps(history or []), "eps2d": repr(gaussians.eps2d)}
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=meta)


def load_checkpoint(path: str | Path) -> dict:
    """Read a :func:`save_checkpoint` file: ``{"step", "gaussians", "adam", "density", "rng",
    "history"}`` (``adam``: ``{name: {state key: tensor}}``)."""
    tensors = load_file(str(path))
    with safe_open(str(path), framework="pt") as fh:
        meta = fh.metadata() or {}
    params = {k[6:]: v for k, v in tensors.items() if k.startswith("param.")}
    adam: dict[str, dict[str, torch.Tensor]] = {}
    for k, v in tensors.items():
        if k.startswith("adam."):
            name, key = k[5:].rsplit(".", 1)
            adam.setdefault(name, {})[key] = v.reshape(()) if key == "step" else v
    gaussians = Gaussians(
        **{n: params[n] for n in PARAM_NAMES if n != "features"},
        features=params.get("features"),
        eps2d=float(meta.get("eps2d", EPS2D_3DGS)),
    )
    return {
        "step": int(tensors["step"][0]),
        "gaussians": gaussians,
        "adam": adam,
        "density": (tensors.get("density.grad_accum"), tensors.get("density.count")),
        "rng": tensors.get("rng"),
        "history": json.loads(meta.get("history", "[]")),
    }


# ---------------------------------------------------------------- training


def train_gaussians(
    scene: Scene,
    config: TrainConfig | None = None,
    *,
    init: Gaussians | str | None = None,
    log_every: int = 100,
    checkpoint_dir: str | Path | None = None,
    stop_at: int | None = None,
) -> tuple[Gaussians, list[dict]]:
    """Optimise Gaussians on ``scene.train_views`` with the 3DGS recipe.

    Args:
        scene: views with ``rgb`` (and ``depth`` / ``mask`` for the ``"depth"`` init).
        config: hyper-parameters (defaults: :class:`TrainConfig`).
        init: a :class:`Gaussians` to start from (copied; the copy trains and renders with
            ``config.eps2d``), an init method name (see
            :func:`initial_points`), or None for ``config.init``.
        log_every: a history entry every this many steps.
        checkpoint_dir: if given, a checkpoint is written there every
            ``config.checkpoint_every`` steps and at the end, and an existing checkpoint is
            resumed from (the continued run is identical to an uninterrupted one).
        stop_at: stop after this step (< ``config.steps``) although the schedules are those
            of the full run, e.g. to split a run across jobs via the checkpoint.

    Returns:
        ``(gaussians, history)``; history entries are ``{"step", "loss", "psnr",
        "num_gaussians", "seconds"}`` with loss and train-view PSNR averaged over the steps
        since the previous entry and ``seconds`` the wall time since this call started
        (entries restored from a checkpoint keep the times of their own call).
    """
    config = config or TrainConfig()
    if log_every <= 0:
        raise ValueError(f"log_every: expected a positive int, got {log_every!r}")
    views = [v for v in scene.train_views if v.rgb is not None]
    if not views:
        raise ValueError("scene: expected at least one training view with rgb")
    extent = scene_extent([v.camera for v in scene.views])
    background = _background(config, scene)
    generator = torch.Generator().manual_seed(config.seed)
    controller = DensityController(config.densify, extent)
    ckpt = Path(checkpoint_dir) / CHECKPOINT_NAME if checkpoint_dir is not None else None
    history: list[dict] = []
    start = 0

    if ckpt is not None and ckpt.exists():
        state = load_checkpoint(ckpt)
        gaussians, start, history = state["gaussians"], state["step"], state["history"]
        gaussians.eps2d = config.eps2d
        optimizer = _make_optimizer(gaussians, config, extent)
        for group in optimizer.param_groups:
            if group["name"] in state["adam"]:
                optimizer.state[group["params"][0]] = state["adam"][group["name"]]
        if state["density"][0] is not None:
            controller.grad_accum, controller.count = state["density"]
        if state["rng"] is not None:
            generator.set_state(state["rng"])
    else:
        if isinstance(init, Gaussians):
            gaussians = copy.deepcopy(init)
            gaussians.eps2d = config.eps2d
        else:
            method = config.init if init is None else init
            xyz, rgb = initial_points(scene, method, config.num_init_points, generator)
            gaussians = Gaussians.from_points(
                xyz, rgb, sh_degree=config.sh_degree, initial_opacity=config.initial_opacity,
                eps2d=config.eps2d,
            )
        optimizer = _make_optimizer(gaussians, config, extent)
    # runs where the Gaussians are (views and background must be on the same device)
    background = background.to(gaussians.means.device)
    max_degree = min(config.sh_degree, gaussians.sh_degree)
    rest_ratio = config.lr_sh_rest / config.lr_sh_dc
    end = config.steps if stop_at is None else min(stop_at, config.steps)

    coarse: dict[int, tuple[torch.Tensor, int, int, torch.Tensor]] = {}
    window: list[tuple[float, float]] = []
    tic = time.perf_counter()
    for step in range(start + 1, end + 1):
        for group in optimizer.param_groups:
            if group["name"] == "means":
                group["lr"] = _means_lr(config, extent, step - 1)
        index = int(torch.randint(len(views), (1,), generator=generator))
        view = views[index]
        cam = view.camera
        k, width, height, target = cam.K, cam.width, cam.height, view.rgb
        if step <= config.coarse_until and config.coarse_factor > 1:
            if index not in coarse:
                coarse[index] = _coarse_view(view, config.coarse_factor)
            k, width, height, target = coarse[index]
        degree = min((step - 1) // config.sh_degree_interval, max_degree)
        out = rasterize(
            gaussians, cam.viewmat, k, width, height,
            background=background, sh_degree=degree, checkpoint=False,
        )  # fmt: skip
        out.means2d.retain_grad()
        loss = photometric_loss(out.rgb, target, config.ssim_lambda)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if step < config.densify.densify_until:
            controller.accumulate(out, width, height)
        sh_rest_before = gaussians.sh.detach()[:, 1:].clone() if rest_ratio != 1.0 else None
        optimizer.step()
        if sh_rest_before is not None:
            # Adam's moments do not depend on lr, so scaling the update of the higher-order
            # coefficients is exactly Adam with lr_sh_rest on them.
            with torch.no_grad():
                rest = gaussians.sh[:, 1:]
                rest.copy_(sh_rest_before + rest_ratio * (rest - sh_rest_before))
        controller.step(step, gaussians, optimizer, generator)

        window.append((float(loss.detach()), float(psnr(out.rgb.detach(), target))))
        if step % log_every == 0 or step == end:
            history.append({
                "step": step,
                "loss": sum(w[0] for w in window) / len(window),
                "psnr": sum(w[1] for w in window) / len(window),
                "num_gaussians": gaussians.num_gaussians,
                "seconds": time.perf_counter() - tic,
            })  # fmt: skip
            window = []
        if ckpt is not None and (step % config.checkpoint_every == 0 or step == end):
            save_checkpoint(
                ckpt, gaussians, optimizer, step,
                controller=controller, generator=generator, history=history,
            )  # fmt: skip
    return gaussians, history


@torch.no_grad()
def evaluate(
    gaussians: Gaussians,
    views: Sequence[View],
    *,
    background: Sequence[float] | torch.Tensor = (1.0, 1.0, 1.0),
    sh_degree: int | None = None,
) -> dict[str, float]:
    """Mean PSNR (dB) and SSIM of renders of ``views`` against their ``rgb`` (e.g. a scene's
    ``test_views``); ``background`` must be the one the views were rendered over."""
    views = [v for v in views if v.rgb is not None]
    if not views:
        raise ValueError("views: expected at least one view with rgb")
    bg = torch.as_tensor(background, dtype=torch.float32)
    scores = {"psnr": 0.0, "ssim": 0.0}
    for v in views:
        c = v.camera
        out = rasterize(gaussians, c.viewmat, c.K, c.width, c.height, background=bg,
                        sh_degree=sh_degree, checkpoint=False)  # fmt: skip
        rgb = out.rgb.clamp(0.0, 1.0)
        scores["psnr"] += float(psnr(rgb, v.rgb)) / len(views)
        scores["ssim"] += float(ssim(rgb, v.rgb)) / len(views)
    return scores
