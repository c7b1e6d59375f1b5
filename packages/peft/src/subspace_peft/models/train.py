"""Deterministic (and resumable) next-token training loop for the micro decoder."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from subspace_core.train import load_training_state, save_training_state

__all__ = ["sample_batch", "train_decoder"]


def sample_batch(
    tokens: torch.Tensor, batch: int, context: int, seed: int, step: int
) -> torch.Tensor:
    """Windows ``[batch, context + 1]`` of ``tokens`` at offsets drawn from ``(seed, step)``.

    The batch depends only on ``(seed, step)``, never on earlier draws, so a resumed run
    sees exactly the batches the uninterrupted one would have seen.
    """
    if tokens.dim() != 1:
        raise ValueError(f"tokens: expected a 1-D token tensor, got shape {tuple(tokens.shape)}")
    span = tokens.numel() - context - 1
    if span < 1:
        raise ValueError(f"tokens: need more than context + 1 = {context + 1} tokens, got {tokens.numel()}")
    gen = torch.Generator().manual_seed(seed * 1_000_003 + step)
    starts = torch.randint(0, span + 1, (batch,), generator=gen)
    index = starts[:, None] + torch.arange(context + 1)[None, :]
    return tokens[index]


def train_decoder(
    model: nn.Module,
    tokens: torch.Tensor,
    optimizer: torch.optim.Optimizer,
    steps: int,
    batch: int,
    context: int,
    seed: int = 0,
    *,
    scheduler: torch.optim.lr_scheduler.LRScheduler | None = None,
    grad_clip: float | None = 1.0,
    device: torch.device | str | None = None,
    out_dir: str | Path | None = None,
    save_every: int = 0,
    on_step: Callable[[int, float], None] | None = None,
) -> list[float]:
    """Train ``model`` (returning logits ``[B, T, V]`` for tokens ``[B, T]``) for ``steps``.

    Each step draws :func:`sample_batch` ``(seed, step)``, takes the mean next-token
    cross-entropy, back-propagates, clips the global grad norm to ``grad_clip`` (None: no
    clipping), steps ``optimizer`` then ``scheduler``. Returns the per-step losses (nats).

    Resumable: with ``out_dir`` and ``save_every > 0`` the state (model, optimizer, RNG,
    step, losses) is saved via :func:`subspace_core.train.save_training_state` every
    ``save_every`` steps and at the end; calling again with the same ``out_dir`` resumes
    from the saved step (the scheduler is fast-forwarded by replaying its steps), so the
    result equals an uninterrupted run.
    """
    if steps < 0 or batch < 1 or context < 1:
        raise ValueError(f"steps/batch/context: expected >= 0/1/1, got {steps}/{batch}/{context}")
    device = torch.device(device) if device is not None else next(model.parameters()).device
    losses: list[float] = []
    start = 0
    if out_dir is not None and save_every > 0:
        Path(out_dir).mkdir(parents=True, exist_ok=True)
        restored = load_training_state(out_dir, model, optimizer)
        if restored is not None:
            start, extra = restored
            losses = list(extra.get("losses", []))
            if scheduler is not None:
                for _ in range(start):
                    scheduler.step()
    model.train()
    for step in range(start, steps):
        x = sample_batch(tokens, batch, context, seed, step).to(device)
        logits = model(x[:, :-1])
        loss = nn.functional.cross_entropy(
            logits.reshape(-1, logits.shape[-1]).float(), x[:, 1:].reshape(-1)
        )
        if not torch.isfinite(loss):
            raise FloatingPointError(f"train_decoder: non-finite loss {loss.item()} at step {step}")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if grad_clip is not None:
            torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
        optimizer.step()
        if scheduler is not None:
            scheduler.step()
        losses.append(loss.item())
        if on_step is not None:
            on_step(step, losses[-1])
        done = step + 1
        if out_dir is not None and save_every > 0 and (done % save_every == 0 or done == steps):
            save_training_state(out_dir, model, optimizer, epoch=done, extra={"losses": losses})
    return losses
