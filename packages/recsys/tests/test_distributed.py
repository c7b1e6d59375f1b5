"""A table sharded over 2 gloo ranks (CPU) equals the single-process table on the global batch.

All distributed scenarios run in ONE pair of rank processes forked from pytest (module
fixture), each running :func:`_worker` and writing what it saw to a safetensors file; the
tests compare those with a single-process table trained in the pytest process.

Why ``init_std=0`` in the equality runs: a table initialises a new row from its own
generator in insertion order, so a shard (seeing a subset of the ids, in another order, with
another seed) necessarily starts its rows from other random numbers than the single table.
With zero initial rows every row value is a function of the gradients the id received,
which is exactly what sharding must preserve; the loss ``|e - target|^2`` makes those
gradients depend on the current row, so a row routed to the wrong id or rank after the first
step shows up in every later output. Admission, key sets and expiry do not depend on the
initial values and are compared as sets/flags.
"""

from __future__ import annotations

import multiprocessing
import socket
import traceback
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch import nn

from subspace_recsys.distributed import (
    ShardedCollisionlessEmbedding,
    ddp_ignore_sharded,
    gather_to_single,
    load_shard,
    owner_of,
    save_shard,
    shard_from_single,
)
from subspace_recsys.table import CollisionlessEmbedding, TableDelta

# ---------------------------------------------------------------------------------------
# shared scenario (the worker and the reference both build it from these functions)
# ---------------------------------------------------------------------------------------
WORLD = 2
DIM = 4
STEPS = 6
BATCH, FIELDS = 8, 3
EXPIRE_AT = 4  # expire(now=EXPIRE_AT) after that step's optimizer step
KW = {
    "admit_after": 2,
    "ttl": 2,
    "optimizer": "adagrad",
    "lr": 0.1,
    "init_std": 0.0,
    "initial_capacity": 4,
}


def _batch(t: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Global batch of step t: ids [B, F] (skewed, with duplicates) and targets [B, F, DIM]."""
    g = torch.Generator().manual_seed(100 + t)
    vocab = 6 + 2 * t  # new ids keep arriving, old ones go quiet (so expiry has work)
    values = (torch.rand(BATCH, FIELDS, generator=g) ** 2 * vocab).long() + t // 2
    ids = (torch.arange(FIELDS) << 40) | values
    return ids, torch.randn(BATCH, FIELDS, DIM, generator=g)


PROBE = torch.unique(torch.cat([_batch(t)[0].reshape(-1) for t in range(STEPS)]))


def _values_of(table: CollisionlessEmbedding) -> torch.Tensor:
    """Rows of every admitted id of a single table, in key order: [len(table), DIM]."""
    return table.gather_rows(table.lookup_rows(table.keys(), insert=False)).detach()


def _grad_by_id(ids: torch.Tensor, grad: torch.Tensor) -> dict[int, torch.Tensor]:
    out: dict[int, torch.Tensor] = {}
    for i, g in zip(ids.reshape(-1).tolist(), grad.reshape(-1, grad.shape[-1]), strict=True):
        out[i] = out.get(i, 0) + g
    return out


def _stack(d: dict[int, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    keys = sorted(d)
    return torch.tensor(keys, dtype=torch.int64), torch.stack([d[k] for k in keys])


def _train_reference():
    """The single-process table on the global batches: per-step records."""
    table = CollisionlessEmbedding(DIM, **KW)
    rec = {}
    for t in range(STEPS):
        ids, target = _batch(t)
        out = table(ids, now=t)
        out.retain_grad()
        ((out - target) ** 2).mean().backward()
        admitted = table.contains(ids)
        grad = _grad_by_id(ids[admitted], out.grad[admitted])
        table.step()
        rec[f"out{t}"] = out.detach()
        rec[f"grad_ids{t}"], rec[f"grad{t}"] = _stack(grad)
        rec[f"contains{t}"] = table.contains(PROBE)
        if t == EXPIRE_AT:
            rec["expired"] = torch.tensor(table.expire(EXPIRE_AT))
        rec[f"keys{t}"] = table.keys()
    return table, rec


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


class _Tower(nn.Module):
    """A CTR-like model: an embedding table (sharded or not) and a dense linear head."""

    def __init__(self, table: nn.Module):
        super().__init__()
        self.table = table
        self.head = nn.Linear(FIELDS * DIM, 1)
        with torch.no_grad():  # the same start on every rank and in the reference
            self.head.weight.copy_(torch.randn(1, FIELDS * DIM, generator=_gen(7)))
            self.head.bias.zero_()

    def forward(self, ids: torch.Tensor, now: int) -> torch.Tensor:
        return self.head(self.table(ids, now=now).flatten(1)).squeeze(1)


def _tower_steps(model: nn.Module, step_ids, rank: int = 0, world: int = 1) -> None:
    """A few steps of mean-BCE training with dense SGD + the table's own sparse step."""
    dense = torch.optim.SGD([p for n, p in model.named_parameters() if "head" in n], lr=0.5)
    for t in range(TOWER_STEPS):
        ids, target = _batch(t)
        label = (target.sum((1, 2)) > 0).float()
        ids, label = ids.chunk(world)[rank], label.chunk(world)[rank]
        loss = nn.functional.binary_cross_entropy_with_logits(model(ids, now=t), label)
        dense.zero_grad()
        loss.backward()
        dense.step()
        step_ids(model)


TOWER_STEPS = 3


# ---------------------------------------------------------------------------------------
# the worker (runs on each rank)
# ---------------------------------------------------------------------------------------
def _spy_grads(table: ShardedCollisionlessEmbedding, sink: dict[int, torch.Tensor]) -> None:
    """Record, by id, every gradient the sharded module hands its local shard."""
    local, original = table.local, table.local.accumulate_grad

    def accumulate_grad(rows, grad):
        keys = local.keys()
        row_to_id = dict(
            zip(local.lookup_rows(keys, insert=False).tolist(), keys.tolist(), strict=True)
        )
        for r, g in zip(rows.tolist(), grad, strict=True):
            if r >= 0:
                sink[row_to_id[r]] = sink.get(row_to_id[r], 0) + g
        original(rows, grad)

    local.accumulate_grad = accumulate_grad


def _catch(fn) -> str:
    try:
        fn()
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}"
    return "no error"


