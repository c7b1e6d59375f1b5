"""Dataset specs, ArraySplit, the registry API and the format/split helpers."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest
import torch

import subspace_core.plugins
from subspace_core.data import (
    ArraySplit,
    DatasetSpec,
    FileSpec,
    LocalDir,
    Source,
    get_dataset,
    list_datasets,
    load_dataset,
    register_dataset,
)
from subspace_core.data import registry as registry_module
from subspace_core.data.datasets._split import last_per_class, select_split
from subspace_core.data.formats import read_idx

SHA = "0" * 64


def _loader(files, split):
    return np.zeros((2, 3, 3), dtype=np.uint8), np.array([0, 1])


def _spec(name: str = "toy", **overrides) -> DatasetSpec:
    fields = dict(
        name=name,
        files=(FileSpec("a.bin", SHA),),
        sources=(LocalDir("/nonexistent-subzoo"),),
        loader=_loader,
        license="MIT",
        description="toy",
        homepage="https://example.invalid",
        classes=("zero", "one"),
    )
    fields.update(overrides)
    return DatasetSpec(**fields)


@pytest.fixture
def sandbox(monkeypatch):
    """A private copy of the registry, so that tests can register freely."""
    monkeypatch.setattr(registry_module, "_DATASETS", dict(registry_module._DATASETS))


def test_filespec_validates_its_fields():
    FileSpec("ok.gz", SHA, 3)
    with pytest.raises(ValueError, match=r"FileSpec\.sha256 .*64 lowercase hex.*'abc'"):
        FileSpec("a", "abc")
    with pytest.raises(ValueError, match=r"FileSpec\.sha256"):
        FileSpec("a", "A" * 64)
    with pytest.raises(ValueError, match=r"FileSpec\.name.*'dir/a'"):
        FileSpec("dir/a", SHA)
    with pytest.raises(ValueError, match=r"FileSpec\.name"):
        FileSpec(".hidden", SHA)
    with pytest.raises(ValueError, match=r"FileSpec\.size.*-1"):
        FileSpec("a", SHA, -1)


def test_datasetspec_validates_its_fields():
    assert _spec().splits == ("train", "test")
    with pytest.raises(ValueError, match=r"DatasetSpec\.name.*'Bad Name'"):
        _spec("Bad Name")
    with pytest.raises(ValueError, match=r"DatasetSpec\.sources of 'toy': expected a non-empty"):
        _spec(sources=())
    with pytest.raises(TypeError, match=r"DatasetSpec\.sources.*expected Source items, got str"):
        _spec(sources=("https://example.invalid",))
    with pytest.raises(ValueError, match="duplicate names"):
        _spec(files=(FileSpec("a", SHA), FileSpec("a", SHA)))
    with pytest.raises(TypeError, match=r"DatasetSpec\.loader.*callable or None"):
        _spec(loader="not a function")


class _NeverCalled(Source):
    def describe(self) -> str:
        return "a source the test forbids"

    def fetch(self, file, workdir, *, progress=False):
        raise AssertionError("load_dataset fetched a files-only spec")


def test_files_only_spec_is_refused_by_load_dataset_before_any_fetch(sandbox):
    register_dataset(_spec("toy_weights", loader=None, sources=(_NeverCalled(),)))
    with pytest.raises(ValueError, match=r"'toy_weights' holds files, not examples.*fetch"):
        load_dataset("toy_weights", "train", progress=False)


def test_register_get_and_duplicates(sandbox):
    spec = register_dataset(_spec("toy_registered"))
    assert get_dataset("toy_registered") is spec
    assert "toy_registered" in list_datasets(plugins=False)
    with pytest.raises(ValueError, match="'toy_registered' is already registered"):
        register_dataset(_spec("toy_registered"))
    with pytest.raises(TypeError, match="expected a DatasetSpec"):
        register_dataset("toy")


def test_core_datasets_are_registered_on_import():
    names = list_datasets()
    assert {"fashion_mnist", "mnist_10k", "digits"} <= set(names)
    assert names == sorted(names)
    for name in ("fashion_mnist", "mnist_10k", "digits"):
        spec = get_dataset(name)
        assert len(spec.classes) == 10
        assert all(isinstance(s, Source) for s in spec.sources)


def test_unknown_dataset_lists_known_names():
    with pytest.raises(KeyError) as info:
        get_dataset("no_such_dataset")
    message = str(info.value)
    assert "'no_such_dataset' is not registered" in message
    assert "fashion_mnist" in message and "mnist_10k" in message and "digits" in message


def test_unknown_name_loads_plugins_first(sandbox, monkeypatch):
    calls = []

    def fake_load_plugins(names=None):
        calls.append(names)
        if "from_plugin" not in registry_module._DATASETS:
            register_dataset(_spec("from_plugin"))

    monkeypatch.setattr(subspace_core.plugins, "load_plugins", fake_load_plugins)
    assert get_dataset("from_plugin").name == "from_plugin"
    assert calls == [None]


def test_broken_plugin_is_named_in_the_key_error(sandbox, monkeypatch):
    def broken(names=None):
        raise subspace_core.plugins.PluginError("plugin 'zzz' failed to import: boom")

    monkeypatch.setattr(subspace_core.plugins, "load_plugins", broken)
    with pytest.raises(KeyError, match=r"a plugin failed to load: plugin 'zzz'.*boom"):
        get_dataset("still_missing")


def test_arraysplit_validates_and_has_len():
    s = ArraySplit(torch.zeros(3, 2, 2, dtype=torch.uint8), torch.tensor([0, 1, 1]), ("a", "b"))
    assert len(s) == 3
    with pytest.raises(ValueError, match="x has 3 examples but y has 2"):
        ArraySplit(torch.zeros(3, 2), torch.tensor([0, 1]), ("a", "b"))
    with pytest.raises(TypeError, match=r"expected dtype torch\.int64, got torch\.float32"):
        ArraySplit(torch.zeros(2, 2), torch.zeros(2), ("a", "b"))
    with pytest.raises(ValueError, match=r"labels in \[0, 2\), got range \[0, 2\]"):
        ArraySplit(torch.zeros(2, 2), torch.tensor([0, 2]), ("a", "b"))
    with pytest.raises(TypeError, match="1-D"):
        ArraySplit(torch.zeros(2, 2), torch.zeros(2, 1, dtype=torch.int64), ("a", "b"))


def test_load_dataset_rejects_unknown_split(sandbox):
    register_dataset(_spec("toy_split"))
    with pytest.raises(ValueError, match=r"split: expected one of \['train', 'test'\].*'valid'"):
        load_dataset("toy_split", "valid")


def _write_idx(path: Path, array: np.ndarray, code: int) -> None:
    header = bytes([0, 0, code, array.ndim]) + b"".join(
        int(d).to_bytes(4, "big") for d in array.shape
    )
    payload = header + array.astype(array.dtype.newbyteorder(">")).tobytes()
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "wb") as f:
        f.write(payload)


def test_read_idx_roundtrip_and_errors(tmp_path):
    images = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    _write_idx(tmp_path / "img.gz", images, 0x08)
    np.testing.assert_array_equal(read_idx(tmp_path / "img.gz"), images)
    ints = np.array([-5, 70000, 3], dtype=np.int32)
    _write_idx(tmp_path / "ints", ints, 0x0C)
    out = read_idx(tmp_path / "ints")
    np.testing.assert_array_equal(out, ints)
    assert out.dtype.isnative
    (tmp_path / "bad").write_bytes(b"\x01\x02\x08\x01")
    with pytest.raises(ValueError, match="not an IDX file"):
        read_idx(tmp_path / "bad")
    (tmp_path / "short").write_bytes(bytes([0, 0, 8, 1, 0, 0, 0, 5, 1, 2]))
    with pytest.raises(ValueError, match=r"needs 13 bytes, file has 10"):
        read_idx(tmp_path / "short")


def test_last_per_class_is_stratified_and_ordered():
    y = np.array([0, 1, 0, 1, 0, 1, 2, 2])
    mask = last_per_class(y, 2)
    assert mask.tolist() == [False, False, True, True, True, True, True, True]
    x = np.arange(8)
    xt, yt = select_split(x, y, mask, "train")
    assert xt.tolist() == [0, 1] and yt.tolist() == [0, 1]
    with pytest.raises(ValueError, match="fewer than k=3"):
        last_per_class(y, 3)
