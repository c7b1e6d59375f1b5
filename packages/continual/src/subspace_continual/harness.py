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
from subspace_continual.metrics import ContinualMetrics, summarize
from subspace_continual.models import MultiHeadMLP

__all__ = [
    "ContinualResult",
    "Strategy",
    "TrainConfig",
    "evaluate",
    "make_model",
    "make_strategy",
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


@dataclass
class ContinualResult:
    """One run: ``R`` [T, T] accuracy matrix (%), ``b`` [T] random-init accuracies (%)."""

    method: str
    scenario: str
    R: torch.Tensor
    b: torch.Tensor
    metrics: ContinualMetrics
    seconds: float
    config: TrainConfig
    info: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"method": self.method, "scenario": self.scenario, "R": self.R.tolist(),
                "b": self.b.tolist(), "metrics": self.metrics.to_dict(),
                "seconds": self.seconds, "config": asdict(self.config), "info": self.info}


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


def run_sequence(strategy: Strategy, scenario: Scenario, cfg: TrainConfig | None = None, *,
                 log: Callable[[str], None] | None = None) -> ContinualResult:
    """Train ``strategy`` on ``scenario``'s tasks in order and measure the accuracy matrix."""
    cfg = cfg or TrainConfig()
    start = time.perf_counter()
    model = make_model(scenario, cfg)
    strategy.setup(model, scenario, cfg)
    T = scenario.num_tasks
    b = torch.tensor(evaluate(model, scenario, strategy.head), dtype=torch.float64)
    R = torch.full((T, T), float("nan"), dtype=torch.float64)
    for task in scenario.tasks:
        optimizer = _optimizer(model, cfg)
        strategy.before_task(task, optimizer)
        model.train()
        g = torch.Generator().manual_seed(cfg.seed * 1000 + task.task_id)
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
        R[task.task_id] = torch.tensor(evaluate(model, scenario, strategy.head))
        if log is not None:
            row = " ".join(f"{v:5.1f}" for v in R[task.task_id].tolist())
            log(f"[{strategy.name}] after task {task.task_id}: {row}")
    metrics = summarize(R, b)
    return ContinualResult(strategy.name, scenario.name, R, b, metrics,
                           time.perf_counter() - start, cfg, strategy.info())


def make_strategy(name: str, **kwargs: Any) -> Strategy:
    """A strategy by name: ``finetune``, ``gpm``, ``ewc``, ``er``, ``agem``."""
    from subspace_continual.baselines import AGEM, EWC, ExperienceReplay
    from subspace_continual.gpm import GPM

    table: dict[str, Callable[..., Strategy]] = {
        "finetune": Strategy, "gpm": GPM, "ewc": EWC, "er": ExperienceReplay, "agem": AGEM}
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
