"""Greyscale image data of the package: Fashion-MNIST (60k/10k) and MNIST (9k/1k real digits).

Images stay uint8 [N, 28, 28] until a batch is needed; :func:`to_input` makes the network
input (float32 [N, 1, 28, 28], ``(pixel/255 − mean) / std`` with the dataset's statistics).
"""

from __future__ import annotations

from functools import lru_cache

import torch

__all__ = ["DATASETS", "load_images", "to_input"]

#: dataset key → (core dataset name, pixel mean, pixel std) of the training split.
DATASETS: dict[str, tuple[str, float, float]] = {
    "fmnist": ("fashion_mnist", 0.2860, 0.3530),
    "mnist": ("mnist_10k", 0.1307, 0.3081),
}


def _check_key(dataset: str) -> tuple[str, float, float]:
    if dataset not in DATASETS:
        raise ValueError(f"dataset: expected one of {sorted(DATASETS)}, got {dataset!r}")
    return DATASETS[dataset]


@lru_cache(maxsize=8)
def load_images(dataset: str, split: str, *, progress: bool = False
                ) -> tuple[torch.Tensor, torch.Tensor]:
    """``(images uint8 [N, 28, 28], labels int64 [N])`` of ``dataset`` ("fmnist"/"mnist")."""
    from subspace_core.data import load_dataset

    name, _, _ = _check_key(dataset)
    data = load_dataset(name, split, progress=progress)
    return torch.as_tensor(data.x), torch.as_tensor(data.y).long()


def to_input(images: torch.Tensor, dataset: str = "fmnist") -> torch.Tensor:
    """uint8 images [N, 28, 28] (or float in [0, 1]) → normalised float32 [N, 1, 28, 28]."""
    _, mean, std = _check_key(dataset)
    if images.ndim != 3:
        raise ValueError(f"images: expected [N, H, W], got {tuple(images.shape)}")
    x = images.float() / 255.0 if images.dtype == torch.uint8 else images.float()
    return ((x - mean) / std).unsqueeze(1)
