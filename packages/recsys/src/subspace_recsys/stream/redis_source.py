"""Redis Streams: a consumer-group event source with at-least-once delivery, and a producer.

Each stream entry holds one event as a binary record (see
:mod:`subspace_recsys.stream.events`) in the field ``ev``. Delivery follows Redis consumer
groups: an entry read with ``XREADGROUP`` stays in the consumer's pending entries list
(PEL) until it is ``XACK``-ed, and a restarted consumer with the same name first re-reads
its PEL. A trainer that checkpoints before acknowledging and skips, after a restart, every
entry at or before its checkpoint's stream id (:meth:`RedisStreamSource.resume_after`)
therefore applies each entry exactly once.
"""

from __future__ import annotations

import warnings
from collections import deque
from collections.abc import Iterable, Iterator
from typing import Any

import torch

from subspace_recsys.data import CTRBatch
from subspace_recsys.stream.events import Event, decode_records, encode_records, events_to_batch
from subspace_recsys.stream.sources import EventSource, Position, SourceBatch, _check_batch_size

__all__ = ["FIELD", "RedisStreamProducer", "RedisStreamSource", "parse_stream_id"]

#: Name of the stream-entry field that carries the event record.
FIELD = b"ev"
_ACK_CHUNK = 10_000


def _redis() -> Any:
    try:
        import redis
    except ImportError as exc:  # the optional extra is missing
        raise ImportError(
            "the Redis event source needs redis-py: pip install 'subspace-recsys[redis]'"
        ) from exc
    return redis


def parse_stream_id(value: str | bytes) -> tuple[int, int]:
    """``"<ms>-<seq>"`` (str or bytes) as an ordered pair of ints; raises ``ValueError``."""
    text = value.decode() if isinstance(value, bytes) else value
    if not isinstance(text, str):
        raise ValueError(f"position: expected a stream id '<ms>-<seq>', got {value!r}")
    ms, sep, seq = text.partition("-")
    if not (sep and ms.isdigit() and seq.isdigit()):
        raise ValueError(f"position: expected a stream id '<ms>-<seq>', got {value!r}")
    return int(ms), int(seq)


def _connect(url: str | None, client: Any) -> Any:
    if client is not None:
        return client
    if not isinstance(url, str):
        raise TypeError(f"url: expected a redis:// URL string, got {type(url).__name__}")
    # Records are binary: responses must stay bytes.
    return _redis().Redis.from_url(url, decode_responses=False)


def _entries(reply: Any) -> list[tuple[bytes, dict | None]]:
    """The entries of a one-stream XREADGROUP reply (RESP2 list or RESP3 map)."""
    if not reply:
        return []
    if isinstance(reply, dict):
        (entries,) = reply.values()
    else:
        ((_, entries),) = reply
    return list(entries)


