import socket
import uuid

import pytest
import torch

from subspace_recsys.data import CriteoLikeGenerator
from subspace_recsys.stream import (
    RedisStreamProducer,
    RedisStreamSource,
    batch_to_events,
    events_to_batch,
)
from subspace_recsys.stream.redis_source import parse_stream_id
from subspace_recsys.testing_redis import RedisServerUnavailable, redis_server

redis = pytest.importorskip("redis", reason="the redis extra (redis-py) is not installed")


def _name(prefix="s"):
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def _events(n, seed=0):
    batch = CriteoLikeGenerator(500, num_categorical=4, num_dense=2, seed=seed).sample(n)
    return batch_to_events(batch, torch.arange(100, 100 + n))


def _source(url, stream, consumer="c1", group="g", batch_size=4, **kwargs):
    kwargs.setdefault("block_ms", 20)
    kwargs.setdefault("stop_when_idle", True)
    return RedisStreamSource(url, stream, group, consumer, batch_size, **kwargs)


def _event_ids(items):
    return torch.cat([i.event_ids for i in items]).tolist() if items else []


def test_testing_server_reports_a_missing_binary_and_stops(tmp_path):
    missing = redis_server(binary=tmp_path / "redis-server")
    with pytest.raises(RedisServerUnavailable, match=r"not found.*apt-get install redis-server"):
        missing.__enter__()
    try:
        with redis_server() as server:
            assert redis.Redis.from_url(server.url).ping()
            port = server.port
    except RedisServerUnavailable as exc:
        pytest.skip(str(exc))
    with pytest.raises(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.5):
        pass


def test_source_creates_group_and_stream_once(redis_url):
    client = redis.Redis.from_url(redis_url)
    stream = _name()
    assert not client.exists(stream)
    _source(redis_url, stream)
    groups = client.xinfo_groups(stream)
    assert [g["name"] for g in groups] == [b"g"]
    assert groups[0]["pending"] == 0
    _source(redis_url, stream, consumer="c2")  # an existing group is reused, not an error
    assert len(client.xinfo_groups(stream)) == 1


def test_events_round_trip_and_ack_empties_the_pel(redis_url):
    stream = _name()
    events = _events(10)
    with RedisStreamProducer(redis_url, stream) as producer:
        stream_ids = producer.publish(events[:6])
        stream_ids += producer.publish_batch(*events_to_batch(events[6:]))
    assert len(stream_ids) == 10
    source = _source(redis_url, stream)
    items = list(source)
    assert [len(i) for i in items] == [4, 4, 2]  # short batch only when the stream went idle
    assert [i.position for i in items] == [stream_ids[3], stream_ids[7], stream_ids[9]]
    decoded = [e for i in items for e in batch_to_events(i.batch, i.event_ids)]
    assert decoded == events
    assert source.pending_count() == 10
    source.ack(items[1].position)
    assert source.pending_count() == 2
    source.ack(items[2].position)
    assert source.pending_count() == 0


def test_restart_rereads_pending_first_and_skips_through_the_resume_position(redis_url):
    stream = _name()
    events = _events(14)
    producer = RedisStreamProducer(redis_url, stream)
    producer.publish(events[:10])
    first = _source(redis_url, stream)
    iterator = iter(first)
    delivered = [next(iterator), next(iterator)]  # 8 events delivered, none acknowledged
    producer.publish(events[10:])
    assert first.pending_count() == 8

    # A new process with the same consumer name sees its pending entries again, in order.
    again = list(_source(redis_url, stream))
    assert _event_ids(again) == list(range(100, 114))
    # Another consumer of the group does not get this consumer's pending entries.
    assert list(_source(redis_url, stream, consumer="other")) == []

    restarted = _source(redis_url, stream)
    restarted.resume_after(delivered[0].position)
    tail = list(restarted)
    assert restarted.skipped == 4
    assert _event_ids(tail) == list(range(104, 114))
    assert [len(i) for i in tail] == [4, 4, 2]
    assert restarted.pending_count() == 10  # the skipped four were acknowledged
    restarted.ack(tail[-1].position)
    assert restarted.pending_count() == 0


def test_trimmed_pending_entry_is_acked_and_reported(redis_url):
    stream = _name()
    ids = RedisStreamProducer(redis_url, stream).publish(_events(4))
    source = _source(redis_url, stream, batch_size=4)
    assert len(next(iter(source))) == 4
    redis.Redis.from_url(redis_url).xdel(stream, ids[1])
    restarted = _source(redis_url, stream, batch_size=4)
    with pytest.warns(RuntimeWarning, match=f"pending entry {ids[1]} was trimmed or deleted"):
        items = list(restarted)
    assert restarted.deleted == 1
    assert _event_ids(items) == [100, 102, 103]


def test_producer_maxlen_and_foreign_entries(redis_url):
    client = redis.Redis.from_url(redis_url)
    stream = _name()
    RedisStreamProducer(redis_url, stream, maxlen=5, approximate=False).publish(_events(12))
    assert client.xlen(stream) == 5
    foreign = _name()
    client.xadd(foreign, {b"json": b"{}"})
    with pytest.raises(ValueError, match=r"has no field 'ev'.*not written by RedisStreamProducer"):
        list(_source(redis_url, foreign))


def test_argument_errors(redis_url):
    with pytest.raises(ValueError, match="group: expected a non-empty str"):
        RedisStreamSource(redis_url, "s", "", "c")
    with pytest.raises(ValueError, match="block_ms: expected a non-negative int or None"):
        RedisStreamSource(redis_url, "s", "g", "c", block_ms=-1)
    with pytest.raises(ValueError, match="position: expected a stream id"):
        _source(redis_url, _name()).resume_after("12")
    assert parse_stream_id(b"17-3") < parse_stream_id("17-10") < parse_stream_id("18-0")
