"""One harness for every continual method: same model init, data order and evaluation.

:func:`run_sequence` trains a :class:`~subspace_continual.models.MultiHeadMLP` on the tasks of a
:class:`~subspace_continual.data.Scenario` one after another with a :class:`Strategy`, and
after each task evaluates every task of the scenario, filling the full accuracy matrix
``R[i, j]`` (percent) — including the not-yet-trained tasks above the diagonal, so forward
transfer is measured. ``b`` is the accuracy of the untrained (random-init) model.

Fairness: ``cfg.seed`` fixes the initial weights (``torch.manual_seed(seed)`` right before
building the model) and the mini-batch order of task ``t`` (a generator seeded with
``seed · 1000 + t``); both are identical for every strategy.

Command line (writes a JSON with the matrices and metrics)::

    python -m subspace_continual.harness --scenario pmnist --methods finetune,gpm,ewc,er,agem \\
        --out runs/pmnist.json

(``--methods`` also takes ``nmc``: :class:`~subspace_continual.baselines.NMCBaseline` on frozen
MobileNetV2 features, no training.)
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from subspace_continual.data import Scenario, Task
from subspace_continual.metrics import (
    ContinualMetrics,
    recurrence_gain,
    schedule_forgetting,
    summarize,
)
from subspace_continual.models import MultiHeadMLP

__all__ = [
    "ContinualResult",
    "ScheduleResult",
    "Strategy",
    "TrainConfig",
    "evaluate",
    "make_model",
    "make_strategy",
    "run_schedule",
    "run_sequence",
]


@dataclass(frozen=True)
class TrainConfig:
    """Training hyper-parameters shared by every strategy of a run.

    Attributes:
        epochs: passes over each task's training set.
        batch_size: mini-batch size.
        lr: learning rate.
        optimizer: ``"sgd"`` or ``"adam"`` (a fresh optimizer per task).
        momentum: SGD momentum.
        hidden: trunk widths of the MLP.
        bias: Linear biases (GPM's PMNIST network has none).
        seed: model init and data order (see module doc).
        max_steps_per_task: stop a task early after this many steps (quick runs).
    """

    epochs: int = 5
    batch_size: int = 10
    lr: float = 0.01
    optimizer: str = "sgd"
    momentum: float = 0.0
    hidden: tuple[int, ...] = (100, 100)
    bias: bool = False
    seed: int = 0
    max_steps_per_task: int | None = None


class Strategy:
    """Naive fine-tuning, and the hooks other strategies override.

    The harness calls, per task: ``before_task`` (after the optimizer is built), then per
    mini-batch ``training_loss`` → ``backward()`` → ``before_step`` → ``optimizer.step()``,
    then ``after_task``. ``head(task_id)`` is the head index passed to the model (None for
    single-head settings).
    """

    name = "finetune"

    def setup(self, model: MultiHeadMLP, scenario: Scenario, cfg: TrainConfig) -> None:
        self.model, self.scenario, self.cfg = model, scenario, cfg

    def head(self, task_id: int) -> int | None:
        return task_id if self.scenario.setting == "task" else None

    def before_task(self, task: Task, optimizer: torch.optim.Optimizer) -> None:
        """Called before training ``task``."""

    def training_loss(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor,
                      task_id: int) -> torch.Tensor:
        """Loss of one mini-batch ``x`` [B, D], ``y`` [B] of task ``task_id``."""
        return F.cross_entropy(model(x, self.head(task_id)), y)

    def before_step(self, model: nn.Module, task_id: int) -> None:
        """Called after ``backward()``, before ``optimizer.step()`` (gradient surgery)."""

    def after_task(self, model: nn.Module, task: Task) -> None:
        """Called after training ``task``."""

    def info(self) -> dict[str, Any]:
        """Method-specific facts for the report (basis sizes, buffer sizes...)."""
        return {}

    def state_dict(self) -> dict[str, Any]:
        """What the strategy carries between tasks, for resuming an interrupted run:
        ``{name: tensor or JSON-able value}`` (no optimizer: a fresh one is built per task)."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict` (called after :meth:`setup`)."""
        if state:
            raise ValueError(f"state: {self.name} carries no state, got keys {sorted(state)}")


@dataclass
class ContinualResult:
    """One run: ``R`` [T, T] accuracy matrix (%), ``b`` [T] random-init accuracies (%; NaN
    where a method has no untrained state, e.g. :class:`~subspace_continual.baselines.
    NMCBaseline`); ``config`` the training configuration (None for a method without
    training); ``model`` the final model and ``bases`` the final stored subspace bases
    ``{layer: [m, k]}`` of a subspace method that returns them (:func:`~subspace_continual.
    fot.run_federated`); neither is serialised by :meth:`to_dict`."""

    method: str
    scenario: str
    R: torch.Tensor
    b: torch.Tensor
    metrics: ContinualMetrics
    seconds: float
    config: TrainConfig | None
    info: dict[str, Any] = field(default_factory=dict)
    model: nn.Module | None = field(default=None, repr=False, compare=False)
    bases: dict[str, torch.Tensor] | None = field(default=None, repr=False, compare=False)

    def to_dict(self) -> dict[str, Any]:
        return {"method": self.method, "scenario": self.scenario, "R": self.R.tolist(),
                "b": self.b.tolist(), "metrics": self.metrics.to_dict(),
                "seconds": self.seconds,
                "config": None if self.config is None else asdict(self.config),
                "info": self.info}


def make_model(scenario: Scenario, cfg: TrainConfig) -> MultiHeadMLP:
    """The MLP for ``scenario`` with weights drawn after ``torch.manual_seed(cfg.seed)``."""
    torch.manual_seed(cfg.seed)
    return MultiHeadMLP(scenario.input_dim, cfg.hidden, scenario.head_sizes, bias=cfg.bias)


@torch.no_grad()
def evaluate(model: nn.Module, scenario: Scenario, head: Callable[[int], int | None],
             batch_size: int = 2000) -> list[float]:
    """Test accuracy (%) of ``model`` on every task of ``scenario``."""
    was_training = model.training
    model.eval()
    accs = []
    for task in scenario.tasks:
        correct = 0
        for xs, ys in zip(task.x_test.split(batch_size), task.y_test.split(batch_size),
                          strict=True):
            correct += int((model(xs, head(task.task_id)).argmax(1) == ys).sum())
        accs.append(100.0 * correct / len(task.y_test))
    model.train(was_training)
    return accs


def _optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    params = [p for p in model.parameters() if p.requires_grad]
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum)
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=cfg.lr)
    raise ValueError(f"cfg.optimizer: expected 'sgd' or 'adam', got {cfg.optimizer!r}")