class RedisStreamSource(EventSource):
    """Micro-batches from a Redis stream through consumer group ``group`` as ``consumer``.

    - Creates the group (and the stream, ``MKSTREAM``) when missing, starting at
      ``start_id`` (``"0"``: everything already in the stream; ``"$"``: only new entries).
    - Iteration first re-reads this consumer's pending entries (``XREADGROUP ... 0``), then
      new ones (``>``), re-cut into batches of exactly ``batch_size`` events; a short
      batch is emitted only when a read waited ``block_ms`` for nothing (``None``: wait
      forever; ``0``: do not wait). With ``stop_when_idle`` iteration ends at such an idle
      read with nothing buffered.
    - ``position`` is the stream id ``"<ms>-<seq>"`` of the batch's last entry;
      :meth:`ack` XACKs every delivered entry up to it.
    - After :meth:`resume_after` entries at or before that id are acknowledged and dropped
      (counted in ``skipped``). Pending entries whose payload was trimmed or deleted from
      the stream are acknowledged, counted in ``deleted`` and warned about.

    Restart with the same ``consumer`` name: another name does not see the old PEL.
    """

    def __init__(
        self,
        url: str | None,
        stream: str,
        group: str,
        consumer: str,
        batch_size: int = 512,
        block_ms: int | None = 1000,
        *,
        start_id: str = "0",
        stop_when_idle: bool = False,
        client: Any = None,
    ) -> None:
        for name, value in (("stream", stream), ("group", group), ("consumer", consumer)):
            if not isinstance(value, str) or not value:
                raise ValueError(f"{name}: expected a non-empty str, got {value!r}")
        if block_ms is not None and (
            isinstance(block_ms, bool) or not isinstance(block_ms, int) or block_ms < 0
        ):
            raise ValueError(f"block_ms: expected a non-negative int or None, got {block_ms!r}")
        self.client = _connect(url, client)
        self._owns_client = client is None
        self.stream, self.group, self.consumer = stream, group, consumer
        self.batch_size = _check_batch_size(batch_size)
        self.block_ms = block_ms
        self.stop_when_idle = stop_when_idle
        self.skipped = 0
        self.deleted = 0
        self._skip_through: tuple[int, int] | None = None
        self._unacked: deque[tuple[tuple[int, int], bytes]] = deque()
        self._create_group(start_id)

    def _create_group(self, start_id: str) -> None:
        try:
            self.client.xgroup_create(self.stream, self.group, id=start_id, mkstream=True)
        except _redis().ResponseError as exc:
            if "BUSYGROUP" not in str(exc):  # an existing group is the normal restart case
                raise

    def resume_after(self, position: Position | None) -> None:
        self._skip_through = None if position is None else parse_stream_id(position)

    def ack(self, position: Position) -> None:
        through = parse_stream_id(position)
        ids: list[bytes] = []
        while self._unacked and self._unacked[0][0] <= through:
            ids.append(self._unacked.popleft()[1])
        self._xack(ids)

    def _xack(self, ids: list[bytes]) -> None:
        for start in range(0, len(ids), _ACK_CHUNK):
            self.client.xack(self.stream, self.group, *ids[start : start + _ACK_CHUNK])

    def pending_count(self) -> int:
        """Entries delivered to this consumer and not yet acknowledged (from ``XPENDING``)."""
        summary = self.client.xpending(self.stream, self.group)
        for consumer in summary.get("consumers") or []:
            name = consumer["name"]
            if (name.decode() if isinstance(name, bytes) else name) == self.consumer:
                return int(consumer["pending"])
        return 0

    def _read(self, cursor: bytes | str, count: int, block: int | None) -> list:
        reply = self.client.xreadgroup(
            self.group, self.consumer, {self.stream: cursor}, count=count, block=block
        )
        return _entries(reply)

    def _admit(self, entries: list, buffer: list[tuple[tuple[int, int], bytes, bytes]]) -> None:
        """Move read entries into ``buffer``, acknowledging skipped and deleted ones."""
        drop: list[bytes] = []
        for entry_id, fields in entries:
            key = parse_stream_id(entry_id)
            if not fields:
                self.deleted += 1
                drop.append(entry_id)
                warnings.warn(
                    f"stream {self.stream!r}: pending entry {entry_id.decode()} was trimmed or "
                    "deleted before it was acknowledged; its event is lost",
                    RuntimeWarning,
                    stacklevel=3,
                )
                continue
            if self._skip_through is not None and key <= self._skip_through:
                self.skipped += 1
                drop.append(entry_id)
                continue
            record = fields.get(FIELD)
            if record is None:
                raise ValueError(
                    f"stream {self.stream!r}: entry {entry_id.decode()} has no field "
                    f"{FIELD.decode()!r} (fields: {sorted(k.decode() for k in fields)}); "
                    "it was not written by RedisStreamProducer"
                )
            buffer.append((key, entry_id, record))
        self._xack(drop)

    def _cut(self, buffer: list, size: int) -> SourceBatch:
        taken = buffer[:size]
        del buffer[:size]
        batch, event_ids = decode_records([record for _, _, record in taken])
        self._unacked.extend((key, entry_id) for key, entry_id, _ in taken)
        return SourceBatch(batch=batch, event_ids=event_ids, position=taken[-1][1].decode())

    def __iter__(self) -> Iterator[SourceBatch]:
        buffer: list[tuple[tuple[int, int], bytes, bytes]] = []
        # This consumer's PEL first: entries delivered before a crash and never acknowledged.
        cursor: bytes | str = "0"
        while entries := self._read(cursor, self.batch_size, None):
            cursor = entries[-1][0]
            self._admit(entries, buffer)
            while len(buffer) >= self.batch_size:
                yield self._cut(buffer, self.batch_size)
        while True:
            block = self.block_ms
            entries = self._read(">", self.batch_size - len(buffer), block)
            if not entries:
                if buffer:
                    yield self._cut(buffer, len(buffer))
                elif self.stop_when_idle:
                    return
                continue
            self._admit(entries, buffer)
            if len(buffer) >= self.batch_size:
                yield self._cut(buffer, self.batch_size)

    def close(self) -> None:
        """Close the connection if this source opened it (a passed ``client`` stays open)."""
        if self._owns_client:
            self.client.close()


class RedisStreamProducer:
    """Publishes events to a stream with pipelined ``XADD`` (``chunk`` entries per round
    trip). ``maxlen`` caps the stream length (``approximate``: ``MAXLEN ~``, cheaper);
    trimming drops the oldest entries even if no consumer has read them yet.
    """

    def __init__(
        self,
        url: str | None,
        stream: str,
        *,
        maxlen: int | None = None,
        approximate: bool = True,
        chunk: int = 1000,
        client: Any = None,
    ) -> None:
        if not isinstance(stream, str) or not stream:
            raise ValueError(f"stream: expected a non-empty str, got {stream!r}")
        if maxlen is not None and (not isinstance(maxlen, int) or maxlen < 1):
            raise ValueError(f"maxlen: expected a positive int or None, got {maxlen!r}")
        _check_batch_size(chunk)
        self.client = _connect(url, client)
        self._owns_client = client is None
        self.stream = stream
        self.maxlen = maxlen
        self.approximate = approximate
        self.chunk = chunk

    def publish_records(self, records: Iterable[bytes]) -> list[str]:
        """XADD already-encoded records; returns their stream ids in order."""
        records = list(records)
        ids: list[str] = []
        for start in range(0, len(records), self.chunk):
            pipe = self.client.pipeline(transaction=False)
            for record in records[start : start + self.chunk]:
                pipe.xadd(
                    self.stream, {FIELD: record}, maxlen=self.maxlen, approximate=self.approximate
                )
            ids.extend(i.decode() if isinstance(i, bytes) else i for i in pipe.execute())
        return ids

    def publish_batch(self, batch: CTRBatch, event_ids: torch.Tensor) -> list[str]:
        """Publish the B events of ``batch`` with stable ``event_ids`` (int64 [B])."""
        return self.publish_records(encode_records(batch, event_ids))

    def publish(self, events: Iterable[Event]) -> list[str]:
        """Publish events (all with the same F and D); returns their stream ids."""
        events = list(events)
        if not events:
            return []
        return self.publish_batch(*events_to_batch(events))

    def close(self) -> None:
        """Close the connection if this producer opened it."""
        if self._owns_client:
            self.client.close()

    def __enter__(self) -> RedisStreamProducer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
