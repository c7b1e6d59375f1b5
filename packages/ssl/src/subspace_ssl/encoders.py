"""Compact convolutional encoders for 28×28 greyscale images (trainable on 2 CPU cores).

The encoder's output is its **global-average-pooled embedding** (the readout every
linear-probe and kNN table of the package uses); self-supervised objectives put a
projector on top of it (:class:`Projector`) that is dropped after training.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

__all__ = ["ENCODER_SIZES", "ConvEncoder", "Projector", "build_encoder"]

#: size → (channel widths, strides) of :class:`ConvEncoder` (conv3×3-BN-ReLU per stage).
ENCODER_SIZES: dict[str, tuple[tuple[int, ...], tuple[int, ...]]] = {
    # 28 → 28 → 14 → 7 → 4; 0.39M parameters, ~12M multiply-adds per image
    "tiny": ((32, 64, 128, 256), (1, 2, 2, 2)),
    # an extra 3×3 stage at 14×14 and at 7×7: 0.57M parameters, ~26M multiply-adds
    "small": ((32, 64, 64, 128, 128, 256), (1, 2, 1, 2, 1, 2)),
}


def _stage(c_in: int, c_out: int, stride: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
    )


class ConvEncoder(nn.Module):
    """Stack of conv3×3-BN-ReLU stages, then global average pooling.

    Args:
        widths: output channels of each stage (the last is the embedding width).
        strides: stride of each stage (same length as ``widths``).
        in_channels: image channels (1 for greyscale).

    Shapes: ``x`` [N, C, H, W] float → embedding [N, widths[-1]];
    :meth:`feature_map` gives the last stage's map [N, widths[-1], h, w].
    """

    def __init__(self, widths: Sequence[int] = ENCODER_SIZES["tiny"][0],
                 strides: Sequence[int] = ENCODER_SIZES["tiny"][1], in_channels: int = 1):
        super().__init__()
        widths, strides = tuple(int(w) for w in widths), tuple(int(s) for s in strides)
        if not widths or len(widths) != len(strides):
            raise ValueError(f"widths/strides: expected equal non-empty lengths, got "
                             f"{len(widths)} and {len(strides)}")
        if min(widths) < 1 or min(strides) < 1:
            raise ValueError(f"widths/strides: expected positive integers, got {widths}, {strides}")
        channels = (int(in_channels), *widths)
        self.stages = nn.Sequential(*(_stage(channels[i], channels[i + 1], strides[i])
                                      for i in range(len(widths))))
        self.embed_dim = widths[-1]
        self.in_channels = int(in_channels)

    def feature_map(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f"x: expected [N, {self.in_channels}, H, W], got {tuple(x.shape)}")
        return self.stages(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.feature_map(x).mean(dim=(2, 3))


class Projector(nn.Module):
    """Barlow Twins projector: ``n_layers`` linears, BN + ReLU between them.

    Shapes: [N, in_dim] → [N, out_dim].
    """

    def __init__(self, in_dim: int, hidden_dim: int = 1024, out_dim: int = 1024,
                 n_layers: int = 3):
        super().__init__()
        if n_layers < 1:
            raise ValueError(f"n_layers: expected >= 1, got {n_layers}")
        dims = [in_dim] + [hidden_dim] * (n_layers - 1) + [out_dim]
        layers: list[nn.Module] = []
        for i in range(n_layers):
            last = i == n_layers - 1
            layers.append(nn.Linear(dims[i], dims[i + 1], bias=last))
            if not last:
                layers += [nn.BatchNorm1d(dims[i + 1]), nn.ReLU(inplace=True)]
        self.net = nn.Sequential(*layers)
        self.out_dim = out_dim

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.net(h)


def build_encoder(size: str = "tiny", *, seed: int | None = None) -> ConvEncoder:
    """A :class:`ConvEncoder` of a named ``size`` (:data:`ENCODER_SIZES`), seeded if asked.

    ``seed`` gives the random-network baseline of a table a reproducible initialisation.
    """
    if size not in ENCODER_SIZES:
        raise ValueError(f"size: expected one of {sorted(ENCODER_SIZES)}, got {size!r}")
    widths, strides = ENCODER_SIZES[size]
    if seed is None:
        return ConvEncoder(widths, strides)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return ConvEncoder(widths, strides)
