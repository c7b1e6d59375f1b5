import struct

import numpy as np
import pytest
import torch

from subspace_recsys.data import CriteoLikeGenerator, CTRBatch
from subspace_recsys.stream import (
    Event,
    FileSource,
    IteratorSource,
    batch_to_events,
    decode_event,
    decode_records,
    encode_event,
    encode_records,
    events_to_batch,
    load_shard,
    save_shard,
)


def _events(n, *, num_fields=3, num_dense=2, seed=0, start=1.7e9):
    g = torch.Generator().manual_seed(seed)
    times = start + torch.cumsum(torch.rand(n, generator=g, dtype=torch.float64), 0)
    return [
        Event(
            event_id=1000 + i,
            timestamp=float(times[i]),
            label=int(torch.rand((), generator=g) < 0.3),
            ids=torch.randint(0, 1 << 50, (num_fields,), generator=g),
            dense=torch.randn(num_dense, generator=g) if num_dense else None,
        )
        for i in range(n)
    ]


def _cat(items):
    """Concatenate source batches: (ids, dense, label, timestamp, event_ids)."""
    batches = [item.batch for item in items]
    dense = None if batches[0].dense is None else torch.cat([b.dense for b in batches])
    return (
        torch.cat([b.ids for b in batches]),
        dense,
        torch.cat([b.label for b in batches]),
        torch.cat([b.timestamp for b in batches]),
        torch.cat([item.event_ids for item in items]),
    )


def _assert_same_batches(a, b):
    assert [len(x) for x in a] == [len(x) for x in b]
    for x, y in zip(a, b, strict=True):
        assert torch.equal(x.batch.ids, y.batch.ids)
        assert torch.equal(x.batch.label, y.batch.label)
        assert torch.equal(x.batch.timestamp, y.batch.timestamp)
        assert torch.equal(x.event_ids, y.event_ids)
        if x.batch.dense is None:
            assert y.batch.dense is None
        else:
            assert torch.equal(x.batch.dense, y.batch.dense)


# ----------------------------------------------------------------------------- records


def test_record_layout_is_little_endian_and_exact():
    event = Event(
        event_id=-7,
        timestamp=1712345678.123456,
        label=1,
        ids=[5, (3 << 40) | 9],
        dense=[0.5, -2.0, 3.25],
    )
    record = encode_event(event)
    assert len(record) == 22 + 8 * 2 + 4 * 3
    version, eid, ts, label, nf, nd = struct.unpack_from("<BqdBHH", record)
    assert (version, eid, ts, label, nf, nd) == (1, -7, 1712345678.123456, 1, 2, 3)
    assert struct.unpack_from("<2q", record, 22) == (5, (3 << 40) | 9)
    assert struct.unpack_from("<3f", record, 38) == (0.5, -2.0, 3.25)
    assert decode_event(record) == event


@pytest.mark.parametrize("num_dense", [0, 4])
def test_events_round_trip_through_records(num_dense):
    events = _events(50, num_fields=5, num_dense=num_dense)
    batch, event_ids = events_to_batch(events)
    assert batch.timestamp.dtype == torch.float64
    decoded_batch, decoded_ids = decode_records(encode_records(batch, event_ids))
    assert batch_to_events(decoded_batch, decoded_ids) == events
    assert [decode_event(encode_event(e)) for e in events] == events
    assert (decoded_batch.dense is None) == (num_dense == 0)


def test_criteo_batch_round_trips_bit_exactly():
    batch = CriteoLikeGenerator(1000, start_time=1.7e9, seed=3).sample(64)
    event_ids = torch.arange(64) * 3
    decoded, ids = decode_records(encode_records(batch, event_ids))
    assert torch.equal(decoded.ids, batch.ids)
    assert torch.equal(decoded.dense, batch.dense)
    assert torch.equal(decoded.label, batch.label)
    assert torch.equal(decoded.timestamp, batch.timestamp)  # float64: sub-second kept
    assert torch.equal(ids, event_ids)


def test_malformed_records_are_refused():
    record = encode_event(_events(1)[0])
    with pytest.raises(ValueError, match=r"records\[0\]: expected at least 22 bytes"):
        decode_records([record[:10]])
    with pytest.raises(ValueError, match=r"records\[1\]: expected 54 bytes"):
        decode_records([record, record[:-1]])
    with pytest.raises(ValueError, match="format version 1, got 9"):
        decode_records([b"\x09" + record[1:]])
    # Same length, different (F, D) split: F=3, D=2 -> F=2, D=4 is 8 bytes less + 8 more.
    other = encode_event(_events(1, num_fields=2, num_dense=4)[0])
    assert len(other) == len(record)
    with pytest.raises(ValueError, match=r"records\[1\]: expected version 1, F=3, D=2"):
        decode_records([record, other])
    bad_label = bytearray(record)
    bad_label[17] = 2
    with pytest.raises(ValueError, match="label 0/1"):
        decode_records([bytes(bad_label)])
    with pytest.raises(ValueError, match="at least one record"):
        decode_records([])


