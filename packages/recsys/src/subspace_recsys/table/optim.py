"""Per-row sparse optimizers of the collisionless table: SGD, Adagrad and lazy Adam.

Each update touches only the rows that received a gradient, with the same arithmetic as
the torch optimizer it mirrors, so a row's trajectory equals that of a dense parameter
trained by ``torch.optim.SGD`` / ``torch.optim.Adagrad`` (untouched rows of a dense
Adagrad do not move either), and Adam keeps ``torch.optim.SparseAdam``'s lazy moments with
one step count *per row*: a row admitted late gets its own bias correction, exactly as if
each row were a separate parameter under its own ``SparseAdam``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

__all__ = ["OPTIMIZERS", "RowOptimizerConfig", "init_state", "sparse_update"]

OPTIMIZERS = ("sgd", "adagrad", "adam")

# state name -> (trailing shape is [dim] (True) or [] (False), dtype)
_STATE: dict[str, dict[str, tuple[bool, torch.dtype]]] = {
    "sgd": {},
    "adagrad": {"sum": (True, torch.float32)},
    "adam": {
        "exp_avg": (True, torch.float32),
        "exp_avg_sq": (True, torch.float32),
        "step": (False, torch.int64),
    },
}


@dataclass
class RowOptimizerConfig:
    """Hyper-parameters of a per-row optimizer (see :func:`sparse_update`)."""

    name: str = "adagrad"
    lr: float = 0.05
    eps: float = 1e-8
    betas: tuple[float, float] = (0.9, 0.999)

    def __post_init__(self) -> None:
        if self.name not in OPTIMIZERS:
            raise ValueError(f"optimizer: expected one of {OPTIMIZERS}, got {self.name!r}")
        if not _is_number(self.lr) or not 0.0 < self.lr < math.inf:
            raise ValueError(f"lr: expected a finite number > 0, got {self.lr!r}")
        if not _is_number(self.eps) or not 0.0 < self.eps < math.inf:
            raise ValueError(f"eps: expected a finite number > 0, got {self.eps!r}")
        betas = tuple(self.betas) if isinstance(self.betas, (tuple, list)) else None
        if (
            betas is None
            or len(betas) != 2
            or not all(_is_number(b) and 0.0 <= b < 1.0 for b in betas)
        ):
            raise ValueError(f"betas: expected two numbers in [0, 1), got {self.betas!r}")
        self.lr, self.eps = float(self.lr), float(self.eps)
        self.betas = (float(betas[0]), float(betas[1]))

    @property
    def state_names(self) -> tuple[str, ...]:
        return tuple(_STATE[self.name])


def _is_number(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def init_state(name: str, num_rows: int, dim: int) -> dict[str, torch.Tensor]:
    """Zero state of optimizer ``name`` for ``num_rows`` rows: name -> ``[num_rows(, dim)]``."""
    return {
        key: torch.zeros((num_rows, dim) if per_dim else (num_rows,), dtype=dtype)
        for key, (per_dim, dtype) in _STATE[name].items()
    }


def sparse_update(
    config: RowOptimizerConfig,
    weight: torch.Tensor,
    state: dict[str, torch.Tensor],
    rows: torch.Tensor,
    grad: torch.Tensor,
) -> None:
    """Apply one optimizer step in place to ``weight[rows]`` (and ``state[...][rows]``).

    Args:
        config: optimizer name and hyper-parameters.
        weight: ``[num_rows, dim]`` float32 row storage.
        state: the optimizer's state from :func:`init_state` (rows aligned with weight).
        rows: ``[N]`` int64, distinct (duplicates must be summed beforehand).
        grad: ``[N, dim]`` the gradient of each row.
    """
    if rows.shape[0] == 0:
        return
    lr = config.lr
    if config.name == "sgd":
        weight.index_add_(0, rows, grad, alpha=-lr)
        return
    w = weight.index_select(0, rows)
    if config.name == "adagrad":
        # torch.optim.Adagrad (lr_decay = weight_decay = 0): sum += g*g;
        # w -= lr * g / (sqrt(sum) + eps)
        total = state["sum"].index_select(0, rows).addcmul_(grad, grad, value=1)
        state["sum"].index_copy_(0, rows, total)
        w.addcdiv_(grad, total.sqrt().add_(config.eps), value=-lr)
    else:
        w = _adam_rows(config, w, state, rows, grad)
    weight.index_copy_(0, rows, w)


def _adam_rows(config, w, state, rows, grad):
    # torch.optim.SparseAdam's update, with the scalar step count replaced by a per-row one
    beta1, beta2 = config.betas
    step = state["step"].index_select(0, rows) + 1
    state["step"].index_copy_(0, rows, step)
    old_avg = state["exp_avg"].index_select(0, rows)
    old_sq = state["exp_avg_sq"].index_select(0, rows)
    avg_update = grad.sub(old_avg).mul_(1 - beta1)
    sq_update = grad.pow(2).sub_(old_sq).mul_(1 - beta2)
    numer = avg_update.add_(old_avg)
    denom_sq = sq_update.add_(old_sq)
    state["exp_avg"].index_copy_(0, rows, numer)
    state["exp_avg_sq"].index_copy_(0, rows, denom_sq)
    denom = denom_sq.sqrt().add_(config.eps)
    # bias corrections in float64 like torch's Python floats, then rounded to float32 as
    # torch rounds a Python scalar multiplier
    step64 = step.to(torch.float64)
    correction1 = 1 - torch.pow(beta1, step64)
    correction2 = 1 - torch.pow(beta2, step64)
    step_size = (config.lr * correction2.sqrt() / correction1).to(torch.float32)
    return w.add_(numer.div(denom).mul_(-step_size.unsqueeze(1)))
