"""The dataset registry: register, look up, fetch (through the cache) and load datasets."""

from __future__ import annotations

import logging
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from subspace_core.data.arrays import ArraySplit
from subspace_core.data.cache import cached_file, dataset_dir, install_verified, staging_root
from subspace_core.data.errors import Attempt, ChecksumError, DatasetUnavailable, SourceUnavailable
from subspace_core.data.spec import DatasetSpec, FileSpec

__all__ = ["fetch", "get_dataset", "list_datasets", "load_dataset", "register_dataset"]

logger = logging.getLogger(__name__)

_DATASETS: dict[str, DatasetSpec] = {}


def register_dataset(spec: DatasetSpec) -> DatasetSpec:
    """Add ``spec`` to the registry; a name registered twice is a ValueError."""
    if not isinstance(spec, DatasetSpec):
        raise TypeError(f"register_dataset: expected a DatasetSpec, got {type(spec).__name__}")
    if spec.name in _DATASETS:
        raise ValueError(f"register_dataset: dataset {spec.name!r} is already registered")
    _DATASETS[spec.name] = spec
    return spec


def _load_plugins() -> str | None:
    """Import installed plugins (they may register datasets); return an error text if one broke."""
    from subspace_core.plugins import PluginError, load_plugins

    try:
        load_plugins()
    except PluginError as exc:
        logger.warning("%s", exc)
        return str(exc)
    return None


def get_dataset(name: str) -> DatasetSpec:
    """The spec registered as ``name``, loading installed plugins first if needed.

    Unknown names raise KeyError listing the known ones.
    """
    if name in _DATASETS:
        return _DATASETS[name]
    plugin_error = _load_plugins()
    if name in _DATASETS:
        return _DATASETS[name]
    note = f" (a plugin failed to load: {plugin_error})" if plugin_error else ""
    raise KeyError(f"dataset {name!r} is not registered; known datasets: {sorted(_DATASETS)}{note}")


def list_datasets(*, plugins: bool = True) -> list[str]:
    """Sorted names of the registered datasets (after loading installed plugins)."""
    if plugins:
        _load_plugins()
    return sorted(_DATASETS)


def _fetch_missing(
    spec: DatasetSpec, missing: list[FileSpec], target: Path, progress: bool
) -> list[Attempt]:
    """Try ``spec.sources`` in order for the ``missing`` files; return the failed attempts.

    Fetched files are removed from ``missing`` (in place) as they land in the cache.
    """
    attempts: list[Attempt] = []
    staging_root().mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f"{spec.name}-", dir=staging_root()))
    try:
        for index, source in enumerate(spec.sources):
            if not missing:
                break
            workdir = staging / f"source-{index}"
            workdir.mkdir()
            for file in list(missing):
                start = time.perf_counter()
                try:
                    raw = source.fetch(file, workdir, progress=progress)
                    install_verified(raw, file, target / file.name)
                except (SourceUnavailable, ChecksumError) as exc:
                    attempts.append(Attempt(source.describe(), file.name, str(exc)))
                    logger.info("%s/%s: %s failed: %s", spec.name, file.name, source, exc)
                    continue
                missing.remove(file)
                logger.info(
                    "%s/%s: fetched from %s in %.2f s",
                    spec.name,
                    file.name,
                    source.describe(),
                    time.perf_counter() - start,
                )
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return attempts


def fetch(name: str, *, progress: bool = True) -> dict[str, Path]:
    """Make every file of dataset ``name`` present and verified in the cache.

    Returns ``{file name: cached path}`` in the spec's file order. Cached files are
    re-verified (a corrupt one is deleted and fetched again); missing ones are taken
    from the dataset's sources, tried in order. A file with the wrong sha256 is never
    cached (the next source is tried). When some file cannot be had from any source,
    raises :class:`DatasetUnavailable`, whose message lists every source tried and why
    it failed.
    """
    spec = get_dataset(name)
    target = dataset_dir(spec.name)
    missing = [f for f in spec.files if cached_file(spec.name, f) is None]
    if missing:
        attempts = _fetch_missing(spec, missing, target, progress)
        if missing:
            raise DatasetUnavailable(spec.name, [f.name for f in missing], attempts)
    return {f.name: target / f.name for f in spec.files}


def load_dataset(name: str, split: str, *, progress: bool = True) -> ArraySplit:
    """Fetch dataset ``name`` if needed and load ``split`` as an :class:`ArraySplit`.

    See each dataset's description (``get_dataset(name).description``) for the dtype,
    shape and value range of ``x`` and how the splits are made.
    """
    spec = get_dataset(name)
    if split not in spec.splits:
        raise ValueError(
            f"load_dataset: split: expected one of {list(spec.splits)} for {name!r}, got {split!r}"
        )
    if spec.loader is None:
        raise ValueError(
            f"load_dataset: {name!r} holds files, not examples (e.g. model weights): fetch "
            f"them with subspace_core.data.fetch({name!r}); {spec.description}"
        )
    files = fetch(name, progress=progress)
    x, y = spec.loader(files, split)
    if not isinstance(y, np.ndarray) or not np.issubdtype(y.dtype, np.integer):
        raise TypeError(
            f"loader of {name!r}: expected integer numpy labels, got {getattr(y, 'dtype', type(y))}"
        )
    return ArraySplit(
        x=_to_tensor(x), y=_to_tensor(y.astype(np.int64, copy=False)), classes=spec.classes
    )


def _to_tensor(array: np.ndarray) -> torch.Tensor:
    array = np.ascontiguousarray(array)
    if not array.flags.writeable:  # e.g. np.frombuffer: give torch its own copy
        array = array.copy()
    return torch.from_numpy(array)
