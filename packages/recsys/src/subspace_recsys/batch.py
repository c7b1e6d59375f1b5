"""Epoch-based (offline) training and evaluation of CTR models.

The dense parameters (MLPs, cross layers, a :class:`~subspace_recsys.hashed.HashedEmbedding`
table) are trained by a torch optimizer; the sparse tables
(:class:`~subspace_recsys.table.CollisionlessEmbedding`, which keep their rows and their
gradients in buffers, invisible to ``model.parameters()``) by their own per-row optimizer
through ``sparse_step(model)`` after every backward pass.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import nn

from subspace_recsys.data import CTRBatch, iter_batches
from subspace_recsys.metrics import auc, logloss
from subspace_recsys.table import sparse_step

__all__ = ["evaluate_ctr", "predict_ctr", "train_ctr"]

TrainData = CTRBatch | Callable[[int], Iterable[CTRBatch]] | Iterable[CTRBatch]


def _epoch_batches(data: TrainData, epoch: int, batch_size: int, shuffle: bool, seed: int):
    if isinstance(data, CTRBatch):
        return iter_batches(data, batch_size, shuffle=shuffle, seed=seed + epoch)
    if callable(data):
        return data(epoch)
    return data


def train_ctr(
    model: nn.Module,
    train: TrainData,
    *,
    epochs: int = 1,
    batch_size: int = 1024,
    dense_lr: float = 1e-3,
    weight_decay: float = 0.0,
    shuffle: bool = True,
    seed: int = 0,
    optimizer: torch.optim.Optimizer | None = None,
    extra_loss: Callable[[nn.Module], torch.Tensor] | None = None,
    on_epoch_end: Callable[[int, nn.Module, float], Any] | None = None,
) -> list[float]:
    """Train ``model`` for ``epochs`` epochs on binary cross-entropy.

    Args:
        model: ``model(ids, dense, now=...) -> logits [B]`` (e.g. :class:`~subspace_recsys.
            models.DeepFM`).
        train: a :class:`~subspace_recsys.data.CTRBatch`/``CTRSplit`` (cut into
            ``batch_size`` batches, shuffled with seed ``seed + epoch`` when ``shuffle``),
            a callable ``epoch -> iterable of CTRBatch``, or a re-iterable collection of
            batches (a list; a one-shot iterator only allows ``epochs=1``).
        dense_lr, weight_decay: of the default optimizer, ``torch.optim.Adam`` over every
            parameter with ``requires_grad`` (ignored when ``optimizer`` is given).
        optimizer: a ready optimizer for the dense parameters (e.g. with parameter groups).
        extra_loss: ``model -> scalar`` added to the loss of every step (a regulariser).
        on_epoch_end: called as ``on_epoch_end(epoch, model, mean_train_loss)`` after each
            epoch; returning ``True`` stops training.

    Each step: forward with ``now`` = the batch's latest timestamp, backward, dense
    optimizer step, then :func:`sparse_step` for the tables.

    Returns:
        The mean training log loss of each epoch run.
    """
    if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1:
        raise ValueError(f"epochs: expected a positive int, got {epochs!r}")
    if not (isinstance(train, CTRBatch) or callable(train) or isinstance(train, Iterable)):
        raise TypeError(
            f"train: expected a CTRBatch, a callable epoch -> batches, or an iterable of "
            f"batches, got {type(train).__name__}"
        )
    if (
        epochs > 1
        and not isinstance(train, CTRBatch)
        and not callable(train)
        and iter(train) is train
    ):
        raise ValueError(
            "train: a one-shot iterator can only feed epochs=1; pass a list, a CTRBatch or a "
            "callable epoch -> batches"
        )
    if optimizer is None:
        params = [p for p in model.parameters() if p.requires_grad]
        optimizer = (
            torch.optim.Adam(params, lr=dense_lr, weight_decay=weight_decay) if params else None
        )
    history: list[float] = []
    for epoch in range(epochs):
        model.train()
        total, count = 0.0, 0
        for batch in _epoch_batches(train, epoch, batch_size, shuffle, seed):
            if not isinstance(batch, CTRBatch):
                raise TypeError(f"train: expected CTRBatch items, got {type(batch).__name__}")
            logits = model(batch.ids, batch.dense, now=batch.now)
            loss = nn.functional.binary_cross_entropy_with_logits(
                logits, batch.label.to(logits.dtype)
            )
            total += float(loss.detach()) * len(batch)
            count += len(batch)
            if extra_loss is not None:
                loss = loss + extra_loss(model)
            if optimizer is not None:
                optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if optimizer is not None:
                optimizer.step()
            sparse_step(model)
        if count == 0:
            raise ValueError(f"train: epoch {epoch} had no examples")
        history.append(total / count)
        if on_epoch_end is not None and on_epoch_end(epoch, model, history[-1]) is True:
            break
    return history


@torch.no_grad()
def predict_ctr(model: nn.Module, data: CTRBatch | Iterable[CTRBatch], *, batch_size: int = 8192):
    """Logits ``[N]`` and labels ``[N]`` of ``model`` (in eval mode) over ``data``.

    The model's train/eval mode is restored afterwards.
    """
    batches = iter_batches(data, batch_size) if isinstance(data, CTRBatch) else data
    was_training = model.training
    model.eval()
    logits, labels = [], []
    try:
        for batch in batches:
            logits.append(model(batch.ids, batch.dense, now=batch.now).detach().float())
            labels.append(batch.label.float())
    finally:
        model.train(was_training)
    if not logits:
        raise ValueError("data: expected at least one batch")
    return torch.cat(logits), torch.cat(labels)


def evaluate_ctr(
    model: nn.Module, data: CTRBatch | Iterable[CTRBatch], *, batch_size: int = 8192
) -> dict[str, float]:
    """``{"auc", "logloss", "n"}`` of ``model`` over ``data`` (eval mode: tables read-only)."""
    logits, labels = predict_ctr(model, data, batch_size=batch_size)
    return {"auc": auc(logits, labels), "logloss": logloss(logits, labels), "n": len(labels)}
