"""File plumbing shared by the registries: hashing, atomic writes, verified downloads."""

from __future__ import annotations

import hashlib
import os
import tempfile
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from subspace_core.console import ByteProgress

__all__ = [
    "ChecksumError",
    "DownloadError",
    "atomic_path",
    "download_url",
    "sha256_bytes",
    "sha256_file",
    "subzoo_home",
]

_CHUNK = 1 << 20


class ChecksumError(ValueError):
    """A file's sha256 differs from the pinned one; the file is refused."""

    def __init__(self, what: str, expected: str | int, actual: str | int, *, kind: str = "sha256"):
        self.what, self.expected, self.actual, self.kind = what, expected, actual, kind
        unit = " bytes" if kind == "size" else ""
        super().__init__(
            f"checksum mismatch for {what}: expected {kind} {expected}{unit}, actual {kind} "
            f"{actual}{unit}; the file is corrupted or was tampered with and is refused"
        )


class DownloadError(OSError):
    """A download could not be completed (unreachable host, HTTP error, short read)."""


def subzoo_home() -> Path:
    """Root of the Subspace Zoo cache: ``$SUBZOO_HOME``, default ``~/.cache/subzoo``."""
    env = os.environ.get("SUBZOO_HOME")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "subzoo"


def sha256_bytes(data: bytes) -> str:
    """Hex sha256 of ``data``."""
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: str | os.PathLike) -> str:
    """Hex sha256 of the file at ``path``, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


@contextmanager
def atomic_path(dest: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``dest``; on success it is fsynced and renamed onto ``dest``.

    On any exception the temporary file is removed, so ``dest`` is either the old file or
    the complete new one, never half written.
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        # mkstemp makes 0600 (and writers may recreate the file): give the usual file mode
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def download_url(
    url: str,
    dest: str | os.PathLike,
    *,
    sha256: str | None,
    timeout: float = 30.0,
    progress: bool = True,
) -> Path:
    """Download ``url`` to ``dest`` atomically; verify ``sha256`` before the file appears.

    Raises :class:`DownloadError` when the transfer fails and :class:`ChecksumError` when the
    bytes differ from ``sha256``; in both cases nothing is left at ``dest``.
    """
    dest = Path(dest)
    try:
        response = urllib.request.urlopen(url, timeout=timeout)
    except (urllib.error.URLError, OSError, ValueError) as exc:
        raise DownloadError(f"{url}: {exc}") from exc
    with response, atomic_path(dest) as tmp:
        total = int(response.headers.get("Content-Length") or 0) or None
        digest = hashlib.sha256()
        received = 0
        with open(tmp, "wb") as out, ByteProgress(dest.name, total, progress) as bar:
            try:
                while chunk := response.read(_CHUNK):
                    out.write(chunk)
                    digest.update(chunk)
                    received += len(chunk)
                    bar.advance(len(chunk))
            except OSError as exc:
                raise DownloadError(f"{url}: transfer failed after {received} bytes: {exc}") from exc
        if total is not None and received != total:
            raise DownloadError(f"{url}: short read, expected {total} bytes, got {received}")
        actual = digest.hexdigest()
        if sha256 is not None and actual != sha256:
            raise ChecksumError(url, sha256, actual)
    return dest
