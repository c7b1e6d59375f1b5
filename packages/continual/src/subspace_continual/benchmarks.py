"""Benchmarks of subspace-continual (``subzoo bench continual``): ``continual/pmnist``,
``continual/federated`` and ``continual/sfmnist_class``.

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

* quick: 300 training / 200 test images per class, 5 clients (1 Byzantine), 25 rounds x 4
  local steps per task;
* full: 1,000 training / 1,000 test images per class, 10 clients (2 Byzantine), 25 rounds x
  8 local steps per task (about 3.5 min on 2 busy cores; quick: about 1.5 min).

Rounds: FOT projects the *aggregated* update, after the clients' unprojected local steps, so
the local steps spend part of their progress along the protected directions that the server
then removes; fewer local steps per round (more rounds, the same local steps per task) keep
it closer to projected SGD. Quick, 5 clients, 100 local steps per client and task (seed 0):
10 x 10 rounds: FOT 95.75 vs centralised GPM 98.35 (2.60 behind); 20 x 5: 1.65; 25 x 4: 1.40;
50 x 2: 1.35. The loss is plasticity (FOT's BWT stays within −0.25; FedAvg without projection
learns every task to 98.5 %).

``continual/sfmnist_class``: class-incremental Split-Fashion-MNIST (5 two-class tasks, one
10-way head, no task id at test time; MLP 784-100-100-10, SGD): GPM vs fine-tuning, ER and
A-GEM in one harness, and the sanity row **NMC on frozen pretrained features**
(:class:`~subspace_continual.baselines.NMCBaseline`: nearest class mean on ImageNet
MobileNetV2 features at 96 px, :mod:`subspace_core.backbones`; no training, so no
forgetting — a method that does not beat it has learnt nothing a frozen generic network does
not already give). When the backbone or its weights are unavailable the row is reported as
``unavailable = 1`` and the reason is printed.

* quick: 300 training / 100 test images per class, 3 epochs, batch 32, lr 0.03;
* full: all 6,000 training / 1,000 test images per class, 5 epochs, batch 32, lr 0.03 (12 min
  46 s at load ~5 on 2 cores, of which NMC's 70,000 MobileNetV2 embeddings took 581 s).
"""

from __future__ import annotations

from pathlib import Path

import torch

from subspace_continual.data import permuted_mnist
from subspace_continual.harness import ContinualResult, TrainConfig, make_strategy, run_sequence
from subspace_core.bench import BenchContext, Benchmark, Measurement, register_benchmark
from subspace_core.io import atomic_path

__all__ = ["FEDERATED", "PMNIST", "SFMNIST_CLASS", "plot_accuracy_matrix",
           "run_class_incremental", "run_federated_benchmark", "run_pmnist"]

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
        base = FedConfig(num_clients=clients, rounds_per_task=25, local_steps=4 if quick else 8,
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


CLASS_METHODS = {"gpm": "GPM", "finetune": "fine-tuning", "er": "ER", "agem": "A-GEM"}
#: The sanity row of every class-incremental table.
NMC_LABEL = "NMC (frozen MobileNetV2)"


def run_class_incremental(ctx: BenchContext) -> list[Measurement]:
    import sys

    from subspace_continual.baselines import NMCBaseline
    from subspace_continual.data import split_fashion_mnist
    from subspace_core.data import DatasetUnavailable

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        quick = ctx.quick
        scenario = split_fashion_mnist("class", train_per_class=300 if quick else None,
                                       test_per_class=100 if quick else None)
        cfg = TrainConfig(epochs=3 if quick else 5, batch_size=32, lr=0.03, seed=0)
        case = (f"split-FMNIST class-IL ({len(scenario.tasks[0].y_train)} train/task), MLP "
                f"784-100-100-10, {cfg.epochs} ep x bs {cfg.batch_size}")
        ctx.out_dir.mkdir(parents=True, exist_ok=True)
        rows: list[Measurement] = []

        def record(name: str, label: str, result: ContinualResult) -> None:
            rows.extend(_measurements(case, label, result))
            m = result.metrics
            plot_accuracy_matrix(result.R, ctx.out_dir / f"continual_sfmnist_class_{name}.png",
                                 f"{label}: ACC {m.acc:.1f}, BWT {m.bwt:.1f} ({case})")

        for name, label in CLASS_METHODS.items():
            record(name, label, run_sequence(make_strategy(name), scenario, cfg))
        try:
            nmc = NMCBaseline(backbone="mobilenet_v2", size=96).run(scenario)
        except (ImportError, DatasetUnavailable) as exc:
            print(f"continual/sfmnist_class: {NMC_LABEL} unavailable: {exc}", file=sys.stderr)
            rows.append(Measurement(case, NMC_LABEL, "unavailable", 1.0, "", False))
        else:
            record("nmc", NMC_LABEL, nmc)
        return rows
    finally:
        torch.set_num_threads(threads)


SFMNIST_CLASS = register_benchmark(
    Benchmark(
        name="continual/sfmnist_class",
        method=CLASS_METHODS["gpm"],
        baselines=(*(v for k, v in CLASS_METHODS.items() if k != "gpm"), NMC_LABEL),
        run=run_class_incremental,
        description="Class-incremental Split-Fashion-MNIST: GPM vs fine-tuning, ER, A-GEM in one "
        "harness, with NMC on frozen MobileNetV2 features as the sanity row.",
    )
)
