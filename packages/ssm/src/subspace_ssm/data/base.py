"""``SequenceSplit``: one split of a sequence-classification task, held in memory.

Every task of :mod:`subspace_ssm.data` returns one: inputs ``x`` (float features
``[N, L, d]`` or int64 tokens ``[N, L]``), labels ``y`` (int64 ``[N]``), the number of
classes and an optional right-padding mask (bool ``[N, L]``, True on real positions, as
:class:`~subspace_ssm.classifier.SSMClassifier` takes it).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch

__all__ = ["SequenceSplit", "seeded_subset"]


@dataclass(frozen=True)
class SequenceSplit:
    """Inputs, labels and (optional) padding mask of one split.

    Attributes:
        x: float ``[N, L, d]`` or int64 tokens ``[N, L]``.
        y: int64 labels ``[N]`` in ``[0, n_classes)``.
        n_classes: number of classes.
        mask: bool ``[N, L]`` right-padding mask, or None when every sequence has length L.
    """

    x: torch.Tensor
    y: torch.Tensor
    n_classes: int
    mask: torch.Tensor | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.x, torch.Tensor) or self.x.dim() not in (2, 3):
            got = tuple(self.x.shape) if isinstance(self.x, torch.Tensor) else type(self.x).__name__
            raise ValueError(f"x: expected a tensor [N, L] or [N, L, d], got {got}")
        if not isinstance(self.y, torch.Tensor) or self.y.dtype != torch.int64 \
                or tuple(self.y.shape) != (self.x.shape[0],):
            got = (self.y.dtype, tuple(self.y.shape)) if isinstance(self.y, torch.Tensor) else self.y
            raise ValueError(f"y: expected int64 labels of shape ({self.x.shape[0]},), got {got}")
        if self.y.numel() and not (int(self.y.min()) >= 0 and int(self.y.max()) < self.n_classes):
            raise ValueError(f"y: expected labels in [0, {self.n_classes}), got range "
                             f"[{int(self.y.min())}, {int(self.y.max())}]")
        if self.mask is not None and (self.mask.dtype != torch.bool
                                      or tuple(self.mask.shape) != tuple(self.x.shape[:2])):
            raise ValueError(f"mask: expected bool of shape {tuple(self.x.shape[:2])}, got "
                             f"{self.mask.dtype} {tuple(self.mask.shape)}")

    def __len__(self) -> int:
        return int(self.y.shape[0])

    @property
    def seq_len(self) -> int:
        """L, the (padded) sequence length."""
        return int(self.x.shape[1])

    def subset(self, index: torch.Tensor | slice) -> SequenceSplit:
        """The examples at ``index`` (a slice or an int64 index tensor)."""
        return SequenceSplit(self.x[index], self.y[index], self.n_classes,
                             None if self.mask is None else self.mask[index])

    def batches(self, batch_size: int, *, shuffle: bool = False,
                generator: torch.Generator | None = None
                ) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]]:
        """``(x, y, mask)`` mini-batches (the last one may be smaller); ``mask`` may be None."""
        if batch_size < 1:
            raise ValueError(f"batch_size: expected an int >= 1, got {batch_size}")
        n = len(self)
        order = torch.randperm(n, generator=generator) if shuffle else torch.arange(n)
        for start in range(0, n, batch_size):
            idx = order[start:start + batch_size]
            yield self.x[idx], self.y[idx], None if self.mask is None else self.mask[idx]


def seeded_subset(n_total: int, n: int | None, seed: int) -> torch.Tensor:
    """Sorted indices of a fixed random subset of ``n`` of ``n_total`` items (all if None)."""
    if n is None:
        return torch.arange(n_total)
    if not 1 <= n <= n_total:
        raise ValueError(f"n: expected a subset size in [1, {n_total}] or None, got {n}")
    g = torch.Generator().manual_seed(seed)
    return torch.randperm(n_total, generator=g)[:n].sort().values
