"""Terminal output for people: rich consoles and progress bars, always on stderr.

stdout is reserved for results (tables, or one JSON document with ``--json``), so progress
never corrupts machine-readable output.
"""

from __future__ import annotations

from functools import cache

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

__all__ = ["progress_bar", "stderr_console"]


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
