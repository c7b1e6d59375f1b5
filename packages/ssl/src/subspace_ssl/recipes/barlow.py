"""Recipe of the Barlow Twins and Mixed Barlow Twins encoders on Fashion-MNIST.

``train(out_dir, model_id=...)`` pre-trains a :class:`~subspace_ssl.encoders.ConvEncoder`
with a 3-layer projector on two augmented views of the 60,000 training images (labels are
never read), Adam with linear warm-up then cosine decay, a seeded order of batches and views.
Mixed Barlow Twins (``mixup_scale > 0``) adds a third forward pass on the mixed input, so an
epoch costs ~1.5× a Barlow Twins epoch; the presets give both the same number of epochs.

Written to ``out_dir``: the encoder (``<model>.safetensors`` with its ``.sha256``; the
projector is dropped), one encoder snapshot per epoch under ``snapshots/`` (RankMe model
selection scores them), and the resumable training state every ``save_every`` steps.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch

from subspace_core.console import progress_bar
from subspace_core.train import (
    checkpoint_file,
    load_training_state,
    save_training_state,
    warmup_cosine,
)
from subspace_core.zoo import save_state_dict
from subspace_ssl.augment import AugmentConfig, augment
from subspace_ssl.barlow import MixedBarlowLoss
from subspace_ssl.data import DATASETS, load_images
from subspace_ssl.encoders import Projector, build_encoder

__all__ = ["PRESETS", "QUICK", "BarlowConfig", "checkpoint_file", "train"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class BarlowConfig:
    """Hyper-parameters of one pre-training run."""

    encoder: str = "tiny"
    projector_dim: int = 512
    lambd: float = 1 / 128
    mixup_scale: float = 0.0  # 0: Barlow Twins; > 0: Mixed Barlow Twins
    epochs: int = 12
    batch_size: int = 256
    lr: float = 2e-3
    weight_decay: float = 1e-6
    warmup_epochs: float = 1.0
    seed: int = 0
    train_subset: int | None = None  # None: all 60,000 training images
    save_every: int = 50
    log_every: int = 20


#: the shipped runs' settings, by model id.
PRESETS: dict[str, BarlowConfig] = {
    "ssl/barlow_tiny.fmnist": BarlowConfig(mixup_scale=0.0),
    "ssl/mixed_barlow_tiny.fmnist": BarlowConfig(mixup_scale=4.0),
}

#: smoke-test overrides of ``quick=True`` (a check of the path, not a reproduction).
QUICK = {"epochs": 1, "train_subset": 1024, "batch_size": 128, "projector_dim": 128,
         "save_every": 4, "log_every": 2}


def _step_generator(seed: int, step: int) -> torch.Generator:
    # one generator per step: a resumed run draws exactly the views it would have drawn
    return torch.Generator().manual_seed(seed * 1_000_003 + step)


def train(out_dir: str | Path, *, model_id: str = "ssl/barlow_tiny.fmnist", quick: bool = False,
          progress: bool = True, **overrides) -> Path:
    """Pre-train ``model_id``'s preset (or resume it in ``out_dir``); returns the encoder file."""
    if model_id not in PRESETS:
        raise ValueError(f"model_id: expected one of {sorted(PRESETS)}, got {model_id!r}")
    cfg = PRESETS[model_id]
    if quick:
        cfg = replace(cfg, **QUICK)
    cfg = replace(cfg, **overrides)
    out_dir = Path(out_dir)
    (out_dir / "snapshots").mkdir(parents=True, exist_ok=True)
    images, _ = load_images("fmnist", "train", progress=progress)
    if cfg.train_subset is not None:
        images = images[: cfg.train_subset]
    encoder = build_encoder(cfg.encoder, seed=cfg.seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed + 1)
        projector = Projector(encoder.embed_dim, cfg.projector_dim, cfg.projector_dim)
    model = torch.nn.ModuleDict({"encoder": encoder, "projector": projector})
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    criterion = MixedBarlowLoss(cfg.lambd, cfg.mixup_scale)
    aug = AugmentConfig()
    _, mean, std = DATASETS["fmnist"]
    steps_per_epoch = len(images) // cfg.batch_size  # drop the last partial batch
    total = cfg.epochs * steps_per_epoch
    warmup = max(1, round(cfg.warmup_epochs * steps_per_epoch))
    order_gen = torch.Generator().manual_seed(cfg.seed)
    orders = [torch.randperm(len(images), generator=order_gen) for _ in range(cfg.epochs)]
    resumed = load_training_state(out_dir, model, optimizer)
    start = 0 if resumed is None else resumed[0]
    if start:
        logger.info("resuming %s at step %d/%d", model_id, start, total)
    model.train()
    began, sums = time.perf_counter(), {"loss": 0.0, "barlow": 0.0, "mixup": 0.0, "n": 0}
    with progress_bar(enabled=progress) as bar:
        task = bar.add_task(model_id, total=total, completed=start)
        for step in range(start, total):
            epoch, i = divmod(step, steps_per_epoch)
            idx = orders[epoch][i * cfg.batch_size:(i + 1) * cfg.batch_size]
            gen = _step_generator(cfg.seed, step)
            batch = images[idx]
            v1 = augment(batch, aug, generator=gen)
            v2 = augment(batch, aug, generator=gen)
            for group in optimizer.param_groups:
                group["lr"] = cfg.lr * warmup_cosine(step, total, warmup)
            z1 = projector(encoder((v1 - mean) / std))
            z2 = projector(encoder((v2 - mean) / std))
            if cfg.mixup_scale > 0:
                alpha = float(torch.rand((), generator=gen))  # Beta(1, 1) is uniform
                perm = torch.randperm(len(idx), generator=gen)
                mixed = alpha * v1 + (1 - alpha) * v2[perm]
                zm = projector(encoder((mixed - mean) / std))
                terms = criterion(z1, z2, zm, alpha, perm)
            else:
                terms = criterion(z1, z2)
            optimizer.zero_grad(set_to_none=True)
            terms.loss.backward()
            optimizer.step()
            bar.advance(task)
            sums["loss"] += terms.loss.item()
            sums["barlow"] += terms.barlow.item()
            sums["mixup"] += terms.mixup.item()
            sums["n"] += 1
            if (step + 1) % cfg.log_every == 0 or step + 1 == total:
                n = sums.pop("n")
                logger.info("step %d/%d epoch %d loss %.2f (barlow %.2f, mixup %.2f) %.2f s/step",
                            step + 1, total, epoch + 1, sums["loss"] / n, sums["barlow"] / n,
                            sums["mixup"] / n, (time.perf_counter() - began) / (step + 1 - start))
                sums = dict.fromkeys(sums, 0.0) | {"n": 0}
            if (step + 1) % steps_per_epoch == 0:
                save_state_dict(encoder.state_dict(),
                                out_dir / "snapshots" / f"epoch_{epoch + 1:03d}.safetensors",
                                metadata={"model_id": model_id, "epoch": str(epoch + 1)})
            if (step + 1) % cfg.save_every == 0 and step + 1 < total:
                save_training_state(out_dir, model, optimizer, epoch=step + 1,
                                    extra={"config": asdict(cfg)})
    path = out_dir / checkpoint_file(model_id)
    save_state_dict(encoder.state_dict(), path,
                    metadata={"model_id": model_id, "recipe": __name__,
                              **{k: str(v) for k, v in asdict(cfg).items()}})
    return path


def train_barlow_tiny_fmnist(out_dir: str | Path, **kwargs) -> Path:
    """Recipe of ``ssl/barlow_tiny.fmnist`` (see :data:`PRESETS`)."""
    return train(out_dir, model_id="ssl/barlow_tiny.fmnist", **kwargs)


def train_mixed_barlow_tiny_fmnist(out_dir: str | Path, **kwargs) -> Path:
    """Recipe of ``ssl/mixed_barlow_tiny.fmnist`` (see :data:`PRESETS`)."""
    return train(out_dir, model_id="ssl/mixed_barlow_tiny.fmnist", **kwargs)
