"""One CTR event (an impression with its click label) and its compact binary record.

A record is the little-endian packing below (format version 1), so a whole micro-batch of
records with the same field counts decodes with one ``numpy.frombuffer``::

    offset  bytes  field
    0       1      format version (1)
    1       8      event id          int64
    9       8      timestamp         float64 seconds
    17      1      label             uint8 (0 or 1)
    18      2      F (id fields)     uint16
    20      2      D (dense floats)  uint16 (0: no dense features)
    22      8 F    ids               int64 [F] global ids
    22+8F   4 D    dense             float32 [D]
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch

from subspace_recsys.data import CTRBatch

__all__ = [
    "RECORD_VERSION",
    "Event",
    "batch_to_events",
    "decode_event",
    "decode_records",
    "encode_event",
    "encode_records",
    "events_to_batch",
]

RECORD_VERSION = 1
_HEADER = np.dtype(
    [("version", "u1"), ("event_id", "<i8"), ("timestamp", "<f8"), ("label", "u1"),
     ("num_fields", "<u2"), ("num_dense", "<u2")]
)  # fmt: skip
_MAX_COUNT = np.iinfo(np.uint16).max


@lru_cache(maxsize=64)
def _record_dtype(num_fields: int, num_dense: int) -> np.dtype:
    return np.dtype(
        [*((name, _HEADER.fields[name][0]) for name in _HEADER.names),
         ("ids", "<i8", (num_fields,)), ("dense", "<f4", (num_dense,))]
    )  # fmt: skip


@dataclass(frozen=True, eq=False)
class Event:
    """One impression: ``event_id`` (int64, stable across redeliveries: the producer's id,
    not the Redis stream id), ``timestamp`` (float seconds), ``label`` (0/1 click),
    ``ids`` (int64 [F] global feature ids, non-negative) and optional ``dense`` (float32 [D]).

    Arrays are stored as read-only numpy copies. Equality compares every field exactly.
    """

    event_id: int
    timestamp: float
    label: int
    ids: np.ndarray
    dense: np.ndarray | None = None

    def __post_init__(self) -> None:
        if isinstance(self.event_id, bool) or not isinstance(self.event_id, int | np.integer):
            raise TypeError(f"event_id: expected an int, got {type(self.event_id).__name__}")
        if self.label not in (0, 1):
            raise ValueError(f"label: expected 0 or 1, got {self.label!r}")
        ids = _as_array(self.ids, "ids", np.int64)
        if ids.ndim != 1 or ids.size > _MAX_COUNT:
            raise ValueError(f"ids: expected shape [F] with F <= {_MAX_COUNT}, got {ids.shape}")
        if ids.size and int(ids.min()) < 0:
            raise ValueError(f"ids: expected non-negative global ids, got {int(ids.min())}")
        object.__setattr__(self, "event_id", int(self.event_id))
        object.__setattr__(self, "timestamp", float(self.timestamp))
        object.__setattr__(self, "label", int(self.label))
        object.__setattr__(self, "ids", ids)
        if self.dense is not None:
            dense = _as_array(self.dense, "dense", np.float32)
            if dense.ndim != 1 or dense.size > _MAX_COUNT:
                raise ValueError(
                    f"dense: expected shape [D] with D <= {_MAX_COUNT}, got {dense.shape}"
                )
            object.__setattr__(self, "dense", dense)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Event):
            return NotImplemented
        same_dense = (self.dense is None and other.dense is None) or (
            self.dense is not None
            and other.dense is not None
            and np.array_equal(self.dense, other.dense)
        )
        return (
            self.event_id == other.event_id
            and self.timestamp == other.timestamp
            and self.label == other.label
            and np.array_equal(self.ids, other.ids)
            and same_dense
        )

    __hash__ = None  # type: ignore[assignment]  # mutable-array payload: not hashable


def _as_array(value: object, name: str, dtype: type) -> np.ndarray:
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu().numpy()
    array = np.asarray(value)
    kind = np.dtype(dtype).kind
    if kind == "i" and array.dtype.kind not in "iu":
        raise TypeError(f"{name}: expected an integer array, got dtype {array.dtype}")
    if kind == "f" and array.dtype.kind not in "fiu":
        raise TypeError(f"{name}: expected a float array, got dtype {array.dtype}")
    array = np.array(array, dtype=dtype, copy=True)
    array.flags.writeable = False
    return array


def encode_event(event: Event) -> bytes:
    """The binary record of one event (see the module docstring for the layout)."""
    return encode_records(*events_to_batch([event]))[0]


def decode_event(record: bytes) -> Event:
    """Inverse of :func:`encode_event`; raises ``ValueError`` on a malformed record."""
    return batch_to_events(*decode_records([record]))[0]


def encode_records(batch: CTRBatch, event_ids: torch.Tensor) -> list[bytes]:
    """One record per row of ``batch`` (ids [B, F], dense [B, D] or None, label [B],
    timestamp [B]) with ``event_ids`` (int64 [B]); vectorised over the batch."""
    ids = torch.as_tensor(batch.ids)
    if ids.ndim != 2:
        raise ValueError(f"batch.ids: expected shape [B, F], got {tuple(ids.shape)}")
    size, num_fields = ids.shape
    dense = batch.dense
    num_dense = 0 if dense is None else int(dense.shape[-1])
    if dense is not None and tuple(dense.shape) != (size, num_dense):
        raise ValueError(f"batch.dense: expected shape [{size}, D], got {tuple(dense.shape)}")
    event_ids = torch.as_tensor(event_ids)
    for name, tensor in (
        ("event_ids", event_ids),
        ("batch.label", batch.label),
        ("batch.timestamp", batch.timestamp),
    ):
        if tuple(tensor.shape) != (size,):
            raise ValueError(f"{name}: expected shape [{size}], got {tuple(tensor.shape)}")
    if num_fields > _MAX_COUNT or num_dense > _MAX_COUNT:
        raise ValueError(f"batch: expected F, D <= {_MAX_COUNT}, got F={num_fields} D={num_dense}")
    label = batch.label.detach().cpu().numpy()
    if not np.isin(label, (0, 1)).all():
        raise ValueError("batch.label: expected only 0/1 values")
    ids_np = ids.detach().cpu().numpy().astype(np.int64, copy=False)
    if ids_np.size and int(ids_np.min()) < 0:
        raise ValueError(f"batch.ids: expected non-negative global ids, got {int(ids_np.min())}")
    records = np.zeros(size, dtype=_record_dtype(num_fields, num_dense))
    records["version"] = RECORD_VERSION
    records["event_id"] = event_ids.detach().cpu().numpy()
    records["timestamp"] = batch.timestamp.detach().cpu().double().numpy()
    records["label"] = label
    records["num_fields"] = num_fields
    records["num_dense"] = num_dense
    records["ids"] = ids_np
    if dense is not None:
        records["dense"] = dense.detach().cpu().float().numpy()
    raw = records.tobytes()
    step = records.dtype.itemsize
    return [raw[i : i + step] for i in range(0, len(raw), step)]


def decode_records(records: Sequence[bytes]) -> tuple[CTRBatch, torch.Tensor]:
    """Decode records of equal field counts into ``(CTRBatch, event_ids int64 [B])``.

    ``timestamp`` comes back float64 (epoch seconds need more than float32's 24 bits).
    Raises ``ValueError`` for an empty list, an unknown format version, truncated records,
    or records with different F or D in one batch.
    """
    if len(records) == 0:
        raise ValueError("records: expected at least one record, got 0")
    first = bytes(records[0])
    if len(first) < _HEADER.itemsize:
        raise ValueError(
            f"records[0]: expected at least {_HEADER.itemsize} bytes, got {len(first)}"
        )
    head = np.frombuffer(first, dtype=_HEADER, count=1)[0]
    if head["version"] != RECORD_VERSION:
        raise ValueError(
            f"records[0]: expected format version {RECORD_VERSION}, got {int(head['version'])}"
        )
    dtype = _record_dtype(int(head["num_fields"]), int(head["num_dense"]))
    for index, record in enumerate(records):
        if len(record) != dtype.itemsize:
            raise ValueError(
                f"records[{index}]: expected {dtype.itemsize} bytes (F={head['num_fields']}, "
                f"D={head['num_dense']} like records[0]), got {len(record)}"
            )
    array = np.frombuffer(b"".join(records), dtype=dtype)
    # Equal lengths can still hide a different (F, D) split or a foreign version.
    mismatch = (
        (array["version"] != RECORD_VERSION)
        | (array["num_fields"] != head["num_fields"])
        | (array["num_dense"] != head["num_dense"])
        | (array["label"] > 1)
    )
    if mismatch.any():
        bad = int(np.flatnonzero(mismatch)[0])
        raise ValueError(
            f"records[{bad}]: expected version {RECORD_VERSION}, F={head['num_fields']}, "
            f"D={head['num_dense']}, label 0/1, got version {array['version'][bad]}, "
            f"F={array['num_fields'][bad]}, D={array['num_dense'][bad]}, "
            f"label {array['label'][bad]}"
        )
    # Fresh native-order C arrays: the field views are strided and read-only.
    ids = torch.from_numpy(array["ids"].astype(np.int64, order="C"))
    if ids.numel() and int(ids.min()) < 0:
        raise ValueError(f"records: expected non-negative global ids, got {int(ids.min())}")
    dense = None
    if head["num_dense"] > 0:
        dense = torch.from_numpy(array["dense"].astype(np.float32, order="C"))
    batch = CTRBatch(
        ids=ids,
        dense=dense,
        label=torch.from_numpy(array["label"].astype(np.float32)),
        timestamp=torch.from_numpy(array["timestamp"].astype(np.float64)),
    )
    return batch, torch.from_numpy(array["event_id"].astype(np.int64))


def events_to_batch(events: Sequence[Event]) -> tuple[CTRBatch, torch.Tensor]:
    """Stack events (all with the same F and the same D or all without dense) into
    ``(CTRBatch, event_ids int64 [B])``; timestamps are float64."""
    if len(events) == 0:
        raise ValueError("events: expected at least one event, got 0")
    first = events[0]
    for index, event in enumerate(events):
        if not isinstance(event, Event):
            raise TypeError(f"events[{index}]: expected Event, got {type(event).__name__}")
        if event.ids.shape != first.ids.shape or (event.dense is None) != (first.dense is None):
            raise ValueError(
                f"events[{index}]: expected F={first.ids.size} and "
                f"{'no dense' if first.dense is None else f'D={first.dense.size}'} like "
                f"events[0], got F={event.ids.size} and "
                f"{'no dense' if event.dense is None else f'D={event.dense.size}'}"
            )
        if first.dense is not None and event.dense.shape != first.dense.shape:
            raise ValueError(
                f"events[{index}]: expected D={first.dense.size}, got D={event.dense.size}"
            )
    dense = None
    if first.dense is not None:
        dense = torch.from_numpy(np.stack([e.dense for e in events]))
    batch = CTRBatch(
        ids=torch.from_numpy(np.stack([e.ids for e in events])),
        dense=dense,
        label=torch.tensor([e.label for e in events], dtype=torch.float32),
        timestamp=torch.tensor([e.timestamp for e in events], dtype=torch.float64),
    )
    return batch, torch.tensor([e.event_id for e in events], dtype=torch.int64)


def batch_to_events(batch: CTRBatch, event_ids: torch.Tensor) -> list[Event]:
    """Split ``(CTRBatch, event_ids [B])`` back into events (inverse of
    :func:`events_to_batch`)."""
    ids = batch.ids.detach().cpu().numpy()
    dense = None if batch.dense is None else batch.dense.detach().cpu().numpy()
    labels = batch.label.detach().cpu().tolist()
    times = batch.timestamp.detach().cpu().double().tolist()
    eids = torch.as_tensor(event_ids).tolist()
    if len(eids) != len(ids):
        raise ValueError(f"event_ids: expected {len(ids)} ids, got {len(eids)}")
    return [
        Event(
            event_id=eids[i],
            timestamp=times[i],
            label=labels[i],
            ids=ids[i],
            dense=None if dense is None else dense[i],
        )
        for i in range(len(eids))
    ]