def _train_task(strategy: Strategy, model: nn.Module, task: Task, cfg: TrainConfig,
                data_seed: int) -> None:
    """One training session on ``task``: fresh optimizer, ``before_task``, ``cfg.epochs``
    shuffled passes (order from a generator seeded ``data_seed``), ``after_task``."""
    optimizer = _optimizer(model, cfg)
    strategy.before_task(task, optimizer)
    model.train()
    g = torch.Generator().manual_seed(data_seed)
    n, steps = len(task.y_train), 0
    for _ in range(cfg.epochs):
        order = torch.randperm(n, generator=g)
        for lo in range(0, n, cfg.batch_size):
            if cfg.max_steps_per_task is not None and steps >= cfg.max_steps_per_task:
                break
            idx = order[lo:lo + cfg.batch_size]
            optimizer.zero_grad(set_to_none=True)
            loss = strategy.training_loss(model, task.x_train[idx], task.y_train[idx],
                                          task.task_id)
            loss.backward()
            strategy.before_step(model, task.task_id)
            optimizer.step()
            steps += 1
    strategy.after_task(model, task)


STATE_FILE = "continual_state.safetensors"


def _save_state(path: Path, model: nn.Module, strategy: Strategy, R: torch.Tensor,
                b: torch.Tensor, done: int, identity: dict[str, Any]) -> None:
    """Write everything needed to resume after ``done`` finished tasks (safetensors, atomic,
    with a sha256 sidecar; the JSON part is stored as the uint8 tensor ``meta``)."""
    from subspace_core.zoo import save_state_dict

    tensors = {f"model.{k}": v for k, v in model.state_dict().items()}
    extra = {}
    for k, v in strategy.state_dict().items():
        if torch.is_tensor(v):
            tensors[f"strategy.{k}"] = v
        else:
            extra[k] = v
    tensors["R"], tensors["b"] = R, b
    meta = {"done": done, "identity": identity, "strategy_extra": extra}
    blob = json.dumps(meta, sort_keys=True).encode()
    tensors["meta"] = torch.frombuffer(bytearray(blob), dtype=torch.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_state_dict(tensors, path)


def _load_state(path: Path, model: nn.Module, strategy: Strategy, identity: dict[str, Any]
                ) -> tuple[int, torch.Tensor, torch.Tensor]:
    from subspace_core.zoo import load_state_dict

    sidecar = path.with_name(path.name + ".sha256")
    if not sidecar.is_file():
        raise ValueError(f"state_dir: {path} has no {sidecar.name}; delete the state to restart")
    tensors = load_state_dict(path, sha256=sidecar.read_text().split()[0])
    meta = json.loads(bytes(tensors.pop("meta").tolist()).decode())
    if meta["identity"] != json.loads(json.dumps(identity, sort_keys=True)):
        raise ValueError(f"state_dir: {path} holds another run ({meta['identity']}), not "
                         f"{identity}; use a fresh state_dir")
    model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
    state: dict[str, Any] = dict(meta["strategy_extra"])
    state.update({k[9:]: v for k, v in tensors.items() if k.startswith("strategy.")})
    strategy.load_state_dict(state)
    return int(meta["done"]), tensors["R"], tensors["b"]


def run_sequence(strategy: Strategy, scenario: Scenario, cfg: TrainConfig | None = None, *,
                 log: Callable[[str], None] | None = None,
                 state_dir: str | Path | None = None) -> ContinualResult:
    """Train ``strategy`` on ``scenario``'s tasks in order and measure the accuracy matrix.

    Args:
        strategy: the method (its :meth:`Strategy.setup` is called here).
        scenario: the task sequence.
        cfg: hyper-parameters (default :class:`TrainConfig`).
        log: called with one line per finished task.
        state_dir: if given, the run state (model, strategy state, ``R`` so far) is written
            atomically to ``state_dir/continual_state.safetensors`` (sha256-verified on
            load) after every task, and a
            re-run with the same arguments resumes after the last finished task. Every random
            choice is seeded per task, so a resumed run gives the same result as an
            uninterrupted one. A state of a different run (strategy, scenario, config) is
            refused.

    Returns:
        :class:`ContinualResult` (``seconds`` counts this call only).
    """
    cfg = cfg or TrainConfig()
    start = time.perf_counter()
    model = make_model(scenario, cfg)
    strategy.setup(model, scenario, cfg)
    T = scenario.num_tasks
    b = torch.tensor(evaluate(model, scenario, strategy.head), dtype=torch.float64)
    R = torch.full((T, T), float("nan"), dtype=torch.float64)
    state_path = None if state_dir is None else Path(state_dir) / STATE_FILE
    identity = {"strategy": strategy.name, "scenario": scenario.name, "num_tasks": T,
                "config": asdict(cfg)}
    done = 0
    if state_path is not None and state_path.is_file():
        done, R, b = _load_state(state_path, model, strategy, identity)
        if log is not None:
            log(f"[{strategy.name}] resumed from {state_path} after {done} task(s)")
    for task in scenario.tasks[done:]:
        _train_task(strategy, model, task, cfg, cfg.seed * 1000 + task.task_id)
        R[task.task_id] = torch.tensor(evaluate(model, scenario, strategy.head),
                                       dtype=torch.float64)
        if state_path is not None:
            _save_state(state_path, model, strategy, R, b, task.task_id + 1, identity)
        if log is not None:
            row = " ".join(f"{v:5.1f}" for v in R[task.task_id].tolist())
            log(f"[{strategy.name}] after task {task.task_id}: {row}")
    metrics = summarize(R, b)
    return ContinualResult(strategy.name, scenario.name, R, b, metrics,
                           time.perf_counter() - start, cfg, strategy.info(), model=model)


@dataclass
class ScheduleResult:
    """A run over a task schedule with recurrences (:func:`run_schedule`).

    Attributes:
        method, scenario: names.
        schedule: the task id trained at each session ``s`` (length ``L``).
        A: [L, T] accuracy (%) on every task's test set after each session.
        seen_acc: [L] mean of ``A[s, j]`` over the tasks seen in sessions ``0..s``.
        final_seen_acc: ``seen_acc[-1]``; mean_seen_acc: the mean of ``seen_acc`` over sessions
            (area under the curve: how well seen tasks are kept all along).
        seconds, info, model: as :class:`ContinualResult`.
        forgetting: :func:`~subspace_continual.metrics.schedule_forgetting` of ``A`` (None
            when no task was seen before the last session).
        recurrence_gain: :func:`~subspace_continual.metrics.recurrence_gain` (None without
            recurrences).
    """

    method: str
    scenario: str
    schedule: list[int]
    A: torch.Tensor
    seen_acc: torch.Tensor
    final_seen_acc: float
    mean_seen_acc: float
    seconds: float
    info: dict[str, Any] = field(default_factory=dict)
    model: nn.Module | None = field(default=None, repr=False, compare=False)
    forgetting: float | None = None
    recurrence_gain: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"method": self.method, "scenario": self.scenario, "schedule": self.schedule,
                "A": self.A.tolist(), "seen_acc": self.seen_acc.tolist(),
                "final_seen_acc": self.final_seen_acc, "mean_seen_acc": self.mean_seen_acc,
                "forgetting": self.forgetting, "recurrence_gain": self.recurrence_gain,
                "seconds": self.seconds, "info": self.info}


