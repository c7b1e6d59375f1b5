"""Progress display (rich) for downloads and external tools, on stderr."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)

__all__ = ["ByteProgress", "spinner"]


def _console() -> Console:
    return Console(stderr=True)


@contextlib.contextmanager
def spinner(message: str, enabled: bool) -> Iterator[None]:
    """Show ``message`` with a spinner while the block runs (e.g. ``pip download``)."""
    if not enabled:
        yield
        return
    with _console().status(message):
        yield


class ByteProgress:
    """A byte-count progress bar; a no-op when disabled. Use as a context manager."""

    def __init__(self, description: str, total: int | None, enabled: bool):
        self._progress = (
            Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                DownloadColumn(),
                TransferSpeedColumn(),
                TimeRemainingColumn(),
                console=_console(),
                transient=True,
            )
            if enabled
            else None
        )
        self._description = description
        self._total = total
        self._task = None

    def __enter__(self) -> ByteProgress:
        if self._progress is not None:
            self._progress.start()
            self._task = self._progress.add_task(self._description, total=self._total)
        return self

    def advance(self, n: int) -> None:
        if self._progress is not None and self._task is not None:
            self._progress.advance(self._task, n)

    def __exit__(self, *exc: object) -> None:
        if self._progress is not None:
            self._progress.stop()
