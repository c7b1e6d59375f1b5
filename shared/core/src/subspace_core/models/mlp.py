"""A plain multi-layer perceptron classifier for small images."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

__all__ = ["MLPClassifier"]


class MLPClassifier(nn.Module):
    """Flatten → (Linear → ReLU → Dropout)* → Linear.

    Args:
        in_features: flattened input size (e.g. 784 for 28×28).
        hidden: widths of the hidden layers.
        num_classes: output logits.
        dropout: dropout after each hidden activation.

    Shapes: input ``[N, *]`` with ``prod(*) == in_features``; output ``[N, num_classes]``.
    """

    def __init__(
        self,
        in_features: int = 784,
        hidden: Sequence[int] = (256,),
        num_classes: int = 10,
        dropout: float = 0.1,
    ):
        super().__init__()
        layers: list[nn.Module] = [nn.Flatten()]
        width = in_features
        for h in hidden:
            layers += [nn.Linear(width, h), nn.ReLU(), nn.Dropout(dropout)]
            width = h
        layers.append(nn.Linear(width, num_classes))
        self.net = nn.Sequential(*layers)
        self.in_features = in_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x[0].numel() != self.in_features:
            raise ValueError(
                f"x: expected {self.in_features} features per sample, got shape {tuple(x.shape)}"
            )
        return self.net(x)
