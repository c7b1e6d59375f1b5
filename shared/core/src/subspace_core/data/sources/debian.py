"""A file of a Debian package: ``apt-get download`` + ``dpkg-deb -x``, no root needed."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from subspace_core.data.cache import cache_root
from subspace_core.data.sources.base import (
    TOOL_TIMEOUT_S,
    Source,
    SourceUnavailable,
    ToolMissing,
    check_members,
    member_path,
    run_once,
    run_tool,
    safe_join,
    single,
)
from subspace_core.data.spec import FileSpec

__all__ = ["DebianPackageFile", "private_apt_options"]

_PACKAGE = re.compile(r"[a-z0-9][a-z0-9+.-]+")
_VERSION = re.compile(r"[0-9A-Za-z.+~:-]+")


def private_apt_options() -> list[str]:
    """apt options that keep package lists in ``$SUBZOO_HOME/apt`` (writable without root).

    Used when the system's package lists do not know the package (never updated, or
    a minimal image): ``apt-get update`` with these options refreshes only the
    private copy, from the system's configured sources, and changes nothing else.
    """
    state = cache_root() / "apt"
    lists = state / "lists"
    archives = state / "cache" / "archives"
    (lists / "partial").mkdir(parents=True, exist_ok=True)
    (archives / "partial").mkdir(parents=True, exist_ok=True)
    return [
        "-o",
        f"Dir::State::Lists={lists}",
        "-o",
        f"Dir::Cache={state / 'cache'}",
    ]


@dataclass(frozen=True)
class DebianPackageFile(Source):
    """Files of the Debian package ``package`` at exactly ``version``.

    The ``.deb`` is fetched with ``apt-get download package=version`` (into a scratch
    directory, as any user) and unpacked with ``dpkg-deb -x`` (no root, nothing
    installed). ``members`` maps each file name to its path in the package, e.g.
    ``{"t10k-labels-idx1-ubyte.gz":
    "usr/share/datasets/fashion-mnist/t10k-labels-idx1-ubyte.gz"}``. When the
    system's package lists do not have the package, a private ``apt-get update`` into
    ``$SUBZOO_HOME/apt`` is run and the download retried with those lists
    (``system_lists=False`` skips the system lists and goes there directly).
    """

    package: str
    version: str
    members: Mapping[str, str] = field(hash=False)
    system_lists: bool = True
    timeout: float = TOOL_TIMEOUT_S

    def __post_init__(self) -> None:
        if not isinstance(self.package, str) or not _PACKAGE.fullmatch(self.package):
            raise ValueError(
                f"DebianPackageFile.package: expected a Debian package name, got {self.package!r}"
            )
        if not isinstance(self.version, str) or not _VERSION.fullmatch(self.version):
            raise ValueError(
                f"DebianPackageFile.version: expected an exact Debian version, got {self.version!r}"
            )
        object.__setattr__(self, "members", check_members(self.describe(), self.members))

    def describe(self) -> str:
        return f"Debian package {self.package}={self.version}"

    def _apt_download(self, out: Path, options: list[str], progress: bool) -> None:
        run_tool(
            ["apt-get", *options, "download", f"{self.package}={self.version}"],
            cwd=out,
            message=f"apt-get download {self.package}={self.version}",
            progress=progress,
            timeout=self.timeout,
        )

    def _download(self, out: Path, progress: bool) -> None:
        reasons = []
        if self.system_lists:
            try:
                self._apt_download(out, [], progress)
                return
            except ToolMissing:
                raise
            except SourceUnavailable as exc:
                reasons.append(f"with the system package lists: {exc}")
        try:
            try:
                options = private_apt_options()
            except OSError as exc:
                raise SourceUnavailable(f"cannot create {cache_root() / 'apt'}: {exc}") from exc
            run_tool(
                ["apt-get", *options, "update"],
                cwd=out,
                message="apt-get update (private package lists)",
                progress=progress,
                timeout=self.timeout,
            )
            self._apt_download(out, options, progress)
        except SourceUnavailable as exc:
            reasons.append(f"with private package lists: {exc}")
            raise SourceUnavailable("; ".join(reasons)) from None

    def _unpack(self, out: Path, progress: bool) -> None:
        downloads = run_once(out.parent, "deb", lambda d: self._download(d, progress))
        deb = single(downloads, "*.deb", "Debian package")
        run_tool(
            ["dpkg-deb", "-x", str(deb), str(out)],
            cwd=out,
            message=f"dpkg-deb -x {deb.name}",
            progress=progress,
            timeout=self.timeout,
        )

    def fetch(self, file: FileSpec, workdir: Path, *, progress: bool = False) -> Path:
        inner = member_path(self.describe(), self.members, file)
        root = run_once(workdir, "root", lambda out: self._unpack(out, progress))
        return safe_join(root, inner)
