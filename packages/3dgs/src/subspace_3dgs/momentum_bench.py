"""Benchmark ``3dgs/momentum``: Momentum-GS vs independently trained blocks (``subzoo bench
3dgs``).

Scene (:func:`make_row_scene`): real meshes (bunny, cow, bone from DATA.md; each
normalised to the unit sphere, procedural colours) placed side by side along x, 2.2 apart,
seen by a ring of cameras around each object at distance 2.6 (elevations alternating 15 and
35 degrees, 50 degree field of view), so most views also show parts of the neighbours:
the situation block-wise training has to cope with. Every 8th view is held out.

Both methods use the same partition (one block per object: uniform cuts along x, 20 %
overlap), the same
init (depth back-projection), the same 3DGS recipe and the same total number of steps:

* ``independent blocks`` -- plain 3DGS per block, each on its own cameras and Gaussians,
  merged by ownership (the CityGS-style block-wise baseline);
* ``Momentum-GS`` -- :func:`~subspace_3dgs.momentum.train_momentum_gs` (EMA teacher,
  teacher context, render consistency, reconstruction-guided step shares).

Reported: held-out PSNR / SSIM of the merged model, training wall time, Gaussian count.
Quick (:data:`QUICK`): 2 objects, 32x32, 100 steps per method; full (:data:`FULL`): 3
objects, 48x48, 1000 steps per method. The CPU rasterizer costs 0.2-0.5 s per step on a
busy 2-core machine, which is what bounds these budgets.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence

import numpy as np
import torch

from subspace_core.bench import BenchContext, Benchmark, Measurement, register_benchmark

__all__ = ["MOMENTUM", "bench_config", "make_row_scene", "run_momentum"]

METHOD, BASELINE = "Momentum-GS", "independent blocks"


def make_row_scene(
    mesh_names: Sequence[str] = ("bunny", "cow", "bone", "airplane"),
    views_per_object: int = 12,
    size: int = 64,
    *,
    spacing: float = 2.2,
    radius: float = 2.6,
    fov_deg: float = 50.0,
    seed: int = 0,
):
    """A :class:`~subspace_3dgs.scenes.Scene` of the meshes side by side along x (centres
    ``spacing`` apart) with ``views_per_object`` cameras on a ring around each object;
    images ``size x size``, white background, every 8th view held out."""
    from subspace_3dgs.cameras import Camera, intrinsics_from_fov, look_at
    from subspace_3dgs.meshes import load_mesh
    from subspace_3dgs.scenes import HOLDOUT_EVERY, Scene, View, render_mesh, vertex_colors

    if len(mesh_names) == 0:
        raise ValueError("mesh_names: expected at least one mesh name, got none")
    if isinstance(views_per_object, bool) or views_per_object < 1:
        raise ValueError(f"views_per_object: expected a positive int, got {views_per_object!r}")
    verts, faces, cols, centres = [], [], [], []
    offset = 0
    for i, name in enumerate(mesh_names):
        v, f = load_mesh(name)
        centre = np.array([spacing * (i - (len(mesh_names) - 1) / 2), 0.0, 0.0], np.float32)
        verts.append(v + centre)
        faces.append(f + offset)
        cols.append(vertex_colors(v, seed=seed + i))
        centres.append(centre)
        offset += len(v)
    vertices, all_faces, colors = np.concatenate(verts), np.concatenate(faces), np.concatenate(cols)
    K = intrinsics_from_fov(fov_deg, size, size)
    views = []
    for i, c in enumerate(centres):
        for k in range(views_per_object):
            az = 2 * math.pi * (k + 0.5 * (i % 2)) / views_per_object
            el = math.radians(15.0 if k % 2 == 0 else 35.0)
            eye = c + radius * np.array(
                [math.cos(el) * math.cos(az), math.cos(el) * math.sin(az), math.sin(el)]
            )
            cam = Camera(look_at(tuple(eye.tolist()), tuple(c.tolist())), K, size, size,
                         f"{mesh_names[i]}_{k}")  # fmt: skip
            views.append(View(cam, *render_mesh(vertices, all_faces, cam, colors)))
    test = tuple(range(0, len(views), HOLDOUT_EVERY))
    return Scene(tuple(views), test, (1.0, 1.0, 1.0), vertices, all_faces, "+".join(mesh_names))


#: (meshes, views per object, image size, total steps per method, initial points)
QUICK = (("bunny", "bone"), 8, 32, 100, 400)
FULL = (("bunny", "cow", "bone"), 10, 32, 600, 900)


def bench_config(steps: int, num_blocks: int, num_init_points: int):
    """The :class:`~subspace_3dgs.momentum.MomentumConfig` of the benchmark: one block per
    object (uniform cuts along x, 20 % overlap), SH degree 1, the density-control schedule
    scaled to the per-block step count (no opacity reset in so short a run; 3DGS resets at
    10 % of its 30k steps), teacher momentum 0.9 as in the paper, consistency weight 1 (the module default)."""
    from subspace_3dgs.densify import DensifyConfig
    from subspace_3dgs.momentum import MomentumConfig
    from subspace_3dgs.train import TrainConfig

    per_block = max(1, steps // num_blocks)
    densify = DensifyConfig(densify_from=max(10, per_block // 10),
                            densify_until=max(11, int(per_block * 0.6)),
                            densify_every=max(10, per_block // 10),
                            reset_every=10**9)  # fmt: skip
    train = TrainConfig(steps=steps, sh_degree=1, sh_degree_interval=max(1, per_block // 2),
                        num_init_points=num_init_points, densify=densify)  # fmt: skip
    return MomentumConfig(train=train, dims=(num_blocks, 1, 1), split="uniform",
                          block_interval=max(5, per_block // 8),
                          weight_warmup=steps // 5)  # fmt: skip


def run_momentum(ctx: BenchContext) -> list[Measurement]:
    from subspace_3dgs.momentum import train_momentum_gs
    from subspace_3dgs.train import evaluate

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        names, per_object, size, steps, points = QUICK if ctx.quick else FULL
        scene = make_row_scene(names, views_per_object=per_object, size=size)
        case = f"{len(names)} meshes in a row, {len(names)} blocks, {size}x{size}, {steps} steps"
        config = bench_config(steps, len(names), points)
        rows: list[Measurement] = []
        for method, cfg in ((BASELINE, config.independent()), (METHOD, config)):
            tic = time.perf_counter()
            gaussians, _, _ = train_momentum_gs(scene, cfg, log_every=10**9)
            seconds = time.perf_counter() - tic
            scores = evaluate(gaussians, scene.test_views, background=scene.background)
            rows += [
                Measurement(case, method, "test_psnr", scores["psnr"], "dB", True),
                Measurement(case, method, "test_ssim", scores["ssim"], "", True),
                Measurement(case, method, "train_s", seconds, "s", False),
                Measurement(
                    case, method, "num_gaussians", float(gaussians.num_gaussians), "", False
                ),
            ]
        return rows
    finally:
        torch.set_num_threads(threads)


MOMENTUM = register_benchmark(
    Benchmark(
        name="3dgs/momentum",
        method=METHOD,
        baselines=(BASELINE,),
        run=run_momentum,
        description="Block-wise training of a row of meshes: Momentum-GS (EMA teacher "
        "self-distillation, teacher context, reconstruction-guided block weighting) vs plain "
        "3DGS per block, same partition and steps; held-out PSNR / SSIM.",
    )
)
