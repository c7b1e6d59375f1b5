"""Benchmarks of subspace-recsys (``subzoo bench recsys``).

``recsys/table_throughput``: :class:`~subspace_recsys.table.CollisionlessEmbedding` lookups
and inserts per second (batches of 65,536 uniformly random int64 ids, median of repeats,
wall clock, one torch thread: on a shared machine a second OpenMP thread that gets
descheduled stalls every op -- at load 4 on 2 cores, 2 threads gave 0.1M lookups/s at 1M ids
where 1 thread gives ~10M), bytes per entry and collisions, at 1M ids
(quick) and at 1M and 10M ids (full), vs a Python dict (1M only: a 10M dict is just slower),
and vs torchrec's zero-collision ``MCHManagedCollisionModule`` when the environment variable
``SUBZOO_TORCHREC_PYTHON`` names an interpreter with torchrec + fbgemm-gpu-cpu installed
(torchrec 1.9.2 / fbgemm-gpu-cpu 1.9.0 load only with torch 2.14, so they cannot live in this
workspace's lock; see :mod:`subspace_recsys.torchrec_baseline`). Target: >= 5M lookups/s
on 2 cores at 1M entries; zero collisions at 10M ids.

``recsys/movielens_ctr``: MovieLens-100K as CTR (rating >= 4, time-ordered 80/10/10 split,
:func:`~subspace_recsys.data.load_movielens_ctr`). For DeepFM, DCN-v2 and Wide & Deep:
the collisionless table vs a hashed table (modulo a mixing hash) **at equal memory**: the
hashed table gets as many rows as the collisionless table's serving bytes after training
buy (:func:`serving_bytes`: cuckoo index and row storage as allocated, optimizer state
excluded on both sides); test AUC / log loss at the epoch of best validation AUC. And DeepFM trained **online** (one pass over train + validation in
timestamp order through :class:`~subspace_recsys.stream.OnlineTrainer`, progressive
validation) vs **batch** (epochs over the train split, best validation epoch), both scored
on the test split.

``recsys/criteo_like``: the Criteo-shaped generator (26 Zipfian categorical + 13 dense
fields, planted interactions): DeepFM trained online in one pass with a collisionless table
that admits an id after it was seen ``admit_after`` times, vs the same model on a hashed table
of equal memory (serving bytes, as above) and of equal rows, evaluated on the following
events. This is Monolith's setting: the long
tail of rare ids is never given a row, and the memory buys collision-free rows for ids that
recur.

``recsys/optfs``: OptFS feature selection (gates per feature id) with DeepFM on MovieLens-100K
CTR (:func:`~subspace_recsys.optfs.optfs_movielens`): fraction of feature ids removed and the
relative AUC change after re-training with the kept set. Target: >= 50 % removed at <= 0.3 %
relative AUC drop.

``recsys/streaming``: events/s end to end through a real ``redis-server`` (started privately):
produce (encode + pipelined XADD), consume (XREADGROUP + decode + XACK), consume + train
(DeepFM on a collisionless table). Reported as unavailable when no ``redis-server`` binary
or the ``redis`` extra is present.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable

import torch
from torch import nn

from subspace_core.bench import BenchContext, Benchmark, Measurement, register_benchmark

__all__ = [
    "CRITEO_LIKE",
    "MOVIELENS_CTR",
    "OPTFS",
    "STREAMING",
    "TABLE_THROUGHPUT",
    "run_criteo_like",
    "run_movielens_ctr",
    "run_optfs",
    "run_streaming",
    "run_table_throughput",
]

#: Environment variable naming a Python interpreter that has torchrec + fbgemm-gpu-cpu.
TORCHREC_PYTHON_ENV = "SUBZOO_TORCHREC_PYTHON"


def _unavailable(case: str, method: str, reason: str) -> Measurement:
    print(f"[{case}] {method}: unavailable ({reason})")
    return Measurement(case, method, "unavailable", 1.0, "", False)


# --------------------------------------------------------------------------- throughput


def run_table_throughput(ctx: BenchContext) -> list[Measurement]:
    from subspace_recsys.throughput import measure_table_throughput

    sizes = (1_000_000,) if ctx.quick else (1_000_000, 10_000_000)
    rows: list[Measurement] = []
    for num_ids in sizes:
        case = f"{num_ids // 1_000_000}M ids, batch 65536, 1 thread"
        r = measure_table_throughput(num_ids, batch=65536, dim=16, repeats=5,
                                     dict_baseline=num_ids <= 1_000_000)  # fmt: skip
        rows += [
            Measurement(case, "collisionless", "lookups_per_s", r["lookups_per_s"], "1/s"),
            Measurement(case, "collisionless", "inserts_per_s", r["inserts_per_s"], "1/s"),
            Measurement(case, "collisionless", "fill_inserts_per_s", r["fill_inserts_per_s"],
                        "1/s"),
            Measurement(case, "collisionless", "bytes_per_entry", r["bytes_per_entry"], "B",
                        False),
            Measurement(case, "collisionless", "collisions", r["collisions"], "", False),
            Measurement(case, "collisionless", "missing", r["missing"], "", False),
        ]
        if not math.isnan(r["dict_lookups_per_s"]):
            rows += [
                Measurement(case, "python dict", "lookups_per_s", r["dict_lookups_per_s"], "1/s"),
                Measurement(case, "python dict", "inserts_per_s", r["dict_inserts_per_s"], "1/s"),
            ]
        rows += _torchrec_rows(case, num_ids)
    return rows


def _torchrec_rows(case: str, num_ids: int) -> list[Measurement]:
    from subspace_recsys.torchrec_baseline import run_in_interpreter

    python = os.environ.get(TORCHREC_PYTHON_ENV)
    if num_ids > 1_000_000:
        # MCH re-sorts its whole table at every training batch (eviction_interval=1): one
        # 65,536-id batch into a 10M table took 1.4-1.6 CPU s, i.e. ~4 CPU min per pass.
        return [_unavailable(case, "torchrec MCH", "not run above 1M ids (a full insert pass "
                             "re-sorts the table per batch: minutes per repeat)")]
    if not python:
        return [_unavailable(case, "torchrec MCH", f"{TORCHREC_PYTHON_ENV} is not set; torchrec "
                             "1.9.2 + fbgemm-gpu-cpu 1.9.0 need torch 2.14 (not this lock's)")]
    try:
        r = run_in_interpreter(python, num_ids=num_ids, batch=65536, repeats=5, seed=0)
    except RuntimeError as exc:
        return [_unavailable(case, "torchrec MCH", str(exc).splitlines()[0])]
    return [
        Measurement(case, "torchrec MCH", "lookups_per_s", r["lookups_per_s"], "1/s"),
        Measurement(case, "torchrec MCH", "inserts_per_s", r["inserts_per_s"], "1/s"),
        Measurement(case, "torchrec MCH", "collisions", r["collisions"], "", False),
    ]


# --------------------------------------------------------------------------- MovieLens


def _collisionless_factory(**kwargs) -> Callable[[int], nn.Module]:
    from subspace_recsys.table import CollisionlessEmbedding

    def factory(dim: int) -> nn.Module:
        return CollisionlessEmbedding(dim, **kwargs)

    return factory


def _hashed_factory(num_rows: int, seed: int) -> Callable[[int], nn.Module]:
    from subspace_recsys.hashed import HashedEmbedding

    def factory(dim: int) -> nn.Module:
        return HashedEmbedding(num_rows, dim, seed=seed)

    return factory


def _build(arch: str, num_fields: int, factory, *, embed_dim: int, dense_dim: int = 0,
           seed: int = 0) -> nn.Module:  # fmt: skip
    from subspace_recsys.models import DCNv2, DeepFM, WideAndDeep

    torch.manual_seed(seed)  # the same dense initialisation for every table
    cls = {"DeepFM": DeepFM, "DCN-v2": DCNv2, "Wide&Deep": WideAndDeep}[arch]
    return cls(num_fields, embed_dim, dense_dim=dense_dim, hidden=(64, 32),
               embedding_factory=factory)  # fmt: skip


def _train_best(model, train, val, test, *, epochs: int, batch_size: int, dense_lr: float,
                seed: int) -> dict[str, float]:  # fmt: skip
    """Train ``epochs`` epochs; test metrics of the epoch with the best validation AUC."""
    from subspace_recsys.batch import evaluate_ctr, train_ctr

    best: dict[str, float] = {"val_auc": -math.inf}

    def record(epoch: int, m: nn.Module, loss: float) -> None:
        v = evaluate_ctr(m, val)
        if v["auc"] > best["val_auc"]:
            t = evaluate_ctr(m, test)
            best.update(val_auc=v["auc"], auc=t["auc"], logloss=t["logloss"], epoch=epoch + 1)

    start = time.perf_counter()
    train_ctr(model, train, epochs=epochs, batch_size=batch_size, dense_lr=dense_lr, seed=seed,
              on_epoch_end=record)  # fmt: skip
    best["train_wall"] = time.perf_counter() - start
    return best


def serving_bytes(table: nn.Module) -> int:
    """Bytes a serving copy of ``table`` holds: every array except the optimizer state
    (``opt_*``) and the delta-sync bookkeeping (dirty flags, evicted ids): the cuckoo
    index (keys, rows, counts, last-seen, fingerprints, at its allocated size) and the row
    storage (at its allocated capacity). The hashed baseline's Adam moments are not counted
    either, so both sides are compared without optimizer state."""
    skip = ("opt_", "row_dirty", "evicted_ids")
    return sum(b.numel() * b.element_size() for name, b in table.named_buffers()
               if not name.rsplit(".", 1)[-1].startswith(skip))  # fmt: skip


def _equal_memory_rows(table: nn.Module) -> int:
    from subspace_recsys.hashed import equal_memory_rows

    return equal_memory_rows(len(table), serving_bytes(table) / max(len(table), 1), table.dim)


def _metric_rows(case: str, method: str, r: dict[str, float]) -> list[Measurement]:
    return [
        Measurement(case, method, "test_auc", r["auc"]),
        Measurement(case, method, "test_logloss", r["logloss"], "", False),
        Measurement(case, method, "best_epoch", r.get("epoch", math.nan), "", False),
        Measurement(case, method, "train_wall", r["train_wall"], "s", False),
    ]


#: Shared MovieLens settings (one learning rate for every model and table).
ML_EMBED_DIM = 16
ML_BATCH = 512
ML_DENSE_LR = 1e-3
ML_TABLE = {"optimizer": "adagrad", "lr": 0.05, "init_std": 0.01}


def run_movielens_ctr(ctx: BenchContext) -> list[Measurement]:
    from subspace_recsys.data import load_movielens_ctr
    from subspace_recsys.table import CollisionlessEmbedding

    train, val, test = (load_movielens_ctr(s) for s in ("train", "validation", "test"))
    epochs = 2 if ctx.quick else 5
    archs = ("DeepFM",) if ctx.quick else ("DeepFM", "DCN-v2", "Wide&Deep")
    common = dict(epochs=epochs, batch_size=ML_BATCH, dense_lr=ML_DENSE_LR, seed=0)
    rows: list[Measurement] = []
    for arch in archs:
        case = f"{arch}, equal memory"
        model = _build(arch, train.num_fields, _collisionless_factory(**ML_TABLE),
                       embed_dim=ML_EMBED_DIM)  # fmt: skip
        r = _train_best(model, train, val, test, **common)
        rows += _metric_rows(case, "collisionless", r)
        tables = [m for m in model.modules() if isinstance(m, CollisionlessEmbedding)]
        num_rows = {t.dim: _equal_memory_rows(t) for t in tables}
        rows += [
            Measurement(case, "collisionless", "serving_bytes",
                        sum(serving_bytes(t) for t in tables), "B", False),
            Measurement(case, "collisionless", "table_rows", sum(len(t) for t in tables), "",
                        True),
        ]
        # one hashed size per table width (DeepFM/DCN-v2 have one table; W&D two)
        hashed = _build(arch, train.num_fields,
                        lambda dim, sizes=num_rows: _hashed_factory(sizes[dim], seed=0)(dim),
                        embed_dim=ML_EMBED_DIM)  # fmt: skip
        rows += _metric_rows(case, "hashed (equal memory)",
                             _train_best(hashed, train, val, test, **common))  # fmt: skip
        rows.append(Measurement(case, "hashed (equal memory)", "table_rows",
                                sum(num_rows.values()), "", True))  # fmt: skip
    rows += _online_vs_batch(train, val, test, epochs=epochs)
    return rows


def _online_vs_batch(train, val, test, *, epochs: int) -> list[Measurement]:
    from subspace_recsys.batch import evaluate_ctr
    from subspace_recsys.data import CTRBatch
    from subspace_recsys.stream import IteratorSource, OnlineTrainer

    case = "DeepFM, online vs batch"
    model = _build("DeepFM", train.num_fields, _collisionless_factory(**ML_TABLE),
                   embed_dim=ML_EMBED_DIM)  # fmt: skip
    stream = [CTRBatch(ids=s.ids, dense=None, label=s.label, timestamp=s.timestamp)
              for s in (train, val)]  # fmt: skip
    trainer = OnlineTrainer(model, IteratorSource(stream, batch_size=ML_BATCH),
                            dense_optimizer=torch.optim.Adam(model.parameters(), lr=ML_DENSE_LR),
                            sync_every=20, auc_window=10_000)  # fmt: skip
    start = time.perf_counter()
    stats = trainer.run()
    wall = time.perf_counter() - start
    t = evaluate_ctr(model, test)
    online = {"auc": t["auc"], "logloss": t["logloss"], "train_wall": wall, "epoch": 1}
    rows = _metric_rows(case, "online (1 pass, train+val)", online)
    rows.append(Measurement(case, "online (1 pass, train+val)", "progressive_auc",
                            trainer.metric.auc()))  # fmt: skip
    rows.append(Measurement(case, "online (1 pass, train+val)", "events_per_s",
                            stats.events_per_s, "1/s"))  # fmt: skip
    batch_model = _build("DeepFM", train.num_fields, _collisionless_factory(**ML_TABLE),
                         embed_dim=ML_EMBED_DIM)  # fmt: skip
    r = _train_best(batch_model, train, val, test, epochs=epochs, batch_size=ML_BATCH,
                    dense_lr=ML_DENSE_LR, seed=0)  # fmt: skip
    rows += _metric_rows(case, f"batch ({epochs} epochs, best val)", r)
    return rows


# --------------------------------------------------------------------------- Criteo-like


def run_criteo_like(ctx: BenchContext) -> list[Measurement]:
    from subspace_recsys.batch import evaluate_ctr
    from subspace_recsys.data import CriteoLikeGenerator
    from subspace_recsys.stream import IteratorSource, OnlineTrainer
    from subspace_recsys.table import CollisionlessEmbedding

    num_train = 60_000 if ctx.quick else 400_000
    num_test = 20_000 if ctx.quick else 50_000
    ids_per_field = 20_000 if ctx.quick else 100_000
    admit_after = 3
    gen = CriteoLikeGenerator(num_ids_per_field=ids_per_field, seed=0)
    train, test = gen.sample(num_train), gen.sample(num_test)  # test: the events that follow
    case = f"{num_train:,} events, {ids_per_field:,} ids/field, admit after {admit_after}"
    embed_dim, batch = 8, 512
    rows: list[Measurement] = []

    def one_pass(model: nn.Module) -> dict[str, float]:
        trainer = OnlineTrainer(model, IteratorSource([train], batch_size=batch),
                                dense_optimizer=torch.optim.Adam(model.parameters(), lr=1e-3),
                                sync_every=50, validation="train")  # fmt: skip
        start = time.perf_counter()
        trainer.run()
        r = evaluate_ctr(model, test)
        return {"auc": r["auc"], "logloss": r["logloss"], "epoch": 1,
                "train_wall": time.perf_counter() - start}  # fmt: skip

    model = _build("DeepFM", train.num_fields,
                   _collisionless_factory(admit_after=admit_after, **ML_TABLE),
                   embed_dim=embed_dim, dense_dim=train.dense.shape[1])  # fmt: skip
    rows += _metric_rows(case, "collisionless", one_pass(model))
    table = next(m for m in model.modules() if isinstance(m, CollisionlessEmbedding))
    distinct = int(torch.unique(train.ids).numel())
    rows += [
        Measurement(case, "collisionless", "rows", len(table), "", False),
        Measurement(case, "collisionless", "distinct_ids_seen", distinct, "", False),
        Measurement(case, "collisionless", "serving_bytes", serving_bytes(table), "B", False),
    ]
    # equal bytes (the index of ids still being counted for admission costs memory too),
    # and equal rows (what the table's row storage alone would buy a hashed table)
    for label, num_rows in (("hashed (equal memory)", _equal_memory_rows(table)),
                            ("hashed (equal rows)", len(table))):  # fmt: skip
        hashed = _build("DeepFM", train.num_fields, _hashed_factory(num_rows, seed=0),
                        embed_dim=embed_dim, dense_dim=train.dense.shape[1])  # fmt: skip
        rows += _metric_rows(case, label, one_pass(hashed))
        rows.append(Measurement(case, label, "rows", num_rows, "", False))
    return rows


# --------------------------------------------------------------------------- OptFS


def run_optfs(ctx: BenchContext) -> list[Measurement]:
    from subspace_recsys.optfs import optfs_movielens

    kwargs = {"train_epochs": 2, "search_epochs": 2} if ctx.quick else {}
    start = time.perf_counter()
    r = optfs_movielens(**kwargs)
    wall = time.perf_counter() - start
    case = "DeepFM, MovieLens-100K CTR"
    removed = 100.0 * len(r.dropped_ids) / max(r.num_candidates, 1)
    rel_drop = 100.0 * (r.baseline["auc"] - r.retrained["auc"]) / r.baseline["auc"]
    return [
        Measurement(case, "OptFS", "test_auc", r.retrained["auc"]),
        Measurement(case, "OptFS", "test_logloss", r.retrained["logloss"], "", False),
        Measurement(case, "OptFS", "features_removed", removed, "%"),
        Measurement(case, "OptFS", "relative_auc_drop", rel_drop, "%", False),
        Measurement(case, "OptFS", "wall", wall, "s", False),
        Measurement(case, "all features", "test_auc", r.baseline["auc"]),
        Measurement(case, "all features", "test_logloss", r.baseline["logloss"], "", False),
        Measurement(case, "all features", "features_removed", 0.0, "%"),
    ]


# --------------------------------------------------------------------------- streaming


def _one_thread(run: Callable[[BenchContext], list[Measurement]]):
    """Run with one torch thread: batches of 512 events gain nothing from a second thread,
    and on a shared machine a descheduled OpenMP thread stalls every op."""

    def wrapped(ctx: BenchContext) -> list[Measurement]:
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            return run(ctx)
        finally:
            torch.set_num_threads(threads)

    wrapped.__doc__ = run.__doc__
    return wrapped


def run_streaming(ctx: BenchContext) -> list[Measurement]:
    from subspace_recsys.stream import measure_stream_throughput
    from subspace_recsys.testing_redis import RedisServerUnavailable

    case = "Criteo-like events, batch 512"
    try:
        r = measure_stream_throughput(20_000 if ctx.quick else 100_000, batch_size=512)
    except (RedisServerUnavailable, ModuleNotFoundError) as exc:
        return [_unavailable(case, "redis stream", str(exc).splitlines()[0])]
    method = "redis stream"
    return [
        Measurement(case, method, "produce_events_per_s", r["produce_events_per_s"], "1/s"),
        Measurement(case, method, "consume_events_per_s", r["consume_events_per_s"], "1/s"),
        Measurement(case, method, "train_events_per_s", r["train_events_per_s"], "1/s"),
        Measurement(case, method, "window_auc", r["window_auc"]),
    ]


TABLE_THROUGHPUT = register_benchmark(
    Benchmark(
        name="recsys/table_throughput",
        method="collisionless",
        baselines=("python dict", "torchrec MCH"),
        run=_one_thread(run_table_throughput),
        description="CollisionlessEmbedding lookups/inserts per second, bytes per entry and "
        "collisions at 1M (and 10M) ids vs a Python dict and torchrec's ZCH module.",
    )
)

MOVIELENS_CTR = register_benchmark(
    Benchmark(
        name="recsys/movielens_ctr",
        method="collisionless",
        baselines=("hashed (equal memory)",),
        run=_one_thread(run_movielens_ctr),
        description="MovieLens-100K CTR: DeepFM / DCN-v2 / Wide&Deep on a collisionless vs a "
        "hashed table at equal memory (test AUC, log loss); online vs batch training.",
    )
)

CRITEO_LIKE = register_benchmark(
    Benchmark(
        name="recsys/criteo_like",
        method="collisionless",
        baselines=("hashed (equal memory)", "hashed (equal rows)"),
        run=_one_thread(run_criteo_like),
        description="Criteo-shaped Zipfian stream: DeepFM online, collisionless table with "
        "frequency admission vs a hashed table at equal memory.",
    )
)

OPTFS = register_benchmark(
    Benchmark(
        name="recsys/optfs",
        method="OptFS",
        baselines=("all features",),
        run=_one_thread(run_optfs),
        description="OptFS feature selection with DeepFM on MovieLens-100K CTR: features removed "
        "vs relative AUC drop (target >= 50 % at <= 0.3 %).",
    )
)

STREAMING = register_benchmark(
    Benchmark(
        name="recsys/streaming",
        method="redis stream",
        baselines=(),
        run=_one_thread(run_streaming),
        description="Events/s end to end through a real redis-server: produce, consume, "
        "consume + train.",
    )
)
