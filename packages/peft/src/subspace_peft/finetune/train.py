"""One training loop for every method: same data order, seed, schedule and evaluation.

For each method: a fresh classifier (same encoder weights, same head initialisation from
``seed``), the method's optimizer (:func:`~subspace_peft.finetune.methods.prepare_method`),
``epochs`` epochs of bucketed shuffled batches drawn from a ``torch.Generator`` seeded with
``seed`` (identical batches for every method), cross-entropy loss, gradient clipping at
``max_grad_norm``, a linear warm-up over ``warmup_ratio`` of the steps then linear decay to
0 (``LambdaLR``, all parameter groups). After every epoch the validation accuracy is
measured and the trainable parameters of the best epoch are kept; the test accuracy is
measured once, on those (model selection on validation only).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from subspace_peft.finetune.data import Encoded, collate, eval_batches, train_batches
from subspace_peft.finetune.methods import (
    CorDASettings,
    GaLoreSettings,
    LoRASettings,
    SaRASettings,
    SVFitSettings,
    matrix_parameters,
    optimizer_state_bytes,
    prepare_method,
    trainable_parameters,
)
from subspace_peft.finetune.model import build_classifier

__all__ = ["FinetuneConfig", "FinetuneResult", "accuracy", "finetune", "linear_schedule"]


@dataclass(frozen=True)
class FinetuneConfig:
    """Settings of one fine-tuning run (everything but ``method``/``lr`` is shared)."""

    method: str
    lr: float
    epochs: int = 2
    batch_size: int = 32
    warmup_ratio: float = 0.06
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    seed: int = 0
    eval_batch_size: int = 128
    max_steps: int | None = None
    dropout: float = 0.1
    galore: GaLoreSettings = field(default_factory=GaLoreSettings)
    lora: LoRASettings = field(default_factory=LoRASettings)
    svfit: SVFitSettings = field(default_factory=SVFitSettings)
    corda: CorDASettings = field(default_factory=CorDASettings)
    sara: SaRASettings = field(default_factory=SaRASettings)


@dataclass
class FinetuneResult:
    """What a run measured. Accuracies are fractions in [0, 1] (None when not measured).

    ``optimizer_state_bytes``: all the optimizer's state tensors after training;
    ``matrix_state_bytes``: the part for the 36 encoder matrices
    (:func:`~subspace_peft.finetune.methods.matrix_parameters`).
    """

    method: str
    lr: float
    steps: int
    train_seconds: float
    trainable_params: int
    total_params: int
    optimizer_state_bytes: int
    matrix_state_bytes: int
    losses: list[float]
    val_history: list[float]
    best_epoch: int
    val_accuracy: float | None
    test_accuracy: float | None
    model: nn.Module | None = field(default=None, repr=False, compare=False)


def linear_schedule(optimizer: torch.optim.Optimizer, total: int, warmup: int
                    ) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warm-up over ``warmup`` steps, then linear decay to 0 at ``total`` steps."""

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / (warmup + 1)
        return max(0.0, (total - step) / max(1, total - warmup))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


@torch.no_grad()
def accuracy(model: nn.Module, data: Encoded, *, batch_size: int = 128,
             device: torch.device | str = "cpu") -> float:
    """Fraction of ``data`` classified correctly (``model`` in eval mode meanwhile)."""
    was_training = model.training
    model.eval()
    correct = 0
    try:
        for idx in eval_batches(data, batch_size):
            inputs, labels = collate(data, idx, device)
            correct += int((model(**inputs).argmax(-1) == labels).sum())
    finally:
        model.train(was_training)
    return correct / max(1, len(data))


def _snapshot(model: nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}


def _restore(model: nn.Module, snap: dict[str, torch.Tensor]) -> None:
    params = dict(model.named_parameters())
    with torch.no_grad():
        for n, v in snap.items():
            params[n].copy_(v)


def _calibration(train: Encoded, cfg: FinetuneConfig, device: torch.device | str):
    """The first ``cfg.corda.calibration_batches`` training batches in a fixed, seeded order
    (a generator of its own, so the training batch order is the same for every method)."""

    @torch.no_grad()
    def run(model: nn.Module) -> None:
        generator = torch.Generator().manual_seed(cfg.seed + 1)
        for i, idx in enumerate(train_batches(train, cfg.batch_size, generator)):
            if i >= cfg.corda.calibration_batches:
                break
            inputs, _ = collate(train, idx, device)
            model(**inputs)

    return run


