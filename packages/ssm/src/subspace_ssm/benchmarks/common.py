"""What the equal-budget SSM benchmarks share: the model families, their sizes, the loop.

:data:`FAMILIES` maps a family label to its layer kind and keyword arguments;
:func:`build_family` builds it at a :class:`TrainBudget`'s sizes (an
:class:`~subspace_ssm.mhs.MHSClassifier` for ``"mhs"``, else an
:class:`~subspace_ssm.classifier.SSMClassifier`); :func:`train_steps` trains any of them on
the same seeded batches with the same schedule.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from subspace_ssm.classifier import SSMClassifier
from subspace_ssm.mhs import MHSClassifier
from subspace_ssm.optim import ssm_param_groups

__all__ = ["FAMILIES", "TrainBudget", "build_family", "train_steps"]

#: family label → (layer kind, layer kwargs); "mhs" is the MHS image classifier.
FAMILIES: dict[str, tuple[str, dict]] = {
    "S4": ("s4", {}),
    "S4D": ("s4d", {"init": "legs"}),
    "S4D-LegS": ("s4d", {"init": "legs"}),
    "S4D-PTD": ("s4d", {"init": "ptd"}),
    "S5": ("s5", {"init": "legs"}),
    "S5-LegS": ("s5", {"init": "legs"}),
    "S5-PTD": ("s5", {"init": "ptd"}),
    "Mamba": ("mamba", {}),
    "MHS": ("mhs", {}),
}


@dataclass(frozen=True)
class TrainBudget:
    """Data, model sizes and optimisation budget shared by every family of one run."""

    size: int  # images size×size (L = size²)
    train_n: int
    test_n: int
    steps: int
    batch: int
    d_model: int
    n_layers: int
    d_state: int
    lr: float = 1e-2
    lr_ssm: float = 1e-3
    seed: int = 0


def build_family(label: str, budget: TrainBudget) -> nn.Module:
    """The classifier of family ``label`` (a key of :data:`FAMILIES`) at ``budget``'s sizes."""
    if label not in FAMILIES:
        raise ValueError(f"label: expected one of {sorted(FAMILIES)}, got {label!r}")
    kind, layer_kwargs = FAMILIES[label]
    if kind == "mhs":
        patch = 2 if budget.size % 2 == 0 else 1
        return MHSClassifier(10, image_size=(budget.size, budget.size), patch=patch,
                             d_model=max(budget.d_model, 24),
                             n_layers=max(1, budget.n_layers // 2), n_heads=3,
                             d_state=min(budget.d_state, 16))
    d_state = min(budget.d_state, 16) if kind == "mamba" else budget.d_state
    return SSMClassifier(10, kind=kind, d_model=budget.d_model, n_layers=budget.n_layers,
                         d_state=d_state, layer_kwargs=layer_kwargs)


def train_steps(model: nn.Module, x: torch.Tensor, y: torch.Tensor, budget: TrainBudget,
                device: torch.device) -> float:
    """Train ``budget.steps`` AdamW steps on seeded batches (warm-up then cosine; SSM
    parameters at ``lr_ssm`` without weight decay); returns the mean seconds per step."""
    opt = torch.optim.AdamW(ssm_param_groups(model, lr_ssm=budget.lr_ssm, weight_decay=0.01),
                            lr=budget.lr)
    base = [g["lr"] for g in opt.param_groups]
    g = torch.Generator().manual_seed(budget.seed)
    model.train()
    start = time.perf_counter()
    for step in range(budget.steps):
        idx = torch.randint(len(y), (budget.batch,), generator=g)
        warm = min(1.0, (step + 1) / max(1, budget.steps // 10))
        decay = 0.5 * (1 + math.cos(math.pi * step / budget.steps))
        for group, lr in zip(opt.param_groups, base, strict=True):
            group["lr"] = lr * warm * decay
        loss = F.cross_entropy(model(x[idx].to(device)), y[idx].to(device))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return (time.perf_counter() - start) / budget.steps
