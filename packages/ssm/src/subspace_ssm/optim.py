"""Optimizer grouping for SSMs: the state-space parameters get their own learning rate and
no weight decay.

S4's convention: layers mark such tensors with an ``_optim`` dict attribute
(:func:`mark_ssm_param`), e.g. ``{"weight_decay": 0.0, "lr": 1e-3}``. The discretisation
step, A (eigenvalues) and B of S4/S4D/S5 are marked — their useful ranges are set by the
initialisation and weight decay would pull them to 0 (Δ → 1 from log Δ = 0, Re Λ → 0 =
marginal stability). Mamba marks ``A_log``, ``D`` and ``dt_proj.bias`` the same way, as
mamba-ssm does with ``_no_weight_decay``.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

__all__ = ["is_ssm_param", "mark_ssm_param", "ssm_param_groups"]


def mark_ssm_param(param: nn.Parameter, lr: float | None = None) -> nn.Parameter:
    """Mark ``param`` as an SSM parameter (no weight decay; ``lr`` if given). Returns it."""
    param._optim = {"weight_decay": 0.0, **({} if lr is None else {"lr": float(lr)})}
    return param


def is_ssm_param(param: torch.Tensor) -> bool:
    """Whether ``param`` was marked by :func:`mark_ssm_param`."""
    return isinstance(getattr(param, "_optim", None), dict)


def ssm_param_groups(model: nn.Module, lr_ssm: float | None = None, weight_decay: float = 0.0,
                     ) -> list[dict[str, Any]]:
    """Parameter groups for ``torch.optim``: ordinary parameters with ``weight_decay``, marked
    SSM parameters with no weight decay and learning rate ``lr_ssm`` (if given; otherwise
    the one the layer marked, otherwise the optimizer's default).

    Every trainable parameter lands in exactly one group; frozen ones in none. Example::

        opt = torch.optim.AdamW(ssm_param_groups(model, lr_ssm=1e-3, weight_decay=0.05),
                                lr=4e-3)
    """
    if lr_ssm is not None and not lr_ssm > 0:
        raise ValueError(f"lr_ssm: expected a learning rate > 0 or None, got {lr_ssm!r}")
    if not weight_decay >= 0:
        raise ValueError(f"weight_decay: expected a value >= 0, got {weight_decay!r}")
    plain: list[nn.Parameter] = []
    special: dict[tuple, list[nn.Parameter]] = {}
    for p in model.parameters():
        if not p.requires_grad:
            continue
        if not is_ssm_param(p):
            plain.append(p)
            continue
        hp = dict(p._optim)
        if lr_ssm is not None:
            hp["lr"] = float(lr_ssm)
        special.setdefault(tuple(sorted(hp.items())), []).append(p)
    groups: list[dict[str, Any]] = []
    if plain:
        groups.append({"params": plain, "weight_decay": float(weight_decay), "name": "default"})
    for key, params in special.items():
        groups.append({"params": params, **dict(key), "name": "ssm"})
    return groups
