"""Benchmarks of subspace-continual (``subzoo bench continual``).

``continual/pmnist``: GPM vs naive fine-tuning, EWC, experience replay and A-GEM on
Permuted-MNIST (10 tasks from mnist_10k) in one harness with the same seed, MLP
784-100-100-10 without biases, SGD. Reports ACC, BWT, forgetting, FWT (percent points) and
wall time per method, and writes one accuracy-matrix heat map per method
(``continual_pmnist_<method>.png``) to the output directory.

* full: all 9,000 training digits per task, 5 epochs, batch 32, lr 0.03 (about 15 min on
  2 busy cores);
* quick: 100 training digits per class (1,000 per task), 2 epochs, batch 32, lr 0.03.
"""

from __future__ import annotations

from pathlib import Path

import torch

from subspace_continual.data import permuted_mnist
from subspace_continual.harness import ContinualResult, TrainConfig, make_strategy, run_sequence
from subspace_core.bench import BenchContext, Benchmark, Measurement, register_benchmark
from subspace_core.io import atomic_path

__all__ = ["PMNIST", "plot_accuracy_matrix", "run_pmnist"]

METHODS = {"gpm": "GPM", "finetune": "fine-tuning", "ewc": "EWC", "er": "ER", "agem": "A-GEM"}


def plot_accuracy_matrix(R: torch.Tensor, path: Path, title: str) -> Path:
    """Heat map of ``R`` [T, T] (percent; NaN cells blank) with the values printed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    T = R.shape[0]
    fig, ax = plt.subplots(figsize=(0.55 * T + 1.8, 0.5 * T + 1.2))
    im = ax.imshow(R.numpy(), vmin=0, vmax=100, cmap="viridis")
    for i in range(T):
        for j in range(T):
            v = float(R[i, j])
            if v == v:
                ax.text(j, i, f"{v:.0f}", ha="center", va="center", fontsize=7,
                        color="white" if v < 60 else "black")
    ax.set_xlabel("evaluated on task j")
    ax.set_ylabel("after training task i")
    ax.set_xticks(range(T))
    ax.set_yticks(range(T))
    ax.set_title(title, fontsize=9)
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="accuracy (%)")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)
    return path


def _measurements(case: str, label: str, r: ContinualResult) -> list[Measurement]:
    m = r.metrics
    rows = [Measurement(case, label, "ACC", m.acc, "%"),
            Measurement(case, label, "BWT", m.bwt, "%"),
            Measurement(case, label, "forgetting", m.forgetting, "%", False),
            Measurement(case, label, "train_wall", r.seconds, "s", False)]
    if m.fwt is not None:
        rows.append(Measurement(case, label, "FWT", m.fwt, "%"))
    return rows


def run_pmnist(ctx: BenchContext) -> list[Measurement]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        scenario = permuted_mnist(10, seed=0, train_per_class=100 if ctx.quick else None)
        cfg = TrainConfig(epochs=2 if ctx.quick else 5, batch_size=32, lr=0.03, seed=0)
        case = (f"pmnist10 ({len(scenario.tasks[0].y_train)} train/task), MLP 784-100-100-10, "
                f"{cfg.epochs} ep x bs {cfg.batch_size}")
        rows: list[Measurement] = []
        ctx.out_dir.mkdir(parents=True, exist_ok=True)
        for name, label in METHODS.items():
            result = run_sequence(make_strategy(name), scenario, cfg)
            rows += _measurements(case, label, result)
            m = result.metrics
            plot_accuracy_matrix(result.R, ctx.out_dir / f"continual_pmnist_{name}.png",
                                 f"{label}: ACC {m.acc:.1f}, BWT {m.bwt:.1f} ({case})")
        return rows
    finally:
        torch.set_num_threads(threads)


PMNIST = register_benchmark(
    Benchmark(
        name="continual/pmnist",
        method=METHODS["gpm"],
        baselines=tuple(v for k, v in METHODS.items() if k != "gpm"),
        run=run_pmnist,
        description="Permuted-MNIST (10 tasks, mnist_10k): GPM vs fine-tuning, EWC, ER, A-GEM "
        "in one harness; ACC/BWT/forgetting/FWT and accuracy-matrix heat maps.",
    )
)
