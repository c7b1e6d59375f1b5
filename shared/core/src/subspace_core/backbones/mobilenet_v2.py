"""MobileNetV2 (width 1.0), Sandler et al. 2018, "MobileNetV2: Inverted Residuals and
Linear Bottlenecks" (arXiv:1801.04381).

Written for this project in plain torch; the module tree is laid out so that the ImageNet
state dict of torchvision (``mobilenet_v2-b0353104.pth``: keys ``features.*`` and
``classifier.*``) loads with ``strict=True``:

* ``features.0``: stem, 3x3 stride-2 convolution 3 -> 32 + BN + ReLU6
  (a :class:`ConvBNReLU6`, whose children are named ``0`` conv, ``1`` BN, ``2`` ReLU6);
* ``features.1`` .. ``features.17``: inverted residual blocks (:class:`InvertedResidual`),
  each an ``conv`` sequence: [1x1 expansion ConvBNReLU6 (absent when the expansion factor
  is 1)], 3x3 depthwise ConvBNReLU6, 1x1 linear projection conv, BN; identity shortcut when
  the stride is 1 and the channel count is kept;
* ``features.18``: 1x1 head convolution 320 -> 1280 + BN + ReLU6;
* ``classifier``: ``Dropout(0.2)`` (index 0), ``Linear(1280, 1000)`` (index 1).

Batch norm uses torch's defaults (eps 1e-5), as the checkpoint was trained with them.
3,504,872 parameters. Stages (see :mod:`subspace_core.backbones.base`): 1 -> 16 channels
at stride 2, 2 -> 24 at 4, 3 -> 32 at 8, 4 -> 96 at 16, 5 -> 1280 at 32.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from subspace_core.backbones.base import ImageBackbone, check_stage, init_weights

__all__ = ["BLOCK_SETTINGS", "ConvBNReLU6", "InvertedResidual", "MobileNetV2"]

#: ``(expansion t, output channels c, repeats n, first stride s)`` per block group (paper
#: Table 2, width 1.0).
BLOCK_SETTINGS: tuple[tuple[int, int, int, int], ...] = (
    (1, 16, 1, 1),
    (6, 24, 2, 2),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
)
_STEM_CHANNELS = 32
_HEAD_CHANNELS = 1280
#: ``features[:end]`` computes the map of each stage.
_STAGE_ENDS = {1: 2, 2: 4, 3: 7, 4: 14, 5: 19}
_STAGE_CHANNELS = {1: 16, 2: 24, 3: 32, 4: 96, 5: 1280}


class ConvBNReLU6(nn.Sequential):
    """``Conv2d(k, stride, padding=(k-1)//2, bias=False)`` -> ``BatchNorm2d`` -> ``ReLU6``;
    ``groups=in_channels`` makes it depthwise. ``[N, C_in, H, W] -> [N, C_out, H/s, W/s]``."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3,
                 stride: int = 1, groups: int = 1) -> None:
        super().__init__(
            nn.Conv2d(in_channels, out_channels, kernel_size, stride, (kernel_size - 1) // 2,
                      groups=groups, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU6(inplace=True),
        )


class InvertedResidual(nn.Module):
    """Expand (1x1, factor ``expansion``) -> depthwise 3x3 (``stride``) -> linear 1x1
    projection, with an identity shortcut when ``stride == 1`` and ``in == out`` channels.

    ``[N, C_in, H, W] -> [N, C_out, H/stride, W/stride]``.
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int, expansion: int) -> None:
        super().__init__()
        if stride not in (1, 2):
            raise ValueError(f"stride: expected 1 or 2, got {stride!r}")
        hidden = in_channels * expansion
        self.use_shortcut = stride == 1 and in_channels == out_channels
        layers: list[nn.Module] = []
        if expansion != 1:
            layers.append(ConvBNReLU6(in_channels, hidden, kernel_size=1))
        layers += [
            ConvBNReLU6(hidden, hidden, kernel_size=3, stride=stride, groups=hidden),
            nn.Conv2d(hidden, out_channels, 1, bias=False),
            nn.BatchNorm2d(out_channels),
        ]
        self.conv = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv(x)
        return x + out if self.use_shortcut else out


class MobileNetV2(ImageBackbone):
    """MobileNetV2 1.0 for ImageNet (1,000 classes), torchvision-compatible state dict.

    ``forward``: ``float32 [N, 3, H, W]`` (ImageNet-normalised, see
    :func:`subspace_core.backbones.preprocess`) -> logits ``[N, 1000]``; ``pooled``:
    ``[N, 1280]``; ``feature_map(x, stage)``: ``[N, C_stage, H/2**stage, W/2**stage]``.
    """

    name = "mobilenet_v2"
    stage_channels = _STAGE_CHANNELS

    def __init__(self, num_classes: int = 1000, dropout: float = 0.2) -> None:
        super().__init__()
        self.num_classes = num_classes
        layers: list[nn.Module] = [ConvBNReLU6(3, _STEM_CHANNELS, kernel_size=3, stride=2)]
        channels = _STEM_CHANNELS
        for expansion, out_channels, repeats, first_stride in BLOCK_SETTINGS:
            for i in range(repeats):
                stride = first_stride if i == 0 else 1
                layers.append(InvertedResidual(channels, out_channels, stride, expansion))
                channels = out_channels
        layers.append(ConvBNReLU6(channels, _HEAD_CHANNELS, kernel_size=1))
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Sequential(nn.Dropout(dropout), nn.Linear(_HEAD_CHANNELS, num_classes))
        init_weights(self)

    def stage_modules(self, stage: int) -> list[Callable[[torch.Tensor], torch.Tensor]]:
        stage = check_stage(stage)
        start = _STAGE_ENDS[stage - 1] if stage > 1 else 0
        return list(self.features[start:_STAGE_ENDS[stage]])

    def classify(self, pooled: torch.Tensor) -> torch.Tensor:
        return self.classifier(pooled)
