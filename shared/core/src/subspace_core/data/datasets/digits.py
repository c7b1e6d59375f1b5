"""scikit-learn's bundled 8x8 handwritten digits (UCI optdigits test set), 1,797 images."""

from __future__ import annotations

import gzip
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from subspace_core.data.datasets._split import last_per_class, select_split
from subspace_core.data.registry import register_dataset
from subspace_core.data.sources import InstalledPackageFile, LocalDir, PyPIWheelMember, Url
from subspace_core.data.spec import DatasetSpec, FileSpec

__all__ = ["DIGITS", "SKLEARN_VERSION", "TEST_PER_CLASS"]

#: The scikit-learn release whose wheel is the PyPI source (any recent one has this file).
SKLEARN_VERSION = "1.5.2"
#: The test split is the last TEST_PER_CLASS images of every class (360 in all, 20 %).
TEST_PER_CLASS = 36

_FILE = FileSpec(
    "digits.csv.gz", "09f66e6debdee2cd2b5ae59e0d6abbb73fc2b0e0185d2e1957e9ebb51e23aa22", 57523
)
_IN_PACKAGE = "datasets/data/digits.csv.gz"
# Pick one fixed wheel whatever this interpreter/OS is (the data file is the same in all).
_WHEEL_TAGS = (
    "--platform",
    "manylinux2014_x86_64",
    "--python-version",
    "3.11",
    "--implementation",
    "cp",
    "--abi",
    "cp311",
)


def _load(files: Mapping[str, Path], split: str) -> tuple[np.ndarray, np.ndarray]:
    path = files[_FILE.name]
    with gzip.open(path, "rt", encoding="ascii") as f:
        table = np.loadtxt(f, delimiter=",", dtype=np.float64)
    if table.ndim != 2 or table.shape[1] != 65:
        raise ValueError(f"{path}: expected 65 columns (64 pixels + label), got {table.shape}")
    pixels, labels = table[:, :64], table[:, 64]
    if pixels.min() < 0 or pixels.max() > 16 or np.any(pixels != np.rint(pixels)):
        raise ValueError(f"{path}: expected integer pixel values in 0..16")
    x = pixels.astype(np.uint8).reshape(-1, 8, 8)
    y = labels.astype(np.int64)
    return select_split(x, y, last_per_class(y, TEST_PER_CLASS), split)


DIGITS = register_dataset(
    DatasetSpec(
        name="digits",
        files=(_FILE,),
        sources=(
            LocalDir("$SUBZOO_DATA_DIR/digits"),
            InstalledPackageFile("sklearn", {_FILE.name: _IN_PACKAGE}),
            PyPIWheelMember(
                "scikit-learn",
                SKLEARN_VERSION,
                {_FILE.name: f"sklearn/{_IN_PACKAGE}"},
                extra_pip_args=_WHEEL_TAGS,
            ),
            Url(
                "https://raw.githubusercontent.com/scikit-learn/scikit-learn/"
                f"{SKLEARN_VERSION}/sklearn/datasets/data"
            ),
        ),
        loader=_load,
        license="BSD-3-Clause (scikit-learn); data: UCI optdigits, CC BY 4.0",
        description=(
            "scikit-learn's 8x8 digits (load_digits): 1,797 images. x: uint8 [N, 8, 8], "
            "values 0..16 (counts of set pixels in 4x4 blocks, NOT 0..255); y: int64 "
            "[N] in 0..9. Deterministic stratified split: test = the last 36 images of "
            "each class in file order (360), train = the rest (1,437), file order kept."
        ),
        homepage="https://archive.ics.uci.edu/dataset/80/optical+recognition+of+handwritten+digits",
        classes=tuple(str(d) for d in range(10)),
    )
)
