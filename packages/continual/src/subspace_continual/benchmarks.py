"""Benchmarks of subspace-continual (``subzoo bench continual``): ``continual/pmnist`` and
``continual/federated``.

``continual/pmnist``: GPM vs HLOP, naive fine-tuning, EWC, experience replay and A-GEM on
Permuted-MNIST (10 tasks from mnist_10k) in one harness with the same seed, MLP
784-100-100-10 without biases, SGD. Reports ACC, BWT, forgetting, FWT (percent points) and
wall time per method, and writes one accuracy-matrix heat map per method
(``continual_pmnist_<method>.png``) to the output directory.

* full: all 9,000 training digits per task, 5 epochs, batch 32, lr 0.03 (about 15-20 min on
  2 busy cores);
* quick: 300 training digits per class (3,000 per task), 3 epochs, batch 32, lr 0.03 (with
  fewer steps, e.g. 1,000 digits x 2 epochs, every method is under-trained and GPM's
  projection costs more plasticity than it saves: GPM 65.6 vs fine-tuning 73.1).

``continual/federated``: federated Split-Fashion-MNIST (5 two-class tasks, task-incremental,
MLP 784-100-100 + one 2-way head per task), ``N`` clients each holding ``1/N`` of every task
(:mod:`subspace_continual.fot`). Two cases:

* clean: FOT (server projects the aggregated update) vs FedAvg fine-tuning vs centralised GPM
  (one learner, the same number of examples per task as all clients together:
  ``N · rounds · local_steps`` steps of batch 32) vs FOT with client-side projection;
* 20 % Byzantine clients sending ``−10 ×`` their update (sign flip): FOT with the mean
  (FedAvg's average), coordinate-wise median and Flag aggregators; ``acc_drop`` = clean FOT's
  ACC minus the run's ACC. A run whose global weights become non-finite is reported as
  ``diverged = 1`` (no accuracy).

* quick: 300 training / 200 test images per class, 5 clients (1 Byzantine), 10 rounds x 10
  local steps per task;
* full: 1,000 training / 1,000 test images per class, 10 clients (2 Byzantine), 10 rounds x
  20 local steps per task (about 5 min on 2 busy cores; quick: about 1.5 min).
"""

from __future__ import annotations

from pathlib import Path

import torch

from subspace_continual.data import permuted_mnist
from subspace_continual.harness import ContinualResult, TrainConfig, make_strategy, run_sequence
from subspace_core.bench import BenchContext, Benchmark, Measurement, register_benchmark
from subspace_core.io import atomic_path

__all__ = ["FEDERATED", "PMNIST", "plot_accuracy_matrix", "run_federated_benchmark",
           "run_pmnist"]

METHODS = {"gpm": "GPM", "hlop": "HLOP", "finetune": "fine-tuning", "ewc": "EWC", "er": "ER",
           "agem": "A-GEM"}


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
        scenario = permuted_mnist(10, seed=0, train_per_class=300 if ctx.quick else None)
        cfg = TrainConfig(epochs=3 if ctx.quick else 5, batch_size=32, lr=0.03, seed=0)
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
        description="Permuted-MNIST (10 tasks, mnist_10k): GPM vs HLOP, fine-tuning, EWC, ER, A-GEM "
        "in one harness; ACC/BWT/forgetting/FWT and accuracy-matrix heat maps.",
    )
)


FED_METHODS = ("FOT", "FedAvg", "centralised GPM", "FOT+client-proj", "FOT+median", "FOT+flag")


def run_federated_benchmark(ctx: BenchContext) -> list[Measurement]:
    import math

    from subspace_continual.data import split_fashion_mnist
    from subspace_continual.fot import FedConfig, run_federated
    from subspace_continual.gpm import GPM

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        quick = ctx.quick
        scenario = split_fashion_mnist("task", train_per_class=300 if quick else 1000,
                                       test_per_class=200 if quick else None)
        clients, byzantine = (5, 1) if quick else (10, 2)
        base = FedConfig(num_clients=clients, rounds_per_task=10, local_steps=10 if quick else 20,
                         batch_size=32, lr=0.05, threshold=0.97, client_threshold=0.99)
        n = len(scenario.tasks[0].y_train)
        clean = (f"split-FMNIST task-IL ({n} train/task), {clients} clients, "
                 f"{base.rounds_per_task}x{base.local_steps} local steps/task")
        attacked = f"{clean}, {byzantine}/{clients} Byzantine (sign flip x10)"
        ctx.out_dir.mkdir(parents=True, exist_ok=True)
        rows: list[Measurement] = []

        def record(case: str, label: str, result) -> None:
            rows.extend(_measurements(case, label, result))
            rows.append(Measurement(case, label, "diverged", 0.0, "", False))
            m = result.metrics
            slug = label.lower().replace(" ", "_").replace("+", "_")
            plot_accuracy_matrix(result.R, ctx.out_dir / f"continual_federated_{slug}"
                                 f"{'_byz' if case == attacked else ''}.png",
                                 f"{label}: ACC {m.acc:.1f}, BWT {m.bwt:.1f}")

        steps = clients * base.rounds_per_task * base.local_steps
        epochs = math.ceil(steps / math.ceil(n / base.batch_size))
        central = run_sequence(GPM(threshold=base.threshold), scenario,
                               TrainConfig(epochs=epochs, batch_size=base.batch_size, lr=base.lr,
                                           max_steps_per_task=steps))
        record(clean, "centralised GPM", central)
        runs = [(clean, "FOT", {}), (clean, "FedAvg", {"method": "fedavg"}),
                (clean, "FOT+client-proj", {"client_projection": True})]
        attack = {"byzantine": byzantine, "attack": "signflip", "attack_scale": 10.0}
        runs += [(attacked, label, {**attack, "aggregator": agg})
                 for label, agg in (("FOT", "mean"), ("FOT+median", "median"),
                                    ("FOT+flag", "flag"))]
        clean_acc = None
        for case, label, overrides in runs:
            cfg = FedConfig(**{**base.__dict__, **overrides})
            try:
                result = run_federated(scenario, cfg)
            except FloatingPointError:
                rows.append(Measurement(case, label, "diverged", 1.0, "", False))
                continue
            record(case, label, result)
            if case == clean and label == "FOT":
                clean_acc = result.metrics.acc
            if case == attacked and clean_acc is not None:
                rows.append(Measurement(case, label, "acc_drop", clean_acc - result.metrics.acc,
                                        "%", False))
        return rows
    finally:
        torch.set_num_threads(threads)


FEDERATED = register_benchmark(
    Benchmark(
        name="continual/federated",
        method="FOT",
        baselines=FED_METHODS[1:],
        run=run_federated_benchmark,
        description="Federated Split-Fashion-MNIST: FOT vs FedAvg vs centralised GPM (clean), "
        "and mean / median / Flag aggregation with 20 % sign-flipping Byzantine clients.",
    )
)
