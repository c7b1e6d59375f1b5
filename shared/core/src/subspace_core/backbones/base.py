"""What every image backbone of :mod:`subspace_core.backbones` offers.

A backbone maps a normalised image batch ``x: float32 [N, 3, H, W]`` (see
:func:`subspace_core.backbones.preprocess`) through five *stages*; stage ``k`` (1..5) ends
at output stride ``2**k``, so its map is ``[N, stage_channels[k], ceil(H / 2**k),
ceil(W / 2**k)]`` (exactly ``H // 2**k`` when ``H`` is a multiple of 32). Stage 5 is the
last feature map, after the 1x1 head convolution (1,280 channels for both networks);
:meth:`ImageBackbone.pooled` is its global average, and :meth:`ImageBackbone.classify`
applies the ImageNet classifier to it (1,000 logits).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import torch
from torch import nn

__all__ = ["NUM_STAGES", "ImageBackbone", "check_stage", "init_weights"]

#: Stages 1..5, stage ``k`` at output stride ``2**k``.
NUM_STAGES = 5


def check_stage(stage: object) -> int:
    """``stage`` as an int in 1..NUM_STAGES, or a ValueError naming expected and actual."""
    if isinstance(stage, bool) or not isinstance(stage, int) or not 1 <= stage <= NUM_STAGES:
        raise ValueError(f"stage: expected an int in 1..{NUM_STAGES}, got {stage!r}")
    return stage


class ImageBackbone(nn.Module):
    """Base class: subclasses define :meth:`stage_modules` (the modules of each stage, in
    order), :attr:`stage_channels` and :meth:`classify`.

    Attributes:
        name: registry name (``"mobilenet_v2"``, ``"efficientnet_lite0"``).
        stage_channels: ``{stage: channels}`` for stages 1..5.
        feature_dim: channels of stage 5 = the dimension of :meth:`pooled` (1,280).
        num_classes: outputs of :meth:`classify` (1,000 ImageNet classes).
    """

    name: str = ""
    stage_channels: Mapping[int, int] = {}
    num_classes: int = 1000

    @property
    def feature_dim(self) -> int:
        return self.stage_channels[NUM_STAGES]

    def stage_modules(  # pragma: no cover - abstract
        self, stage: int
    ) -> list[Callable[[torch.Tensor], torch.Tensor]]:
        """The modules (or callables) that take stage ``stage - 1``'s map (the image for stage 1) to stage
        ``stage``'s map, applied in order."""
        raise NotImplementedError

    def classify(self, pooled: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        """ImageNet logits ``[N, 1000]`` from :meth:`pooled` features ``[N, 1280]``."""
        raise NotImplementedError

    def feature_map(self, x: torch.Tensor, stage: int = NUM_STAGES) -> torch.Tensor:
        """The map of ``stage`` (1..5): ``[N, stage_channels[stage], ~H/2**stage, ~W/2**stage]``.

        Only the stages up to ``stage`` are computed.
        """
        stage = check_stage(stage)
        for k in range(1, stage + 1):
            for module in self.stage_modules(k):
                x = module(x)
        return x

    def pooled(self, x: torch.Tensor) -> torch.Tensor:
        """Global average of the stage-5 map: ``[N, 3, H, W] -> [N, feature_dim]``."""
        return self.feature_map(x, NUM_STAGES).mean(dim=(2, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """ImageNet logits: ``[N, 3, H, W] -> [N, num_classes]``."""
        return self.classify(self.pooled(x))


def init_weights(module: nn.Module) -> None:
    """The usual ImageNet-CNN initialisation, for ``pretrained=False``: He-normal (fan-out)
    convolutions, unit/zero batch norm, N(0, 0.01) classifier, zero biases."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, 0.0, 0.01)
            nn.init.zeros_(m.bias)
