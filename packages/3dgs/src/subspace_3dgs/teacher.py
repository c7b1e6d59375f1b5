"""Teacher feature maps for feature fields: a frozen ImageNet CNN applied to the scene's views.

Feature 3DGS distils 2-D foundation-model features (LSeg, SAM) into the Gaussians. Here the
teacher is one of the small ImageNet networks of :mod:`subspace_core.backbones`
(MobileNetV2 by default, EfficientNet-Lite0 as an option): each view's RGB is resized to
``input_size`` (upsampling the small renders gives the coarse stages more cells), run
frozen, and the map of stage ``stage`` is the teacher, ``[C, h, w]`` with
``h = w = input_size / 2**stage``.

Default: MobileNetV2 stage 5 (the 1,280-channel map whose global average is the ImageNet
descriptor) at ``input_size=512``, a 16x16 map; stage 4 (96 channels, 32x32 at 512) is the
narrow, finer alternative.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass, field

import torch

from subspace_core.backbones import ImageBackbone, feature_maps, list_backbones, load_backbone
from subspace_core.backbones.base import check_stage

from .scenes import Scene, View

__all__ = ["Teacher", "teacher_maps"]


@dataclass(eq=False)
class Teacher:
    """A frozen image network and the stage whose map is the teacher.

    Args:
        backbone: a name in ``subspace_core.backbones.list_backbones()``
            (``"mobilenet_v2"``, ``"efficientnet_lite0"``; pretrained ImageNet weights) or an
            :class:`~subspace_core.backbones.ImageBackbone` module (e.g. ``pretrained=False``
            for tests).
        stage: backbone stage 1..5 (stride ``2**stage``).
        input_size: side the views are resized to before the network (>= 32, a multiple of
            ``2**stage`` so the map side is exactly ``input_size / 2**stage``).
    """

    backbone: str | ImageBackbone = "mobilenet_v2"
    stage: int = 5
    input_size: int = 512
    _module: ImageBackbone | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        check_stage(self.stage)
        if isinstance(self.backbone, str):
            if self.backbone not in list_backbones():
                raise ValueError(
                    f"backbone: expected one of {list_backbones()} or an ImageBackbone, "
                    f"got {self.backbone!r}"
                )
        elif not isinstance(self.backbone, ImageBackbone):
            raise TypeError(
                f"backbone: expected a name or an ImageBackbone, got {type(self.backbone).__name__}"
            )
        stride = 2**self.stage
        size = self.input_size
        if isinstance(size, bool) or not isinstance(size, int) or size < 32 or size % stride:
            raise ValueError(
                f"input_size: expected an int >= 32 divisible by 2**stage = {stride}, got {size!r}"
            )

    @property
    def module(self) -> ImageBackbone:
        """The frozen network (loaded on first use for a name)."""
        if self._module is None:
            self._module = (
                load_backbone(self.backbone) if isinstance(self.backbone, str) else self.backbone
            )
        return self._module

    @property
    def width(self) -> int:
        """Channels ``C`` of the teacher map."""
        return int(self.module.stage_channels[self.stage])

    @property
    def map_size(self) -> int:
        """Side ``h = w`` of the teacher map."""
        return self.input_size // 2**self.stage

    @property
    def key(self) -> tuple:
        """Identifies the teacher's output (the cache key)."""
        net = self.backbone if isinstance(self.backbone, str) else id(self.backbone)
        return (net, self.stage, self.input_size)

    @torch.no_grad()
    def __call__(self, rgb: torch.Tensor, *, batch_size: int = 8) -> torch.Tensor:
        """Teacher maps of images.

        Args:
            rgb: float ``[N, H, W, 3]`` (or one ``[H, W, 3]``) in ``[0, 1]``.

        Returns:
            float32 ``[N, C, h, w]`` (``[C, h, w]`` for one image), ``h = w = map_size``.
        """
        if not isinstance(rgb, torch.Tensor):
            raise TypeError(f"rgb: expected a torch.Tensor, got {type(rgb).__name__}")
        single = rgb.ndim == 3
        batch = rgb[None] if single else rgb
        if batch.ndim != 4 or batch.shape[-1] != 3:
            raise ValueError(f"rgb: expected shape [N, H, W, 3] or [H, W, 3], got {list(rgb.shape)}")
        # renders may overshoot [0, 1] slightly; the backbone's preprocess rejects that
        images = batch.float().clamp(0.0, 1.0).permute(0, 3, 1, 2)
        maps = feature_maps(
            self.module, images, size=self.input_size, stage=self.stage, batch_size=batch_size
        )
        return maps[0] if single else maps


# Teacher maps per scene, computed once: the scene (frozen, compared by identity) is the weak
# key, so the maps go away with it; the inner key tells teachers apart.
_CACHE: weakref.WeakKeyDictionary[Scene, dict[tuple, torch.Tensor]] = weakref.WeakKeyDictionary()


def teacher_maps(scene: Scene, teacher: Teacher, *, cache: bool = True) -> torch.Tensor:
    """Teacher maps of every view of ``scene``, ``float32 [V, C, h, w]`` in ``scene.views`` order.

    Cached per (scene, teacher) unless ``cache=False``. Views without ``rgb`` raise.
    """
    if not isinstance(scene, Scene):
        raise TypeError(f"scene: expected a Scene, got {type(scene).__name__}")
    if not isinstance(teacher, Teacher):
        raise TypeError(f"teacher: expected a Teacher, got {type(teacher).__name__}")
    per_scene = _CACHE.setdefault(scene, {}) if cache else {}
    if teacher.key not in per_scene:
        missing = [i for i, v in enumerate(scene.views) if v.rgb is None]
        if missing:
            raise ValueError(f"scene: expected rgb for every view, views {missing} have none")
        per_scene[teacher.key] = teacher(_stack_rgb(scene.views))
    return per_scene[teacher.key]


def _stack_rgb(views: tuple[View, ...]) -> torch.Tensor:
    sizes = {tuple(v.rgb.shape) for v in views}
    if len(sizes) != 1:
        raise ValueError(f"scene: expected views of one size, got sizes {sorted(sizes)}")
    return torch.stack([v.rgb for v in views])