def test_event_validation():
    with pytest.raises(ValueError, match="ids: expected non-negative"):
        Event(event_id=0, timestamp=0.0, label=0, ids=[1, -2])
    with pytest.raises(ValueError, match="label: expected 0 or 1, got 2"):
        Event(event_id=0, timestamp=0.0, label=2, ids=[1])
    with pytest.raises(TypeError, match="ids: expected an integer array, got dtype float"):
        Event(event_id=0, timestamp=0.0, label=0, ids=[1.5])
    with pytest.raises(TypeError, match="event_id: expected an int"):
        Event(event_id="a", timestamp=0.0, label=0, ids=[1])
    mixed = [*_events(2, num_fields=3), *_events(1, num_fields=4)]
    with pytest.raises(ValueError, match=r"events\[2\]: expected F=3"):
        events_to_batch(mixed)


# ----------------------------------------------------------------------------- sources


def test_iterator_source_cuts_exact_batches_whatever_the_input_blocks():
    events = _events(23)
    by_event = list(IteratorSource(events, batch_size=5))
    assert [len(b) for b in by_event] == [5, 5, 5, 5, 3]
    assert [b.position for b in by_event] == [5, 10, 15, 20, 23]
    ids, _, _, _, eids = _cat(by_event)
    assert torch.equal(eids, torch.arange(1000, 1023))
    assert torch.equal(ids, events_to_batch(events)[0].ids)
    # The same events as uneven (CTRBatch, ids) blocks give the same micro-batches.
    blocks = [events_to_batch(events[a:b]) for a, b in [(0, 2), (2, 11), (11, 12), (12, 23)]]
    _assert_same_batches(list(IteratorSource(blocks, batch_size=5)), by_event)


def test_iterator_source_resume_skips_exactly_the_consumed_events():
    events = _events(23)
    full = list(IteratorSource(events, batch_size=5))
    source = IteratorSource(events, batch_size=5)
    source.resume_after(full[1].position)
    tail = list(source)
    assert source.skipped == 10
    _assert_same_batches(tail, full[2:])
    with pytest.raises(ValueError, match="position: expected a non-negative int"):
        source.resume_after(["a", 1])


def test_iterator_source_bare_ctr_batches_get_running_event_ids():
    first, _ = events_to_batch(_events(7))
    later, _ = events_to_batch(_events(7, start=2e9))
    items = list(IteratorSource([first, later], batch_size=4))
    assert [len(i) for i in items] == [4, 4, 4, 2]
    assert torch.equal(torch.cat([i.event_ids for i in items]), torch.arange(14))


def test_sources_refuse_time_going_backwards():
    events = _events(6)
    swapped = [events[0], events[2], events[1], *events[3:]]
    with pytest.raises(ValueError, match=r"expected non-decreasing timestamps.*position 3"):
        list(IteratorSource(swapped, batch_size=4))
    assert len(list(IteratorSource(swapped, batch_size=4, check_order=False))) == 2


def test_file_source_equals_iterator_source_and_resumes_mid_shard(tmp_path):
    events = _events(37)
    cuts = [(0, 10), (10, 11), (11, 30), (30, 37)]
    for number, (a, b) in enumerate(cuts):
        suffix = ".npz" if number % 2 == 0 else ".safetensors"
        save_shard(tmp_path / f"part-{number:03d}{suffix}", *events_to_batch(events[a:b]))
    (tmp_path / "notes.txt").write_text("ignored")
    from_files = list(FileSource(tmp_path, batch_size=8))
    _assert_same_batches(from_files, list(IteratorSource(events, batch_size=8)))
    # Batch 2 ends at event 24: the 13th event of part-002 (events 11..29).
    assert from_files[2].position == ["part-002.npz", 13]
    assert from_files[-1].position == ["part-003.safetensors", 7]

    source = FileSource(tmp_path, batch_size=8)
    source.resume_after(from_files[2].position)
    _assert_same_batches(list(source), from_files[3:])
    with pytest.raises(ValueError, match=r"shard 'nope\.npz' is not one of"):
        source.resume_after(["nope.npz", 0])
    with pytest.raises(ValueError, match=r"expected \[shard_name, row\]"):
        source.resume_after(5)


def test_single_file_source_and_missing_event_ids(tmp_path):
    batch, _ = events_to_batch(_events(9, num_dense=0))
    path = tmp_path / "one.npz"
    arrays = {"ids": batch.ids.numpy(), "label": batch.label.numpy(),
              "timestamp": batch.timestamp.numpy()}  # fmt: skip
    np.savez(path, **arrays)
    items = list(FileSource(path, batch_size=4))
    assert [len(i) for i in items] == [4, 4, 1]
    assert torch.equal(torch.cat([i.event_ids for i in items]), torch.arange(9))
    assert items[0].batch.dense is None
    loaded, eids = load_shard(path, shard_index=3)
    assert torch.equal(eids, (3 << 40) | torch.arange(9))
    assert torch.equal(loaded.ids, batch.ids)


def test_file_source_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        FileSource(tmp_path / "absent")
    with pytest.raises(ValueError, match="found none"):
        FileSource(tmp_path)
    with pytest.raises(ValueError, match="batch_size: expected a positive int, got 0"):
        IteratorSource([], batch_size=0)
    np.savez(tmp_path / "bad.npz", ids=np.zeros((2, 2)), label=np.zeros(2))
    with pytest.raises(ValueError, match="missing \\['timestamp'\\]"):
        list(FileSource(tmp_path / "bad.npz"))
    empty = CTRBatch(
        ids=torch.zeros(2, 1, dtype=torch.int64),
        dense=None,
        label=torch.zeros(2),
        timestamp=torch.zeros(2),
    )
    with pytest.raises(ValueError, match=r"ending in \.npz"):
        save_shard(tmp_path / "x.csv", empty)
