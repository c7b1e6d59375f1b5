"""Benchmarks of subspace-3dgs (``subzoo bench 3dgs``).

``3dgs/rasterizer``: wall time of the pure-PyTorch tile rasterizer, forward and backward
(median of repeats, one torch thread), on random scenes of ``N`` Gaussians in front of the
camera (:func:`random_scene`: points ~ N(0, 0.5²) at distance 4, SH degree 3, scales from
nearest neighbours, opacity 0.5). Three variants per case, composited in one pass:

* ``RGB+16-d`` -- RGB plus a 16-d feature subspace (Feature 3DGS's "speed-up" width);
* ``RGB only``;
* ``RGB+256-d`` -- RGB plus full-width 256-d features (the width a 1×1 decoder would map the
  16-d subspace to).

Cases: Gaussian counts 1k / 5k / 20k at 128×128 and resolutions 64² / 128² / 256² at 20k
(quick: 1k and 5k at 64²). A PNG plots time against N and against pixels. The Feature 3DGS
target (16-d subspace + decoder >= 3× faster than full width) also needs the decoder's cost
and the fidelity of a trained field: only the rendering half is measured here so far.
"""

from __future__ import annotations

import statistics
import time

import torch

from subspace_core.bench import BenchContext, Benchmark, Measurement, register_benchmark

__all__ = ["RASTERIZER", "random_scene", "run_rasterizer"]

VARIANTS = {"RGB+16-d": 16, "RGB only": 0, "RGB+256-d": 256}


def random_scene(num_gaussians: int, feature_dim: int, *, seed: int = 0):
    """``(gaussians, viewmat)`` of a random scene in front of a camera at the origin (OpenCV:
    looking along +z; the benchmark uses a 60° field of view), ``feature_dim`` random
    N(0, 1) features per Gaussian."""
    from subspace_3dgs.gaussians import Gaussians

    g = torch.Generator().manual_seed(seed)
    xyz = torch.randn(num_gaussians, 3, generator=g) * 0.5 + torch.tensor([0.0, 0.0, 4.0])
    rgb = torch.rand(num_gaussians, 3, generator=g)
    gaussians = Gaussians.from_points(xyz, rgb, sh_degree=3, feature_dim=feature_dim,
                                      initial_opacity=0.5)  # fmt: skip
    if feature_dim:
        with torch.no_grad():
            gaussians.features.normal_(generator=g)
    return gaussians, torch.eye(4)


def _time_render(gaussians, viewmat, size: int, repeats: int) -> tuple[float, float]:
    from subspace_3dgs.cameras import intrinsics_from_fov
    from subspace_3dgs.rasterize import rasterize

    K = intrinsics_from_fov(60.0, size, size)
    forward, backward = [], []
    for _ in range(repeats):
        gaussians.zero_grad(set_to_none=True)
        start = time.perf_counter()
        out = rasterize(gaussians, viewmat, K, size, size)
        loss = out.rgb.sum() + (out.features.sum() if out.features is not None else 0.0)
        mid = time.perf_counter()
        loss.backward()
        end = time.perf_counter()
        forward.append(mid - start)
        backward.append(end - mid)
    return statistics.median(forward), statistics.median(backward)


def run_rasterizer(ctx: BenchContext) -> list[Measurement]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        if ctx.quick:
            cases = [(1_000, 64), (5_000, 64)]
        else:
            cases = [(1_000, 128), (5_000, 128), (20_000, 128), (20_000, 64), (20_000, 256)]
        repeats = 2 if ctx.quick else 3
        rows: list[Measurement] = []
        timings: dict[str, list[tuple[int, int, float]]] = {v: [] for v in VARIANTS}
        for num, size in cases:
            case = f"{num:,} Gaussians, {size}x{size}"
            for variant, width in VARIANTS.items():
                gaussians, viewmat = random_scene(num, width)
                _time_render(gaussians, viewmat, size, 1)  # warm-up (allocations)
                fwd, bwd = _time_render(gaussians, viewmat, size, repeats)
                rows += [Measurement(case, variant, "forward_s", fwd, "s", False),
                         Measurement(case, variant, "backward_s", bwd, "s", False),
                         Measurement(case, variant, "total_s", fwd + bwd, "s", False)]  # fmt: skip
                timings[variant].append((num, size, fwd + bwd))
        _plot(timings, ctx.out_dir / "bench_3dgs_rasterizer_scaling.png")
        return rows
    finally:
        torch.set_num_threads(threads)


def _plot(timings, path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    points_all = [p for points in timings.values() for p in points]
    # N-scaling at the most common size, resolution-scaling at the largest N
    size = statistics.mode(s for _, s, _ in points_all)
    most = max(n for n, _, _ in points_all)
    fig, (by_n, by_px) = plt.subplots(1, 2, figsize=(10, 4))
    for variant, points in timings.items():
        curve_n = sorted((n, t) for n, s, t in points if s == size)
        curve_px = sorted((s * s, t) for n, s, t in points if n == most)
        by_n.plot(*zip(*curve_n, strict=True), marker="o", label=variant)
        by_px.plot(*zip(*curve_px, strict=True), marker="o", label=variant)
    by_n.set(xlabel=f"Gaussians ({size}x{size})", ylabel="forward + backward (s)", xscale="log")
    by_px.set(xlabel=f"pixels ({most:,} Gaussians)", ylabel="forward + backward (s)",
              xscale="log")
    for ax in (by_n, by_px):
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle("subspace-3dgs CPU rasterizer, 1 thread")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)


RASTERIZER = register_benchmark(
    Benchmark(
        name="3dgs/rasterizer",
        method="RGB+16-d",
        baselines=("RGB only", "RGB+256-d"),
        run=run_rasterizer,
        description="CPU tile rasterizer: forward/backward time vs Gaussian count and "
        "resolution; RGB with a 16-d feature subspace vs RGB only vs full-width 256-d features "
        "in the same pass.",
    )
)
