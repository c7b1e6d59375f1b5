"""Deterministic stratified splits for datasets that ship without one."""

from __future__ import annotations

import numpy as np

__all__ = ["last_per_class", "select_split"]


def last_per_class(y: np.ndarray, k: int) -> np.ndarray:
    """Boolean mask of the last ``k`` examples (in file order) of every class in ``y``."""
    mask = np.zeros(len(y), dtype=bool)
    for label in np.unique(y):
        (where,) = np.nonzero(y == label)
        if len(where) < k:
            raise ValueError(f"class {label} has {len(where)} examples, fewer than k={k}")
        mask[where[-k:]] = True
    return mask


def select_split(
    x: np.ndarray, y: np.ndarray, test_mask: np.ndarray, split: str
) -> tuple[np.ndarray, np.ndarray]:
    """``(x, y)`` restricted to ``test_mask`` for "test", to its complement for "train"."""
    if split == "test":
        keep = test_mask
    elif split == "train":
        keep = ~test_mask
    else:
        raise ValueError(f"split: expected 'train' or 'test', got {split!r}")
    return x[keep], y[keep]
