"""``ArraySplit``: one split of a dataset as tensors."""

from __future__ import annotations

from dataclasses import dataclass

import torch

__all__ = ["ArraySplit"]


@dataclass(frozen=True)
class ArraySplit:
    """One split of a dataset, held in memory.

    ``x``: the examples, first dimension N. Image datasets give raw pixels as
    ``torch.uint8`` of shape ``[N, H, W]`` (grey levels; see each dataset's docs for
    the value range). ``y``: ``torch.int64`` labels of shape ``[N]``, each in
    ``[0, len(classes))``. ``classes``: the class names, ``classes[y[i]]`` names
    example ``i``.
    """

    x: torch.Tensor
    y: torch.Tensor
    classes: tuple[str, ...]

    def __post_init__(self) -> None:
        if not isinstance(self.x, torch.Tensor) or self.x.dim() < 1:
            raise TypeError(f"ArraySplit.x: expected a tensor with >= 1 dims, got {self.x!r:.80}")
        if not isinstance(self.y, torch.Tensor) or self.y.dim() != 1:
            raise TypeError(f"ArraySplit.y: expected a 1-D tensor, got {self.y!r:.80}")
        if self.y.dtype != torch.int64:
            raise TypeError(f"ArraySplit.y: expected dtype torch.int64, got {self.y.dtype}")
        if self.x.shape[0] != self.y.shape[0]:
            raise ValueError(
                f"ArraySplit: x has {self.x.shape[0]} examples but y has {self.y.shape[0]} labels"
            )
        if not isinstance(self.classes, tuple) or not self.classes:
            raise ValueError(
                f"ArraySplit.classes: expected a non-empty tuple, got {self.classes!r}"
            )
        if self.y.numel():
            lo, hi = int(self.y.min()), int(self.y.max())
            if lo < 0 or hi >= len(self.classes):
                raise ValueError(
                    f"ArraySplit.y: expected labels in [0, {len(self.classes)}), "
                    f"got range [{lo}, {hi}]"
                )

    def __len__(self) -> int:
        return int(self.y.shape[0])
