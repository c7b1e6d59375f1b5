"""Tests of ``subspace_core.bench``: registries, ratio maths, kernel timings, reports."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch

from subspace_core import plugins
from subspace_core.bench import (
    BenchContext,
    Benchmark,
    BenchReport,
    KernelBenchmark,
    Measurement,
    get_kernel_benchmark,
    list_benchmarks,
    list_kernel_benchmarks,
    median_time,
    register_benchmark,
    register_kernel_benchmark,
    run_benchmark,
    run_kernel_benchmarks,
    write_report,
)
from subspace_core.bench import registry as bench_registry

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
CPU = torch.device("cpu")


@pytest.fixture(autouse=True)
def _isolated(monkeypatch):
    """Private benchmark registries; no plugin imports."""
    monkeypatch.setattr(bench_registry, "_BENCHMARKS", dict(bench_registry._BENCHMARKS))
    monkeypatch.setattr(
        bench_registry, "_KERNEL_BENCHMARKS", dict(bench_registry._KERNEL_BENCHMARKS)
    )
    monkeypatch.setattr(
        plugins, "_loaded", set(plugins._loaded) | set(plugins.available_plugins())
    )


@pytest.fixture
def ctx(tmp_path) -> BenchContext:
    return BenchContext(quick=True, device=CPU, out_dir=tmp_path)


def _bench(measurements: list[Measurement], name: str = "test/toy",
           baselines: tuple[str, ...] = ("base",)) -> Benchmark:
    return Benchmark(name=name, method="ours", baselines=baselines,
                     run=lambda ctx: list(measurements), description="toy")


def _ratio(report: BenchReport, case: str, metric: str, baseline: str = "base") -> dict:
    rows = [r for r in report.ratios
            if r["case"] == case and r["metric"] == metric and r["baseline"] == baseline]
    assert len(rows) == 1, rows
    return rows[0]


# --- method vs baselines -------------------------------------------------------------------


def test_bench_ratio_math_higher_and_lower_is_better(ctx):
    measured = [
        Measurement("c1", "ours", "acc", 90.0, "%", higher_is_better=True),
        Measurement("c1", "base", "acc", 60.0, "%", higher_is_better=True),
        Measurement("c1", "ours", "time", 2.0, "s", higher_is_better=False),
        Measurement("c1", "base", "time", 8.0, "s", higher_is_better=False),
        Measurement("c2", "ours", "acc", 30.0, "%", higher_is_better=True),
        Measurement("c2", "base", "acc", 60.0, "%", higher_is_better=True),
        Measurement("c2", "ours", "time", 10.0, "s", higher_is_better=False),
        Measurement("c2", "base", "time", 5.0, "s", higher_is_better=False),
    ]
    report = run_benchmark(_bench(measured), ctx)
    assert len(report.measurements) == 8
    assert report.measurements[0] == {"benchmark": "test/toy", "case": "c1", "method": "ours",
                                      "metric": "acc", "value": 90.0, "unit": "%",
                                      "higher_is_better": True}
    assert len(report.ratios) == 4  # one per (case, metric) of the method

    acc1 = _ratio(report, "c1", "acc")
    assert acc1["ratio"] == pytest.approx(1.5) and acc1["method_better"] is True
    assert (acc1["method_value"], acc1["baseline_value"]) == (90.0, 60.0)
    assert (acc1["method"], acc1["benchmark"], acc1["unit"]) == ("ours", "test/toy", "%")
    time1 = _ratio(report, "c1", "time")
    assert time1["ratio"] == pytest.approx(0.25) and time1["method_better"] is True
    assert time1["higher_is_better"] is False
    acc2 = _ratio(report, "c2", "acc")
    assert acc2["ratio"] == pytest.approx(0.5) and acc2["method_better"] is False
    time2 = _ratio(report, "c2", "time")
    assert time2["ratio"] == pytest.approx(2.0) and time2["method_better"] is False


def test_bench_ratio_against_several_baselines(ctx):
    measured = [
        Measurement("c", "ours", "acc", 80.0),
        Measurement("c", "b1", "acc", 40.0),
        Measurement("c", "b2", "acc", 100.0),
    ]
    report = run_benchmark(_bench(measured, baselines=("b1", "b2")), ctx)
    assert _ratio(report, "c", "acc", "b1")["ratio"] == pytest.approx(2.0)
    assert _ratio(report, "c", "acc", "b1")["method_better"] is True
    assert _ratio(report, "c", "acc", "b2")["ratio"] == pytest.approx(0.8)
    assert _ratio(report, "c", "acc", "b2")["method_better"] is False


def test_bench_method_better_with_negative_values(ctx):
    """For negative metrics (log-likelihood, ELBO, reward) the ratio flips sign meaning:
    -1 is higher than -2, so the method is better although ratio = 0.5 < 1."""
    measured = [
        Measurement("c", "ours", "loglik", -1.0, higher_is_better=True),
        Measurement("c", "base", "loglik", -2.0, higher_is_better=True),
        Measurement("c", "ours", "delta", -3.0, higher_is_better=False),
        Measurement("c", "base", "delta", -1.0, higher_is_better=False),
    ]
    report = run_benchmark(_bench(measured), ctx)
    assert _ratio(report, "c", "loglik")["method_better"] is True
    assert _ratio(report, "c", "delta")["method_better"] is True


def test_bench_equal_values_not_better(ctx):
    measured = [Measurement("c", "ours", "acc", 5.0), Measurement("c", "base", "acc", 5.0)]
    row = _ratio(run_benchmark(_bench(measured), ctx), "c", "acc")
    assert row["ratio"] == 1.0 and row["method_better"] is False


def test_bench_missing_baseline_measurement_raises(ctx):
    measured = [Measurement("c", "ours", "acc", 1.0), Measurement("c", "b1", "acc", 1.0)]
    with pytest.raises(RuntimeError) as info:
        run_benchmark(_bench(measured, baselines=("b1", "b2")), ctx)
    assert "test/toy" in str(info.value) and "b2" in str(info.value)


def test_bench_missing_method_measurement_raises(ctx):
    with pytest.raises(RuntimeError, match="ours"):
        run_benchmark(_bench([Measurement("c", "base", "acc", 1.0)]), ctx)


def test_bench_run_receives_context(tmp_path):
    seen = []

    def run(ctx):
        seen.append(ctx)
        return [Measurement("c", "ours", "m", 1.0), Measurement("c", "base", "m", 2.0)]

    ctx = BenchContext(quick=False, device=CPU, out_dir=tmp_path)
    run_benchmark(Benchmark("test/ctx", "ours", ("base",), run), ctx)
    assert seen == [ctx]


def test_bench_registry(ctx):
    bench = register_benchmark(_bench([], name="test/registered"))
    assert bench.area == "test"
    assert bench in list_benchmarks()
    with pytest.raises(ValueError, match="already registered"):
        register_benchmark(_bench([], name="test/registered"))
    with pytest.raises(KeyError, match="no_such_area_xyz"):
        list_benchmarks(["no_such_area_xyz"])


# --- timing --------------------------------------------------------------------------------


def test_bench_median_time_counts_and_stats():
    calls = []
    stats = median_time(lambda: calls.append(1), CPU, warmup=2, repeats=7)
    assert len(calls) == 9 and stats["runs"] == 7.0
    assert set(stats) == {"median", "min", "iqr", "runs"}
    assert 0 <= stats["min"] <= stats["median"] and stats["iqr"] >= 0


def test_bench_median_time_min_total_extends_runs():
    import time

    stats = median_time(lambda: time.sleep(0.002), CPU, warmup=0, repeats=2, min_total_s=0.03)
    assert stats["runs"] > 2
    assert stats["median"] >= 0.002


def test_bench_median_time_single_run():
    stats = median_time(lambda: None, CPU, warmup=0, repeats=1)
    assert stats["runs"] == 1.0 and stats["iqr"] == 0.0


# --- kernel benchmarks ---------------------------------------------------------------------


def _loop_matmul(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    out = torch.empty(a.shape[0], b.shape[1])
    for i in range(a.shape[0]):
        for j in range(b.shape[1]):
            out[i, j] = (a[i] * b[:, j]).sum()
    return out


def _kernel(op: str, supported=lambda backend, device: True) -> KernelBenchmark:
    return _kernel_and_cases(op, supported)[0]


def _kernel_and_cases(op: str, supported=lambda backend, device: True):
    """A toy matmul kernel benchmark (BLAS vs python loops) and the list of cases it built."""
    made: list[dict] = []

    def make_inputs(case, device):
        made.append(case)
        g = torch.Generator().manual_seed(0)
        n = case["n"]
        return (torch.randn(n, n, generator=g).to(device), torch.randn(n, n, generator=g).to(device))

    kb = KernelBenchmark(
        op=op,
        cases=lambda quick: [{"n": 8}] if quick else [{"n": 8}, {"n": 16}],
        make_inputs=make_inputs,
        backends={"torch": torch.matmul, "loop": _loop_matmul},
        baseline="torch",
        supports=supported,
    )
    return kb, made


def test_bench_kernel_backends_agree():
    a, b = _kernel("x").make_inputs({"n": 8}, CPU)
    assert torch.allclose(_loop_matmul(a, b), a @ b, rtol=1e-5, atol=1e-5)


def test_bench_kernel_speedup_ratios():
    register_kernel_benchmark(_kernel("test_matmul"))
    assert "test_matmul" in list_kernel_benchmarks()
    report = run_kernel_benchmarks(["test_matmul"], None, CPU, quick=True)
    assert {(m["method"], m["case"]) for m in report.measurements} == {
        ("torch", "n=8"), ("loop", "n=8")}
    for m in report.measurements:
        assert m["benchmark"] == "kernels/test_matmul" and m["metric"] == "median_ms"
        assert m["unit"] == "ms" and m["higher_is_better"] is False and m["value"] > 0
        assert m["iqr_ms"] >= 0
    assert len(report.ratios) == 1
    ratio = report.ratios[0]
    assert (ratio["method"], ratio["baseline"], ratio["metric"]) == ("loop", "torch", "speedup")
    assert ratio["ratio"] == pytest.approx(ratio["baseline_value"] / ratio["method_value"])
    # 64 python-level dot products vs one BLAS call: the loop is far slower
    assert ratio["ratio"] < 1 and ratio["method_better"] is False
    assert ratio["higher_is_better"] is True and ratio["unit"] == "x"


def test_bench_kernel_full_mode_runs_every_case():
    kb, made = _kernel_and_cases("test_matmul_full")
    register_kernel_benchmark(kb)
    report = run_kernel_benchmarks(["test_matmul_full"], ["torch"], CPU, quick=False)
    assert made == [{"n": 8}, {"n": 16}]
    assert [m["case"] for m in report.measurements] == ["n=8", "n=16"]
    assert report.ratios == []  # only the baseline was asked for


def test_bench_kernel_baseline_always_measured():
    register_kernel_benchmark(_kernel("test_matmul_base"))
    report = run_kernel_benchmarks(["test_matmul_base"], ["loop"], CPU, quick=True)
    assert [m["method"] for m in report.measurements] == ["torch", "loop"]
    assert len(report.ratios) == 1


def test_bench_kernel_unsupported_backend_requested_raises():
    register_kernel_benchmark(
        _kernel("test_matmul_unsup", supported=lambda backend, device: backend != "loop"))
    with pytest.raises(RuntimeError, match="loop"):
        run_kernel_benchmarks(["test_matmul_unsup"], ["loop"], CPU, quick=True)
    # not requested explicitly: skipped, no measurement and no ratio for it
    report = run_kernel_benchmarks(["test_matmul_unsup"], None, CPU, quick=True)
    assert [m["method"] for m in report.measurements] == ["torch"]
    assert report.ratios == []


def test_bench_kernel_unknown_backend_and_op():
    register_kernel_benchmark(_kernel("test_matmul_unknown"))
    with pytest.raises(KeyError, match="cuda_magic"):
        run_kernel_benchmarks(["test_matmul_unknown"], ["cuda_magic"], CPU, quick=True)
    with pytest.raises(KeyError, match="test_no_such_op"):
        get_kernel_benchmark("test_no_such_op")


def test_bench_kernel_registry_validation():
    register_kernel_benchmark(_kernel("test_matmul_dup"))
    with pytest.raises(ValueError, match="already registered"):
        register_kernel_benchmark(_kernel("test_matmul_dup"))
    bad = KernelBenchmark(op="test_bad_baseline", cases=lambda q: [], make_inputs=lambda c, d: (),
                          backends={"triton": torch.matmul})
    with pytest.raises(ValueError, match="baseline"):
        register_kernel_benchmark(bad)


# --- reports -------------------------------------------------------------------------------


def test_bench_write_report(tmp_path, ctx):
    measured = [
        Measurement("c1", "ours", "acc", 90.0, "%"),
        Measurement("c1", "base", "acc", 60.0, "%"),
        Measurement("c1", "ours", "time", 2.0, "s", higher_is_better=False),
        Measurement("c1", "base", "time", 8.0, "s", higher_is_better=False),
    ]
    report = run_benchmark(_bench(measured), ctx)
    register_kernel_benchmark(_kernel("test_matmul_report"))
    report.extend(run_kernel_benchmarks(["test_matmul_report"], None, CPU, quick=True))
    report.environment = {"device": "cpu"}
    out = tmp_path / "report"
    extra_json = tmp_path / "elsewhere" / "bench.json"
    written = write_report(report, out, stem="bench", json_path=extra_json)

    expected = {out / "bench.csv", out / "bench_ratios.csv", out / "bench.json", extra_json,
                out / "bench_test_toy.png", out / "bench_kernels_test_matmul_report.png"}
    assert set(written) == expected
    for path in expected:
        assert path.is_file() and path.stat().st_size > 0
    for png in (out / "bench_test_toy.png", out / "bench_kernels_test_matmul_report.png"):
        assert png.read_bytes()[:8] == PNG_MAGIC

    with open(out / "bench.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 6 and rows[0]["benchmark"] == "test/toy"
    assert "iqr_ms" in rows[0]  # union of the keys of every row
    with open(out / "bench_ratios.csv", newline="") as fh:
        ratios = list(csv.DictReader(fh))
    assert len(ratios) == 3
    assert float(ratios[0]["ratio"]) == pytest.approx(1.5)

    document = json.loads((out / "bench.json").read_text())
    assert document == json.loads(extra_json.read_text())
    assert document["environment"] == {"device": "cpu"}
    assert document["measurements"] == report.measurements
    assert document["ratios"] == report.ratios
    leftovers = [p for p in Path(out).iterdir() if p.name.endswith(".part")]
    assert leftovers == []


def test_bench_write_report_empty(tmp_path):
    written = write_report(BenchReport(), tmp_path / "empty")
    assert written == [tmp_path / "empty" / "bench.json"]
    assert json.loads(written[0].read_text()) == {"environment": {}, "measurements": [],
                                                  "ratios": []}
