"""GPM-style training (Saha, Garg & Roy, "Gradient Projection Memory for Continual
Learning", ICLR 2021) as a harness :class:`~subspace_continual.harness.Strategy`.

After each task, ``num_samples`` training examples of the task are passed through the
network inside :meth:`SubspaceMemory.collect`, and every protected layer's basis is grown by
the energy criterion. While training later tasks every optimizer step is projected on the
orthogonal complement of the stored bases (:meth:`SubspaceMemory.attach`).

Protected layers: the trunk's Linear layers, plus the shared head in single-head
settings (GPM protects all three layers of its PMNIST MLP); per-task heads in the
task-incremental setting are trained freely (each task only touches its own head).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from subspace_continual.data import Scenario, Task
from subspace_continual.harness import Strategy, TrainConfig
from subspace_continual.memory import ProjectionHandle, SubspaceMemory
from subspace_continual.models import MultiHeadMLP

__all__ = ["GPM", "PMNIST_THRESHOLDS", "projection_mode", "protected_thresholds"]

#: GPM's Permuted-MNIST thresholds for the inputs of fc1, fc2, fc3.
PMNIST_THRESHOLDS = (0.95, 0.99, 0.99)



def protected_thresholds(threshold: float | Sequence[float] | None,
                         layers: Sequence[str]) -> dict[str, float]:
    """Energy threshold per protected layer: one value for all, one per layer, or None for
    the GPM paper's Permuted-MNIST values (:data:`PMNIST_THRESHOLDS`) where the layer count
    matches, else 0.97."""
    if threshold is None:
        threshold = PMNIST_THRESHOLDS if len(layers) == len(PMNIST_THRESHOLDS) else 0.97
    if isinstance(threshold, (int, float)):
        return dict.fromkeys(layers, float(threshold))
    if len(threshold) != len(layers):
        raise ValueError(f"threshold: expected {len(layers)} values (one per protected layer "
                         f"{list(layers)}), got {len(threshold)}")
    return dict(zip(layers, (float(v) for v in threshold), strict=True))


def projection_mode(mode: str, optimizer: torch.optim.Optimizer) -> str:
    """``mode``, with ``"auto"`` resolved: project gradients for plain SGD without weight
    decay (the same thing as projecting its update), else project the optimizer's update."""
    if mode != "auto":
        return mode
    plain_sgd = type(optimizer) is torch.optim.SGD and all(
        g.get("weight_decay", 0) == 0 for g in optimizer.param_groups)
    return "gradient" if plain_sgd else "update"


class GPM(Strategy):
    """Gradient Projection Memory.

    Args:
        threshold: energy threshold, one float or one per protected layer (in order: trunk
            layers, then the shared head); default :data:`PMNIST_THRESHOLDS` when it has the
            right length, else 0.97.
        num_samples: training examples per task used to build the representation matrices
            (GPM uses 300 for its MLP).
        mode: projection mode (see :meth:`SubspaceMemory.attach`); ``"auto"`` projects the
            gradient for plain SGD (GPM) and the update otherwise (exact for Adam).
    """

    name = "gpm"

    def __init__(self, threshold: float | Sequence[float] | None = None, num_samples: int = 300,
                 mode: str = "auto"):
        if isinstance(num_samples, bool) or not isinstance(num_samples, int) or num_samples < 1:
            raise ValueError(f"num_samples: expected a positive int, got {num_samples!r}")
        if mode not in ("auto", "gradient", "update"):
            raise ValueError(f"mode: expected 'auto', 'gradient' or 'update', got {mode!r}")
        self.threshold, self.num_samples, self.mode = threshold, num_samples, mode
        self._handle: ProjectionHandle | None = None
        self.history: list[dict[str, Any]] = []

    def setup(self, model: MultiHeadMLP, scenario: Scenario, cfg: TrainConfig) -> None:
        super().setup(model, scenario, cfg)
        layers = model.trunk_layers() + ([] if model.multi_head else ["heads.0"])
        thresholds = protected_thresholds(self.threshold, layers)
        self.memory = SubspaceMemory(model, layers, threshold=thresholds)
        self.history = []

    def before_task(self, task: Task, optimizer: torch.optim.Optimizer) -> None:
        if self.memory.is_empty():
            return
        self._handle = self.memory.attach(optimizer, mode=projection_mode(self.mode, optimizer))

    @torch.no_grad()
    def after_task(self, model: nn.Module, task: Task) -> None:
        if self._handle is not None:
            self._handle.remove()
            self._handle = None
        g = torch.Generator().manual_seed(self.cfg.seed * 1000 + 500 + task.task_id)
        idx = torch.randperm(len(task.y_train), generator=g)[: self.num_samples]
        was_training = model.training
        model.eval()
        with self.memory.collect():
            model(task.x_train[idx], self.head(task.task_id))
        model.train(was_training)
        report = self.memory.update()
        self.history.append({n: {"added": r.added, "size": r.size, "dim": r.dim,
                                 "captured_before": round(r.captured_before, 4)}
                             for n, r in report.items()})

    def info(self) -> dict[str, Any]:
        return {"basis_sizes": self.memory.basis_sizes(), "history": self.history}

    def state_dict(self) -> dict[str, Any]:
        """``bases.<layer>`` tensors and the per-task ``history``."""
        return {**{f"bases.{n}": U for n, U in self.memory.state_dict().items()},
                "history": self.history}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.memory.load_state_dict({k[6:]: v for k, v in state.items()
                                     if k.startswith("bases.")})
        self.history = list(state.get("history", []))
