"""The ssm benchmarks (``ptd_robustness``, ``accuracy``, ``scaling``, ``selective_scan``):
registered, and each measures every method it names in a tiny configuration."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import subspace_ssm.plugin  # noqa: F401
from subspace_core.bench import BenchContext, list_benchmarks, run_benchmark
from subspace_ssm.benchmarks import accuracy, ptd, scaling, selective_scan

MICRO = ptd.BenchConfig(size=7, train_n=64, test_n=20, steps=2, batch=8, d_model=4, n_layers=1,
                        d_state=4, amplitudes=(0.5,), width=2,
                        models=(ptd.METHOD, *ptd.BASELINES, *ptd.FULL_ONLY))


def test_benchmark_is_registered_with_its_baselines():
    bench = next(b for b in list_benchmarks(["ssm"]) if b.name == "ssm/ptd_robustness")
    assert bench.method == "S4D-PTD" and bench.baselines == ("S4D-LegS", "S5-LegS", "S5-PTD")
    assert ptd.QUICK.models == (bench.method, *bench.baselines)
    assert set(ptd.FULL.models) == set(ptd.MODELS)


def test_micro_run_measures_every_model_and_gives_ratios(tmp_path, monkeypatch):
    ctx = BenchContext(quick=True, device=torch.device("cpu"), out_dir=Path(tmp_path))
    try:
        rows = ptd.run_ptd_robustness(ctx, MICRO)
    except Exception as exc:  # data not reachable on this machine
        if "fashion_mnist" in str(exc):
            pytest.skip(str(exc))
        raise
    metrics = {"top1", "robust_top1", "top1_low_0.5", "top1_high_0.5", "ms_per_step"}
    for label in MICRO.models:
        got = {r.metric: r.value for r in rows if r.method == label}
        assert set(got) == metrics, label
        assert 0 <= got["top1"] <= 100 and got["ms_per_step"] > 0
        assert got["robust_top1"] == pytest.approx((got["top1_low_0.5"] + got["top1_high_0.5"]) / 2)
    monkeypatch.setattr(ptd, "QUICK", MICRO)
    report = run_benchmark(ptd.PTD_ROBUSTNESS_BENCH, ctx)
    assert {r["baseline"] for r in report.ratios} == set(ptd.BASELINES)


# --- ssm/accuracy, ssm/scaling, ssm/selective_scan -------------------------------------

ACC_MICRO = accuracy.AccuracyConfig(size=7, train_n=64, test_n=20, steps=2, batch=8, d_model=4,
                                    n_layers=2, d_state=4)


def _ctx(tmp_path) -> BenchContext:
    return BenchContext(quick=True, device=torch.device("cpu"), out_dir=Path(tmp_path))


def test_new_benchmarks_are_registered():
    names = {b.name: b for b in list_benchmarks(["ssm"])}
    assert {"ssm/accuracy", "ssm/scaling", "ssm/selective_scan"} <= set(names)
    acc = names["ssm/accuracy"]
    assert (acc.method, *acc.baselines) == accuracy.QUICK.models == accuracy.FULL.models
    assert set(accuracy.QUICK.models) == {"S4", "S4D", "S5", "S5-PTD", "Mamba", "MHS"}
    assert names["ssm/scaling"].baselines == ("S4D recurrent", "naive loop")
    assert names["ssm/selective_scan"].baselines == ("naive loop",)


def test_accuracy_micro_run_trains_every_family_on_one_budget(tmp_path, monkeypatch):
    try:
        rows = accuracy.run_accuracy(_ctx(tmp_path), ACC_MICRO)
    except Exception as exc:  # data not reachable on this machine
        if "fashion_mnist" in str(exc):
            pytest.skip(str(exc))
        raise
    assert len({r.case for r in rows}) == 1  # one protocol and budget for all
    for label in ACC_MICRO.models:
        got = {r.metric: r.value for r in rows if r.method == label}
        assert set(got) == {"top1", "ms_per_step", "params"}, label
        assert 0 <= got["top1"] <= 100 and got["ms_per_step"] > 0 and got["params"] > 0
    monkeypatch.setattr(accuracy, "QUICK", ACC_MICRO)
    report = run_benchmark(accuracy.ACCURACY_BENCH, _ctx(tmp_path))
    assert {r["baseline"] for r in report.ratios} == set(accuracy.BASELINES)


def test_scaling_modes_agree_and_the_micro_run_reports_every_length(tmp_path):
    torch.manual_seed(0)
    layer = scaling.S4D(6, 8).eval()
    u = torch.randn(2, 50, 6)
    with torch.no_grad():
        y = layer(u)
        torch.testing.assert_close(scaling.recurrent_s4d(layer, u), y, atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(scaling.naive_s4d(layer, u), y, atol=1e-5, rtol=1e-4)
    cfg = scaling.ScalingConfig(lengths=(32, 64), d_model=4, d_state=8, repeats=1)
    rows = scaling.run_scaling(_ctx(tmp_path), cfg)
    for L in cfg.lengths:
        got = {(r.method, r.metric): r.value for r in rows if r.case == f"L={L}"}
        for label in (scaling.METHOD, *scaling.BASELINES):
            assert got[label, "forward_ms"] > 0
        for label in scaling.BASELINES:
            assert got[label, "max_abs_diff"] < 1e-4
        assert got[scaling.METHOD, "speedup_vs_recurrent"] > 0
    assert any(r.metric == "meets_20x_vs_recurrent" and r.case == "L=64" for r in rows)
    assert (Path(tmp_path) / "ssm_scaling.png").stat().st_size > 0
    # a mode slower than the cap is skipped at the larger lengths, and marked
    rows = scaling.run_scaling(_ctx(tmp_path), scaling.ScalingConfig(
        lengths=(16, 32), d_model=4, d_state=8, repeats=1, max_call_s=1e-9))
    assert {(r.case, r.metric) for r in rows if r.method == scaling.NAIVE} == {
        ("L=16", "forward_ms"), ("L=16", "max_abs_diff"), ("L=32", "skipped")}
    assert {r.metric for r in rows if r.case == "L=32"} == {"skipped"}


def test_selective_scan_naive_loop_matches_the_reference_and_micro_run(tmp_path):
    inputs = selective_scan.make_inputs((2, 3, 4, 9), torch.device("cpu"))
    ref = selective_scan.selective_scan_ref(*inputs, True)
    torch.testing.assert_close(selective_scan.naive_selective_scan(*inputs), ref)
    cfg = selective_scan.ScanConfig(cpu_shapes=((1, 4, 4, 16),), gpu_shapes=((1, 8, 4, 32),),
                                    repeats=1)
    rows = selective_scan.run_selective_scan(_ctx(tmp_path), cfg)
    cases = {r.case for r in rows if r.case.startswith("cpu")}
    assert cases == {"cpu b=1,d=4,N=4,L=16 fwd", "cpu b=1,d=4,N=4,L=16 fwd+bwd"}
    got = {(r.case.split()[-1], r.method, r.metric): r.value for r in rows if r.case in cases}
    for pass_ in ("fwd", "fwd+bwd"):
        assert got[pass_, "reference", "ms"] > 0 and got[pass_, "naive loop", "ms"] > 0
    assert got["fwd", "naive loop", "max_abs_diff"] < 1e-5
    assert got["fwd+bwd", "naive loop", "max_abs_grad_diff"] < 1e-4
    if not torch.cuda.is_available():
        assert all(r.case.startswith("cpu") for r in rows)
