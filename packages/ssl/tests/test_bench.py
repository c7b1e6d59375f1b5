"""The ssl benchmarks measure every row they name, in micro configurations."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import subspace_ssl.plugin  # noqa: F401
from subspace_core.bench import BenchContext, list_benchmarks
from subspace_ssl.benchmarks import rankme_selection, readout
from subspace_ssl.encoders import build_encoder


def _ctx(tmp_path) -> BenchContext:
    return BenchContext(quick=True, device=torch.device("cpu"), out_dir=Path(tmp_path))


def test_benchmarks_are_registered_with_their_baselines():
    names = {b.name: b for b in list_benchmarks(["ssl"])}
    shipped_rows = tuple(label for label in readout.ENCODERS if label != "Barlow Twins")
    assert names["ssl/linear_probe"].baselines == (*shipped_rows, "random init", "raw pixels")
    assert names["ssl/rankme"].method == "RankMe"


def test_readout_rows_share_one_readout_and_average_random_seeds(tmp_path, monkeypatch):
    monkeypatch.setattr(readout, "ENCODERS", dict(readout.ALL_ENCODERS))
    cfg = readout.ReadoutConfig(train_n=300, test_n=60)
    rows = readout.run_readout(_ctx(tmp_path), cfg,
                               encoders=lambda model_id, device: build_encoder("tiny", seed=7))
    main = {(r.method, r.metric): r.value for r in rows if "seed" not in r.case}
    for method in ("Barlow Twins", "Mixed Barlow Twins", "random init", "raw pixels"):
        for metric in ("linear_top1", "knn_top1", "rankme"):
            assert (method, metric) in main, (method, metric)
    assert 0 <= main[("raw pixels", "linear_top1")] <= 100
    seeds = [r.value for r in rows if "seed" in r.case and r.metric == "knn_top1"]
    assert len(seeds) == 2
    assert main[("random init", "knn_top1")] == pytest.approx(sum(seeds) / 2)
    # the two trained rows got the same encoder here, so the same numbers
    assert main[("Barlow Twins", "linear_top1")] == main[("Mixed Barlow Twins", "linear_top1")]


def test_rankme_benchmark_correlates_over_every_checkpoint(tmp_path):
    cfg = rankme_selection.RankMeConfig(
        train_subset=64, epochs=2, batch_size=32, probe_train_n=200, probe_test_n=50,
        settings={"base": {"projector_dim": 16}, "wide": {"projector_dim": 32}})
    rows = rankme_selection.run_rankme(_ctx(tmp_path), cfg)
    candidates = {r.case for r in rows if r.method == "candidate"}
    assert len(candidates) == 4  # 2 settings x 2 epoch snapshots
    spearmans = {(r.method, r.metric): r.value for r in rows if r.metric.startswith("spearman")}
    assert set(spearmans) == {(m, f"spearman_vs_{a}") for m in ("RankMe", "feature variance")
                              for a in ("linear_top1", "knn_top1")}
    assert all(-1.0 <= v <= 1.0 for v in spearmans.values())


def test_heads_benchmark_reports_both_heads_side_by_side(tmp_path, monkeypatch):
    from subspace_ssl.benchmarks import heads
    from subspace_ssl.gcr import build_classifier

    # the heavy scorers are tested with the recipe; here: every head gets every metric
    monkeypatch.setattr(heads, "classify", lambda model, device: {"top1": 50.0, "nll": 1.0})
    monkeypatch.setattr(heads, "linear_transfer", lambda model, device: 60.0)
    built = []

    def models(model_id, device):
        built.append(model_id)
        return build_classifier("gcr" if "gcr" in model_id else "softmax", seed=0)

    rows = heads.run_heads(_ctx(tmp_path), models)
    assert built == ["ssl/gcr_tiny.fmnist", "ssl/softmax_tiny.fmnist"]
    got = {(r.method, r.metric) for r in rows}
    assert got == {(m, k) for m in ("GCR head", "softmax head")
                   for k in ("top1", "nll", "mnist_linear_top1")}


def test_starbucks_benchmark_turns_the_grids_into_rows(tmp_path, monkeypatch):
    import subspace_ssl.text_knn as text_knn
    from subspace_ssl.benchmarks import starbucks_grid

    base_grid = [[50.0] * 5 for _ in range(6)]
    star_grid = [[52.0] * 5 for _ in range(6)]
    star_grid[0][0] = 49.0

    def fake_compare(base, model, out_dir, **kwargs):
        assert kwargs["datasets"] == ("reuters",)  # quick mode
        return {"datasets": {"reuters": {"base": base_grid, "starbucks": star_grid,
                                         "min_gain": -1.0, "full_gap": 2.0}}}

    monkeypatch.setattr(text_knn, "compare_knn_grids", fake_compare)
    rows = starbucks_grid.run_starbucks(_ctx(tmp_path), model=lambda mid, dev: None,
                                        base=lambda dev: None)
    got = {(r.method, r.metric): r.value for r in rows}
    assert got[("Starbucks", "grid_min")] == 49.0 and got[("base MiniLM", "full_size")] == 50.0
    assert got[("Starbucks - base", "min_gain")] == -1.0
