"""Exceptions of the dataset registry."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from subspace_core.io import ChecksumError  # one error type for data files and weights

__all__ = ["Attempt", "ChecksumError", "DatasetUnavailable", "SourceUnavailable"]


class SourceUnavailable(Exception):
    """A source could not deliver a file; the message says why (shown to the user)."""


@dataclass(frozen=True)
class Attempt:
    """One failed try: ``source`` (its description) could not deliver ``file``."""

    source: str
    file: str
    reason: str


def _files(attempts: Sequence[Attempt]) -> str:
    names = [a.file for a in attempts]
    return f"{len(names)} files" if len(names) > 3 else ", ".join(names)


class DatasetUnavailable(RuntimeError):
    """Every source of a dataset failed for at least one of its files.

    ``attempts`` lists each (source, file, reason) tried, in order; the message groups
    them by source so that one line per source says what was tried and why it failed.
    """

    def __init__(self, dataset: str, missing: Sequence[str], attempts: Sequence[Attempt]):
        self.dataset = dataset
        self.missing = tuple(missing)
        self.attempts = tuple(attempts)
        super().__init__(self._message())

    def _message(self) -> str:
        lines = [
            f"dataset {self.dataset!r}: no source could provide {len(self.missing)} file(s) "
            f"{list(self.missing)}. Sources tried, in order:"
        ]
        by_source: dict[str, list[Attempt]] = {}
        for attempt in self.attempts:
            by_source.setdefault(attempt.source, []).append(attempt)
        for i, (source, attempts) in enumerate(by_source.items(), start=1):
            reasons = {a.reason for a in attempts}
            if len(reasons) == 1:
                lines.append(f"  {i}. {source}: {reasons.pop()} ({_files(attempts)})")
            else:
                lines.append(f"  {i}. {source}:")
                lines.extend(f"       {a.file}: {a.reason}" for a in attempts)
        return "\n".join(lines)
