"""The plugin registers the continual benchmarks; the heat map is written; quick runs are
slow-marked."""

from __future__ import annotations

import pytest
import torch

from subspace_continual.benchmarks import PMNIST, plot_accuracy_matrix
from subspace_core.bench import BenchContext, list_benchmarks, run_benchmark


def test_plugin_registers_pmnist_benchmark():
    names = [b.name for b in list_benchmarks(["continual"])]
    assert "continual/pmnist" in names
    assert PMNIST.method == "GPM" and "fine-tuning" in PMNIST.baselines


def test_heat_map_png(tmp_path):
    R = torch.tensor([[90.0, float("nan")], [85.0, 92.0]])
    path = plot_accuracy_matrix(R, tmp_path / "r.png", "test")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.slow
def test_quick_pmnist_benchmark(tmp_path):
    report = run_benchmark(PMNIST, BenchContext(quick=True, device=torch.device("cpu"),
                                                out_dir=tmp_path))
    acc = {r["method"]: r["value"] for r in report.measurements if r["metric"] == "ACC"}
    assert acc["GPM"] > acc["fine-tuning"]
    assert len(list(tmp_path.glob("continual_pmnist_*.png"))) == 6


def test_plugin_registers_federated_benchmark():
    from subspace_continual.benchmarks import FEDERATED

    assert "continual/federated" in [b.name for b in list_benchmarks(["continual"])]
    assert FEDERATED.method == "FOT"
    assert {"FedAvg", "centralised GPM", "FOT+median", "FOT+flag"} <= set(FEDERATED.baselines)


@pytest.mark.slow
def test_quick_federated_benchmark(tmp_path):
    """The issue's targets on the quick federated run (about 70 s on one core)."""
    from subspace_continual.benchmarks import FEDERATED

    report = run_benchmark(FEDERATED, BenchContext(quick=True, device=torch.device("cpu"),
                                                   out_dir=tmp_path))
    rows = {(r["case"].endswith("x10)"), r["method"], r["metric"]): r["value"]
            for r in report.measurements}
    assert rows[(False, "FOT", "ACC")] >= rows[(False, "FedAvg", "ACC")] + 5
    assert rows[(False, "FOT", "ACC")] >= rows[(False, "centralised GPM", "ACC")] - 2
    assert rows[(False, "FOT+client-proj", "ACC")] >= rows[(False, "centralised GPM", "ACC")] - 2
    assert rows[(True, "FOT", "diverged")] == 1.0  # the mean collapses under sign flips
    assert rows[(True, "FOT+flag", "acc_drop")] <= 3.0


def test_class_incremental_benchmark_reports_the_nmc_sanity_row(tmp_path, monkeypatch):
    """Tiny data (monkeypatched scenario); NMC on injected pixel features, then the
    'unavailable' row when the backbone cannot be imported."""
    import subspace_continual.baselines as baselines
    import subspace_continual.data as data
    from subspace_continual.benchmarks import NMC_LABEL, SFMNIST_CLASS

    assert "continual/sfmnist_class" in [b.name for b in list_benchmarks(["continual"])]
    assert SFMNIST_CLASS.method == "GPM" and NMC_LABEL in SFMNIST_CLASS.baselines
    small = data.split_fashion_mnist("class", train_per_class=20, test_per_class=10)
    monkeypatch.setattr(data, "split_fashion_mnist", lambda setting, **kw: small)
    original_init = baselines.NMCBaseline.__init__

    def pixel_nmc(self, features=None, **kwargs):
        original_init(self, lambda im: im.flatten(1).float(), **kwargs)

    monkeypatch.setattr(baselines.NMCBaseline, "__init__", pixel_nmc)
    ctx = BenchContext(quick=True, device=torch.device("cpu"), out_dir=tmp_path)
    report = run_benchmark(SFMNIST_CLASS, ctx)
    rows = {(r["method"], r["metric"]): r["value"] for r in report.measurements}
    assert rows[(NMC_LABEL, "ACC")] > 50 and (NMC_LABEL, "FWT") not in rows
    assert {r["baseline"] for r in report.ratios} >= {"fine-tuning", "ER", "A-GEM", NMC_LABEL}
    assert (tmp_path / "continual_sfmnist_class_nmc.png").is_file()

    def unavailable(self, scenario, **kwargs):
        raise ImportError("No module named 'subspace_core.backbones'")

    monkeypatch.setattr(baselines.NMCBaseline, "run", unavailable)
    report = run_benchmark(SFMNIST_CLASS, ctx)
    rows = {(r["method"], r["metric"]): r["value"] for r in report.measurements}
    assert rows[(NMC_LABEL, "unavailable")] == 1.0 and (NMC_LABEL, "ACC") not in rows


def test_power_law_benchmark_tiny(tmp_path):
    """The benchmark on a tiny configuration: every method reports on the same schedule."""
    from subspace_continual.benchmarks import POWER_LAW, run_power_law
    from subspace_continual.harness import TrainConfig

    assert "continual/power_law" in [b.name for b in list_benchmarks(["continual"])]
    assert POWER_LAW.method == "GPM" and {"fine-tuning", "EWC", "ER"} <= set(POWER_LAW.baselines)
    config = {"num_tasks": 3, "train_per_class": 10, "length": 7, "new_task_prob": 0.5,
              "alpha": 1.0, "schedule_seed": 0,
              "cfg": TrainConfig(epochs=1, batch_size=20, lr=0.05, hidden=(32, 32), seed=0)}
    ctx = BenchContext(quick=True, device=torch.device("cpu"), out_dir=tmp_path)
    methods = {"gpm": "GPM", "finetune": "fine-tuning", "ewc": "EWC", "er": "ER"}
    rows = run_power_law(ctx, methods, config)
    table = {(r.method, r.metric): r.value for r in rows}
    for label in methods.values():
        for metric in ("ACC", "session_ACC", "forgetting", "recurrence_gain", "train_wall"):
            assert table[(label, metric)] == table[(label, metric)]  # present, not NaN
        assert 0 <= table[(label, "ACC")] <= 100
    assert len({r.case for r in rows}) == 1 and "revisits" in rows[0].case
    assert (tmp_path / "continual_power_law.png").read_bytes()[:4] == b"\x89PNG"
    with pytest.raises(RuntimeError, match="not all"):
        run_power_law(ctx, {"finetune": "fine-tuning"}, {**config, "length": 1})
