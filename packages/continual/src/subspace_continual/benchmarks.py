"""Benchmarks of subspace-continual (``subzoo bench continual``): ``continual/pmnist``,
``continual/federated``, ``continual/sfmnist_class`` and ``continual/power_law``.

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

``continual/power_law``: Permuted-MNIST tasks (from mnist_10k, as ``continual/pmnist``) that
recur on a :func:`~subspace_continual.data.power_law_schedule`: at each session the next
unseen task appears with probability 0.35, otherwise a seen task comes back with probability
``∝ (sessions since it was last trained)^(−1)`` (``alpha = 1``, Anderson & Schooler's
environment). A session is one epoch over the task's training set (fresh SGD, batch 32,
lr 0.03, MLP 784-100-100-10 without biases) through
:func:`~subspace_continual.harness.run_schedule`, then every task is evaluated. GPM, HLOP,
fine-tuning, EWC and ER get the same initial weights, schedule and steps. Reported: ``ACC``
(final mean accuracy over all ``T`` distinct tasks; the benchmark checks that the schedule
visits every task), ``session_ACC`` (mean over sessions of the mean accuracy on the tasks seen
so far: the area under the running-average curve), ``forgetting``
(:func:`~subspace_continual.metrics.schedule_forgetting`), ``recurrence_gain`` (mean
accuracy a revisit adds to its task, :func:`~subspace_continual.metrics.recurrence_gain`) and
wall time; ``continual_power_law.png`` plots the running average of every method.

* quick: 5 tasks, 300 digits per class (94 steps per session), 16 sessions, 11 of them
  revisits (schedule 0 0 1 2 2 3 4 4 4 3 3 3 1 4 1 0); 21 s on one busy core (26 s with the
  interpreter start);
* full: 10 tasks, all 9,000 digits (282 steps per session), 60 sessions, 50 revisits (all
  tasks introduced by session 17); 3 min 36 s on one busy core.

A revisit is an ordinary session (see :func:`~subspace_continual.harness.run_schedule`). GPM
keeps projecting on the complement of *all* its bases, including the recurring task's own
directions, so it cannot re-train a task inside its protected subspace: a revisit only uses
the ``1 − threshold`` of the task's input energy left outside the bases, and adds no direction
(quick, every revisit: ``captured_before`` 0.95-0.97 / 0.990-0.997 / 0.990-0.995 for the
three layers, 0 directions added, +0.5 to +1.2 points on the task); a task stays near the
accuracy of its first session. Reopening a task's own subspace would need per-task bases
(the union is stored) and would also reopen the directions other tasks share. EWC leaves the
recurring task's own penalty out while it trains and replaces its Fisher and anchor; ER
stores a task's examples once.

Measured (seed 0; ACC / session_ACC / forgetting / recurrence gain, %):

| method | quick | full |
|---|---|---|
| GPM | 84.24 / 83.33 / 0.42 / 0.65 | 87.33 / 87.27 / 1.53 / 0.64 |
| HLOP | 83.92 / 83.12 / 0.34 / 0.61 | 87.04 / 86.91 / 1.29 / 0.57 |
| fine-tuning | 86.94 / 84.88 / 3.00 / 4.74 | 86.56 / 82.10 / 7.52 / 5.38 |
| EWC | 86.28 / 85.52 / 2.88 / 3.35 | 85.77 / 81.92 / 5.17 / 4.26 |
| ER | 87.02 / 85.07 / 2.12 / 3.68 | 91.40 / 89.02 / 2.40 / 2.05 |

Recurrence is rehearsal: with 5 tasks that come back often (quick), fine-tuning, EWC and ER
end 2-3 points above GPM, which forgets least but cannot improve a task on its revisits
(gain 0.65 vs 4.74). With 10 tasks and longer gaps (full), GPM's retention between visits
wins over fine-tuning on the session average (87.27 vs 82.10) and ends 0.8 points over it;
ER, which both keeps old tasks (replay) and re-learns freely, is best on every number.

GPM in class-IL (quick BWT −2.75 / ACC 44.2, full BWT −52.6 / ACC 55.3; not a bug — the head is
projected as in GPM, thresholds 0.95 / 0.99 / 0.99 in both modes). What differs is the number
of SGD steps per task, 57 (quick) vs 1,875 (full), and GPM fails in two opposite ways:

* few steps, no plasticity: the trunk barely changes, so the stored bases already hold most
  of a new task's inputs (``captured_before`` of the head: 0.74, 0.98, 0.92 for tasks 2-4; of
  the second layer 0.80-0.98) and the new classes' rows can barely move on the new task's
  features: quick R[2, 2] = 50.0, R[3, 3] = 0.0, R[4, 4] = 1.0 (LA 46.4). The small
  BWT is classes never learnt, not classes kept. The full data cut to 57 steps per task
  (``max_steps_per_task=57``) gives the same: ACC 43.1, BWT −1.6, LA 44.4.
* many steps, leak amplified by the head: the trunk learns new features (head
  ``captured_before`` 0.15-0.27) and every task is learnt (LA 97.4), but the weights grow
  without limit in the free directions, and the ``1 − threshold`` of energy left unprotected
  moves old inputs there: task 0's head inputs drift by 52 % (‖h_final − h_0‖ / ‖h_0‖) and 21 %
  of their energy ends up outside the task-0 head basis, where the new-class rows now have
  norm 2.8-4.4 (0.55 at init), since class-IL cross-entropy only ever raises them. Task 0's
  best new-class logit goes from −1.2 to 11.9 while its true-class logit falls from 13.4 to 8.4.
  Neither part forgets alone: task-0 accuracy with the final trunk and the task-0 head is 94.5,
  with the task-0 trunk and the final head 98.7, with both final 51.0 (969 of the 2,000 task-0
  test images are predicted as later tasks' classes, 11 are confused within the task).

Raising the thresholds does not fix it (full: 0.99 / 0.999 / 0.999 gives ACC 47.4, BWT
−61.1; 0.97 everywhere 58.8 / −48.0): the leak scales with the weight growth, not with the
energy fraction. In between it looks fine — 300 steps per task: ACC 72.8, BWT −23.2; quick
data x 30 epochs (570 steps): ACC 70.5, BWT −24.1 — so GPM's class-IL number depends on the
training length more than on the method, which is why single-head class-IL is its known
weak case. (Measured with ``GPM()``, seed 0, on one busy core.)
"""

