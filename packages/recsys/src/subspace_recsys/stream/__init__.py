"""Real-time training: CTR events, ordered sources (memory, files, Redis Streams) and the
online trainer with progressive validation, delta sync to a serving copy and crash-safe
(effectively-once) checkpoints.

The Redis pieces need the ``redis`` extra (redis-py) only when used.
"""

from subspace_recsys.stream.events import (
    Event,
    batch_to_events,
    decode_event,
    decode_records,
    encode_event,
    encode_records,
    events_to_batch,
)
from subspace_recsys.stream.online import OnlineStats, OnlineTrainer, SyncRecord, find_tables
from subspace_recsys.stream.redis_source import RedisStreamProducer, RedisStreamSource
from subspace_recsys.stream.sources import (
    EventSource,
    FileSource,
    IteratorSource,
    SourceBatch,
    load_shard,
    save_shard,
)
from subspace_recsys.stream.throughput import measure_stream_throughput

__all__ = [
    "Event",
    "EventSource",
    "FileSource",
    "IteratorSource",
    "OnlineStats",
    "OnlineTrainer",
    "RedisStreamProducer",
    "RedisStreamSource",
    "SourceBatch",
    "SyncRecord",
    "batch_to_events",
    "decode_event",
    "decode_records",
    "encode_event",
    "encode_records",
    "events_to_batch",
    "find_tables",
    "load_shard",
    "measure_stream_throughput",
    "save_shard",
]