def _worker(rank: int, world: int, init_method: str, out: str) -> None:
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=init_method, rank=rank, world_size=world)
    rec: dict[str, torch.Tensor] = {}
    msgs: dict[str, str] = {}

    # 1. training equals the single-process table on the concatenated batch
    table = ShardedCollisionlessEmbedding(DIM, **KW)
    for t in range(STEPS):
        ids, target = _batch(t)
        ids, target = ids.chunk(world)[rank], target.chunk(world)[rank]
        grads: dict[int, torch.Tensor] = {}
        _spy_grads(table, grads)
        emb = table(ids, now=t)
        ((emb - target) ** 2).mean().backward()
        table.step()
        rec[f"out{t}"] = emb.detach()
        if grads:
            rec[f"grad_ids{t}"], rec[f"grad{t}"] = _stack(grads)
        rec[f"contains{t}"] = table.contains(PROBE)
        if t == EXPIRE_AT:
            rec["expired"] = torch.tensor(table.expire(EXPIRE_AT))
        rec[f"keys{t}"] = table.keys()
        rec[f"len{t}"] = torch.tensor(len(table))
    rec["local_keys"] = table.local.keys()
    rec["local_values"] = table.local.gather_rows(
        table.local.lookup_rows(rec["local_keys"], insert=False)
    )
    table.eval()
    with torch.no_grad():
        rec["eval_probe"] = table(PROBE)

    # 2. persistence: own shard round trip, wrong shard refused, sharded -> single -> sharded
    save_shard(table, out)
    dist.barrier()
    again = ShardedCollisionlessEmbedding(DIM, **KW).eval()
    load_shard(again, out)
    rec["reloaded_probe"] = again(PROBE)
    other = load_file(str(Path(out) / f"shard-{1 - rank:05d}-of-{world:05d}.safetensors"))
    msgs["wrong_shard"] = _catch(lambda: again.load_state_dict(other))
    single = gather_to_single(table, dst=None)
    if rank == 0:
        rec["single_keys"] = single.keys()
        rec["single_values"] = single.gather_rows(single.lookup_rows(single.keys(), insert=False))
    resharded = shard_from_single(single).eval()
    rec["resharded_probe"] = resharded(PROBE)
    rec["resharded_local_keys"] = resharded.local.keys()
    # one more step on both copies: equal rows only if optimizer state and last_seen moved too
    ids, target = _batch(STEPS)
    ids, target = ids.chunk(world)[rank], target.chunk(world)[rank]
    for copy in (again, resharded):
        copy.train()
        ((copy(ids, now=STEPS) - target) ** 2).mean().backward()
        copy.step()
        copy.expire(STEPS)
        rec[f"continued_{'resharded' if copy is resharded else 'reloaded'}"] = copy.eval()(
            table.keys()
        )
    delta = table.export_delta()
    rec["delta_ids"], rec["delta_values"], rec["delta_evicted"] = (
        delta.ids,
        delta.values,
        delta.evicted,
    )

    # 3. counting: one count per occurrence across ranks and duplicates (admit_after=3)
    count = ShardedCollisionlessEmbedding(DIM, admit_after=3, init_std=0.0)
    count(torch.tensor([[7, 7], [9, 9]]) if rank == 0 else torch.tensor([7, 11]), now=0)
    rec["count_step0"] = count.contains(torch.tensor([7, 9, 11]))
    count.eval()
    count(torch.tensor([9]))  # eval lookups record nothing
    count.train()
    count(torch.tensor([9]) if rank == 1 else torch.empty(0, dtype=torch.int64), now=1)
    rec["count_step1"] = count.contains(torch.tensor([7, 9, 11]))

    # 4. ranks with different `now`: each owner stamps a source's ids with that rank's now
    clocks = ShardedCollisionlessEmbedding(DIM, ttl=5, init_std=0.0)
    clocks(torch.arange(10) + 100 * rank, now=10.0 + 10 * rank)  # rank 0: 10, rank 1: 20
    clocks.expire(22.0)  # keeps last_seen >= 17: rank 1's ids only
    rec["clock_keys"] = clocks.keys()

    # 5. bad input raises on every rank and leaves the group usable (no hang)
    ok = torch.tensor([1, 2, 3])
    msgs["negative"] = _catch(lambda: table.train()(ok if rank == 0 else -ok))
    msgs["float"] = _catch(lambda: table(ok.float() if rank == 0 else ok))
    msgs["mixed_now"] = _catch(lambda: table(ok, now=None if rank == 0 else 5))
    msgs["grad_mode"] = _catch(lambda: _maybe_no_grad(rank == 1, lambda: table(ok, now=9)))
    msgs["train_mode"] = _catch(lambda: table.train(rank == 0)(ok, now=9))
    table.eval()
    rec["after_errors"] = table(PROBE)

    # 6. gradient_division=False with a summed loss: plain sum over ranks
    plain = ShardedCollisionlessEmbedding(DIM, gradient_division=False, **KW)
    for t in range(2):
        ids, target = _batch(t)
        ids, target = ids.chunk(world)[rank], target.chunk(world)[rank]
        ((plain(ids, now=t) - target) ** 2).sum().backward()
        plain.step()
    plain.eval()
    rec["plain_probe"] = plain(PROBE)

    # 7. now=None: every shard's clock advances once per forward, like the single table's
    ticking = ShardedCollisionlessEmbedding(DIM, **KW)
    for t in range(STEPS):
        ticking(_batch(t)[0].chunk(world)[rank])
    rec["ticking_expired"] = torch.tensor(ticking.expire())
    rec["ticking_keys"] = ticking.keys()

    # 8. with DDP over the dense head: the whole model trains like the single process
    tower = _Tower(ShardedCollisionlessEmbedding(DIM, **KW))
    ddp_ignore_sharded(tower)
    ddp = nn.parallel.DistributedDataParallel(tower)
    _tower_steps(ddp, lambda _: tower.table.step(), rank, world)
    rec["tower_head"] = tower.head.weight.detach().clone()
    rec["tower_values"] = tower.table.eval()(PROBE)

    save_file(
        {k: v.contiguous() for k, v in rec.items()}, str(Path(out) / f"rec{rank}.st"), metadata=msgs
    )
    dist.barrier()
    dist.destroy_process_group()


