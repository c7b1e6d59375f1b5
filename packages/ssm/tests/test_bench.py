"""The ``ssm/ptd_robustness`` benchmark: registered, and measures every method it names."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import subspace_ssm.plugin  # noqa: F401
from subspace_core.bench import BenchContext, list_benchmarks, run_benchmark
from subspace_ssm.benchmarks import ptd

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