def _regulariser(model: nn.Module, generator: torch.Generator) -> torch.Tensor | float:
    """The method's own penalty added to the task loss: SaRA's nuclear norm on the update of
    one adapted matrix drawn per step (0 for every other method)."""
    penalty = getattr(model, "nuclear_norm_penalty", None)
    if penalty is None:
        return 0.0
    names = list(model.adapter_layers())
    pick = int(torch.randint(len(names), (1,), generator=generator))
    return penalty([names[pick]])


def finetune(
    cfg: FinetuneConfig,
    train: Encoded,
    validation: Encoded | None = None,
    test: Encoded | None = None,
    *,
    encoder: nn.Module | None = None,
    device: torch.device | str = "cpu",
    num_classes: int = 2,
) -> FinetuneResult:
    """Train a fresh classifier with ``cfg.method`` on ``train``; see the module docstring.

    ``encoder`` (deep-copied, never modified) saves reloading the MiniLM files per run.
    ``max_steps`` stops early (tests); the schedule then spans ``max_steps``. The trained
    model (the method's wrapper, at the best-validation epoch) is ``result.model``.
    """
    if cfg.epochs < 1:
        raise ValueError(f"epochs: expected >= 1, got {cfg.epochs}")
    torch.manual_seed(cfg.seed)
    model = build_classifier(num_classes, seed=cfg.seed, encoder=encoder,
                             dropout=cfg.dropout).to(device)
    prepared = prepare_method(cfg.method, model, cfg.lr, weight_decay=cfg.weight_decay,
                              galore=cfg.galore, lora=cfg.lora, svfit=cfg.svfit,
                              corda=cfg.corda, sara=cfg.sara,
                              calibrate=_calibration(train, cfg, device))
    model, optimizer = prepared.model, prepared.optimizer
    per_epoch = math.ceil(len(train) / cfg.batch_size)
    total = per_epoch * cfg.epochs
    if cfg.max_steps is not None:
        total = min(total, cfg.max_steps)
    scheduler = linear_schedule(optimizer, total, round(cfg.warmup_ratio * total))
    params = [p for p in model.parameters() if p.requires_grad]
    generator = torch.Generator().manual_seed(cfg.seed)
    penalty_generator = torch.Generator().manual_seed(cfg.seed + 2)
    losses: list[float] = []
    val_history: list[float] = []
    best, best_epoch, snap = -1.0, 0, None
    seconds = 0.0
    step = 0
    model.train()
    for epoch in range(cfg.epochs):
        start = time.perf_counter()
        for idx in train_batches(train, cfg.batch_size, generator):
            if step >= total:
                break
            inputs, labels = collate(train, idx, device)
            loss = F.cross_entropy(model(**inputs), labels)
            objective = loss + _regulariser(model, penalty_generator)
            optimizer.zero_grad(set_to_none=True)
            objective.backward()
            if cfg.max_grad_norm > 0:
                torch.nn.utils.clip_grad_norm_(params, cfg.max_grad_norm)
            optimizer.step()
            scheduler.step()
            losses.append(loss.item())
            step += 1
            reselect = getattr(model, "maybe_reselect", None)
            if reselect is not None and reselect(step, total, optimizer) is not None:
                # the trainable tensors were replaced by smaller ones
                params = [p for p in model.parameters() if p.requires_grad]
        seconds += time.perf_counter() - start
        if validation is not None:
            val = accuracy(model, validation, batch_size=cfg.eval_batch_size, device=device)
            val_history.append(val)
            if val > best:
                best, best_epoch = val, epoch
                # keep a copy unless the current weights are the final ones
                snap = _snapshot(model) if epoch < cfg.epochs - 1 and step < total else None
        if step >= total:
            break
    if snap is not None:
        _restore(model, snap)
    test_acc = (accuracy(model, test, batch_size=cfg.eval_batch_size, device=device)
                if test is not None else None)
    return FinetuneResult(
        method=cfg.method,
        lr=cfg.lr,
        steps=step,
        train_seconds=seconds,
        trainable_params=trainable_parameters(model),
        total_params=sum(p.numel() for p in model.parameters()),
        optimizer_state_bytes=optimizer_state_bytes(optimizer),
        matrix_state_bytes=optimizer_state_bytes(optimizer, matrix_parameters(model)),
        losses=losses,
        val_history=val_history,
        best_epoch=best_epoch,
        val_accuracy=best if validation is not None else None,
        test_accuracy=test_acc,
        model=model,
    )
