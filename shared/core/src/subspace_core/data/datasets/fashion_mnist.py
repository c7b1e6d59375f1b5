"""Fashion-MNIST (Zalando): 70,000 28x28 grey images of clothing in 10 classes."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np

from subspace_core.data.formats import read_idx
from subspace_core.data.registry import register_dataset
from subspace_core.data.sources import DebianPackageFile, LocalDir, SystemPath, Url
from subspace_core.data.spec import DatasetSpec, FileSpec

__all__ = ["FASHION_MNIST"]

_DEBIAN_DIR = "usr/share/datasets/fashion-mnist"

_FILES = (
    FileSpec(
        "train-images-idx3-ubyte.gz",
        "b0564c3eedabfbf835052cff8503ea422014ce006caf5b757f851416ee8300c7",
        26421856,
    ),
    FileSpec(
        "train-labels-idx1-ubyte.gz",
        "0ae29f65d86684f32d1b9c85147786c547b9c6aebcaf235f0400a0cce308b056",
        29491,
    ),
    FileSpec(
        "t10k-images-idx3-ubyte.gz",
        "cc1d090a38ace84dfa1aa66e3ada7c336ef481a96936906477e6dd344da56eaa",
        4422079,
    ),
    FileSpec(
        "t10k-labels-idx1-ubyte.gz",
        "8d3605d196f4be44669e46906da9733c8131fef761fdbfec72c424d5222f1a05",
        5125,
    ),
)

_PREFIX = {"train": "train", "test": "t10k"}


def _load(files: Mapping[str, Path], split: str) -> tuple[np.ndarray, np.ndarray]:
    prefix = _PREFIX[split]
    x = read_idx(files[f"{prefix}-images-idx3-ubyte.gz"])
    y = read_idx(files[f"{prefix}-labels-idx1-ubyte.gz"])
    if x.dtype != np.uint8 or x.ndim != 3 or y.ndim != 1 or len(x) != len(y):
        raise ValueError(f"fashion_mnist/{split}: unexpected IDX shapes {x.shape}, {y.shape}")
    return x, y.astype(np.int64)


FASHION_MNIST = register_dataset(
    DatasetSpec(
        name="fashion_mnist",
        files=_FILES,
        sources=(
            LocalDir("$SUBZOO_DATA_DIR/fashion_mnist"),
            SystemPath(f"/{_DEBIAN_DIR}"),
            DebianPackageFile(
                "dataset-fashion-mnist",
                "0.0~git20200523.55506a9-1",
                {f.name: f"{_DEBIAN_DIR}/{f.name}" for f in _FILES},
            ),
            Url(
                "https://raw.githubusercontent.com/zalando-research/fashion-mnist/master/data/fashion"
            ),
            Url("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com"),
        ),
        loader=_load,
        license="MIT",
        description=(
            "Fashion-MNIST: Zalando article images. x: uint8 [N, 28, 28], grey levels "
            "0..255 (0 = background); y: int64 [N] in 0..9. Official splits: train "
            "60,000, test 10,000 (IDX files as published)."
        ),
        homepage="https://github.com/zalando-research/fashion-mnist",
        classes=(
            "T-shirt/top",
            "Trouser",
            "Pullover",
            "Dress",
            "Coat",
            "Sandal",
            "Shirt",
            "Sneaker",
            "Bag",
            "Ankle boot",
        ),
    )
)
