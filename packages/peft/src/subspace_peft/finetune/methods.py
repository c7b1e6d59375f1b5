"""The fine-tuning methods compared on one harness: full AdamW, GaLore, LoRA (HF ``peft``),
SVFit, CorDA (both modes) and SaRA (:mod:`subspace_peft.adapters`).

All three train the same :class:`~subspace_peft.finetune.model.MiniLMClassifier` and touch
the same weight matrices: the six linears of every encoder layer (attention query, key,
value and output, FFN intermediate and output; :data:`ENCODER_LINEARS`), 36 matrices in all.

* ``full``: ``torch.optim.AdamW`` on every parameter (22.6M).
* ``galore``: :class:`~subspace_peft.optim.GaLoreAdamW` with
  :func:`~subspace_peft.optim.galore_param_groups`: the 36 encoder matrices take projected
  steps (rank ``r``, projector refreshed every ``update_proj_gap`` steps, update scaled by
  ``scale``); embeddings, LayerNorms, biases and the head take plain AdamW steps in the
  same optimizer. Every parameter is trained (GaLore is full-parameter training); only the
  optimizer state of the matrices is low-rank. Defaults (:class:`GaLoreSettings`) follow
  GaLore's GLUE fine-tuning recipe (``run_glue.py`` of the GaLore repository, RoBERTa-base
  with hidden 768: ``--lora_all_modules`` = query, key, value, intermediate.dense and
  output.dense (attention and FFN outputs); ``--lora_r 4 --galore_scale 4
  --update_proj_gap 500``, lr 3e-5, batch 16, 30 epochs; one learning rate for both
  groups), with rank 8 for MiniLM's 384-d layers (2 % of the width; the recipe's 4/768
  would give rank 2 here) and ``update_proj_gap`` 100 instead of 500 because these runs are
  far shorter (319 steps: the basis is computed at steps 0, 100, 200 and 300).
* ``lora``: Hugging Face ``peft`` ``LoraConfig`` + ``get_peft_model`` with rank 8,
  ``lora_alpha`` 16, dropout 0.1 on the same 36 matrices (:class:`LoRASettings`); the head
  is trained too (``modules_to_save``), everything else is frozen.
* ``svfit``: :class:`~subspace_peft.adapters.SVFitModel` on the same 36 matrices: only
  their singular values are trained (all of them by default: 13,824 scalars, plus the
  head), singular vectors and everything else frozen (:class:`SVFitSettings`).
* ``sara``: :class:`~subspace_peft.adapters.SaRAModel` on the same 36 matrices: the
  smallest 10 % of each matrix's pretrained entries are trained as a sparse update, with a
  nuclear-norm penalty on the update of one matrix per step and one progressive
  re-selection half-way (:class:`SaRASettings`; the training loop calls
  ``nuclear_norm_penalty`` and ``maybe_reselect``).
* ``corda_kpm`` / ``corda_ipm``: :class:`~subspace_peft.adapters.CorDAModel` at rank 8 (as
  many adapter parameters as LoRA r=8), built from the input covariance of every target
  collected on calibration batches. The harness calibrates both modes on the task's own
  training batches (:class:`CorDASettings`): right for the instruction-previewed mode; the
  knowledge-preserved mode is meant to be calibrated on the data whose behaviour must be
  kept, which matters for forgetting, not for the task accuracy measured here.

:func:`optimizer_state_bytes` measures the state each optimizer actually holds (every
tensor in ``optimizer.state``, moments, step counters and projector bases included), in all
or only for :func:`matrix_parameters` (what adapts the 36 matrices: GaLore's target).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

__all__ = [
    "ENCODER_LINEARS",
    "METHODS",
    "CorDASettings",
    "GaLoreSettings",
    "LoRASettings",
    "Prepared",
    "SVFitSettings",
    "SaRASettings",
    "matrix_parameters",
    "optimizer_state_bytes",
    "prepare_method",
    "trainable_parameters",
]

METHODS = ("full", "galore", "lora", "svfit", "corda_kpm", "corda_ipm", "sara")

#: Qualified-name pattern (anchored at the end) of the 36 encoder matrices of MiniLM.
ENCODER_LINEARS = (r"encoder\.layer\.\d+\.(attention\.self\.(query|key|value)"
                   r"|attention\.output\.dense|intermediate\.dense|output\.dense)")


@dataclass(frozen=True)
class GaLoreSettings:
    """GaLore options for the encoder matrices (see the module docstring for the choice)."""

    rank: int = 8
    update_proj_gap: int = 100
    scale: float = 4.0
    proj_type: str = "std"


@dataclass(frozen=True)
class LoRASettings:
    """HF ``peft`` LoRA options (rank 8, alpha 16: the usual GLUE setting)."""

    r: int = 8
    alpha: int = 16
    dropout: float = 0.1


@dataclass(frozen=True)
class SVFitSettings:
    """SVFit options: ``rank``/``energy`` of :class:`~subspace_peft.adapters.SVFitConfig`
    (both ``None``: every singular value is trained)."""

    rank: int | None = None
    energy: float | None = None


@dataclass(frozen=True)
class CorDASettings:
    """CorDA options: rank 8 (LoRA's), scaling 1, no dropout (the output at init is exact);
    ``calibration_batches`` training batches feed the input covariances."""

    rank: int = 8
    alpha: float | None = None
    calibration_batches: int = 8


@dataclass(frozen=True)
class SaRASettings:
    """SaRA options: the smallest ``fraction`` of each matrix's entries trained (the paper's
    10 %), nuclear-norm weight ``nuclear_weight`` on the update of one matrix drawn per step
    (as the reference training script does, to keep one SVD per step), one progressive
    re-selection at ``progressive_at`` of the steps."""

    fraction: float = 0.1
    nuclear_weight: float = 5e-4
    progressive_at: float | None = 0.5


@dataclass
class Prepared:
    """A model ready to train with its optimizer (the model may be a peft wrapper)."""

    model: nn.Module
    optimizer: torch.optim.Optimizer
    method: str


def trainable_parameters(model: nn.Module) -> int:
    """Number of parameter elements with ``requires_grad`` (shared tensors counted once)."""
    seen: set[int] = set()
    total = 0
    for p in model.parameters():
        if p.requires_grad and id(p) not in seen:
            seen.add(id(p))
            total += p.numel()
    return total


def _tensor_bytes(value: Any) -> int:
    if isinstance(value, torch.Tensor):
        return value.numel() * value.element_size()
    if isinstance(value, dict):
        return sum(_tensor_bytes(v) for v in value.values())
    if isinstance(value, list | tuple):
        return sum(_tensor_bytes(v) for v in value)
    return 0


def optimizer_state_bytes(optimizer: torch.optim.Optimizer,
                          params: list[torch.Tensor] | None = None) -> int:
    """Bytes of every tensor held in ``optimizer.state`` (recursing into dicts/lists), or
    only in the state of ``params`` when given."""
    if params is None:
        return sum(_tensor_bytes(state) for state in optimizer.state.values())
    return sum(_tensor_bytes(optimizer.state[p]) for p in params if p in optimizer.state)


def matrix_parameters(model: nn.Module) -> list[torch.Tensor]:
    """The trainable tensors that adapt the 36 encoder matrices (:data:`ENCODER_LINEARS`):
    their weights (``full``, ``galore``), their LoRA factors (``lora``) or their adapter
    parameters (``svfit``, ``corda_*``)."""
    import re

    from subspace_peft.adapters import AdapterModel

    if isinstance(model, AdapterModel):
        return model.adapter_parameters()
    pattern = re.compile(ENCODER_LINEARS)
    lora = [p for n, p in model.named_parameters()
            if p.requires_grad and "lora_" in n and pattern.search(n)]
    if lora:
        return lora
    return [m.weight for n, m in model.named_modules()
            if isinstance(m, nn.Linear) and re.search(ENCODER_LINEARS + "$", n)
            and m.weight.requires_grad]


def prepare_method(
    method: str,
    model: nn.Module,
    lr: float,
    *,
    weight_decay: float = 0.0,
    galore: GaLoreSettings | None = None,
    lora: LoRASettings | None = None,
    svfit: SVFitSettings | None = None,
    corda: CorDASettings | None = None,
    sara: SaRASettings | None = None,
    calibrate: Callable[[nn.Module], Any] | None = None,
) -> Prepared:
    """Set ``model`` up for ``method`` (one of :data:`METHODS`) and build its optimizer.

    ``model`` is a :class:`~subspace_peft.finetune.model.MiniLMClassifier` (any module whose
    encoder matrices match :data:`ENCODER_LINEARS` and whose head is named ``head``).
    ``calibrate(model)`` feeds calibration batches through the model; CorDA needs it.
    """
    if method not in METHODS:
        raise ValueError(f"method: expected one of {METHODS}, got {method!r}")
    if not lr > 0:
        raise ValueError(f"lr: expected > 0, got {lr!r}")
    if method == "full":
        return _adam_on_trainable(model, lr, weight_decay, method)
    if method == "galore":
        from subspace_peft.optim import GaLoreAdamW, galore_param_groups

        cfg = galore or GaLoreSettings()
        groups = galore_param_groups(model, [ENCODER_LINEARS + "$"], rank=cfg.rank,
                                     update_proj_gap=cfg.update_proj_gap, scale=cfg.scale,
                                     proj_type=cfg.proj_type)
        projected = sum(len(g["params"]) for g in groups if "rank" in g)
        if projected != _count_matrices(model):  # pragma: no cover - guards the regex
            raise RuntimeError(f"galore: projected {projected} matrices, expected "
                               f"{_count_matrices(model)}")
        return Prepared(model, GaLoreAdamW(groups, lr=lr, weight_decay=weight_decay), method)
    if method == "svfit":
        from subspace_peft.adapters import SVFitConfig, SVFitModel

        cfg = svfit or SVFitSettings()
        wrapped = SVFitModel(model, SVFitConfig(target_modules=(ENCODER_LINEARS,),
                                                modules_to_save=("head",), rank=cfg.rank,
                                                energy=cfg.energy))
        return _adam_on_trainable(wrapped, lr, weight_decay, method)
    if method.startswith("corda_"):
        from subspace_peft.adapters import CorDAConfig, CorDAModel

        if calibrate is None:
            raise ValueError(f"calibrate: method {method!r} needs calibration batches, got None")
        cfg = corda or CorDASettings()
        config = CorDAConfig(target_modules=(ENCODER_LINEARS,), modules_to_save=("head",),
                             rank=cfg.rank, mode=method.removeprefix("corda_"), alpha=cfg.alpha)
        wrapped = CorDAModel.calibrate(model, config, lambda: calibrate(model))
        return _adam_on_trainable(wrapped, lr, weight_decay, method)
    if method == "sara":
        from subspace_peft.adapters import SaRAConfig, SaRAModel

        cfg = sara or SaRASettings()
        wrapped = SaRAModel(model, SaRAConfig(target_modules=(ENCODER_LINEARS,),
                                              modules_to_save=("head",), fraction=cfg.fraction,
                                              nuclear_weight=cfg.nuclear_weight,
                                              progressive_at=cfg.progressive_at))
        return _adam_on_trainable(wrapped, lr, weight_decay, method)
    return _prepare_lora(model, lr, weight_decay, lora or LoRASettings())


def _adam_on_trainable(model: nn.Module, lr: float, weight_decay: float, method: str
                       ) -> Prepared:
    params = [p for p in model.parameters() if p.requires_grad]
    return Prepared(model, torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay), method)


def _count_matrices(model: nn.Module) -> int:
    import re

    pattern = re.compile(ENCODER_LINEARS + "$")
    return sum(1 for n, m in model.named_modules()
               if pattern.search(n) and isinstance(m, nn.Linear))


def _prepare_lora(model: nn.Module, lr: float, weight_decay: float,
                  cfg: LoRASettings) -> Prepared:
    try:
        from peft import LoraConfig, get_peft_model
    except ImportError as exc:  # pragma: no cover - the hf extra is in the dev group
        raise ImportError("method 'lora' needs Hugging Face peft: install "
                          "`pip install 'subspace-peft[hf]'`") from exc
    config = LoraConfig(
        r=cfg.r,
        lora_alpha=cfg.alpha,
        lora_dropout=cfg.dropout,
        target_modules=r".*" + ENCODER_LINEARS,  # a str is matched in full by peft
        modules_to_save=["head"],
        bias="none",
    )
    return _adam_on_trainable(get_peft_model(model, config), lr, weight_decay, "lora")
