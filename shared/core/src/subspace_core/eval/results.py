"""Evaluation results as CSV rows: one row per (model, protocol, metric) measurement."""

from __future__ import annotations

import csv
import importlib.util
import os
import subprocess
from dataclasses import asdict, dataclass, fields
from datetime import UTC, datetime
from functools import cache
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import torch

__all__ = ["ResultRow", "append_results", "environment_info", "read_results"]


@dataclass(frozen=True)
class ResultRow:
    """One measured metric. The CSV header is exactly these field names, in this order."""

    date: str
    model: str
    protocol: str
    metric: str
    value: float
    num_params: int
    package: str
    package_version: str
    git_sha: str
    device: str
    torch_version: str
    checkpoint_sha256: str


FIELDS = [f.name for f in fields(ResultRow)]


@cache
def _git_sha(where: str) -> str:
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "--short=12", "HEAD"], cwd=where, capture_output=True,
            text=True, timeout=10, check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            # zoo/ holds results and the generated catalog: writing them is not a code change
            ["git", "status", "--porcelain", "--untracked-files=no", "--", ":(top,exclude)zoo"],
            cwd=where,
            capture_output=True, text=True, timeout=10, check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return f"{sha}+dirty" if dirty else sha


def environment_info(area: str, device: torch.device) -> dict[str, str]:
    """Package version, git sha (of the source tree the package was imported from), device."""
    dist = f"subspace-{area}"
    try:
        pkg_version = version(dist)
    except PackageNotFoundError:
        pkg_version = "unknown"
    spec = importlib.util.find_spec(f"subspace_{area}")
    where = str(Path(spec.origin).resolve().parent) if spec and spec.origin else os.getcwd()
    device_name = torch.cuda.get_device_name(device) if device.type == "cuda" else device.type
    return {
        "package": dist,
        "package_version": pkg_version,
        "git_sha": _git_sha(where),
        "device": device_name,
        "torch_version": torch.__version__,
        "date": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }


def append_results(path: str | os.PathLike, rows: list[ResultRow]) -> Path:
    """Append ``rows`` to the CSV at ``path`` (header written when the file is new)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    new = not path.exists() or path.stat().st_size == 0
    if not new:
        with open(path, newline="") as fh:
            header = next(csv.reader(fh), [])
        if header != FIELDS:
            raise ValueError(f"results_file {path}: header expected {FIELDS}, got {header}")
    with open(path, "a", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=FIELDS, lineterminator="\n")
        if new:
            writer.writeheader()
        for row in rows:
            writer.writerow(asdict(row))
        fh.flush()
        os.fsync(fh.fileno())
    return path


def read_results(path: str | os.PathLike) -> list[ResultRow]:
    """All rows of a results CSV, values parsed back to their types."""
    with open(path, newline="") as fh:
        rows = []
        for raw in csv.DictReader(fh):
            raw["value"] = float(raw["value"])
            raw["num_params"] = int(raw["num_params"])
            rows.append(ResultRow(**raw))
    return rows
