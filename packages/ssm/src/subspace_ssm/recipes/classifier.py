"""One training recipe for every shipped SSM classifier (sequential Fashion-MNIST, ListOps).

Each shipped model id has a preset :class:`RecipeConfig` in :data:`PRESETS`; ``train`` runs
it (``subzoo train ID`` calls the per-model entry point named in the zoo card, e.g.
``subspace_ssm.recipes.classifier:train_s5_ptd_tiny_sfmnist``).

The loop: AdamW with the SSM parameters in their own group (``lr_ssm``, no weight decay,
:func:`~subspace_ssm.ssm_param_groups`), linear warm-up then cosine decay to 0, a seeded
batch order fixed up front for all epochs (so a resumed run replays the same batches), the
training state saved every ``save_every`` steps to ``out_dir`` and resumed from there.

Data per task:

* ``sfmnist``: the 60,000 Fashion-MNIST training images as normalised pixel sequences
  (L = 784), reshuffled each epoch.
* ``sfmnist14``: the same images 2×2-average-pooled (L = 196), as ``sfmnist14_test`` scores.
* ``listops``: ``n_train`` expressions from :func:`~subspace_ssm.data.listops.generate_listops`
  with LRA's settings and a seed disjoint from ``listops_test``'s. Batches are drawn from
  length buckets (examples sorted by length, cut into batches, the batch order shuffled each
  epoch) and trimmed to their longest example, with the padding mask passed to the model:
  about half the compute of uniformly padded batches at LRA lengths (500–2,000 tokens).
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch
import torch.nn.functional as F

from subspace_core.console import progress_bar
from subspace_core.train import checkpoint_file, load_training_state, save_training_state
from subspace_core.train import warmup_cosine as lr_factor
from subspace_core.zoo import save_state_dict
from subspace_ssm.data.base import SequenceSplit
from subspace_ssm.data.sfmnist import images_to_sequences
from subspace_ssm.optim import ssm_param_groups

__all__ = ["PRESETS", "QUICK", "RecipeConfig", "checkpoint_file", "lr_factor", "train"]

logger = logging.getLogger(__name__)

#: seed of the ListOps training expressions (``listops_test`` uses 10,000).
LISTOPS_TRAIN_SEED = 1


@dataclass(frozen=True)
class RecipeConfig:
    """Hyper-parameters of one recipe run."""

    arch: str = "s4d_tiny"
    task: str = "sfmnist"
    epochs: int = 2
    batch_size: int = 64
    lr: float = 1e-2
    lr_ssm: float = 1e-3
    weight_decay: float = 0.01
    warmup_steps: int = 100
    seed: int = 0
    train_subset: int | None = None  # sfmnist: None = all 60,000 images
    n_train: int = 20_000  # listops: generated training expressions
    max_length: int = 2000  # listops: LRA's 500–2,000 tokens
    save_every: int = 100
    log_every: int = 25


#: the shipped runs' settings, by model id.
PRESETS: dict[str, RecipeConfig] = {
    "ssm/s4d_tiny.sfmnist": RecipeConfig(arch="s4d_tiny", task="sfmnist", epochs=4),
    # S5 costs ~1.6x S4D per step on CPU (MIMO kernel): one epoch fits the hour
    "ssm/s5_ptd_tiny.sfmnist": RecipeConfig(arch="s5_ptd_tiny", task="sfmnist", epochs=1),
    "ssm/s4d_tiny.listops": RecipeConfig(arch="s4d_tiny", task="listops", epochs=3,
                                         batch_size=32, lr=5e-3, lr_ssm=1e-3,
                                         n_train=20_000, warmup_steps=100),
    # the selective scan's CPU path loops over time: Mamba trains on the L = 196 task
    "ssm/mamba_tiny.sfmnist14": RecipeConfig(arch="mamba_tiny", task="sfmnist14", epochs=2,
                                             lr=3e-3, lr_ssm=1e-3),
}

#: the smoke-test overrides of ``quick=True`` (a check of the path, not a reproduction).
QUICK = {"epochs": 1, "train_subset": 1280, "n_train": 64, "max_length": 600,
         "warmup_steps": 5, "save_every": 10, "log_every": 5}


def _training_data(cfg: RecipeConfig, progress: bool) -> SequenceSplit:
    if cfg.task == "sfmnist":
        from subspace_core.data import load_dataset

        data = load_dataset("fashion_mnist", "train", progress=progress)
        images, labels = data.x, data.y
        if cfg.train_subset is not None:
            images, labels = images[: cfg.train_subset], labels[: cfg.train_subset]
        # images stay uint8 [N, 28, 28] until batched: 47 MB instead of 188 MB of floats
        return SequenceSplit(torch.as_tensor(images).reshape(len(labels), -1),
                             torch.as_tensor(labels).long(), 10)
    if cfg.task == "sfmnist14":
        from subspace_ssm.data.sfmnist import load_sfmnist

        data = load_sfmnist("train", size=14, progress=progress)
        return data if cfg.train_subset is None else data.subset(slice(0, cfg.train_subset))
    if cfg.task == "listops":
        from subspace_ssm.data.listops import generate_listops

        return generate_listops(cfg.n_train, seed=LISTOPS_TRAIN_SEED,
                                min_length=min(500, cfg.max_length), max_length=cfg.max_length)
    raise ValueError(f"task: expected 'sfmnist', 'sfmnist14' or 'listops', got {cfg.task!r}")


def _batch_orders(cfg: RecipeConfig, data: SequenceSplit) -> list[list[torch.Tensor]]:
    """Index batches of every epoch, drawn up front from one seeded generator."""
    generator = torch.Generator().manual_seed(cfg.seed)
    n = len(data)
    epochs = []
    if data.mask is None:
        for _ in range(cfg.epochs):
            order = torch.randperm(n, generator=generator)
            epochs.append(list(order.split(cfg.batch_size)))
        return epochs
    by_length = torch.sort(data.mask.sum(1), stable=True).indices
    buckets = list(by_length.split(cfg.batch_size))
    for _ in range(cfg.epochs):
        epochs.append([buckets[i] for i in torch.randperm(len(buckets), generator=generator)])
    return epochs


def _batch(cfg: RecipeConfig, data: SequenceSplit, idx: torch.Tensor):
    if cfg.task == "sfmnist":
        images = data.x[idx].reshape(len(idx), 28, 28)
        return images_to_sequences(images), data.y[idx], None
    if cfg.task == "sfmnist14":
        return data.x[idx], data.y[idx], None
    mask = data.mask[idx]
    width = int(mask.sum(1).max())
    return data.x[idx, :width], data.y[idx], mask[:, :width]


def train(out_dir: str | Path, *, model_id: str = "ssm/s4d_tiny.sfmnist", quick: bool = False,
          progress: bool = True, **overrides) -> Path:
    """Train ``model_id``'s preset (or resume it in ``out_dir``); returns the checkpoint path.

    ``overrides`` replace fields of the preset :class:`RecipeConfig` (after :data:`QUICK`'s
    with ``quick``). The checkpoint is ``out_dir/<arch>.<task>.safetensors`` with a
    ``.sha256`` beside it.
    """
    from subspace_ssm.zoo import build

    if model_id not in PRESETS:
        raise ValueError(f"model_id: expected one of {sorted(PRESETS)}, got {model_id!r}")
    cfg = PRESETS[model_id]
    if quick:
        cfg = replace(cfg, **QUICK)
    cfg = replace(cfg, **overrides)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(cfg.seed)
    data = _training_data(cfg, progress)
    model = build(cfg.arch, cfg.task)
    optimizer = torch.optim.AdamW(
        ssm_param_groups(model, lr_ssm=cfg.lr_ssm, weight_decay=cfg.weight_decay), lr=cfg.lr)
    for group in optimizer.param_groups:
        group["base_lr"] = group["lr"]
    orders = _batch_orders(cfg, data)
    steps_per_epoch = len(orders[0])
    total = cfg.epochs * steps_per_epoch
    resumed = load_training_state(out_dir, model, optimizer)
    start = 0 if resumed is None else resumed[0]
    if start:
        logger.info("resuming %s at step %d/%d", model_id, start, total)
    model.train()
    began, seen, correct, loss_sum = time.perf_counter(), 0, 0, 0.0
    with progress_bar(enabled=progress) as bar:
        task = bar.add_task(model_id, total=total, completed=start)
        for step in range(start, total):
            epoch, i = divmod(step, steps_per_epoch)
            x, y, mask = _batch(cfg, data, orders[epoch][i])
            for group in optimizer.param_groups:
                group["lr"] = group["base_lr"] * lr_factor(step, total, cfg.warmup_steps)
            logits = model(x) if mask is None else model(x, mask=mask)
            loss = F.cross_entropy(logits, y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            bar.advance(task)
            seen += len(y)
            correct += int((logits.argmax(-1) == y).sum())
            loss_sum += loss.item() * len(y)
            if (step + 1) % cfg.log_every == 0 or step + 1 == total:
                logger.info("step %d/%d loss %.4f acc %.3f (%.2f s/step)", step + 1, total,
                            loss_sum / seen, correct / seen,
                            (time.perf_counter() - began) / (step + 1 - start))
                seen, correct, loss_sum = 0, 0, 0.0
            if (step + 1) % cfg.save_every == 0 and step + 1 < total:
                save_training_state(out_dir, model, optimizer, epoch=step + 1,
                                    extra={"config": asdict(cfg)})
    path = out_dir / checkpoint_file(model_id)
    save_state_dict(model.state_dict(), path,
                    metadata={"model_id": model_id, "recipe": __name__, **asdict(cfg)})
    return path


def train_s4d_tiny_sfmnist(out_dir: str | Path, **kwargs) -> Path:
    """Recipe of ``ssm/s4d_tiny.sfmnist`` (see :data:`PRESETS`)."""
    return train(out_dir, model_id="ssm/s4d_tiny.sfmnist", **kwargs)


def train_s5_ptd_tiny_sfmnist(out_dir: str | Path, **kwargs) -> Path:
    """Recipe of ``ssm/s5_ptd_tiny.sfmnist`` (see :data:`PRESETS`)."""
    return train(out_dir, model_id="ssm/s5_ptd_tiny.sfmnist", **kwargs)


def train_s4d_tiny_listops(out_dir: str | Path, **kwargs) -> Path:
    """Recipe of ``ssm/s4d_tiny.listops`` (see :data:`PRESETS`)."""
    return train(out_dir, model_id="ssm/s4d_tiny.listops", **kwargs)


def train_mamba_tiny_sfmnist14(out_dir: str | Path, **kwargs) -> Path:
    """Recipe of ``ssm/mamba_tiny.sfmnist14`` (see :data:`PRESETS`)."""
    return train(out_dir, model_id="ssm/mamba_tiny.sfmnist14", **kwargs)
