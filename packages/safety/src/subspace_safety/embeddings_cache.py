"""Cached features of the locked image tower on the registered image datasets.

The towers of :class:`~subspace_safety.lit_clip.LiTClip` never change, so their features are
computed once and reused by the recipe (training the projections takes seconds on them) and
by evaluations. A cache file is a safetensors file ``{"features": float32 [N, D], "labels":
int64 [N]}`` under ``$SUBZOO_HOME/cache/subspace_safety/features/`` (default
``~/.cache/subzoo``), named by the sha256 of its key: the tower's
:meth:`~subspace_safety.lit_clip.BackboneImageTower.cache_key` (backbone, weight-file sha256,
input size, preprocessing), the dataset, split and data-file sha256s, the subset, the torch
version and :data:`CACHE_VERSION`; the key is also stored in the file's metadata and checked
on read. Towers without a ``cache_key`` (e.g. random ones in tests) are computed, never
cached.

Cost: MobileNetV2 at 96 px runs ~5 ms per image on one CPU thread, so Fashion-MNIST
(60,000 + 10,000) and MNIST-10k (9,000 + 1,000) take ~7 min together, once.
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

import torch
from torch import nn

__all__ = ["CACHE_VERSION", "cache_dir", "image_features"]

#: Bumped when the way features are computed changes (invalidates every cache file).
CACHE_VERSION = 1


def cache_dir() -> Path:
    """``$SUBZOO_HOME/cache/subspace_safety/features``."""
    from subspace_core.io import subzoo_home

    return subzoo_home() / "cache" / "subspace_safety" / "features"


def _key(tower: nn.Module, dataset: str, split: str, limit: int | None) -> dict | None:
    from subspace_core.data import get_dataset

    tower_key = tower.cache_key() if hasattr(tower, "cache_key") else None
    if tower_key is None:
        return None
    return {"version": CACHE_VERSION, "tower": tower_key, "dataset": dataset, "split": split,
            "data_sha256": [f.sha256 for f in get_dataset(dataset).files],
            "subset": "all" if limit is None else f"first {limit}",
            "torch": torch.__version__.split("+")[0]}


@torch.no_grad()
def _compute(tower: nn.Module, images: torch.Tensor, batch_size: int,
             progress: bool, what: str) -> torch.Tensor:
    was_training = tower.training
    tower.eval()
    out, start = [], time.perf_counter()
    try:
        for i, chunk in enumerate(images.split(batch_size)):
            out.append(tower(chunk.unsqueeze(1) if chunk.dim() == 3 else chunk).float().cpu())
            if progress and (i + 1) % 50 == 0:
                done = min((i + 1) * batch_size, len(images))
                print(f"{what}: {done}/{len(images)} images, "
                      f"{time.perf_counter() - start:.0f} s", flush=True)
    finally:
        tower.train(was_training)
    return torch.cat(out)


def image_features(tower: nn.Module, dataset: str, split: str, *, limit: int | None = None,
                   batch_size: int = 64, progress: bool = False,
                   use_cache: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """Image-tower features of a registered image dataset split, cached on disk.

    Args:
        tower: image tower (``images [B, 1|3, H, W] -> [B, D]``), e.g.
            :class:`~subspace_safety.lit_clip.BackboneImageTower`.
        dataset, split: a dataset of :mod:`subspace_core.data` with ``x`` uint8
            ``[N, H, W]`` images and ``y`` labels (``fashion_mnist``, ``mnist_10k``).
        limit: keep only the first ``limit`` examples (``None``: all).
        batch_size: images per forward pass.
        progress: print progress while computing.
        use_cache: read/write the cache (only for towers with a ``cache_key``).

    Returns:
        ``(features float32 [N, D], labels int64 [N])`` on CPU.
    """
    from safetensors.torch import load_file, save_file

    from subspace_core.data import load_dataset
    from subspace_core.io import atomic_path

    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise ValueError(f"limit: expected None or a positive int, got {limit!r}")
    key = _key(tower, dataset, split, limit) if use_cache else None
    path = None
    if key is not None:
        blob = json.dumps(key, sort_keys=True)
        path = cache_dir() / f"{dataset}-{split}-{hashlib.sha256(blob.encode()).hexdigest()[:16]}" \
                             ".safetensors"
        if path.exists():
            from safetensors import safe_open

            with safe_open(str(path), "pt") as f:
                stored = (f.metadata() or {}).get("key")
            if stored == blob:
                tensors = load_file(str(path))
                return tensors["features"], tensors["labels"]
    data = load_dataset(dataset, split, progress=progress)
    x, y = (data.x, data.y) if limit is None else (data.x[:limit], data.y[:limit])
    features = _compute(tower, x, batch_size, progress, f"{dataset}/{split}")
    labels = torch.as_tensor(y, dtype=torch.int64)
    if path is not None:
        with atomic_path(path) as tmp:
            save_file({"features": features.contiguous(), "labels": labels.contiguous()},
                      str(tmp), metadata={"key": json.dumps(key, sort_keys=True)})
    return features, labels
