"""Frozen descriptions of datasets: their files (with sha256) and ordered sources."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from subspace_core.data.sources import Source

__all__ = ["DatasetSpec", "FileSpec", "Loader"]

_SHA256 = re.compile(r"[0-9a-f]{64}")
_DATASET_NAME = re.compile(r"[a-z0-9][a-z0-9_.-]*")

#: ``loader(files, split) -> (x, y)``: ``files`` maps each FileSpec name to its verified
#: cached path; ``x`` is a numpy array with one row per example, ``y`` integer labels.
Loader = Callable[[Mapping[str, Path], str], tuple[np.ndarray, np.ndarray]]


def _check_file_name(name: object) -> None:
    if not isinstance(name, str) or not name or name.startswith(".") or "/" in name or "\\" in name:
        raise ValueError(
            f"FileSpec.name: expected a plain file name (no directories, not starting "
            f"with '.'), got {name!r}"
        )


@dataclass(frozen=True)
class FileSpec:
    """One file of a dataset, as stored in the cache.

    ``name`` is the file name inside ``$SUBZOO_HOME/data/<dataset>/``, ``sha256`` its
    lowercase hex digest (mandatory: nothing unverified is ever cached), ``size`` its
    length in bytes when known (checked too, and used to stop over-long downloads).
    """

    name: str
    sha256: str
    size: int | None = None

    def __post_init__(self) -> None:
        _check_file_name(self.name)
        if not isinstance(self.sha256, str) or not _SHA256.fullmatch(self.sha256):
            raise ValueError(
                f"FileSpec.sha256 of {self.name!r}: expected 64 lowercase hex digits, "
                f"got {self.sha256!r}"
            )
        if self.size is not None and (
            isinstance(self.size, bool) or not isinstance(self.size, int) or self.size < 0
        ):
            raise ValueError(
                f"FileSpec.size of {self.name!r}: expected a non-negative int or None, "
                f"got {self.size!r}"
            )


@dataclass(frozen=True)
class DatasetSpec:
    """A registered dataset.

    ``files`` are the raw files the loader needs; ``sources`` are tried in order for
    every file that is not cached yet (the first one that delivers a file with the
    right sha256 wins). ``loader(files, split)`` returns ``(x, y)`` numpy arrays that
    :func:`subspace_core.data.load_dataset` wraps into an :class:`ArraySplit` with
    ``classes``. ``splits`` names the splits the loader accepts.

    ``loader=None`` registers files that are not examples (third-party model weights,
    tokenizers): they are fetched and verified like any dataset
    (:func:`subspace_core.data.fetch`), and ``load_dataset`` refuses them with a clear error.
    """

    name: str
    files: tuple[FileSpec, ...]
    sources: tuple[Source, ...]
    loader: Loader | None
    license: str
    description: str
    homepage: str
    classes: tuple[str, ...]
    splits: tuple[str, ...] = field(default=("train", "test"))

    def __post_init__(self) -> None:
        from subspace_core.data.sources import Source

        if not isinstance(self.name, str) or not _DATASET_NAME.fullmatch(self.name):
            raise ValueError(
                f"DatasetSpec.name: expected lowercase letters, digits, '_', '.', '-' "
                f"(starting with a letter or digit), got {self.name!r}"
            )
        for attr in ("files", "sources", "classes", "splits"):
            value = getattr(self, attr)
            if not isinstance(value, tuple) or not value:
                raise ValueError(
                    f"DatasetSpec.{attr} of {self.name!r}: expected a non-empty tuple, "
                    f"got {value!r}"
                )
        for f in self.files:
            if not isinstance(f, FileSpec):
                raise TypeError(
                    f"DatasetSpec.files of {self.name!r}: expected FileSpec items, "
                    f"got {type(f).__name__}"
                )
        names = [f.name for f in self.files]
        if len(set(names)) != len(names):
            raise ValueError(f"DatasetSpec.files of {self.name!r}: duplicate names in {names}")
        for s in self.sources:
            if not isinstance(s, Source):
                raise TypeError(
                    f"DatasetSpec.sources of {self.name!r}: expected Source items, "
                    f"got {type(s).__name__}"
                )
        if self.loader is not None and not callable(self.loader):
            raise TypeError(
                f"DatasetSpec.loader of {self.name!r}: expected a callable or None, "
                f"got {type(self.loader).__name__}"
            )
        if not all(isinstance(c, str) for c in self.classes):
            raise TypeError(f"DatasetSpec.classes of {self.name!r}: expected strings")