def run_schedule(strategy: Strategy, scenario: Scenario, schedule: Sequence[int],
                 cfg: TrainConfig | None = None, *,
                 log: Callable[[str], None] | None = None) -> ScheduleResult:
    """Train ``strategy`` through ``schedule`` — a sequence of task ids in which tasks may
    recur, e.g. :func:`~subspace_continual.data.power_law_schedule` — one training session
    (``cfg.epochs`` passes, ``before_task``/``after_task`` hooks) per entry, evaluating every
    task after each session.

    The ``k``-th session of task ``t`` (``k = 0, 1, ...``) orders its batches with a generator
    seeded ``cfg.seed·1000 + t + 100000·k``, so a schedule without recurrences
    (``[0, 1, ..., T-1]``) is exactly :func:`run_sequence` (``A`` equals its ``R``).

    A recurrence is one more ordinary session: the harness calls the same hooks with the same
    :class:`~subspace_continual.data.Task` again, so what a revisit does is the strategy's own
    behaviour:

    * fine-tuning trains the task again without constraint;
    * :class:`~subspace_continual.gpm.GPM` (and :class:`~subspace_continual.hlop.HLOP`) keep
      projecting on the complement of *all* stored bases, including the recurring task's own
      directions (the bases are one union, not per task): a revisit can only change a
      layer along directions that hold at most ``1 − threshold`` of the task's input energy,
      so it cannot re-train the task inside its protected subspace; after the session the
      energy criterion adds only what the basis still misses (``captured_before`` in
      ``GPM.history`` is the fraction already captured);
    * :class:`~subspace_continual.baselines.EWC` keeps one penalty per distinct task: a
      revisited task's own penalty is left out while it trains and its Fisher and anchor are
      replaced after the session;
    * :class:`~subspace_continual.baselines.ExperienceReplay` and
      :class:`~subspace_continual.baselines.AGEM` store a task's examples once (first visit).
    """
    cfg = cfg or TrainConfig()
    schedule = [int(t) for t in schedule]
    T = scenario.num_tasks
    if not schedule or any(not 0 <= t < T for t in schedule):
        raise ValueError(f"schedule: expected a non-empty sequence of task ids in [0, {T}), got "
                         f"{schedule[:20]}")
    start = time.perf_counter()
    model = make_model(scenario, cfg)
    strategy.setup(model, scenario, cfg)
    A = torch.full((len(schedule), T), float("nan"), dtype=torch.float64)
    seen_acc = torch.zeros(len(schedule), dtype=torch.float64)
    sessions: dict[int, int] = {}
    for s, t in enumerate(schedule):
        k = sessions.get(t, 0)
        sessions[t] = k + 1
        _train_task(strategy, model, scenario.tasks[t], cfg, cfg.seed * 1000 + t + 100_000 * k)
        A[s] = torch.tensor(evaluate(model, scenario, strategy.head), dtype=torch.float64)
        seen = sorted(sessions)
        seen_acc[s] = A[s, seen].mean()
        if log is not None:
            log(f"[{strategy.name}] session {s} (task {t}, visit {k + 1}): seen-task accuracy "
                f"{float(seen_acc[s]):.1f}")
    return ScheduleResult(strategy.name, scenario.name, schedule, A, seen_acc,
                          float(seen_acc[-1]), float(seen_acc.mean()),
                          time.perf_counter() - start, strategy.info(), model=model,
                          forgetting=schedule_forgetting(A, schedule),
                          recurrence_gain=recurrence_gain(A, schedule))


