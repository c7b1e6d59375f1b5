"""Recipe for ``core/mlp_tiny.fmnist``: a 784-256-10 MLP on the full Fashion-MNIST train split.

Budget: 12 epochs of Adam, about 1 minute on 2 CPU cores. ``quick`` trains 1 epoch on a
10k subset (smoke test of the path, not a reproduction).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from subspace_core.console import progress_bar
from subspace_core.data import load_dataset
from subspace_core.eval import normalize_images
from subspace_core.protocols import FMNIST_MEAN, FMNIST_STD
from subspace_core.train import load_training_state, save_training_state
from subspace_core.zoo import save_state_dict

__all__ = ["RecipeConfig", "train"]

CHECKPOINT_FILE = "mlp_tiny.fmnist.safetensors"


@dataclass(frozen=True)
class RecipeConfig:
    epochs: int = 12
    batch_size: int = 128
    lr: float = 1e-3
    weight_decay: float = 1e-4
    seed: int = 0
    train_subset: int | None = None  # None: all 60k training images


QUICK = RecipeConfig(epochs=1, train_subset=10_000)


def train(out_dir: str | Path, *, quick: bool = False, progress: bool = True) -> Path:
    """Train the canary from scratch (or resume from ``out_dir``); return the checkpoint path."""
    from subspace_core.models.mlp_tiny import build_mlp_tiny

    cfg = QUICK if quick else RecipeConfig()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(cfg.seed)
    data = load_dataset("fashion_mnist", "train")
    x = normalize_images(data.x, FMNIST_MEAN, FMNIST_STD)
    y = data.y
    if cfg.train_subset is not None:
        x, y = x[: cfg.train_subset], y[: cfg.train_subset]

    model = build_mlp_tiny()
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    resumed = load_training_state(out_dir, model, optimizer)
    start = 0 if resumed is None else resumed[0]
    generator = torch.Generator().manual_seed(cfg.seed)
    for _ in range(start):  # replay the shuffles of finished epochs: same order as a clean run
        torch.randperm(len(x), generator=generator)

    steps_per_epoch = (len(x) + cfg.batch_size - 1) // cfg.batch_size
    with progress_bar(enabled=progress) as bar:
        task = bar.add_task("mlp_tiny.fmnist", total=cfg.epochs * steps_per_epoch,
                            completed=start * steps_per_epoch)
        for epoch in range(start, cfg.epochs):
            model.train()
            order = torch.randperm(len(x), generator=generator)
            for i in range(0, len(x), cfg.batch_size):
                idx = order[i : i + cfg.batch_size]
                loss = F.cross_entropy(model(x[idx]), y[idx])
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                bar.advance(task)
            save_training_state(out_dir, model, optimizer, epoch=epoch + 1,
                                extra={"loss": loss.item(), "config": asdict(cfg)})

    path = out_dir / CHECKPOINT_FILE
    save_state_dict(model.state_dict(), path, metadata={"model_id": "core/mlp_tiny.fmnist",
                                                         "recipe": __name__, **asdict(cfg)})
    return path
