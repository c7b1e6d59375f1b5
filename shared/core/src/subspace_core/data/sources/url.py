"""A file at an HTTP(S) URL (a dataset's canonical download location)."""

from __future__ import annotations

import http.client
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from subspace_core.console import ByteProgress
from subspace_core.data.sources.base import Source, SourceUnavailable
from subspace_core.data.spec import FileSpec

__all__ = ["Url"]

_CHUNK = 1 << 20
_USER_AGENT = "subzoo-data/0.1 (Python urllib)"


@dataclass(frozen=True)
class Url(Source):
    """Files under the base URL ``base``: file ``f`` is at ``base/f``.

    ``names`` overrides the remote name (or gives a whole ``http(s)://`` URL) of some
    files. Downloads stream to a ``.part`` file in the workdir with a progress bar;
    ``timeout`` (seconds) bounds connecting and each read. A short read (fewer bytes
    than ``Content-Length``) or more bytes than the file's pinned size is a failure.
    After a connection-level failure (DNS, refused, timeout) the other files of the
    same fetch are skipped with that reason instead of waiting again.
    """

    base: str
    names: Mapping[str, str] = field(default_factory=dict, hash=False)
    timeout: float = 30.0

    def __post_init__(self) -> None:
        parts = urlsplit(self.base) if isinstance(self.base, str) else None
        if parts is None or parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError(f"Url.base: expected an http(s):// URL, got {self.base!r}")
        if not isinstance(self.timeout, int | float) or self.timeout <= 0:
            raise ValueError(f"Url.timeout: expected seconds > 0, got {self.timeout!r}")
        object.__setattr__(self, "names", dict(self.names))

    def describe(self) -> str:
        return f"URL {self.base}"

    def url_for(self, file: FileSpec) -> str:
        """The URL ``file`` is downloaded from."""
        name = self.names.get(file.name, file.name)
        if "://" in name:
            return name
        return f"{self.base.rstrip('/')}/{name}"

    def fetch(self, file: FileSpec, workdir: Path, *, progress: bool = False) -> Path:
        workdir.mkdir(parents=True, exist_ok=True)
        # Names starting with "." cannot clash with dataset file names (FileSpec forbids them).
        unreachable = workdir / ".unreachable"
        if unreachable.exists():
            raise SourceUnavailable(
                f"skipped (unreachable earlier in this fetch: {unreachable.read_text()})"
            )
        url = self.url_for(file)
        dest = workdir / file.name
        part = workdir / f".{file.name}.part"
        try:
            self._download(url, file, part, progress)
        except urllib.error.HTTPError as exc:
            part.unlink(missing_ok=True)
            raise SourceUnavailable(f"{url}: HTTP {exc.code} {exc.reason}") from None
        except (urllib.error.URLError, http.client.HTTPException, OSError) as exc:
            part.unlink(missing_ok=True)
            reason = f"{url}: {getattr(exc, 'reason', None) or exc}"
            unreachable.write_text(reason)
            raise SourceUnavailable(reason) from None
        except BaseException:
            part.unlink(missing_ok=True)
            raise
        part.replace(dest)
        return dest

    def _download(self, url: str, file: FileSpec, part: Path, progress: bool) -> None:
        request = urllib.request.Request(url, headers={"User-Agent": _USER_AGENT})
        with urllib.request.urlopen(request, timeout=self.timeout) as response:
            length = response.headers.get("Content-Length")
            total = int(length) if length and length.isdigit() else None
            if total is not None and file.size is not None and total != file.size:
                raise SourceUnavailable(
                    f"{url}: server announces {total} bytes, expected {file.size}"
                )
            received = 0
            with open(part, "wb") as out, ByteProgress(file.name, total, progress) as bar:
                while chunk := response.read(_CHUNK):
                    received += len(chunk)
                    if file.size is not None and received > file.size:
                        raise SourceUnavailable(
                            f"{url}: server sent more than the expected {file.size} bytes"
                        )
                    out.write(chunk)
                    bar.advance(len(chunk))
        if total is not None and received != total:
            raise SourceUnavailable(f"{url}: connection closed after {received} of {total} bytes")