def make_strategy(name: str, **kwargs: Any) -> Strategy:
    """A strategy by name: ``finetune``, ``gpm``, ``hlop``, ``ewc``, ``er``, ``agem``."""
    from subspace_continual.baselines import AGEM, EWC, ExperienceReplay
    from subspace_continual.gpm import GPM
    from subspace_continual.hlop import HLOP

    table: dict[str, Callable[..., Strategy]] = {
        "finetune": Strategy, "gpm": GPM, "hlop": HLOP, "ewc": EWC, "er": ExperienceReplay,
        "agem": AGEM}
    if name not in table:
        raise ValueError(f"method: expected one of {sorted(table)}, got {name!r}")
    return table[name](**kwargs)


def _scenario(name: str, seed: int, train_per_class: int | None) -> Scenario:
    from subspace_continual.data import permuted_mnist, split_fashion_mnist

    if name == "pmnist":
        return permuted_mnist(10, seed=seed, train_per_class=train_per_class)
    if name in ("sfmnist-task", "sfmnist-class"):
        return split_fashion_mnist(name.split("-")[1], seed=seed,
                                   train_per_class=train_per_class)
    raise ValueError(f"scenario: expected pmnist, sfmnist-task or sfmnist-class, got {name!r}")


def main(argv: Sequence[str] | None = None) -> list[ContinualResult]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scenario", default="pmnist")
    parser.add_argument("--methods", default="finetune,gpm,ewc,er,agem")
    parser.add_argument("--epochs", type=int, default=TrainConfig.epochs)
    parser.add_argument("--batch-size", type=int, default=TrainConfig.batch_size)
    parser.add_argument("--lr", type=float, default=TrainConfig.lr)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--train-per-class", type=int, default=None)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    cfg = TrainConfig(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, seed=args.seed)
    scenario = _scenario(args.scenario, args.seed, args.train_per_class)
    results = []
    for method in args.methods.split(","):
        if method == "nmc":  # no training: nearest class mean on frozen pretrained features
            from subspace_continual.baselines import NMCBaseline

            result = NMCBaseline().run(scenario, log=print)
        else:
            result = run_sequence(make_strategy(method), scenario, cfg, log=print)
        m = result.metrics
        print(f"== {method}: ACC {m.acc:.2f}  BWT {m.bwt:.2f}  forgetting {m.forgetting:.2f}  "
              f"FWT {m.fwt if m.fwt is None else round(m.fwt, 2)}  ({result.seconds:.0f} s)",
              flush=True)
        results.append(result)
        if args.out is not None:
            args.out.parent.mkdir(parents=True, exist_ok=True)
            args.out.write_text(json.dumps([r.to_dict() for r in results], indent=1))
    return results


if __name__ == "__main__":
    main()