def _maybe_no_grad(flag: bool, fn):
    if flag:
        with torch.no_grad():
            return fn()
    return fn()


# ---------------------------------------------------------------------------------------
# tests
# ---------------------------------------------------------------------------------------
def _run_rank(rank: int, init_method: str, out: str) -> None:
    """Entry point of a forked rank: run the worker, leave any traceback in a file."""
    try:
        _worker(rank, WORLD, init_method, out)
    except BaseException:
        Path(out, f"error{rank}.txt").write_text(traceback.format_exc())
        raise


@pytest.fixture(scope="module")
def ranks(tmp_path_factory):
    out = tmp_path_factory.mktemp("sharded")
    with socket.socket() as sock:  # a free TCP port on 127.0.0.1 for the rendezvous
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    # fork, not spawn or a fresh interpreter: a rank then starts in milliseconds instead of
    # re-importing torch (~6 s per process on these shared CPUs); each rank sets one thread
    # before any torch op, so the parent's intra-op pool is never used in a child
    import torch._dynamo  # noqa: F401  (DDP imports it: once here, not once per rank)

    ctx = multiprocessing.get_context("fork")
    procs = [
        ctx.Process(target=_run_rank, args=(r, f"tcp://127.0.0.1:{port}", str(out)))
        for r in range(WORLD)
    ]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=120)
    for p in procs:
        if p.is_alive():
            p.kill()
    errors = [(out / f"error{r}.txt") for r in range(WORLD)]
    logs = "\n".join(e.read_text() for e in errors if e.exists())
    assert all(p.exitcode == 0 for p in procs), f"exit codes {[p.exitcode for p in procs]}\n{logs}"
    recs, msgs = [], []
    for r in range(WORLD):
        path = out / f"rec{r}.st"
        recs.append(load_file(str(path)))
        with safe_open(str(path), "pt") as f:
            msgs.append(f.metadata())
    return recs, msgs, out


