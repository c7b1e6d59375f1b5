"""Running benchmarks and writing their reports (CSV, JSON, PNG)."""

from __future__ import annotations

import csv
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from subspace_core.bench.registry import (
    BenchContext,
    Benchmark,
    Measurement,
    get_kernel_benchmark,
    list_kernel_benchmarks,
)
from subspace_core.bench.timing import median_time
from subspace_core.eval.results import environment_info
from subspace_core.io import atomic_path

__all__ = ["BenchReport", "bench_environment", "run_benchmark", "run_kernel_benchmarks", "write_report"]


@dataclass
class BenchReport:
    """Measurements and ratios of one or more benchmarks, plus the environment they ran in."""

    measurements: list[dict[str, Any]] = field(default_factory=list)
    ratios: list[dict[str, Any]] = field(default_factory=list)
    environment: dict[str, str] = field(default_factory=dict)

    def extend(self, other: BenchReport) -> None:
        self.measurements += other.measurements
        self.ratios += other.ratios

    def to_dict(self) -> dict[str, Any]:
        return {"environment": self.environment, "measurements": self.measurements,
                "ratios": self.ratios}


def _ratios(benchmark: str, method: str, baselines: tuple[str, ...],
            measured: list[Measurement]) -> list[dict[str, Any]]:
    index = {(m.case, m.method, m.metric): m for m in measured}
    rows = []
    for m in measured:
        if m.method != method:
            continue
        for baseline in baselines:
            base = index.get((m.case, baseline, m.metric))
            if base is None or base.value == 0:
                continue
            ratio = m.value / base.value
            better = m.value > base.value if m.higher_is_better else m.value < base.value
            rows.append({"benchmark": benchmark, "case": m.case, "metric": m.metric,
                         "method": method, "baseline": baseline, "method_value": m.value,
                         "baseline_value": base.value, "ratio": ratio, "unit": m.unit,
                         "higher_is_better": m.higher_is_better, "method_better": better})
    return rows


def run_benchmark(benchmark: Benchmark, ctx: BenchContext) -> BenchReport:
    """Run one benchmark; every method named in ``method``/``baselines`` must be measured."""
    measured = benchmark.run(ctx)
    seen = {m.method for m in measured}
    missing = {benchmark.method, *benchmark.baselines} - seen
    if missing:
        raise RuntimeError(f"benchmark {benchmark.name}: no measurements for {sorted(missing)}")
    rows = [{"benchmark": benchmark.name, **asdict(m)} for m in measured]
    return BenchReport(rows, _ratios(benchmark.name, benchmark.method, benchmark.baselines,
                                     measured))


def run_kernel_benchmarks(
    ops: list[str] | None, backends: list[str] | None, device: torch.device, quick: bool
) -> BenchReport:
    """Median timings of each op's backends over its cases; ratios baseline_time/backend_time
    (speed-up, higher is better). An explicitly requested backend that cannot run raises."""
    report = BenchReport()
    for op in ops or list_kernel_benchmarks():
        kb = get_kernel_benchmark(op)
        wanted = backends or list(kb.backends)
        unknown = sorted(set(wanted) - set(kb.backends))
        if unknown:
            raise KeyError(f"backend: {unknown} not available for {op}; has {sorted(kb.backends)}")
        for case in kb.cases(quick):
            args = kb.make_inputs(case, device)
            label = ",".join(f"{k}={v}" for k, v in case.items())
            timings: dict[str, float] = {}
            for backend in dict.fromkeys([kb.baseline, *wanted]):
                if not kb.supports(backend, device):
                    if backends and backend in backends:
                        raise RuntimeError(f"backend {backend!r} of {op} cannot run on {device}")
                    continue
                fn = kb.backends[backend]
                stats = median_time(lambda fn=fn, args=args: fn(*args), device,
                                    repeats=5 if quick else 30, min_total_s=0 if quick else 0.2)
                timings[backend] = stats["median"]
                report.measurements.append({"benchmark": f"kernels/{op}", "case": label,
                                            "method": backend, "metric": "median_ms",
                                            "value": stats["median"] * 1e3, "unit": "ms",
                                            "higher_is_better": False, "iqr_ms": stats["iqr"] * 1e3})
                if kb.bytes_moved is not None:
                    report.measurements.append({
                        "benchmark": f"kernels/{op}", "case": label, "method": backend,
                        "metric": "bandwidth", "value": kb.bytes_moved(case) / stats["median"] / 1e9,
                        "unit": "GB/s", "higher_is_better": True})
            base = timings.get(kb.baseline)
            for backend, t in timings.items():
                if backend != kb.baseline and base:
                    report.ratios.append({"benchmark": f"kernels/{op}", "case": label,
                                          "metric": "speedup", "method": backend,
                                          "baseline": kb.baseline, "method_value": t * 1e3,
                                          "baseline_value": base * 1e3, "ratio": base / t,
                                          "unit": "x", "higher_is_better": True,
                                          "method_better": base > t})
    return report


def write_report(report: BenchReport, out_dir: Path, stem: str = "bench",
                 json_path: Path | None = None) -> list[Path]:
    """Write ``<stem>.csv`` (measurements), ``<stem>_ratios.csv``, ``<stem>.json`` and a PNG
    bar chart per benchmark into ``out_dir``; also the JSON to ``json_path`` if given."""
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for name, rows in ((f"{stem}.csv", report.measurements), (f"{stem}_ratios.csv", report.ratios)):
        if rows:
            keys = list(dict.fromkeys(k for row in rows for k in row))
            with atomic_path(out_dir / name) as tmp, open(tmp, "w", newline="") as fh:
                writer = csv.DictWriter(fh, fieldnames=keys, lineterminator="\n")
                writer.writeheader()
                writer.writerows(rows)
            written.append(out_dir / name)
    document = json.dumps(report.to_dict(), indent=2)
    for path in (out_dir / f"{stem}.json", json_path):
        if path is not None:
            with atomic_path(path) as tmp:
                tmp.write_text(document)
            written.append(path)
    written += _plot(report, out_dir, stem)
    return written


def _plot(report: BenchReport, out_dir: Path, stem: str) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = []
    by_bench: dict[str, list[dict[str, Any]]] = {}
    for row in report.measurements:
        by_bench.setdefault(row["benchmark"], []).append(row)
    for bench, rows in by_bench.items():
        panels = list(dict.fromkeys((r["case"], r["metric"]) for r in rows))
        fig, axes = plt.subplots(1, len(panels), figsize=(4 * len(panels), 3.2), squeeze=False)
        for ax, (case, metric) in zip(axes[0], panels, strict=True):
            sel = [r for r in rows if r["case"] == case and r["metric"] == metric]
            ax.barh([r["method"] for r in sel], [r["value"] for r in sel], color="#4c72b0")
            unit = sel[0].get("unit") or ""
            ax.set_title(f"{case}\n{metric}" + (f" ({unit})" if unit else ""), fontsize=9)
            ax.tick_params(labelsize=7)
        fig.suptitle(bench, fontsize=10)
        fig.tight_layout()
        path = out_dir / f"{stem}_{bench.replace('/', '_')}.png"
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format="png", dpi=110)
        plt.close(fig)
        paths.append(path)
    return paths


def bench_environment(device: torch.device) -> dict[str, str]:
    """Versions (core, torch, triton), git sha, device and date for a report header."""
    from importlib.metadata import PackageNotFoundError, version

    env = environment_info("core", device)
    try:
        env["triton_version"] = version("triton")
    except PackageNotFoundError:
        env["triton_version"] = "not installed"
    return env
