"""Benchmark ``ssm/scaling``: one S4D layer over long sequences in convolution mode vs
recurrent mode vs a naive per-timestep loop, for L = 1k … 16k.

The same :class:`~subspace_ssm.s4d.S4D` layer (ZOH, LegS init, seeded) maps the same input
``u [batch, L, d_model]`` to its output ``[batch, L, d_model]`` three ways, under
``torch.inference_mode``:

* ``S4D conv``: the layer's forward — the kernel ``K_l = 2·Re(Σ_n C_n B̄_n Ā_nˡ)`` for all
  L lags, then an FFT convolution (O(L log L));
* ``S4D recurrent``: the layer's recurrent API, :meth:`S4D.default_state` then
  :meth:`S4D.step` once per position (discretisation cached by ``setup_step``; each step applies the pointwise
  output block to one position), outputs stacked;
* ``naive loop``: a plain-torch loop over positions of the discretised diagonal recurrence
  ``x_t = Ā x_{t−1} + B̄ u_t``, ``y_t = 2·Re(Σ_n C_n x_t[n])`` with Ā, B̄ computed once,
  then the D skip and the layer's output block over the whole sequence (:func:`naive_s4d`).

Measured per L: ``forward_ms`` (median wall time of one call, :func:`subspace_core.bench.median_time`)
for each mode, ``max_abs_diff`` of the recurrent and naive outputs against convolution
mode, and on the conv row ``speedup_vs_recurrent`` / ``speedup_vs_naive`` (time ratios).
The runner's ratio is ``conv / baseline`` time (lower is better for conv). At the largest
L run the conv row also gets ``meets_20x_vs_recurrent`` (1 when conv mode is at least 20×
faster than the recurrent scan there, else 0): recorded, not asserted. A mode whose last
call took more than half of ``max_call_s`` is not run at the larger L (doubling L doubles its
time); those points get a ``skipped`` row (value 1) and are missing from the curves.
Besides the runner's bar charts, ``<out>/ssm_scaling.png`` plots time vs L (log-log).

``quick``: L = 1k, 2k, 4k, 3 timed calls each (about 11 s on one busy thread). Full: L = 1k
… 16k, 5 timed calls (about 70 s). d_model 64, d_state 64 (32 complex modes), batch 1.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from subspace_core.bench import (
    BenchContext,
    Benchmark,
    Measurement,
    median_time,
    register_benchmark,
)
from subspace_core.io import atomic_path
from subspace_ssm.s4d import S4D

__all__ = ["SCALING_BENCH", "ScalingConfig", "naive_s4d", "plot_scaling", "recurrent_s4d",
           "run_scaling"]

METHOD = "S4D conv"
RECURRENT = "S4D recurrent"
NAIVE = "naive loop"
BASELINES = (RECURRENT, NAIVE)
SPEEDUP = {RECURRENT: "speedup_vs_recurrent", NAIVE: "speedup_vs_naive"}


@dataclass(frozen=True)
class ScalingConfig:
    lengths: tuple[int, ...]
    d_model: int = 64
    d_state: int = 64
    batch: int = 1
    repeats: int = 5
    max_call_s: float = 60.0
    seed: int = 0


QUICK = ScalingConfig(lengths=(1024, 2048, 4096), repeats=3)
FULL = ScalingConfig(lengths=(1024, 2048, 4096, 8192, 16384), repeats=5)


def recurrent_s4d(layer: S4D, u: torch.Tensor) -> torch.Tensor:
    """``u [batch, L, H]`` through ``layer.step`` one position at a time (recurrent mode)."""
    state = layer.default_state(u.shape[0], u.device)
    ys = []
    for u_t in u.unbind(1):
        y_t, state = layer.step(u_t, state)
        ys.append(y_t)
    return torch.stack(ys, 1)


def naive_s4d(layer: S4D, u: torch.Tensor) -> torch.Tensor:
    """``u [batch, L, H]`` through a plain per-timestep loop of the discretised recurrence
    (Ā, B̄ computed once; complex state ``[batch, H, M]``), then D and the output block."""
    log_a, Bb, C = layer.ssm.discrete()
    a_bar, c = torch.exp(log_a), C[0]
    x = torch.zeros(u.shape[0], layer.d_model, layer.ssm.n_modes, dtype=a_bar.dtype,
                    device=u.device)
    ys = []
    for u_t in u.unbind(1):
        x = a_bar * x + Bb * u_t[..., None]
        ys.append(2 * (c * x).sum(-1).real)
    y = torch.stack(ys, 1) + layer.D * u
    return layer._post(y)


def plot_scaling(times: dict[str, dict[int, float]], path: Path, title: str) -> Path:
    """Log-log plot of median forward time (ms) vs L, one curve per mode."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.2, 3.8))
    for (label, points), marker in zip(times.items(), "osd^v", strict=False):
        Ls = sorted(points)
        ax.plot(Ls, [points[L] for L in Ls], marker=marker, label=label)
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("sequence length L")
    ax.set_ylabel("forward time (ms, median)")
    ax.set_title(title, fontsize=9)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)
    return path