from __future__ import annotations

from pathlib import Path

import torch

from subspace_continual.data import permuted_mnist
from subspace_continual.harness import (
    ContinualResult,
    ScheduleResult,
    TrainConfig,
    make_strategy,
    run_sequence,
)
from subspace_core.bench import BenchContext, Benchmark, Measurement, register_benchmark
from subspace_core.io import atomic_path

__all__ = ["FEDERATED", "PMNIST", "POWER_LAW", "SFMNIST_CLASS", "plot_accuracy_matrix",
           "plot_schedule_curves", "power_law_config", "run_class_incremental",
           "run_federated_benchmark", "run_pmnist", "run_power_law"]

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


POWER_LAW_METHODS = {"gpm": "GPM", "hlop": "HLOP", "finetune": "fine-tuning", "ewc": "EWC",
                     "er": "ER"}


def plot_schedule_curves(results: dict[str, ScheduleResult], path: Path, title: str) -> Path:
    """Seen-task accuracy after every session, one line per method; the x ticks name the
    task trained in each session (``*`` = its first visit)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    schedule = next(iter(results.values())).schedule
    seen: set[int] = set()
    ticks = []
    for t in schedule:
        ticks.append(f"{t}{'' if t in seen else '*'}")
        seen.add(t)
    fig, ax = plt.subplots(figsize=(max(6.0, 0.22 * len(schedule) + 2.0), 4.0))
    for label, r in results.items():
        ax.plot(range(len(schedule)), r.seen_acc.numpy(), marker=".", label=label)
    ax.set_xticks(range(len(schedule)))
    ax.set_xticklabels(ticks, fontsize=6)
    ax.set_xlabel("session (task trained; * = first visit)")
    ax.set_ylabel("mean accuracy on the tasks seen so far (%)")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)
    return path


def power_law_config(quick: bool) -> dict:
    """The ``continual/power_law`` configuration: tasks, sessions, schedule and training."""
    if quick:
        return {"num_tasks": 5, "train_per_class": 300, "length": 16, "new_task_prob": 0.35,
                "alpha": 1.0, "schedule_seed": 0,
                "cfg": TrainConfig(epochs=1, batch_size=32, lr=0.03, seed=0)}
    return {"num_tasks": 10, "train_per_class": None, "length": 60, "new_task_prob": 0.35,
            "alpha": 1.0, "schedule_seed": 0,
            "cfg": TrainConfig(epochs=1, batch_size=32, lr=0.03, seed=0)}


def run_power_law(ctx: BenchContext, methods: dict[str, str] | None = None,
                  config: dict | None = None) -> list[Measurement]:
    from subspace_continual.data import power_law_schedule
    from subspace_continual.harness import run_schedule

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        c = config or power_law_config(ctx.quick)
        methods = methods or POWER_LAW_METHODS
        T, L, cfg = c["num_tasks"], c["length"], c["cfg"]
        schedule = power_law_schedule(T, L, alpha=c["alpha"], new_task_prob=c["new_task_prob"],
                                      seed=c["schedule_seed"])
        if len(set(schedule)) != T:
            raise RuntimeError(f"continual/power_law: the schedule visits {sorted(set(schedule))}"
                               f", not all {T} tasks; change new_task_prob or schedule_seed")
        scenario = permuted_mnist(T, seed=0, train_per_class=c["train_per_class"])
        n = len(scenario.tasks[0].y_train)
        revisits = L - T
        case = (f"pmnist{T} power-law recurrence (alpha {c['alpha']:g}, {L} sessions, "
                f"{revisits} revisits), {n} train/task, {cfg.epochs} ep/session x bs "
                f"{cfg.batch_size}")
        ctx.out_dir.mkdir(parents=True, exist_ok=True)
        rows: list[Measurement] = []
        results: dict[str, ScheduleResult] = {}
        for name, label in methods.items():
            r = run_schedule(make_strategy(name), scenario, schedule, cfg)
            results[label] = r
            rows += [Measurement(case, label, "ACC", r.final_seen_acc, "%"),
                     Measurement(case, label, "session_ACC", r.mean_seen_acc, "%"),
                     Measurement(case, label, "forgetting", float(r.forgetting), "%", False),
                     Measurement(case, label, "recurrence_gain", float(r.recurrence_gain), "%"),
                     Measurement(case, label, "train_wall", r.seconds, "s", False)]
        plot_schedule_curves(results, ctx.out_dir / "continual_power_law.png", case)
        return rows
    finally:
        torch.set_num_threads(threads)


POWER_LAW = register_benchmark(
    Benchmark(
        name="continual/power_law",
        method=POWER_LAW_METHODS["gpm"],
        baselines=tuple(v for k, v in POWER_LAW_METHODS.items() if k != "gpm"),
        run=run_power_law,
        description="Permuted-MNIST tasks recurring on a power-law schedule: GPM vs HLOP, "
        "fine-tuning, EWC, ER; final ACC over all tasks, session-averaged ACC, forgetting, "
        "recurrence gain.",
    )
)