@pytest.fixture(scope="module")
def reference():
    return _train_reference()


def test_lookups_equal_single_table_every_step(ranks, reference):
    recs, _, _ = ranks
    _, ref = reference
    for t in range(STEPS):
        got = torch.cat([recs[r][f"out{t}"] for r in range(WORLD)])
        torch.testing.assert_close(got, ref[f"out{t}"], rtol=1e-6, atol=1e-7, msg=f"step {t}")
    assert float(ref[f"out{STEPS - 1}"].abs().sum()) > 0  # rows moved away from init_std=0


def test_gradients_reach_owners_like_single_table(ranks, reference):
    recs, _, _ = ranks
    _, ref = reference
    for t in range(STEPS):
        parts = [r for r in range(WORLD) if f"grad_ids{t}" in recs[r]]
        ids = torch.cat([recs[r][f"grad_ids{t}"] for r in parts])
        grad = torch.cat([recs[r][f"grad{t}"] for r in parts])
        for r in parts:  # each rank received only gradients of ids it owns
            assert (owner_of(recs[r][f"grad_ids{t}"], WORLD) == r).all()
        order = ids.argsort()
        assert torch.equal(ids[order], ref[f"grad_ids{t}"]), f"step {t}"
        torch.testing.assert_close(grad[order], ref[f"grad{t}"], rtol=1e-6, atol=1e-8)


def test_admission_keys_and_expiry_equal_single_table(ranks, reference):
    recs, _, _ = ranks
    _, ref = reference
    for t in range(STEPS):
        for r in range(WORLD):  # collective views agree on every rank
            assert torch.equal(recs[r][f"contains{t}"], ref[f"contains{t}"]), (t, r)
            assert torch.equal(recs[r][f"keys{t}"], ref[f"keys{t}"]), (t, r)
            assert int(recs[r][f"len{t}"]) == len(ref[f"keys{t}"])
    expired = sum(int(recs[r]["expired"]) for r in range(WORLD))
    assert expired == int(ref["expired"]) > 0
    # some admitted ids went quiet for longer than ttl and were evicted
    assert set(ref[f"keys{EXPIRE_AT - 1}"].tolist()) - set(ref[f"keys{EXPIRE_AT}"].tolist())