def run_scaling(ctx: BenchContext, cfg: ScalingConfig | None = None) -> list[Measurement]:
    cfg = cfg or (QUICK if ctx.quick else FULL)
    torch.manual_seed(cfg.seed)
    layer = S4D(cfg.d_model, cfg.d_state).to(ctx.device).eval()
    modes = {METHOD: layer, RECURRENT: lambda u: recurrent_s4d(layer, u),
             NAIVE: lambda u: naive_s4d(layer, u)}
    g = torch.Generator().manual_seed(cfg.seed)
    rows: list[Measurement] = []
    times: dict[str, dict[int, float]] = {label: {} for label in modes}
    last_call: dict[str, float] = {}
    for L in cfg.lengths:
        case = f"L={L}"
        u = torch.randn(cfg.batch, L, cfg.d_model, generator=g).to(ctx.device)
        outputs: dict[str, torch.Tensor] = {}
        for label, fn in modes.items():
            if last_call.get(label, 0.0) > cfg.max_call_s / 2:
                rows.append(Measurement(case, label, "skipped", 1.0, "", False))
                continue

            def call(fn=fn, label=label, u=u, outputs=outputs):
                with torch.inference_mode():
                    outputs[label] = fn(u)

            stats = median_time(call, ctx.device, warmup=1, repeats=cfg.repeats)
            last_call[label] = stats["median"]
            times[label][L] = 1e3 * stats["median"]
            rows.append(Measurement(case, label, "forward_ms", times[label][L], "ms", False))
        ref = outputs.get(METHOD)
        for label in BASELINES:
            if ref is not None and label in outputs:
                diff = float((outputs[label] - ref).abs().max())
                rows.append(Measurement(case, label, "max_abs_diff", diff, "", False))
                rows.append(Measurement(case, METHOD, SPEEDUP[label],
                                        times[label][L] / times[METHOD][L], "x"))
    title = (f"S4D layer, d_model={cfg.d_model}, d_state={cfg.d_state}, batch={cfg.batch} "
             f"({ctx.device.type})")
    both = [L for L in times[METHOD] if L in times[RECURRENT]]
    if both:
        largest = max(both)
        ratio = times[RECURRENT][largest] / times[METHOD][largest]
        rows.append(Measurement(f"L={largest}", METHOD, "meets_20x_vs_recurrent",
                                float(ratio >= 20), ""))
        title += f"\nrecurrent/conv at L={largest}: {ratio:.1f}x"
    ctx.out_dir.mkdir(parents=True, exist_ok=True)
    plot_scaling(times, ctx.out_dir / "ssm_scaling.png", title)
    return rows


SCALING_BENCH = register_benchmark(
    Benchmark(
        name="ssm/scaling",
        method=METHOD,
        baselines=BASELINES,
        run=run_scaling,
        description="One S4D layer (d_model 64, d_state 64) over L = 1k..16k (quick: ..4k): "
        "convolution mode vs the layer's recurrent step vs a naive per-timestep loop; median "
        "forward time, output agreement, speed-ups; PNG of time vs L (ssm_scaling.png).",
    )
)
