"""Frozen ImageNet CNNs as image feature extractors.

Two small pretrained towers, written here in plain torch (no torchvision) and loaded from
sha256-checked weight files (:mod:`subspace_core.backbones.weights`):

======================  ==========  ============  ============================================
name                    parameters  pooled dim    stage channels (stage k at stride ``2**k``)
======================  ==========  ============  ============================================
``mobilenet_v2``        3,504,872   1280          16, 24, 32, 96, 1280
``efficientnet_lite0``  4,652,008   1280          16, 24, 40, 112, 1280
======================  ==========  ============  ============================================

Example::

    from subspace_core.backbones import pretrained_features
    from subspace_core.data import load_dataset
    train = load_dataset("fashion_mnist", "train")            # x uint8 [60000, 28, 28]
    feats = pretrained_features("mobilenet_v2", train.x[:2000])   # float32 [2000, 1280]

Images go through :func:`preprocess` (bilinear resize to ``size x size``, grey -> RGB,
ImageNet mean/std) first; the feature functions take raw images (uint8 ``0..255`` or float
``[0, 1]``), batch them, and run the network frozen (eval mode, ``torch.no_grad``). The
networks were trained at 224 px; smaller ``size`` is faster and still gives useful features
(the default 96 suits 28x28 datasets).
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F

from subspace_core.backbones.base import ImageBackbone, check_stage
from subspace_core.backbones.efficientnet_lite0 import EfficientNetLite0
from subspace_core.backbones.mobilenet_v2 import MobileNetV2
from subspace_core.backbones.weights import load_state_dict

__all__ = [
    "BACKBONES",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "ImageBackbone",
    "classify",
    "feature_maps",
    "list_backbones",
    "load_backbone",
    "preprocess",
    "pretrained_features",
]

#: Backbone name -> network class.
BACKBONES: dict[str, type[ImageBackbone]] = {
    "mobilenet_v2": MobileNetV2,
    "efficientnet_lite0": EfficientNetLite0,
}
#: Per-channel (RGB) mean and std of ImageNet, on the [0, 1] pixel scale.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
#: Smallest accepted ``size`` (one pixel at stage 5, stride 32).
MIN_SIZE = 32
_LAYERS = ("pooled", "logits")


def list_backbones() -> list[str]:
    """Names accepted by :func:`load_backbone`, sorted."""
    return sorted(BACKBONES)


def _check_name(name: object) -> str:
    if not isinstance(name, str) or name not in BACKBONES:
        raise ValueError(f"name: expected one of {list_backbones()}, got {name!r}")
    return name


def load_backbone(name: str, *, pretrained: bool = True) -> ImageBackbone:
    """A new ``name`` network (see :data:`BACKBONES`) in eval mode with ``requires_grad``
    off for every parameter.

    ``pretrained=True`` loads the ImageNet weights (fetched and sha256-checked by the data
    registry on first use, then cached) with ``strict=True``; ``pretrained=False`` keeps the
    random initialisation (He-normal convolutions, from torch's global RNG: seed it for a
    reproducible baseline). Each call builds a fresh module: unfreeze or fine-tune it freely.

    The module maps ``float32 [N, 3, H, W]`` (the output of :func:`preprocess`) to logits
    ``[N, 1000]``; ``.pooled(x)`` gives ``[N, 1280]`` and ``.feature_map(x, stage)``
    ``[N, stage_channels[stage], ~H / 2**stage, ~W / 2**stage]``.
    """
    model = BACKBONES[_check_name(name)]()
    if pretrained:
        model.load_state_dict(load_state_dict(name), strict=True)
    model.eval()
    model.requires_grad_(False)
    return model


@functools.cache
def _shared_backbone(name: str, device: str) -> ImageBackbone:
    """The pretrained ``name`` on ``device``, loaded once per process (feature functions).

    Weights in channels-last layout: with channels-last inputs, depthwise convolutions run
    ~1.5x faster on CPU (oneDNN)."""
    return load_backbone(name).to(device=device, memory_format=torch.channels_last)


def _as_tensor(images: object) -> torch.Tensor:
    if isinstance(images, np.ndarray):
        array = np.ascontiguousarray(images)
        if not array.flags.writeable:  # e.g. an image decoded by PIL: torch wants its own copy
            array = array.copy()
        return torch.from_numpy(array)
    if not isinstance(images, torch.Tensor):
        raise TypeError(
            f"images: expected a torch.Tensor or numpy.ndarray, got {type(images).__name__}"
        )
    return images


def _check_images(images: torch.Tensor) -> None:
    if images.dtype != torch.uint8 and not images.is_floating_point():
        raise TypeError(
            f"images: expected dtype uint8 (0..255) or a float dtype ([0, 1]), got {images.dtype}"
        )
    shape = tuple(images.shape)
    if not (images.ndim == 3 or (images.ndim == 4 and shape[1] in (1, 3))):
        raise ValueError(
            f"images: expected shape [N, H, W], [N, 1, H, W] or [N, 3, H, W], got {list(shape)}"
        )
    if images.ndim >= 3 and (shape[-1] == 0 or shape[-2] == 0):
        raise ValueError(f"images: expected non-empty H and W, got shape {list(shape)}")


def _check_size(size: object) -> int:
    if isinstance(size, bool) or not isinstance(size, int) or size < MIN_SIZE:
        raise ValueError(f"size: expected an int >= {MIN_SIZE}, got {size!r}")
    return size


def preprocess(images: torch.Tensor | np.ndarray, *, size: int = 96) -> torch.Tensor:
    """ImageNet network input from raw images.

    Args:
        images: ``uint8`` (``0..255``) or float (``[0, 1]``) images shaped ``[N, H, W]``
            (greyscale), ``[N, 1, H, W]`` (greyscale) or ``[N, 3, H, W]`` (RGB); a torch
            tensor or numpy array.
        size: output side, an int >= 32 (the images are resized to ``size x size``
            without keeping the aspect ratio: crop first if that matters).

    Returns:
        ``float32 [N, 3, size, size]`` on the images' device: bilinear (antialiased) resize,
        greyscale replicated to 3 channels, then ``(x - IMAGENET_MEAN) / IMAGENET_STD``
        per channel.

    Raises:
        TypeError: ``images`` is not a tensor/array of dtype uint8 or float.
        ValueError: wrong shape, float values outside ``[0, 1]`` (e.g. 0..255 floats), or
            a bad ``size``.
    """
    x = _as_tensor(images)
    _check_images(x)
    size = _check_size(size)
    if x.ndim == 3:
        x = x.unsqueeze(1)
    if x.dtype == torch.uint8:
        x = x.to(torch.float32) / 255.0
    else:
        x = x.to(torch.float32)
        if x.numel():
            # detached: the range check must not warn when callers differentiate w.r.t. pixels
            low, high = float(x.detach().min()), float(x.detach().max())
            if not (low >= 0.0 and high <= 1.0):  # also catches NaN
                raise ValueError(
                    f"images: expected float values in [0, 1] (or uint8 0..255), got values "
                    f"in [{low:g}, {high:g}]"
                )
    if x.shape[0] == 0:
        return x.new_zeros((0, 3, size, size))
    if tuple(x.shape[-2:]) != (size, size):
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False,
                          antialias=True)
    x = x.expand(-1, 3, -1, -1)
    mean = x.new_tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = x.new_tensor(IMAGENET_STD).view(1, 3, 1, 1)
    return (x - mean) / std


def _resolve(backbone: str | ImageBackbone, images: torch.Tensor) -> ImageBackbone:
    if isinstance(backbone, ImageBackbone):
        return backbone
    if isinstance(backbone, str):
        return _shared_backbone(_check_name(backbone), str(images.device))
    raise TypeError(
        f"backbone: expected a name in {list_backbones()} or an ImageBackbone "
        f"(from load_backbone), got {type(backbone).__name__}"
    )


def _check_batch_size(batch_size: object) -> int:
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size: expected a positive int, got {batch_size!r}")
    return batch_size


def _network_input(images: torch.Tensor, size: int) -> torch.Tensor:
    return preprocess(images, size=size).contiguous(memory_format=torch.channels_last)


def _run(
    backbone: str | ImageBackbone,
    images: torch.Tensor | np.ndarray,
    size: int,
    batch_size: int,
    fn: Callable[[ImageBackbone, torch.Tensor], torch.Tensor],
) -> torch.Tensor:
    """``fn(model, preprocess(batch))`` over batches of ``images``, frozen, concatenated."""
    x = _as_tensor(images)
    _check_images(x)
    size = _check_size(size)
    batch_size = _check_batch_size(batch_size)
    model = _resolve(backbone, x)
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            if x.shape[0] == 0:  # one blank image tells the output shape
                blank = x.new_zeros((1, *x.shape[1:])).to(device)
                return fn(model, _network_input(blank, size))[:0].contiguous()
            return torch.cat([fn(model, _network_input(chunk.to(device), size))
                              for chunk in x.split(batch_size)]).contiguous()
    finally:
        model.train(was_training)


def pretrained_features(
    backbone: str | ImageBackbone,
    images: torch.Tensor | np.ndarray,
    *,
    size: int = 96,
    batch_size: int = 64,
    layer: str = "pooled",
) -> torch.Tensor:
    """Frozen ImageNet features of ``images``, one vector per image.

    Args:
        backbone: a name from :data:`BACKBONES` (the pretrained network, loaded once per
            process and device) or a module from :func:`load_backbone` (e.g. a
            ``pretrained=False`` baseline; it runs in eval mode, its mode is restored).
        images: raw images as accepted by :func:`preprocess` (``[N, H, W]``,
            ``[N, 1, H, W]`` or ``[N, 3, H, W]``; uint8 or float in ``[0, 1]``).
        size: side of the network input (see :func:`preprocess`).
        batch_size: images per forward pass (on CPU, 32-64 is 2-3x faster than 256 at
            ``size`` 64-96: the activations stay in cache).
        layer: ``"pooled"`` (global average of the last feature map, after the head
            convolution: ``D = 1280`` for both networks) or ``"logits"`` (``D = 1000``).

    Returns:
        ``float32 [N, D]`` on the device of the network (the images' device for a name).
    """
    if layer not in _LAYERS:
        raise ValueError(f"layer: expected one of {list(_LAYERS)}, got {layer!r}")
    if layer == "pooled":
        return _run(backbone, images, size, batch_size, lambda m, x: m.pooled(x))
    return _run(backbone, images, size, batch_size, lambda m, x: m(x))


def feature_maps(
    backbone: str | ImageBackbone,
    images: torch.Tensor | np.ndarray,
    *,
    size: int = 96,
    stage: int = 3,
    batch_size: int = 64,
) -> torch.Tensor:
    """Frozen spatial feature maps of an intermediate stage (a dense teacher).

    Stage ``k`` (1..5) ends at output stride ``2**k``; channels per stage:
    ``mobilenet_v2`` 16, 24, 32, 96, 1280 and ``efficientnet_lite0`` 16, 24, 40, 112, 1280
    (stage 5 = the last map, whose global average is :func:`pretrained_features`).

    Args:
        backbone, images, size, batch_size: as in :func:`pretrained_features`.
        stage: which stage's output to return (default 3: stride 8, a 12x12 map at
            ``size=96``).

    Returns:
        ``float32 [N, C, h, w]`` with ``C = backbone.stage_channels[stage]`` and
        ``h = w = ceil(size / 2**stage)``.
    """
    stage = check_stage(stage)
    return _run(backbone, images, size, batch_size, lambda m, x: m.feature_map(x, stage))


def classify(
    backbone: str | ImageBackbone,
    images: torch.Tensor | np.ndarray,
    *,
    size: int = 224,
    batch_size: int = 64,
) -> torch.Tensor:
    """ImageNet-1k logits ``float32 [N, 1000]`` of ``images`` (argmax = class index in the
    standard ILSVRC-2012 order, e.g. 281 tabby cat, 652 military uniform).

    Same arguments as :func:`pretrained_features`; ``size`` defaults to the networks'
    training resolution, 224 (resize only: center-crop beforehand to mimic the usual
    resize-256 / crop-224 evaluation).
    """
    return pretrained_features(backbone, images, size=size, batch_size=batch_size,
                               layer="logits")