def test_union_of_shards_is_the_single_table(ranks, reference):
    recs, _, _ = ranks
    ref_table, _ = reference
    keys = torch.cat([recs[r]["local_keys"] for r in range(WORLD)])
    values = torch.cat([recs[r]["local_values"] for r in range(WORLD)])
    for r in range(WORLD):
        assert (owner_of(recs[r]["local_keys"], WORLD) == r).all()
    order = keys.argsort()
    assert torch.equal(keys[order], ref_table.keys())
    torch.testing.assert_close(values[order], _values_of(ref_table), rtol=1e-6, atol=1e-7)
    ref_table.eval()
    for r in range(WORLD):
        torch.testing.assert_close(recs[r]["eval_probe"], ref_table(PROBE), rtol=1e-6, atol=1e-7)


def test_occurrences_count_across_ranks_and_duplicates(ranks):
    recs, _, _ = ranks
    # step 0: id 7 twice on rank 0 + once on rank 1 = 3 >= admit_after; id 9 twice; 11 once
    # step 1: an eval lookup of 9 records nothing, then one training occurrence makes it 3
    for r in range(WORLD):
        assert recs[r]["count_step0"].tolist() == [True, False, False]
        assert recs[r]["count_step1"].tolist() == [True, True, False]


def test_each_source_rank_keeps_its_own_now(ranks):
    recs, _, _ = ranks
    for r in range(WORLD):
        assert recs[r]["clock_keys"].tolist() == list(range(100, 110))


def test_bad_input_raises_on_every_rank(ranks):
    recs, msgs, _ = ranks
    assert msgs[1]["negative"].startswith("ValueError") and "non-negative" in msgs[1]["negative"]
    assert msgs[0]["negative"].startswith("ValueError") and "[1]" in msgs[0]["negative"]
    assert msgs[0]["float"].startswith("TypeError") and "int64" in msgs[0]["float"]
    assert msgs[1]["float"].startswith("TypeError") and "[0]" in msgs[1]["float"]
    for r in range(WORLD):
        assert msgs[r]["mixed_now"].startswith("ValueError") and "now" in msgs[r]["mixed_now"]
        assert msgs[r]["grad_mode"].startswith("RuntimeError"), msgs[r]["grad_mode"]
        assert msgs[r]["train_mode"].startswith("RuntimeError"), msgs[r]["train_mode"]
        assert "train/eval" in msgs[r]["train_mode"]
        # the group is still in step afterwards: a normal lookup works and is unchanged
        torch.testing.assert_close(recs[r]["after_errors"], recs[r]["eval_probe"])


def test_shard_files_round_trip_and_refuse_other_ranks(ranks):
    recs, msgs, out = ranks
    assert sorted(p.name for p in out.glob("shard-*.safetensors")) == [
        f"shard-{r:05d}-of-{WORLD:05d}.safetensors" for r in range(WORLD)
    ]
    for r in range(WORLD):
        assert torch.equal(recs[r]["reloaded_probe"], recs[r]["eval_probe"])
        assert msgs[r]["wrong_shard"].startswith("ValueError")
        assert f"rank {r} of {WORLD}" in msgs[r]["wrong_shard"]


def test_gather_to_single_and_back(ranks, reference):
    recs, _, _ = ranks
    ref_table, _ = reference
    assert torch.equal(recs[0]["single_keys"], ref_table.keys())
    torch.testing.assert_close(
        recs[0]["single_values"], _values_of(ref_table), rtol=1e-6, atol=1e-7
    )
    for r in range(WORLD):
        assert torch.equal(recs[r]["resharded_probe"], recs[r]["eval_probe"])
        assert torch.equal(recs[r]["resharded_local_keys"], recs[r]["local_keys"])
        # after one more training step the resharded copy still equals the checkpointed one
        # on every id it carried: the adagrad sums and last_seen went through the conversion
        torch.testing.assert_close(
            recs[r]["continued_resharded"], recs[r]["continued_reloaded"], rtol=0, atol=0
        )
        before = _values_of(ref_table)
        assert not torch.allclose(recs[r]["continued_reloaded"], before, atol=1e-3)


