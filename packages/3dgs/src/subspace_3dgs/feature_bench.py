"""Benchmark ``3dgs/feature_field``: Feature 3DGS's 16-d subspace + decoder vs full width.

Protocol (one torch thread): the bunny scene (:func:`~subspace_3dgs.scenes.make_scene`,
``mesh_bunny_npm``, 128x128, 24 views, every 8th held out; quick: 64x64, 16 views) and
Gaussians trained briefly by :func:`~subspace_3dgs.train.train_gaussians` (frozen
afterwards). Teacher: ImageNet MobileNetV2 stage 5 (1,280 channels) on the views upsampled
to 512 px, a 16x16 map (:class:`~subspace_3dgs.teacher.Teacher`); the full (non-quick) run
adds stage 4 (96 channels, 32x32). Two fields are distilled for the same number of steps:

* ``16-d subspace + decoder`` -- Feature 3DGS's "speed-up": 16-d features, 1x1 decoder;
* ``full width`` -- features as wide as the teacher, identity decoder.

Measured per variant: held-out fidelity (:func:`~subspace_3dgs.feature_field.feature_fidelity`:
mean per-cell cosine to the teacher on the teacher grid, object cells and all cells), and
the time per held-out view (median) to render RGB + features at ``2 x`` the teacher grid,
pool and decode (``forward_s``), and that plus the L1 loss's backward to the features and
decoder (``fwd_bwd_s``); ``query_iou``: on each held-out view, the teacher feature at the
object cell nearest the mask centroid is the query, and the IoU of the field's
:func:`~subspace_3dgs.feature_field.segment_by_query` mask (cosine >= 0.5) with the
teacher's own mask is averaged. ``bench_3dgs_feature_field_<k>.png``: a held-out view, the
teacher and both fields as PCA colours, and their query masks. Derived rows on the
subspace method: ``speedup_*`` (full time / subspace time; target >= 3) and
``fidelity_drop_rel`` (``1 - subspace / full`` object fidelity; target <= 0.05).
"""

from __future__ import annotations

import statistics
import time

import torch

from subspace_core.bench import BenchContext, Benchmark, Measurement, register_benchmark

__all__ = ["FEATURE_FIELD", "run_feature_field", "time_field"]

SUBSPACE, FULL = "16-d subspace + decoder", "full width"


def time_field(field, scene, maps, views, *, render_scale: int = 2, repeats: int = 2):
    """Median seconds per view of (forward, forward + backward) for ``field`` on ``views``
    (indices into ``scene.views``); ``maps`` are the teacher maps ``[V, C, h, w]``."""
    from subspace_3dgs.feature_field import render_feature_map

    forward, both = [], []
    for _ in range(repeats):
        for i in views:
            cam = scene.views[i].camera
            tic = time.perf_counter()
            with torch.no_grad():
                render_feature_map(field, cam, render_scale=render_scale)
            forward.append(time.perf_counter() - tic)
            field.zero_grad(set_to_none=True)
            tic = time.perf_counter()
            loss = (render_feature_map(field, cam, render_scale=render_scale) - maps[i]).abs()
            loss.mean().backward()
            both.append(time.perf_counter() - tic)
    return statistics.median(forward), statistics.median(both)


def _query_iou(field, scene, maps, threshold: float = 0.5) -> float:
    """Mean IoU over held-out views of the query masks from the field and from the teacher,
    the query being the teacher's feature at the object cell nearest the mask centroid."""
    from subspace_3dgs.feature_field import _object_coverage, render_feature_map, segment_by_query

    ious = []
    for i in scene.test_indices:
        cells = _object_coverage(scene, i, field.map_size) >= 0.5
        if not cells.any():
            continue
        ys, xs = torch.nonzero(cells, as_tuple=True)
        centre = torch.stack([ys.float().mean(), xs.float().mean()])
        k = int(((torch.stack([ys, xs], 1) - centre).square().sum(1)).argmin())
        query = maps[i][:, ys[k], xs[k]]
        with torch.no_grad():
            ours = segment_by_query(render_feature_map(field, scene.views[i].camera), query,
                                    threshold)
        ref = segment_by_query(maps[i], query, threshold)
        ious.append(float((ours & ref).sum()) / max(float((ours | ref).sum()), 1.0))
    return sum(ious) / max(len(ious), 1)


