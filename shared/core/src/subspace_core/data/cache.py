"""The on-disk cache: ``$SUBZOO_HOME/data/<dataset>/<file>``, verified, written atomically.

A file enters the cache only through :func:`install_verified`, which copies it into a
temporary file next to its destination while hashing it, fsyncs, checks size and
sha256 and only then renames it into place (``os.replace``), so the cache never holds a
partial or unverified file. :func:`cached_file` re-verifies a cached file (size, then
sha256) on every lookup and deletes it when it no longer matches.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import tempfile
from pathlib import Path
from typing import BinaryIO

from subspace_core.data.errors import ChecksumError, SourceUnavailable
from subspace_core.data.spec import FileSpec
from subspace_core.io import sha256_file, subzoo_home

__all__ = [
    "cache_root",
    "cached_file",
    "dataset_dir",
    "install_verified",
    "sha256_file",
    "staging_root",
]

logger = logging.getLogger(__name__)

_CHUNK = 1 << 20


def cache_root() -> Path:
    """``$SUBZOO_HOME`` if set and non-empty, else ``~/.cache/subzoo``."""
    return subzoo_home()


def dataset_dir(dataset: str) -> Path:
    """Directory holding the cached files of ``dataset``."""
    return cache_root() / "data" / dataset


def staging_root() -> Path:
    """Scratch space for sources (archives, partial downloads); same filesystem as the cache."""
    return cache_root() / "tmp"



def cached_file(dataset: str, file: FileSpec) -> Path | None:
    """The verified cached path of ``file``, or None when absent.

    A cached file with the wrong size or sha256 (corrupted, tampered with) is deleted
    with a warning, and None is returned so that it is fetched again.
    """
    path = dataset_dir(dataset) / file.name
    if not path.is_file():
        return None
    size = path.stat().st_size
    problem = None
    if file.size is not None and size != file.size:
        problem = f"size {size} != expected {file.size}"
    else:
        digest = sha256_file(path)
        if digest != file.sha256:
            problem = f"sha256 {digest} != expected {file.sha256}"
    if problem is None:
        return path
    logger.warning("cached %s is corrupt (%s); deleting it and fetching again", path, problem)
    path.unlink(missing_ok=True)
    return None


def _fsync_dir(directory: Path) -> None:
    # Makes the rename durable; not supported everywhere (e.g. Windows), hence best effort.
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _copy_hashing(fin: BinaryIO, fout: BinaryIO, src: Path, file: FileSpec) -> tuple[str, int]:
    """Copy ``fin`` to ``fout``; return (sha256, bytes). Stops early past ``file.size``."""
    h = hashlib.sha256()
    n = 0
    while True:
        try:
            chunk = fin.read(_CHUNK)
        except OSError as exc:
            raise SourceUnavailable(f"cannot read {src}: {exc}") from exc
        if not chunk:
            return h.hexdigest(), n
        h.update(chunk)
        n += len(chunk)
        if file.size is not None and n > file.size:
            raise ChecksumError(file.name, file.size, f">{file.size}", kind="size")
        fout.write(chunk)


def install_verified(src: Path, file: FileSpec, dest: Path) -> Path:
    """Copy ``src`` to ``dest`` atomically, if and only if it matches ``file``.

    Raises :class:`ChecksumError` (nothing written) when the size or sha256 differs,
    :class:`SourceUnavailable` when ``src`` cannot be read. Errors while writing the
    cache (disk full, ...) propagate unchanged; ``dest`` is then left as it was.
    """
    dest.parent.mkdir(parents=True, exist_ok=True)
    try:
        fin = open(src, "rb")  # noqa: SIM115  (closed by the with below)
    except OSError as exc:
        raise SourceUnavailable(f"cannot read {src}: {exc}") from exc
    with fin:
        fd, tmp_name = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
        tmp = Path(tmp_name)
        try:
            with os.fdopen(fd, "wb") as fout:
                digest, n = _copy_hashing(fin, fout, src, file)
                fout.flush()
                os.fsync(fout.fileno())
            if file.size is not None and n != file.size:
                raise ChecksumError(file.name, file.size, n, kind="size")
            if digest != file.sha256:
                raise ChecksumError(file.name, file.sha256, digest)
            os.replace(tmp, dest)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
    _fsync_dir(dest.parent)
    return dest
