"""Lookup/insert throughput of CollisionlessEmbedding against a Python dict baseline."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import torch

from .table import CollisionlessEmbedding

__all__ = ["measure_table_throughput"]


def _distinct_ids(n: int, generator: torch.Generator) -> torch.Tensor:
    """``n`` distinct uniformly random non-negative int64 ids, in random order."""
    ids = torch.zeros(0, dtype=torch.int64)
    while ids.shape[0] < n:
        more = torch.randint(0, 2**62, (n - ids.shape[0],), generator=generator)
        ids = torch.cat((ids, more)).unique()  # duplicates at 2**62 are rare but possible
    return ids[torch.randperm(n, generator=generator)]


def _median_time(fn, repeats: int, timer) -> float:
    times = []
    for i in range(repeats):
        start = timer()
        fn(i)
        times.append(timer() - start)
    return statistics.median(times)


def measure_table_throughput(
    num_ids: int,
    *,
    batch: int = 65536,
    dim: int = 16,
    repeats: int = 5,
    seed: int = 0,
    dict_baseline: bool = True,
    timer: Callable[[], float] = time.perf_counter,
) -> dict[str, float | int]:
    """Fill a table with ``num_ids`` distinct random ids, then time batched operations.

    Timings are medians over ``repeats`` batches of ``batch`` ids, by ``timer``
    (``time.perf_counter``; on a machine shared with other jobs, ``time.thread_time`` with
    one torch thread gives the cost on an idle core instead). The thread count is the
    caller's ``torch.set_num_threads``.

    - ``lookups_per_s``: ``lookup_rows(ids, insert=False)`` of existing ids (eval path);
    - ``inserts_per_s``: ``lookup_rows(ids, insert=True)`` of new ids (index insert and row
      allocation) after ``reserve``, so no timed batch pays a rehash;
    - ``fill_inserts_per_s``: the whole fill from an empty table, growth included;
    - ``dict_lookups_per_s`` / ``dict_inserts_per_s``: the same with a Python dict
      id -> row (``[d.get(i, -1) for i in ids.tolist()]``; ``for i in ids.tolist(): if i
      not in d: d[i] = len(d)``), or NaN when ``dict_baseline`` is False.

    Also returns ``bytes_per_entry`` (all table arrays per admitted id, after the fill),
    ``collisions``
    (live ids sharing a row with another id: 0 by construction), ``missing`` (filled ids
    that do not find a row: 0) and ``num_ids``.
    """
    for name, value in (("num_ids", num_ids), ("batch", batch), ("dim", dim)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name}: expected an int >= 1, got {value!r}")
    if isinstance(repeats, bool) or not isinstance(repeats, int) or repeats < 1:
        raise ValueError(f"repeats: expected an int >= 1, got {repeats!r}")
    gen = torch.Generator().manual_seed(seed)
    all_ids = _distinct_ids(num_ids + repeats * batch, gen)
    ids, new_ids = all_ids[:num_ids], all_ids[num_ids:].view(repeats, batch)

    # sgd: no optimizer state, so bytes_per_entry is index + rows only
    table = CollisionlessEmbedding(dim, optimizer="sgd", seed=seed)
    start = timer()
    for chunk in ids.split(batch):
        table.lookup_rows(chunk, insert=True)
    fill_s = timer() - start
    bytes_per_entry = table.bytes_per_entry()
    # room for the timed inserts up front (as a user expecting growth would reserve it)
    table.reserve(num_ids + repeats * batch)

    queries = ids[torch.randint(0, num_ids, (repeats, batch), generator=gen)]
    table.eval()
    lookup_s = _median_time(lambda i: table.lookup_rows(queries[i], insert=False), repeats, timer)
    table.train()
    insert_s = _median_time(lambda i: table.lookup_rows(new_ids[i], insert=True), repeats, timer)

    rows = table.lookup_rows(ids, insert=False)
    missing = int((rows < 0).sum())
    per_row = torch.bincount(rows[rows >= 0], minlength=table.num_rows)
    collisions = int(per_row[per_row > 1].sum())

    dict_lookup_s = dict_insert_s = float("nan")
    if dict_baseline:
        d = dict(zip(ids.tolist(), range(num_ids), strict=True))

        def dict_lookup(i: int) -> None:
            [d.get(x, -1) for x in queries[i].tolist()]

        def dict_insert(i: int) -> None:
            for x in new_ids[i].tolist():
                if x not in d:
                    d[x] = len(d)

        dict_lookup_s = _median_time(dict_lookup, repeats, timer)
        dict_insert_s = _median_time(dict_insert, repeats, timer)
        del d

    return {
        "num_ids": num_ids,
        "batch": batch,
        "lookups_per_s": batch / lookup_s,
        "inserts_per_s": batch / insert_s,
        "fill_inserts_per_s": num_ids / fill_s,
        "dict_lookups_per_s": batch / dict_lookup_s,
        "dict_inserts_per_s": batch / dict_insert_s,
        "bytes_per_entry": bytes_per_entry,
        "collisions": collisions,
        "missing": missing,
    }
