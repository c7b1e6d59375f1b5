"""Benchmark ``ssl/starbucks``: the Starbucks MiniLM vs the base MiniLM at every (layer, dim).

Both encoders embed the same documents in one run; each (layer, dim) pair of the grid
(layers 1..6 × dims {32, 64, 128, 256, 384}) is scored by cosine kNN classification
(:mod:`subspace_ssl.text_knn`). Reported per dataset: the mean and the minimum of the grid,
the full-size (6, 384) accuracy, and for Starbucks the smallest gain over the base
(``min_gain``, target >= 0) and the full-size gap (target >= −1); the grids are written as
``knn_grids.json`` and ``knn_grids.png``.

``quick``: R8 only, 300 bank / 200 query documents; full: 20 Newsgroups and R8 with the
protocols' 2,000 / 1,000.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from subspace_core.bench import BenchContext, Benchmark, Measurement, register_benchmark

__all__ = ["MODEL_ID", "STARBUCKS_BENCH", "run_starbucks"]

MODEL_ID = "ssl/starbucks_minilm_l6.ng20r8"
METHOD, BASE = "Starbucks", "base MiniLM"


def _shipped(model_id: str, device: torch.device) -> nn.Module:
    from subspace_core.zoo import load

    return load(model_id, device=device)


def _base(device: torch.device) -> nn.Module:
    from subspace_ssl.starbucks import starbucks_minilm

    return starbucks_minilm().to(device).eval()  # a fresh adapter leaves the base unchanged


def run_starbucks(ctx: BenchContext,
                  model: Callable[[str, torch.device], nn.Module] = _shipped,
                  base: Callable[[torch.device], nn.Module] = _base) -> list[Measurement]:
    from subspace_ssl.text_knn import compare_knn_grids

    datasets, n_train, n_test = ((("reuters",), 300, 200) if ctx.quick
                                 else (("newsgroups20", "reuters"), 2000, 1000))
    report = compare_knn_grids(base(ctx.device), model(MODEL_ID, ctx.device), ctx.out_dir,
                               model_tag="starbucks", datasets=datasets, n_train=n_train,
                               n_test=n_test, cache=False)
    rows: list[Measurement] = []
    for dataset, result in report["datasets"].items():
        case = f"{dataset} kNN grid, {n_train} bank / {n_test} queries"
        for label, key in ((METHOD, "starbucks"), (BASE, "base")):
            grid = torch.tensor(result[key], dtype=torch.float64)
            rows.append(Measurement(case, label, "grid_mean", float(grid.mean()), "%"))
            rows.append(Measurement(case, label, "grid_min", float(grid.min()), "%"))
            rows.append(Measurement(case, label, "full_size", float(grid[-1, -1]), "%"))
        rows.append(Measurement(case, "Starbucks - base", "min_gain", result["min_gain"], "pt"))
        rows.append(Measurement(case, "Starbucks - base", "full_gap", result["full_gap"], "pt"))
    return rows


STARBUCKS_BENCH = register_benchmark(
    Benchmark(
        name="ssl/starbucks",
        method=METHOD,
        baselines=(BASE,),
        run=run_starbucks,
        description="Starbucks (2D Matryoshka) MiniLM vs the base MiniLM truncated to the same "
        "layer and dimension: kNN accuracy over the (layer, dim) grid on 20NG / R8 (PNG).",
    )
)
