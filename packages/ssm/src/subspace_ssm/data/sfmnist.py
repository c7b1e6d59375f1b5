"""Sequential Fashion-MNIST: each 28×28 image read pixel by pixel (row-major), L = 784.

The images come from the core dataset ``fashion_mnist`` (Debian package
``dataset-fashion-mnist``, see ``subspace_core.data``). One feature per step: the grey
level scaled to [0, 1] and normalised with the training-set mean and std of the core's
``fmnist_test`` protocol (0.2860, 0.3530), so a model sees ``[N, 784, 1]`` float32.
"""

from __future__ import annotations

import torch

from subspace_ssm.data.base import SequenceSplit, seeded_subset

__all__ = ["SFMNIST_LEN", "SFMNIST_MEAN", "SFMNIST_STD", "images_to_sequences", "load_sfmnist"]

SFMNIST_LEN = 784
#: Mean and std of the Fashion-MNIST training pixels scaled to [0, 1] (as the core's protocol).
SFMNIST_MEAN, SFMNIST_STD = 0.2860, 0.3530


def images_to_sequences(images: torch.Tensor) -> torch.Tensor:
    """uint8 images ``[N, H, W]`` (0..255) → normalised float32 sequences ``[N, H·W, 1]``."""
    if not isinstance(images, torch.Tensor) or images.dim() != 3 or images.dtype != torch.uint8:
        got = (images.dtype, tuple(images.shape)) if isinstance(images, torch.Tensor) else images
        raise ValueError(f"images: expected uint8 [N, H, W], got {got}")
    n = images.shape[0]
    x = images.reshape(n, -1, 1).float() / 255.0
    return (x - SFMNIST_MEAN) / SFMNIST_STD


def load_sfmnist(split: str, *, n: int | None = None, seed: int = 0, size: int = 28,
                 progress: bool = False) -> SequenceSplit:
    """Split ``train`` (60,000) or ``test`` (10,000) as sequences ``x [N, size², 1]``, 10 classes.

    ``n`` keeps a fixed random subset of that many examples (chosen by ``seed``, in file
    order); None keeps them all. ``size`` < 28 (a divisor of 28: 14, 7, 4, 2) averages
    ``28/size``-pixel blocks first, for shorter sequences (benchmarks); the standard task is
    ``size=28`` (L = 784).
    """
    from subspace_core.data import load_dataset

    if split not in ("train", "test"):
        raise ValueError(f"split: expected 'train' or 'test', got {split!r}")
    if size < 1 or 28 % size:
        raise ValueError(f"size: expected a divisor of 28, got {size}")
    data = load_dataset("fashion_mnist", split, progress=progress)
    idx = seeded_subset(len(data), n, seed)
    images = data.x[idx]
    if size != 28:
        k = 28 // size
        pooled = torch.nn.functional.avg_pool2d(images[:, None].float(), k)[:, 0]
        images = pooled.round().clamp(0, 255).to(torch.uint8)
    return SequenceSplit(images_to_sequences(images), data.y[idx], len(data.classes))
