"""Sources that read files already on this machine: a directory, an installed package."""

from __future__ import annotations

import importlib.util
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from subspace_core.data.sources.base import (
    Source,
    SourceUnavailable,
    check_members,
    member_path,
    safe_join,
)
from subspace_core.data.spec import FileSpec

__all__ = ["InstalledPackageFile", "LocalDir", "SystemPath"]

_ENV_PREFIX = re.compile(r"\$(\w+)|\$\{(\w+)\}")


def _file_in(directory: Path, file: FileSpec) -> Path:
    if not directory.is_dir():
        raise SourceUnavailable(f"directory {directory} does not exist")
    path = directory / file.name
    if not path.is_file():
        raise SourceUnavailable(f"{path} does not exist")
    if not os.access(path, os.R_OK):
        raise SourceUnavailable(f"{path} is not readable")
    return path


@dataclass(frozen=True)
class LocalDir(Source):
    """A user directory holding the files under their own names.

    ``path`` may start with an environment variable, e.g.
    ``LocalDir("$SUBZOO_DATA_DIR/fashion_mnist")``; it is expanded at fetch time and
    the source is skipped (with that reason) while the variable is unset. ``~`` is
    expanded too.
    """

    path: str

    def __post_init__(self) -> None:
        if not isinstance(self.path, str) or not self.path:
            raise ValueError(f"LocalDir.path: expected a non-empty string, got {self.path!r}")

    def describe(self) -> str:
        return f"local dir {self.path}"

    def directory(self) -> Path:
        """The directory now, or SourceUnavailable when its variable is unset."""
        match = _ENV_PREFIX.match(self.path)
        rest = self.path
        if match:
            var = match.group(1) or match.group(2)
            value = os.environ.get(var)
            if not value:
                raise SourceUnavailable(f"${var} is not set")
            rest = value + self.path[match.end() :]
        return Path(rest).expanduser()

    def fetch(self, file: FileSpec, workdir: Path, *, progress: bool = False) -> Path:
        return _file_in(self.directory(), file)


@dataclass(frozen=True)
class SystemPath(Source):
    """A system directory where an OS package installs the files under their own names.

    E.g. ``SystemPath("/usr/share/datasets/fashion-mnist")`` (Debian
    ``dataset-fashion-mnist``).
    """

    path: str

    def describe(self) -> str:
        return f"system path {self.path}"

    def fetch(self, file: FileSpec, workdir: Path, *, progress: bool = False) -> Path:
        return _file_in(Path(self.path), file)


@dataclass(frozen=True)
class InstalledPackageFile(Source):
    """A data file shipped inside an installed Python package, read without importing it.

    ``package`` is a top-level import name (e.g. ``"sklearn"``), ``members`` maps each
    file name to its path relative to the package directory, e.g.
    ``{"digits.csv.gz": "datasets/data/digits.csv.gz"}``. The package is located with
    ``importlib.util.find_spec`` (which does not execute it).
    """

    package: str
    members: Mapping[str, str] = field(hash=False)

    def __post_init__(self) -> None:
        if not isinstance(self.package, str) or not self.package.isidentifier():
            raise ValueError(
                f"InstalledPackageFile.package: expected a top-level import name, "
                f"got {self.package!r}"
            )
        object.__setattr__(self, "members", check_members(self.describe(), self.members))

    def describe(self) -> str:
        return f"installed Python package {self.package}"

    def fetch(self, file: FileSpec, workdir: Path, *, progress: bool = False) -> Path:
        relative = member_path(self.describe(), self.members, file)
        try:
            spec = importlib.util.find_spec(self.package)
        except (ImportError, ValueError) as exc:
            raise SourceUnavailable(f"cannot locate package {self.package!r}: {exc}") from exc
        if spec is None:
            raise SourceUnavailable(f"package {self.package!r} is not installed")
        locations = list(spec.submodule_search_locations or [])
        if not locations:
            raise SourceUnavailable(f"{self.package!r} is a module, not a package directory")
        reasons = []
        for location in locations:
            try:
                return safe_join(Path(location), relative)
            except SourceUnavailable as exc:
                reasons.append(f"{location}: {exc}")
        raise SourceUnavailable(f"no {relative} in package {self.package!r} ({'; '.join(reasons)})")