def test_shard_deltas_rebuild_a_serving_copy(ranks, reference):
    recs, _, _ = ranks
    ref_table, _ = reference
    serving = CollisionlessEmbedding(DIM, **KW).eval()
    for r in range(WORLD):
        serving.apply_delta(
            TableDelta(
                ids=recs[r]["delta_ids"],
                values=recs[r]["delta_values"],
                evicted=recs[r]["delta_evicted"],
            )
        )
    ref_table.eval()
    torch.testing.assert_close(serving(PROBE), ref_table(PROBE), rtol=1e-6, atol=1e-7)


def test_without_gradient_division_ranks_sum(ranks):
    recs, _, _ = ranks
    table = CollisionlessEmbedding(DIM, **KW)
    for t in range(2):
        ids, target = _batch(t)
        ((table(ids, now=t) - target) ** 2).sum().backward()
        table.step()
    table.eval()
    for r in range(WORLD):
        torch.testing.assert_close(recs[r]["plain_probe"], table(PROBE), rtol=1e-6, atol=1e-7)


def test_clock_without_now_advances_like_the_single_table(ranks):
    recs, _, _ = ranks
    table = CollisionlessEmbedding(DIM, **KW)
    for t in range(STEPS):
        table(_batch(t)[0])
    expired = table.expire()  # at the clock: STEPS forwards
    assert expired > 0
    assert sum(int(recs[r]["ticking_expired"]) for r in range(WORLD)) == expired
    for r in range(WORLD):
        assert torch.equal(recs[r]["ticking_keys"], table.keys())


def test_ddp_dense_part_with_sharded_table_equals_single_process(ranks):
    recs, _, _ = ranks
    tower = _Tower(CollisionlessEmbedding(DIM, **KW))
    _tower_steps(tower, lambda m: m.table.step())
    tower.table.eval()
    for r in range(WORLD):
        torch.testing.assert_close(recs[r]["tower_head"], tower.head.weight.detach())
        torch.testing.assert_close(
            recs[r]["tower_values"], tower.table(PROBE), rtol=1e-6, atol=1e-7
        )
    assert tower.table(PROBE).abs().sum() > 0


# ---------------------------------------------------------------------------------------
# owner hash (no process group needed)
# ---------------------------------------------------------------------------------------
def _splitmix64_py(x: int) -> int:
    m = (1 << 64) - 1
    x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9 & m
    x = (x ^ (x >> 27)) * 0x94D049BB133111EB & m
    return x ^ (x >> 31)


def test_owner_hash_matches_uint64_reference():
    from subspace_recsys.distributed import _GOLDEN, _OWNER_SALT

    ids = torch.tensor([0, 1, 2, 12345, (2 << 40) | 77, 2**62 + 3, 2**63 - 1])
    for world in (1, 2, 3, 8):
        want = [
            (_splitmix64_py(((i ^ _OWNER_SALT) + _GOLDEN) & ((1 << 64) - 1)) >> 32) % world
            for i in ids.tolist()
        ]
        assert owner_of(ids, world).tolist() == want


def test_owner_hash_spreads_consecutive_and_field_tagged_ids():
    for ids in (
        torch.arange(4000),
        (torch.arange(4) << 40).repeat_interleave(1000) | torch.arange(1000).repeat(4),
    ):
        counts = torch.bincount(owner_of(ids, 4), minlength=4).double()
        chi2 = float(((counts - 1000) ** 2 / 1000).sum())
        assert chi2 < 16.3, counts  # 3 degrees of freedom, p = 0.001


def test_owner_hash_rejects_bad_arguments():
    with pytest.raises(TypeError, match=r"ids: expected an int64 tensor, got torch\.float32"):
        owner_of(torch.ones(2), 2)
    with pytest.raises(ValueError, match=r"world_size: expected an int >= 1, got 0"):
        owner_of(torch.ones(2, dtype=torch.int64), 0)


def test_sharded_table_needs_a_process_group():
    with pytest.raises(RuntimeError, match="init_process_group"):
        ShardedCollisionlessEmbedding(DIM)
