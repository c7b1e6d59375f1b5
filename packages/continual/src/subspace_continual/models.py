"""Small networks for the continual benchmarks."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

__all__ = ["MultiHeadMLP"]


class MultiHeadMLP(nn.Module):
    """ReLU MLP trunk with one head (single-head settings) or one head per task.

    ``MultiHeadMLP(784, (100, 100), (10,))`` is GPM's Permuted-MNIST network
    (784-100-100-10, no biases by default, as in GPM). Layer names: ``body.0``,
    ``body.2``, ... for the trunk's Linear layers, ``heads.<t>`` for the heads.

    Args:
        input_dim: flattened input size ``D``.
        hidden: trunk widths.
        head_sizes: output size of each head; one entry = single head.
        bias: whether the Linear layers have biases.

    ``forward(x [N, D], task=None)`` returns logits [N, head_sizes[task]]; ``task`` is
    required when there are several heads and ignored otherwise.
    """

    def __init__(self, input_dim: int = 784, hidden: Sequence[int] = (100, 100),
                 head_sizes: Sequence[int] = (10,), bias: bool = False):
        super().__init__()
        if not head_sizes:
            raise ValueError("head_sizes: expected at least one head, got none")
        layers: list[nn.Module] = []
        width = input_dim
        for h in hidden:
            layers += [nn.Linear(width, h, bias=bias), nn.ReLU()]
            width = h
        self.body = nn.Sequential(*layers)
        self.heads = nn.ModuleList(nn.Linear(width, n, bias=bias) for n in head_sizes)
        self.feature_dim = width

    @property
    def multi_head(self) -> bool:
        return len(self.heads) > 1

    def trunk_layers(self) -> list[str]:
        """Names of the trunk's Linear layers (``body.0``, ``body.2``, ...)."""
        return [f"body.{i}" for i, m in enumerate(self.body) if isinstance(m, nn.Linear)]

    def forward(self, x: torch.Tensor, task: int | None = None) -> torch.Tensor:
        h = self.body(x)
        if not self.multi_head:
            return self.heads[0](h)
        if task is None or not 0 <= task < len(self.heads):
            raise ValueError(f"task: expected a head index in [0, {len(self.heads)}) for a "
                             f"multi-head model, got {task!r}")
        return self.heads[task](h)
