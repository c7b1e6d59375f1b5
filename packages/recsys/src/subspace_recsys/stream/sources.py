"""Event sources: ordered micro-batches of CTR events, each with a position to acknowledge.

Every source yields :class:`SourceBatch` objects in log order (file order, iterator order,
stream-id order). ``position`` is a JSON value naming the last event of the batch; a
trainer stores it in its checkpoint, passes it to :meth:`EventSource.ack` once the
checkpoint is durable, and to :meth:`EventSource.resume_after` after a restart so that
every event at or before it is dropped instead of applied twice.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from subspace_core.io import atomic_path
from subspace_recsys.data import CTRBatch
from subspace_recsys.stream.events import Event, events_to_batch

__all__ = [
    "EventSource",
    "FileSource",
    "IteratorSource",
    "Position",
    "SourceBatch",
    "load_shard",
    "save_shard",
]

#: A JSON value (int, str, list) naming the last event of a batch; its form is per source.
Position = Any

_SHARD_SUFFIXES = (".npz", ".safetensors")


@dataclass(frozen=True)
class SourceBatch:
    """One micro-batch: ``batch`` (:class:`CTRBatch` of B events; timestamp float64),
    ``event_ids`` (int64 [B], the events' stable ids) and ``position`` (JSON value naming the
    last event; pass it to :meth:`EventSource.ack`)."""

    batch: CTRBatch
    event_ids: torch.Tensor
    position: Position

    def __len__(self) -> int:
        return int(self.event_ids.numel())


class EventSource(ABC):
    """Base of every source: iterate for :class:`SourceBatch` objects in log order.

    ``skipped`` counts events the source read but dropped because they were at or before
    the position given to :meth:`resume_after`.
    """

    batch_size: int
    skipped: int = 0

    @abstractmethod
    def __iter__(self) -> Iterator[SourceBatch]: ...

    @abstractmethod
    def resume_after(self, position: Position | None) -> None:
        """Drop every event at or before ``position`` (a position this source produced) from
        the next iteration on; ``None`` drops nothing."""

    def ack(self, position: Position) -> None:  # noqa: B027 - optional hook, a no-op here
        """Acknowledge every event up to ``position``; sources without redelivery ignore it."""

    def close(self) -> None:  # noqa: B027 - optional hook, a no-op here
        """Release connections or files."""

    def __enter__(self) -> EventSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _check_batch_size(batch_size: int) -> int:
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size: expected a positive int, got {batch_size!r}")
    return batch_size


@dataclass(frozen=True)
class _Rows:
    """Column block of events (the unit sources re-cut into micro-batches)."""

    ids: torch.Tensor
    dense: torch.Tensor | None
    label: torch.Tensor
    timestamp: torch.Tensor
    event_id: torch.Tensor

    @classmethod
    def from_batch(cls, batch: CTRBatch, event_ids: torch.Tensor, where: str) -> _Rows:
        ids = torch.as_tensor(batch.ids)
        if ids.ndim != 2:
            raise ValueError(f"{where}.ids: expected shape [B, F], got {tuple(ids.shape)}")
        if ids.dtype.is_floating_point or ids.dtype == torch.bool:
            raise TypeError(f"{where}.ids: expected an integer tensor, got {ids.dtype}")
        size = ids.shape[0]
        dense = batch.dense
        if dense is not None and (dense.ndim != 2 or dense.shape[0] != size):
            raise ValueError(f"{where}.dense: expected shape [{size}, D], got {tuple(dense.shape)}")
        columns = {"label": batch.label, "timestamp": batch.timestamp, "event_ids": event_ids}
        for name, tensor in columns.items():
            shape = tuple(torch.as_tensor(tensor).shape)
            if shape != (size,):
                raise ValueError(f"{where}.{name}: expected shape [{size}], got {shape}")
        return cls(
            ids=ids.long(),
            dense=None if dense is None else dense.float(),
            label=batch.label.float(),
            timestamp=batch.timestamp.double(),
            event_id=torch.as_tensor(event_ids).long(),
        )

    def __len__(self) -> int:
        return int(self.event_id.numel())

    def slice(self, start: int, stop: int) -> _Rows:
        return _Rows(
            self.ids[start:stop],
            None if self.dense is None else self.dense[start:stop],
            self.label[start:stop],
            self.timestamp[start:stop],
            self.event_id[start:stop],
        )

    @staticmethod
    def cat(parts: list[_Rows]) -> _Rows:
        if len(parts) == 1:
            return parts[0]
        if len({p.ids.shape[1] for p in parts}) > 1 or len({p.dense is None for p in parts}) > 1:
            raise ValueError(
                "events: expected the same number of id fields and dense features in one "
                f"micro-batch, got F in {sorted({p.ids.shape[1] for p in parts})} with "
                f"dense present in {sorted({p.dense is not None for p in parts})}"
            )
        return _Rows(
            torch.cat([p.ids for p in parts]),
            None if parts[0].dense is None else torch.cat([p.dense for p in parts]),
            torch.cat([p.label for p in parts]),
            torch.cat([p.timestamp for p in parts]),
            torch.cat([p.event_id for p in parts]),
        )

    def to_source_batch(self, position: Position) -> SourceBatch:
        batch = CTRBatch(ids=self.ids, dense=self.dense, label=self.label, timestamp=self.timestamp)
        return SourceBatch(batch=batch, event_ids=self.event_id, position=position)


def _rechunk(
    blocks: Iterable[tuple[_Rows, Callable[[int], Position]]],
    batch_size: int,
    check_order: bool,
) -> Iterator[SourceBatch]:
    """Cut blocks into batches of exactly ``batch_size`` events (the last may be short).

    Each block comes with ``position_after(k)``: the position of its k-th event (1-based).
    Batch boundaries depend only on the event sequence, never on how it was split into
    blocks, so two sources over the same events train identically.
    """
    parts: list[_Rows] = []
    count = 0
    position: Position = None
    last_time = -math.inf
    for rows, position_after in blocks:
        if len(rows) == 0:
            continue
        if check_order:
            times = rows.timestamp
            earlier = torch.cat([torch.tensor([last_time], dtype=times.dtype), times[:-1]])
            back = torch.nonzero(times < earlier)
            if back.numel():
                k = int(back[0])
                raise ValueError(
                    f"events: expected non-decreasing timestamps, got {float(times[k])} after "
                    f"{float(earlier[k])} at position {position_after(k + 1)!r} "
                    "(sort the events by time, or pass check_order=False)"
                )
            last_time = float(times[-1])
        start = 0
        while start < len(rows):
            take = min(batch_size - count, len(rows) - start)
            parts.append(rows.slice(start, start + take))
            count += take
            start += take
            position = position_after(start)
            if count == batch_size:
                yield _Rows.cat(parts).to_source_batch(position)
                parts, count = [], 0
    if parts:
        yield _Rows.cat(parts).to_source_batch(position)


class IteratorSource(EventSource):
    """Events from memory: an iterable of :class:`Event`, :class:`CTRBatch` (event ids are
    then the running event index) or ``(CTRBatch, event_ids [B])`` pairs, re-cut into
    micro-batches of ``batch_size`` events.

    ``position`` is the number of events consumed so far (int). A list can be iterated
    again; a generator only once. ``check_order`` raises on a timestamp going backwards.
    """

    def __init__(
        self,
        items: Iterable[Event | CTRBatch | tuple[CTRBatch, torch.Tensor]],
        *,
        batch_size: int = 512,
        check_order: bool = True,
    ) -> None:
        self.items = items
        self.batch_size = _check_batch_size(batch_size)
        self.check_order = check_order
        self._skip = 0
        self.skipped = 0

    def resume_after(self, position: Position | None) -> None:
        if position is None:
            self._skip = 0
            return
        if isinstance(position, bool) or not isinstance(position, int) or position < 0:
            raise ValueError(
                f"position: expected a non-negative int (events consumed), got {position!r}"
            )
        self._skip = position

    def _blocks(self) -> Iterator[tuple[_Rows, Callable[[int], Position]]]:
        consumed = 0  # events read so far, including skipped ones
        pending_events: list[Event] = []

        def emit(rows: _Rows) -> Iterator[tuple[_Rows, Callable[[int], Position]]]:
            nonlocal consumed
            first = consumed
            consumed += len(rows)
            drop = min(max(self._skip - first, 0), len(rows))
            self.skipped += drop
            if drop < len(rows):
                base = first + drop
                yield rows.slice(drop, len(rows)), lambda k: base + k

        def flush_events() -> Iterator[tuple[_Rows, Callable[[int], Position]]]:
            if pending_events:
                batch, event_ids = events_to_batch(pending_events)
                pending_events.clear()
                yield from emit(_Rows.from_batch(batch, event_ids, "events"))

        for index, item in enumerate(self.items):
            if isinstance(item, Event):
                pending_events.append(item)
                if len(pending_events) >= self.batch_size:
                    yield from flush_events()
                continue
            yield from flush_events()
            if isinstance(item, tuple) and len(item) == 2:
                batch, event_ids = item
            elif isinstance(item, CTRBatch):
                batch = item
                event_ids = torch.arange(consumed, consumed + item.ids.shape[0])
            else:
                raise TypeError(
                    f"items[{index}]: expected Event, CTRBatch or (CTRBatch, event_ids), "
                    f"got {type(item).__name__}"
                )
            yield from emit(_Rows.from_batch(batch, event_ids, f"items[{index}]"))
        yield from flush_events()

    def __iter__(self) -> Iterator[SourceBatch]:
        return _rechunk(self._blocks(), self.batch_size, self.check_order)


# ----------------------------------------------------------------------------- files


def save_shard(path: str | Path, batch: CTRBatch, event_ids: torch.Tensor | None = None) -> Path:
    """Write one shard atomically: ``.npz`` (numpy, no pickle) or ``.safetensors`` by suffix.

    Arrays: ``ids`` int64 [N, F], ``label`` float32 [N], ``timestamp`` float64 [N], and when
    present ``dense`` float32 [N, D] and ``event_id`` int64 [N].
    """
    path = Path(path)
    if path.suffix not in _SHARD_SUFFIXES:
        raise ValueError(f"path: expected a name ending in .npz or .safetensors, got {path.name}")
    size = batch.ids.shape[0]
    if event_ids is None:
        event_ids = torch.arange(size)
    rows = _Rows.from_batch(batch, event_ids, "batch")
    arrays = {
        "ids": rows.ids.numpy(),
        "label": rows.label.numpy(),
        "timestamp": rows.timestamp.numpy(),
        "event_id": rows.event_id.numpy(),
    }
    if rows.dense is not None:
        arrays["dense"] = rows.dense.numpy()
    arrays = {k: np.ascontiguousarray(v) for k, v in arrays.items()}
    with atomic_path(path) as tmp:
        if path.suffix == ".npz":
            with open(tmp, "wb") as fh:
                np.savez(fh, **arrays)
        else:
            from safetensors.numpy import save_file

            save_file(arrays, str(tmp))
    return path


def load_shard(path: str | Path, *, shard_index: int = 0) -> tuple[CTRBatch, torch.Tensor]:
    """Read a shard written by :func:`save_shard` (or any file with those arrays) into
    ``(CTRBatch, event_ids int64 [N])``.

    Without an ``event_id`` array the ids are ``(shard_index << 40) | row``: stable as long
    as the shard keeps its place in the sorted shard list.
    """
    path = Path(path)
    if path.suffix == ".npz":
        with np.load(path, allow_pickle=False) as npz:
            arrays = {name: npz[name] for name in npz.files}
    elif path.suffix == ".safetensors":
        from safetensors.numpy import load_file

        arrays = load_file(str(path))
    else:
        raise ValueError(f"path: expected a .npz or .safetensors file, got {path.name}")
    missing = [name for name in ("ids", "label", "timestamp") if name not in arrays]
    if missing:
        raise ValueError(f"{path}: expected arrays ids, label, timestamp; missing {missing}")
    ids = arrays["ids"]
    if ids.dtype.kind not in "iu":
        raise TypeError(f"{path}: ids: expected an integer array, got dtype {ids.dtype}")
    size = ids.shape[0] if ids.ndim else 0
    if "event_id" in arrays:
        event_ids = torch.from_numpy(arrays["event_id"].astype(np.int64))
    else:
        event_ids = (shard_index << 40) | torch.arange(size, dtype=torch.int64)
    dense = arrays.get("dense")
    batch = CTRBatch(
        ids=torch.from_numpy(ids.astype(np.int64)),
        dense=None if dense is None else torch.from_numpy(dense.astype(np.float32)),
        label=torch.from_numpy(arrays["label"].astype(np.float32)),
        timestamp=torch.from_numpy(arrays["timestamp"].astype(np.float64)),
    )
    return batch, event_ids


class FileSource(EventSource):
    """Events from one shard file or a directory of shards (``.npz`` / ``.safetensors``,
    read in sorted name order, one shard in memory at a time), re-cut into micro-batches
    of ``batch_size`` events that may span shards.

    ``position`` is ``[shard_name, events_consumed_in_that_shard]``. :meth:`resume_after`
    seeks there without reading the earlier shards (``skipped`` stays 0).
    """

    def __init__(self, path: str | Path, *, batch_size: int = 512, check_order: bool = True):
        path = Path(path)
        if path.is_dir():
            shards = sorted(p for p in path.iterdir() if p.suffix in _SHARD_SUFFIXES)
            if not shards:
                raise ValueError(
                    f"path: expected .npz or .safetensors shards in {path}, found none"
                )
        elif path.is_file():
            if path.suffix not in _SHARD_SUFFIXES:
                raise ValueError(f"path: expected a .npz or .safetensors file, got {path.name}")
            shards = [path]
        else:
            raise FileNotFoundError(f"path: {path} does not exist")
        self.path = path
        self.shards = shards
        self.batch_size = _check_batch_size(batch_size)
        self.check_order = check_order
        self._start = (0, 0)
        self.skipped = 0

    def resume_after(self, position: Position | None) -> None:
        if position is None:
            self._start = (0, 0)
            return
        names = [p.name for p in self.shards]
        valid = (
            isinstance(position, list | tuple)
            and len(position) == 2
            and isinstance(position[0], str)
            and isinstance(position[1], int)
            and not isinstance(position[1], bool)
            and position[1] >= 0
        )
        if not valid:
            raise ValueError(f"position: expected [shard_name, row], got {position!r}")
        if position[0] not in names:
            raise ValueError(f"position: shard {position[0]!r} is not one of {names}")
        self._start = (names.index(position[0]), position[1])

    def _blocks(self) -> Iterator[tuple[_Rows, Callable[[int], Position]]]:
        first_shard, first_row = self._start
        for index in range(first_shard, len(self.shards)):
            shard = self.shards[index]
            batch, event_ids = load_shard(shard, shard_index=index)
            rows = _Rows.from_batch(batch, event_ids, str(shard))
            offset = first_row if index == first_shard else 0
            if offset > len(rows):
                raise ValueError(
                    f"position: row {offset} is past the end of {shard.name} ({len(rows)} rows)"
                )
            name = shard.name
            yield rows.slice(offset, len(rows)), lambda k, name=name, base=offset: [name, base + k]

    def __iter__(self) -> Iterator[SourceBatch]:
        return _rechunk(self._blocks(), self.batch_size, self.check_order)