def _plot(path, scene, maps, fields, threshold: float = 0.5) -> None:
    """First held-out view: RGB, teacher / field maps as their top-3 PCA colours, and the
    query masks (query: the teacher feature at the centre cell)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from subspace_3dgs.feature_field import render_feature_map, segment_by_query

    i = scene.test_indices[0]
    target = maps[i]
    c, h, w = target.shape
    flat = target.reshape(c, -1).T
    mean = flat.mean(0)
    _, _, vh = torch.linalg.svd(flat - mean, full_matrices=False)

    def pca(m):
        rgb = ((m.reshape(c, -1).T - mean) @ vh[:3].T).reshape(h, w, 3)
        lo, hi = rgb.amin((0, 1)), rgb.amax((0, 1))
        return ((rgb - lo) / (hi - lo).clamp_min(1e-8)).clamp(0, 1)

    query = target[:, h // 2, w // 2]
    panels = [("view", scene.views[i].rgb), ("teacher", pca(target)),
              ("teacher query", segment_by_query(target, query, threshold).float())]
    for name, field in fields.items():
        with torch.no_grad():
            m = render_feature_map(field, scene.views[i].camera)
        panels += [(name, pca(m)), (f"{name} query", segment_by_query(m, query, threshold).float())]
    fig, axes = plt.subplots(1, len(panels), figsize=(2.2 * len(panels), 2.6))
    for ax, (name, img) in zip(axes, panels, strict=True):
        ax.imshow(img.numpy(), cmap="gray", interpolation="nearest")
        ax.set_title(name, fontsize=7)
        ax.axis("off")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _case_rows(case, scene, gaussians, teacher, steps, repeats, plot=None) -> list[Measurement]:
    from subspace_3dgs.feature_field import (
        FeatureFieldConfig,
        feature_fidelity,
        train_feature_field,
    )
    from subspace_3dgs.teacher import teacher_maps

    maps = teacher_maps(scene, teacher)
    rows, results, fields = [], {}, {}
    for method, dim in ((SUBSPACE, 16), (FULL, None)):
        tic = time.perf_counter()
        field, _ = train_feature_field(gaussians, scene, maps,
                                       FeatureFieldConfig(dim=dim, steps=steps))  # fmt: skip
        train_s = time.perf_counter() - tic
        fid_obj = feature_fidelity(field, scene, maps, region="object")
        fid_all = feature_fidelity(field, scene, maps, region="all")
        time_field(field, scene, maps, scene.test_indices[:1], repeats=1)  # warm-up
        fwd, both = time_field(field, scene, maps, scene.test_indices, repeats=repeats)
        results[method] = (fid_obj, fwd, both)
        fields[method] = field
        rows += [
            Measurement(case, method, "fidelity_object", fid_obj, "cos", True),
            Measurement(case, method, "fidelity_all", fid_all, "cos", True),
            Measurement(case, method, "forward_s", fwd, "s", False),
            Measurement(case, method, "fwd_bwd_s", both, "s", False),
            Measurement(case, method, "train_s", train_s, "s", False),
            Measurement(case, method, "feature_dim", float(field.dim), "", False),
            Measurement(case, method, "query_iou", _query_iou(field, scene, maps), "", True),
        ]
    if plot is not None:
        _plot(plot, scene, maps, fields)
    sub, full = results[SUBSPACE], results[FULL]
    rows += [
        Measurement(case, SUBSPACE, "speedup_forward", full[1] / sub[1], "x", True),
        Measurement(case, SUBSPACE, "speedup_fwd_bwd", full[2] / sub[2], "x", True),
        Measurement(case, SUBSPACE, "fidelity_drop_rel", 1.0 - sub[0] / full[0], "", False),
    ]
    return rows


def run_feature_field(ctx: BenchContext) -> list[Measurement]:
    from subspace_3dgs.scenes import make_scene
    from subspace_3dgs.teacher import Teacher
    from subspace_3dgs.train import TrainConfig, evaluate, train_gaussians

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        torch.manual_seed(0)
        size, views = (64, 16) if ctx.quick else (128, 24)
        rgb_steps, points = (30, 1500) if ctx.quick else (150, 3000)
        feature_steps, repeats = (15, 1) if ctx.quick else (60, 2)
        scene = make_scene("bunny", views, size, size, seed=0)
        tic = time.perf_counter()
        gaussians, _ = train_gaussians(
            scene, TrainConfig(steps=rgb_steps, num_init_points=points, sh_degree=0),
            log_every=rgb_steps,
        )  # fmt: skip
        rgb_s = time.perf_counter() - tic
        quality = evaluate(gaussians, scene.test_views, background=scene.background)
        scene_case = f"bunny {size}x{size}, {gaussians.num_gaussians:,} Gaussians"
        rows = [
            Measurement(scene_case, "3DGS (RGB, frozen)", "psnr", quality["psnr"], "dB", True),
            Measurement(scene_case, "3DGS (RGB, frozen)", "train_s", rgb_s, "s", False),
        ]
        teachers = [("MobileNetV2 stage 5 (1280-d, 16x16)", Teacher("mobilenet_v2", 5, 512))]
        if not ctx.quick:
            teachers.append(("MobileNetV2 stage 4 (96-d, 32x32)", Teacher("mobilenet_v2", 4, 512)))
        for k, (name, teacher) in enumerate(teachers):
            plot = ctx.out_dir / f"bench_3dgs_feature_field_{k}.png"
            rows += _case_rows(f"{scene_case}; {name}", scene, gaussians, teacher,
                               feature_steps, repeats, plot)  # fmt: skip
        return rows
    finally:
        torch.set_num_threads(threads)


FEATURE_FIELD = register_benchmark(
    Benchmark(
        name="3dgs/feature_field",
        method=SUBSPACE,
        baselines=(FULL,),
        run=run_feature_field,
        description="Feature 3DGS on the bunny: 16-d feature subspace + 1x1 decoder vs "
        "full-width features distilled from MobileNetV2 maps; held-out cosine fidelity and "
        "render(+decode) time per view, forward and forward+backward.",
    )
)
