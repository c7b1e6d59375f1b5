"""Terminal output for people: rich consoles, progress bars and spinners, always on stderr.

stdout is reserved for results (tables, or one JSON document with ``--json``), so progress
never corrupts machine-readable output.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from functools import cache

from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    MofNCompleteColumn,
    Progress,
    TimeElapsedColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)

__all__ = ["ByteProgress", "progress_bar", "spinner", "stderr_console"]


@cache
def stderr_console() -> Console:
    return Console(stderr=True)


def progress_bar(*columns, enabled: bool = True) -> Progress:
    """A transient progress bar on stderr; ``enabled=False`` makes it a no-op."""
    columns = columns or (
        "[progress.description]{task.description}",
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
    )
    return Progress(*columns, console=stderr_console(), transient=True, disable=not enabled)


@contextlib.contextmanager
def spinner(message: str, enabled: bool = True) -> Iterator[None]:
    """Show ``message`` with a spinner while the block runs (e.g. ``pip download``)."""
    if not enabled:
        yield
        return
    with stderr_console().status(message):
        yield


class ByteProgress:
    """A byte-count progress bar (size, speed, time left); a no-op when disabled.

    Use as a context manager and call :meth:`advance` with each chunk's size.
    """

    def __init__(self, description: str, total: int | None, enabled: bool = True):
        self._bar = progress_bar(
            "[progress.description]{task.description}",
            BarColumn(),
            DownloadColumn(),
            TransferSpeedColumn(),
            TimeRemainingColumn(),
            enabled=enabled,
        )
        self._task = self._bar.add_task(description, total=total)

    def __enter__(self) -> ByteProgress:
        self._bar.start()
        return self

    def advance(self, n: int) -> None:
        self._bar.advance(self._task, n)

    def __exit__(self, *exc: object) -> None:
        self._bar.stop()
