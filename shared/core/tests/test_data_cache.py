"""The cache: location, verification, atomic installs, cache hits and corrupt entries."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np
import pytest

from subspace_core.data import (
    ChecksumError,
    DatasetSpec,
    FileSpec,
    Source,
    SourceUnavailable,
    cache_root,
    dataset_dir,
    fetch,
    load_dataset,
    register_dataset,
)
from subspace_core.data import cache as cache_module
from subspace_core.data import registry as registry_module
from subspace_core.data.cache import cached_file, install_verified

GOOD = b"the real bytes\n" * 100
GOOD_FILE = FileSpec("blob.bin", hashlib.sha256(GOOD).hexdigest(), len(GOOD))


class CountingSource(Source):
    """Serves fixed bytes per file name and counts how often it is asked."""

    def __init__(self, contents: dict[str, bytes]):
        self.contents = contents
        self.calls: list[str] = []

    def describe(self) -> str:
        return "counting test source"

    def fetch(self, file, workdir, *, progress=False):
        self.calls.append(file.name)
        if file.name not in self.contents:
            raise SourceUnavailable(f"no {file.name}")
        workdir.mkdir(parents=True, exist_ok=True)
        out = workdir / file.name
        out.write_bytes(self.contents[file.name])
        return out


@pytest.fixture
def home(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("SUBZOO_HOME", str(tmp_path / "home"))
    monkeypatch.setattr(registry_module, "_DATASETS", dict(registry_module._DATASETS))
    return tmp_path / "home"


def _files_under(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


def test_cache_root_env_and_default(tmp_path, monkeypatch):
    monkeypatch.setenv("SUBZOO_HOME", str(tmp_path / "h"))
    assert cache_root() == tmp_path / "h"
    assert dataset_dir("x") == tmp_path / "h" / "data" / "x"
    monkeypatch.setenv("HOME", str(tmp_path / "user"))
    monkeypatch.setenv("SUBZOO_HOME", "")
    assert cache_root() == tmp_path / "user" / ".cache" / "subzoo"
    monkeypatch.delenv("SUBZOO_HOME")
    assert cache_root() == tmp_path / "user" / ".cache" / "subzoo"


def test_install_verified_writes_exact_bytes(tmp_path):
    src = tmp_path / "src"
    src.write_bytes(GOOD)
    dest = tmp_path / "cache" / "blob.bin"
    assert install_verified(src, GOOD_FILE, dest) == dest
    assert dest.read_bytes() == GOOD
    assert _files_under(tmp_path / "cache") == ["blob.bin"]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"x" * len(GOOD), "expected sha256 " + GOOD_FILE.sha256),
        (GOOD[:-1], f"expected size {len(GOOD)} bytes, actual size {len(GOOD) - 1} bytes"),
        (GOOD + b"!", f"actual size >{len(GOOD)} bytes"),
    ],
)
def test_install_verified_refuses_bad_content(tmp_path, content, message):
    src = tmp_path / "src"
    src.write_bytes(content)
    dest = tmp_path / "cache" / "blob.bin"
    with pytest.raises(ChecksumError, match=message):
        install_verified(src, GOOD_FILE, dest)
    assert _files_under(tmp_path / "cache") == []  # neither the file nor a temp file


def test_bad_install_leaves_a_good_cached_file_alone(tmp_path):
    dest = tmp_path / "cache" / "blob.bin"
    dest.parent.mkdir()
    dest.write_bytes(GOOD)
    src = tmp_path / "src"
    src.write_bytes(b"y" * len(GOOD))
    with pytest.raises(ChecksumError):
        install_verified(src, GOOD_FILE, dest)
    assert dest.read_bytes() == GOOD
    assert _files_under(tmp_path / "cache") == ["blob.bin"]


def test_write_failure_midway_leaves_no_partial_file(tmp_path, monkeypatch):
    src = tmp_path / "src"
    src.write_bytes(GOOD)
    dest = tmp_path / "cache" / "blob.bin"

    def disk_full(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(cache_module.os, "fsync", disk_full)
    with pytest.raises(OSError, match="No space left"):
        install_verified(src, GOOD_FILE, dest)
    assert _files_under(tmp_path / "cache") == []


def test_unreadable_source_file_is_a_source_failure(tmp_path):
    with pytest.raises(SourceUnavailable, match="cannot read"):
        install_verified(tmp_path / "missing", GOOD_FILE, tmp_path / "cache" / "blob.bin")


def test_cached_file_is_reverified_and_corrupt_copies_deleted(home):
    path = dataset_dir("toy") / "blob.bin"
    assert cached_file("toy", GOOD_FILE) is None
    path.parent.mkdir(parents=True)
    path.write_bytes(GOOD)
    assert cached_file("toy", GOOD_FILE) == path
    path.write_bytes(b"X" + GOOD[1:])  # same size, different content
    assert cached_file("toy", GOOD_FILE) is None
    assert not path.exists()
    path.write_bytes(GOOD[:10])  # wrong size
    assert cached_file("toy", GOOD_FILE) is None
    assert not path.exists()


def _toy_spec(name: str, *sources: Source, files=(GOOD_FILE,)) -> DatasetSpec:
    return DatasetSpec(
        name=name,
        files=files,
        sources=sources,
        loader=lambda files, split: (
            np.frombuffer(Path(files["blob.bin"]).read_bytes()[:4], dtype=np.uint8).reshape(1, 4),
            np.array([1]),
        ),
        license="MIT",
        description="toy",
        homepage="https://example.invalid",
        classes=("a", "b"),
    )


def test_cache_hit_does_not_refetch_and_corruption_does(home):
    source = CountingSource({"blob.bin": GOOD})
    register_dataset(_toy_spec("toy_hits", source))
    paths = fetch("toy_hits", progress=False)
    assert paths == {"blob.bin": home / "data" / "toy_hits" / "blob.bin"}
    assert paths["blob.bin"].read_bytes() == GOOD
    assert source.calls == ["blob.bin"]
    fetch("toy_hits", progress=False)
    split = load_dataset("toy_hits", "train", progress=False)
    assert source.calls == ["blob.bin"]  # both served from the cache
    assert split.x.tolist() == [list(GOOD[:4])] and split.y.tolist() == [1]
    assert split.classes == ("a", "b")
    paths["blob.bin"].write_bytes(b"tampered")
    fetch("toy_hits", progress=False)
    assert source.calls == ["blob.bin", "blob.bin"]
    assert paths["blob.bin"].read_bytes() == GOOD
    # Staging space is cleaned up after every fetch.
    assert _files_under(home / "tmp") == []


def test_each_file_takes_the_first_source_that_has_it(home):
    other = b"second file"
    other_file = FileSpec("other.bin", hashlib.sha256(other).hexdigest())
    first = CountingSource({"blob.bin": GOOD})
    second = CountingSource({"blob.bin": GOOD, "other.bin": other})
    register_dataset(_toy_spec("toy_two", first, second, files=(GOOD_FILE, other_file)))
    paths = fetch("toy_two", progress=False)
    assert list(paths) == ["blob.bin", "other.bin"]
    assert first.calls == ["blob.bin", "other.bin"]
    assert second.calls == ["other.bin"]
    assert paths["other.bin"].read_bytes() == other


def test_unexpected_errors_are_not_swallowed(home):
    class Broken(CountingSource):
        def fetch(self, file, workdir, *, progress=False):
            raise RuntimeError("bug in a source")

    register_dataset(_toy_spec("toy_bug", Broken({}), CountingSource({"blob.bin": GOOD})))
    with pytest.raises(RuntimeError, match="bug in a source"):
        fetch("toy_bug", progress=False)
    assert not (home / "data" / "toy_bug" / "blob.bin").exists()
    assert _files_under(home / "tmp") == []


def test_loader_returning_float_labels_is_refused(home):
    spec = _toy_spec("toy_float", CountingSource({"blob.bin": GOOD}))
    spec = DatasetSpec(
        **{**spec.__dict__, "loader": lambda files, split: (np.zeros((1, 2)), np.array([0.5]))}
    )
    register_dataset(spec)
    with pytest.raises(TypeError, match="expected integer numpy labels, got float64"):
        load_dataset("toy_float", "train", progress=False)


def test_os_replace_is_used_for_the_final_rename(tmp_path, monkeypatch):
    src = tmp_path / "src"
    src.write_bytes(GOOD)
    seen = []
    real_replace = os.replace

    def spy(a, b):
        seen.append((Path(a).parent, Path(b)))
        real_replace(a, b)

    monkeypatch.setattr(cache_module.os, "replace", spy)
    dest = tmp_path / "cache" / "blob.bin"
    install_verified(src, GOOD_FILE, dest)
    # The temporary file lives next to the destination, so the rename is atomic.
    assert seen == [(dest.parent, dest)]
