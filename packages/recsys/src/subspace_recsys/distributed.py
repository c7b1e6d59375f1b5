"""Row-wise sharded collisionless embedding tables over ``torch.distributed`` (scale-out).

:class:`ShardedCollisionlessEmbedding` spreads one logical
:class:`~subspace_recsys.table.CollisionlessEmbedding` over the ranks of a process group:
rank ``r`` owns every id with :func:`owner_of` ``(id) == r`` and keeps them in an ordinary
local ``CollisionlessEmbedding`` (its own cuckoo index, admission counters, clock and
sparse optimizer). A forward pass on each rank's slice of the global batch:

1. validates the ids and ``now`` *before* any collective, then exchanges a small header
   (error flag, train/grad mode, ``now``, how many ids go to each owner) with one
   ``all_gather``, so bad input raises on **every** rank instead of leaving the others
   blocked in a collective;
2. deduplicates the ids and sends each distinct id once to its owner together with its
   occurrence count (``all_to_all_single``); the owner expands the counts again before
   ``lookup_rows``, so admission counts one per occurrence exactly like the single-process
   table on the concatenated batch, while the wire carries every id (and row) once;
3. owners look the ids up (recording/admitting them in training mode), gather the rows and
   send them back (``all_to_all_single``); each rank scatters them to the input positions.

Backward is a custom autograd Function: the gradient of each distinct id (duplicates summed
locally) goes to its owner with one more ``all_to_all_single`` and is handed to
``accumulate_grad``; the owner's ``step()`` then updates its rows. Every rank must
therefore run ``backward`` through each sharded lookup it made (as with DDP's all-reduce),
and all ranks must call the module the same number of times, in the same order.

Gradient scale: with ``gradient_division=True`` (the default, like torchrec's
``comm_ops.GRADIENT_DIVISION``) the routed gradients are divided by the world size, so a
model that averages its loss over the local batch and wraps its dense part in DDP (which
averages dense gradients) updates the table like single-process training on the global
batch with the loss averaged over the global batch (equal up to float32 summation order). With ``False`` owners receive
the plain sum over ranks (for summed losses).

With DDP: each rank's shard has its own buffers (of other sizes), which DDP must neither
broadcast from rank 0 nor all-reduce; call :func:`ddp_ignore_sharded` on the model before
wrapping it (torchrec's ``DistributedModelParallel`` likewise keeps its sharded tables out
of DDP). The dense part then trains as usual, and the tables are stepped by
``sparse_step(model)``.

Transport: gloo implements ``all_to_all_single`` on CPU in the torch this repo locks
(2.15; checked with uneven splits and 2-D tensors), so no padded ``all_gather`` or
send/recv emulation is needed. Ids, rows and gradients stay on the CPU (the tables are CPU
tables); the collectives used are ``all_gather``, ``all_reduce``, ``gather`` and
``all_to_all_single``.

The GPU path is torchrec: its sharded ``EmbeddingBagCollection`` with managed-collision
(zero-collision hashing) modules runs on fbgemm-gpu's fused CUDA kernels and overlaps the
all-to-alls with compute. This module is the CPU / gloo implementation: pure PyTorch, no
fbgemm, for CPU training, for tests, and for checking a sharded run against the
single-process table.
"""

from __future__ import annotations

import json
import math
import numbers
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn

from subspace_recsys.hashing import shr64, signed64, splitmix64
from subspace_recsys.table import CollisionlessEmbedding, TableDelta

__all__ = [
    "ShardedCollisionlessEmbedding",
    "ddp_ignore_sharded",
    "gather_to_single",
    "load_shard",
    "owner_of",
    "save_shard",
    "shard_from_single",
    "shard_path",
]

# Salt that makes the owner hash independent of the table's own bucket hash: were both the
# same function of the id, a shard (the ids of one residue) would use only part of its
# buckets.
_OWNER_SALT = 0x5D1B_7A3E_C42F_9E61
_GOLDEN = 0x9E37_79B9_7F4A_7C15

# header codes for input errors found before the first collective
_OK, _BAD_TYPE, _BAD_VALUE = 0, 1, 2
# kinds of ``now`` carried in the header (the value travels as its int64 bits)
_NOW_NONE, _NOW_INT, _NOW_FLOAT = 0, 1, 2


def owner_of(ids: Tensor, world_size: int) -> Tensor:
    """The rank that owns each id: ``(splitmix64((id ^ salt) + golden) >> 32) % world_size``.

    ``splitmix64`` is the output function of the SplitMix64 generator (Steele, Lea & Flood
    2014; the xor-shift / multiply rounds of Stafford's "Mix13", as in Vigna's
    ``splitmix64.c``), in wrapping 64-bit arithmetic: every input bit reaches every output
    bit, so consecutive ids and field-tagged ids ``(f << 40) | v`` spread evenly over the
    ranks. The salt keeps it independent of the table's bucket hash (murmur3
    fmix64 of the raw id), and the high 32 bits are used so the modulo sees mixed bits.

    Args:
        ids: int64 tensor of any shape (non-negative ids).
        world_size: number of ranks, >= 1.

    Returns:
        LongTensor of ``ids.shape`` with values in ``[0, world_size)``.
    """
    if not isinstance(ids, Tensor) or ids.dtype != torch.int64:
        got = ids.dtype if isinstance(ids, Tensor) else type(ids).__name__
        raise TypeError(f"ids: expected an int64 tensor, got {got}")
    if isinstance(world_size, bool) or not isinstance(world_size, int) or world_size < 1:
        raise ValueError(f"world_size: expected an int >= 1, got {world_size!r}")
    mixed = splitmix64((ids ^ signed64(_OWNER_SALT)) + signed64(_GOLDEN))
    return shr64(mixed, 32) % world_size


def _validate_ids(ids: Any) -> tuple[int, str]:
    """(error code, message) for ``ids``; checked on every rank before any collective."""
    if not isinstance(ids, Tensor):
        return _BAD_TYPE, f"ids: expected an integer torch.Tensor, got {type(ids).__name__}"
    if ids.dtype.is_floating_point or ids.dtype.is_complex or ids.dtype == torch.bool:
        return _BAD_TYPE, f"ids: expected an integer tensor (int64), got {ids.dtype}"
    if ids.device.type != "cpu":
        return _BAD_VALUE, f"ids: expected a CPU tensor (gloo transport), got {ids.device}"
    if ids.numel() and int(ids.min()) < 0:
        return _BAD_VALUE, f"ids: expected non-negative ids, got minimum {int(ids.min())}"
    return _OK, ""


def _encode_now(now: Any) -> tuple[int, int, str]:
    """(kind, int64 bits, error message) of ``now``: None, a real number or a 1-element
    tensor."""
    if isinstance(now, Tensor):
        if now.numel() != 1:
            return 0, 0, f"now: expected a number or a 1-element tensor, got {list(now.shape)}"
        now = now.item()
    if now is None:
        return _NOW_NONE, 0, ""
    if isinstance(now, bool) or not isinstance(now, numbers.Real):
        return 0, 0, f"now: expected None or a real number, got {type(now).__name__}"
    if isinstance(now, numbers.Integral):
        if not -(1 << 63) <= int(now) < 1 << 63:
            return 0, 0, f"now: expected a value that fits int64, got {now}"
        return _NOW_INT, int(now), ""
    if not math.isfinite(now):
        return 0, 0, f"now: expected a finite number, got {now}"
    bits = torch.tensor([float(now)], dtype=torch.float64).view(torch.int64)
    return _NOW_FLOAT, int(bits), ""


def _decode_now(kind: int, bits: int) -> int | float | None:
    if kind == _NOW_NONE:
        return None
    if kind == _NOW_INT:
        return bits
    return float(torch.tensor([bits], dtype=torch.int64).view(torch.float64))


def _mix_seed(seed: int, rank: int) -> int:
    """Seed of rank ``rank``'s shard: rank 0 keeps ``seed`` (a one-rank group is then the
    single table); other ranks get a mixed one, so shards draw different initial rows."""
    if rank == 0:
        return seed
    x = splitmix64(torch.tensor([signed64(seed + rank * _GOLDEN)], dtype=torch.int64))
    return int(x) & ((1 << 63) - 1)


class _Route:
    """One lookup's routing: which distinct ids go to which owner, and the owner's rows."""

    def __init__(
        self,
        module: ShardedCollisionlessEmbedding,
        send: Tensor,
        send_splits: list[int],
        recv_splits: list[int],
        nows: list[Any],
        insert: bool,
    ):
        self.module = module
        self.send = send  # [n_send, 2]: (id, occurrences), grouped by owner rank
        self.send_splits = send_splits
        self.recv_splits = recv_splits
        self.nows = nows  # ``now`` of each source rank
        self.insert = insert
        self.rows: Tensor | None = None  # owner side: row of each received id, [n_recv]

    def _a2a(self, tensor: Tensor, out_splits: list[int], in_splits: list[int]) -> Tensor:
        out = tensor.new_empty((sum(out_splits), *tensor.shape[1:]))
        dist.all_to_all_single(
            out, tensor.contiguous(), out_splits, in_splits, group=self.module.process_group
        )
        return out

    def _owner_rows(self) -> Tensor:
        """Send the ids to their owners, which look them up (recording and admitting when
        inserting). Returns the owner-side row of each received id, [n_recv]."""
        recv = self._a2a(self.send, self.recv_splits, self.send_splits)
        table = self.module.local
        ids, counts = recv[:, 0], recv[:, 1]
        if not self.insert:
            self.rows = table.lookup_rows(ids, insert=False)
            return self.rows
        rows = torch.empty_like(ids)
        bounds = [0, *torch.tensor(self.recv_splits).cumsum(0).tolist()]
        # One lookup per run of source ranks that share ``now`` -- usually one call for the
        # whole received batch, which then counts exactly like the single table counting
        # the concatenated global batch, and advances a ``now=None`` clock once per forward.
        start = 0
        while start < len(self.nows):
            stop = start + 1
            while stop < len(self.nows) and self.nows[stop] == self.nows[start]:
                stop += 1
            lo, hi = bounds[start], bounds[stop]
            seg_counts = counts[lo:hi]
            expanded = ids[lo:hi].repeat_interleave(seg_counts)
            seg_rows = table.lookup_rows(expanded, insert=True, now=self.nows[start])
            # a lookup gives every occurrence of an id the same row, so the first occurrence
            # of each distinct id stands for all of them
            rows[lo:hi] = seg_rows[seg_counts.cumsum(0) - seg_counts]
            start = stop
        self.rows = rows
        return rows

    def fetch(self) -> Tensor:
        """Rows of the sent ids, gathered by their owners: [n_send, dim] in send order."""
        rows = self._owner_rows()
        with torch.no_grad():
            values = self.module.local.gather_rows(rows)
        return self._a2a(values, self.send_splits, self.recv_splits)

    def fetch_admitted(self) -> Tensor:
        """Whether each sent id is admitted on its owner: [n_send] bool in send order."""
        found = (self._owner_rows() >= 0).to(torch.int64)
        return self._a2a(found, self.send_splits, self.recv_splits).bool()

    def push_grad(self, grad: Tensor) -> None:
        """Route gradients [n_send, dim] (send order) to the owners' pending gradients."""
        assert self.rows is not None, "push_grad before fetch"
        grad = grad.to(torch.float32)
        if self.module.gradient_division and self.module.world_size > 1:
            grad = grad / self.module.world_size
        recv = self._a2a(grad, self.recv_splits, self.send_splits)
        self.module.local.accumulate_grad(self.rows, recv)


class _RouteGradToOwners(torch.autograd.Function):
    """Forward: :meth:`_Route.fetch`. Backward: the output gradient goes to the owners."""

    @staticmethod
    def forward(ctx, anchor: Tensor, route: _Route) -> Tensor:
        ctx.route = route
        return route.fetch()

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad: Tensor):
        ctx.route.push_grad(grad)
        return None, None


class ShardedCollisionlessEmbedding(nn.Module):
    """A collisionless embedding table sharded row-wise over the ranks of a process group.

    Args:
        dim: embedding dimension.
        process_group: the group to shard over (default: the world group); it must be
            initialised, and every rank of it must build the module with the same arguments.
        gradient_division: divide routed gradients by the world size (see the module
            docstring); default True.
        **table_kwargs: passed to the local
            :class:`~subspace_recsys.table.CollisionlessEmbedding` (``initial_capacity``,
            ``admit_after``, ``ttl``, ``optimizer``, ``lr``, ``init_std``, ...). ``seed`` is
            mixed with the rank so that shards draw different initial rows (rank 0 keeps it).

    Attributes:
        local: this rank's shard, a ``CollisionlessEmbedding``. It carries
            ``sparse_step_target``, so :func:`~subspace_recsys.table.sparse_step` on a model
            steps it.
        rank, world_size: this rank and the size of the group.

    Collective calls (every rank must make them, in the same order, in the same train/eval
    and grad mode): ``forward`` and backward through its output, ``contains``, ``keys``,
    ``len()``, :func:`gather_to_single`. Local calls (this rank's shard only): ``step``,
    ``zero_grad``, ``expire``, ``export_delta``, ``apply_delta`` (keeps the owned part),
    ``num_rows``, ``bytes_per_entry``, ``state_dict`` / ``load_state_dict`` (the shard plus
    the buffer ``shard_info`` = [rank, world_size], checked on load).
    """

    def __init__(
        self,
        dim: int,
        *,
        process_group: dist.ProcessGroup | None = None,
        gradient_division: bool = True,
        **table_kwargs: Any,
    ):
        super().__init__()
        if not (dist.is_available() and dist.is_initialized()):
            raise RuntimeError(
                "ShardedCollisionlessEmbedding: call "
                "torch.distributed.init_process_group(...) on every rank first"
            )
        self.process_group = process_group
        self.rank = dist.get_rank(process_group)
        if self.rank < 0:
            raise ValueError("process_group: expected a group this rank belongs to")
        self.world_size = dist.get_world_size(process_group)
        self.gradient_division = bool(gradient_division)
        self.table_kwargs = dict(table_kwargs)
        seed = _mix_seed(int(table_kwargs.get("seed", 0)), self.rank)
        self.local = CollisionlessEmbedding(dim, **{**table_kwargs, "seed": seed})
        self.dim = self.local.dim
        self.register_buffer("shard_info", torch.tensor([self.rank, self.world_size]))

    def owner_of(self, ids: Tensor) -> Tensor:
        """Owning rank of each id, LongTensor of ``ids.shape`` (see :func:`owner_of`)."""
        return owner_of(ids, self.world_size)

    # -- routing ---------------------------------------------------------------------------

    def _route(
        self, ids: Any, now: Any, *, insert: bool, needs_grad: bool, caller: str
    ) -> tuple[Tensor, _Route]:
        """Validate on every rank, exchange headers, plan the exchange (or raise everywhere).

        Returns (position of each flattened input id in the send order, the route).
        """
        code, message = _validate_ids(ids)
        now_kind, now_bits, now_error = _encode_now(now)
        if code == _OK and now_error:
            code, message = _BAD_TYPE, now_error
        send = pos = torch.zeros(0, dtype=torch.int64)
        send_splits = torch.zeros(self.world_size, dtype=torch.int64)
        if code == _OK:
            flat = ids.reshape(-1).to(torch.int64)
            uniq, inverse, counts = torch.unique(flat, return_inverse=True, return_counts=True)
            owners = owner_of(uniq, self.world_size)
            order = torch.argsort(owners, stable=True)
            send = torch.stack([uniq[order], counts[order]], dim=1)
            send_splits = torch.bincount(owners, minlength=self.world_size)
            slot = torch.empty_like(order)  # position of each distinct id in send order
            slot[order] = torch.arange(order.numel())
            pos = slot[inverse]
        flags = [code, int(insert), int(needs_grad), now_kind, now_bits]
        header = torch.cat([torch.tensor(flags, dtype=torch.int64), send_splits])
        headers = [torch.empty_like(header) for _ in range(self.world_size)]
        dist.all_gather(headers, header, group=self.process_group)
        table = torch.stack(headers)
        # Every rank sees the same headers and so takes the same branch below: a problem on
        # one rank raises on all of them, before anyone enters the id exchange.
        bad = [r for r in range(self.world_size) if int(table[r, 0]) != _OK]
        if bad:
            if code != _OK:
                error = TypeError if code == _BAD_TYPE else ValueError
                raise error(f"{caller}: {message} (rank {self.rank})")
            kinds = {int(table[r, 0]) for r in bad}
            error = TypeError if kinds == {_BAD_TYPE} else ValueError
            raise error(
                f"{caller}: rank(s) {bad} of the process group got invalid input (see the "
                "error raised there); every rank stops before the id exchange"
            )
        if len(set(table[:, 1].tolist())) > 1:
            raise RuntimeError(
                f"{caller}: ranks disagree on train/eval mode (training flag per rank: "
                f"{table[:, 1].tolist()})"
            )
        if len(set(table[:, 2].tolist())) > 1:
            raise RuntimeError(
                f"{caller}: ranks disagree on whether gradients are needed (per rank: "
                f"{table[:, 2].tolist()}); run the lookup under the same torch.no_grad() "
                "state on every rank"
            )
        nows = [_decode_now(int(k), int(b)) for k, b in table[:, 3:5].tolist()]
        if insert and len({n is None for n in nows}) > 1:
            raise ValueError(
                f"{caller}: now: expected None on every rank or a number on every rank, got {nows}"
            )
        recv_splits = table[:, 5 + self.rank].tolist()
        return pos, _Route(self, send, send_splits.tolist(), recv_splits, nows, insert)

    def forward(self, ids: Tensor, now: int | float | Tensor | None = None) -> Tensor:
        """Embeddings of ``ids`` (collective: every rank calls it with its own slice).

        Args:
            ids: integer tensor of any shape ``[*S]`` (non-negative ids) -- this rank's part
                of the global batch; parts may differ in size and be empty.
            now: timestamp of the batch for admission and expiry. ``None`` on every rank
                advances each shard's clock by one per call, in lockstep with the clock of
                a single table on the global batch. Ranks may pass different values: an
                owner stamps the ids of each source rank with that rank's ``now``.

        Returns:
            float32 Tensor ``[*S, dim]``: rows of admitted ids, zeros for the others. In
            training mode owners record every occurrence and admit ids; the output is then
            differentiable and backward routes its gradient to the owners (apply it with
            :meth:`step`). In eval mode nothing is recorded.
        """
        needs_grad = self.training and torch.is_grad_enabled()
        pos, route = self._route(
            ids,
            now,
            insert=self.training,
            needs_grad=needs_grad,
            caller="ShardedCollisionlessEmbedding.forward",
        )
        if needs_grad:
            anchor = torch.empty(0, requires_grad=True)  # makes the output differentiable
            values = _RouteGradToOwners.apply(anchor, route)
        else:
            values = route.fetch()
        return values[pos].reshape(*ids.shape, self.dim)

    def contains(self, ids: Tensor) -> Tensor:
        """Whether each id is admitted on its owner (collective; records nothing).

        Args:
            ids: integer tensor ``[*S]``.

        Returns:
            BoolTensor ``[*S]``.
        """
        pos, route = self._route(
            ids,
            None,
            insert=False,
            needs_grad=False,
            caller="ShardedCollisionlessEmbedding.contains",
        )
        return route.fetch_admitted()[pos].reshape(ids.shape)

    # -- the local shard -------------------------------------------------------------------

    def step(self) -> None:
        """Apply the local shard's sparse optimizer to the rows that got gradients."""
        self.local.step()

    def zero_grad(self, set_to_none: bool = True) -> None:
        """Drop the local shard's pending gradients."""
        self.local.zero_grad()

    def expire(self, now: int | float | None = None) -> int:
        """Evict this shard's ids with ``last_seen < now - ttl`` (``None``: the shard's
        clock). Returns the local count (``all_reduce`` it for the global one).
        Not collective."""
        return int(self.local.expire(now))

    def export_delta(self, *, include_optimizer_state: bool = False) -> TableDelta:
        """This shard's :class:`~subspace_recsys.table.TableDelta` since its last export
        (not collective). Shards hold disjoint ids, so a serving table that applies every
        rank's delta gives the same lookups as the sharded table."""
        return self.local.export_delta(include_optimizer_state=include_optimizer_state)

    def apply_delta(self, delta: TableDelta) -> None:
        """Apply the part of ``delta`` (from any table) whose ids this rank owns.
        Not collective: call it on every rank with the same delta."""
        self.local.apply_delta(_select_owned(delta, self.rank, self.world_size))

    @property
    def num_rows(self) -> int:
        """Row storage capacity of the local shard."""
        return int(self.local.num_rows)

    def bytes_per_entry(self) -> float:
        """Bytes per admitted id of the local shard."""
        return float(self.local.bytes_per_entry())

    # -- global views (collective) ---------------------------------------------------------

    def keys(self) -> Tensor:
        """Admitted ids of all shards, ascending, LongTensor ``[len(self)]`` (collective)."""
        return _gather_rows(self.local.keys(), self.process_group).sort().values

    def __len__(self) -> int:
        """Number of admitted ids over all shards (collective: every rank must call it)."""
        n = torch.tensor([len(self.local)], dtype=torch.int64)
        dist.all_reduce(n, group=self.process_group)
        return int(n)

    def __bool__(self) -> bool:
        # without this, ``if table:`` would fall back to __len__, a collective
        return True

    def _load_from_state_dict(
        self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, errors
    ):
        info = state_dict.get(prefix + "shard_info")
        if info is not None and info.tolist() != [self.rank, self.world_size]:
            raise ValueError(
                f"state_dict: expected the shard of rank {self.rank} of {self.world_size}, "
                f"got rank {int(info[0])} of {int(info[1])} (reshard with gather_to_single "
                "and shard_from_single)"
            )
        super()._load_from_state_dict(
            state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, errors
        )

    def extra_repr(self) -> str:
        return f"dim={self.dim}, rank={self.rank}, world_size={self.world_size}"


def ddp_ignore_sharded(model: nn.Module) -> list[str]:
    """Make ``DistributedDataParallel`` skip every sharded table of ``model``.

    Call it on the plain model before ``DistributedDataParallel(model)``: DDP would
    otherwise broadcast rank 0's shard over every other rank's at construction (and, with
    ``broadcast_buffers=True``, before each forward). Uses DDP's ignore list (the
    mechanism torchrec relies on too), keeping names already on it.

    Returns:
        The fully qualified names of the ignored buffers and parameters.
    """
    names = [
        f"{prefix}.{name}" if prefix else name
        for prefix, module in model.named_modules()
        if isinstance(module, ShardedCollisionlessEmbedding)
        for name, _ in (*module.named_buffers(), *module.named_parameters())
    ]
    if not names:
        raise ValueError("model: expected at least one ShardedCollisionlessEmbedding, got none")
    ignored = list(getattr(model, "_ddp_params_and_buffers_to_ignore", []))
    nn.parallel.DistributedDataParallel._set_params_and_buffers_to_ignore_for_model(
        model, sorted({*ignored, *names})
    )
    return names


# -- conversion and persistence --------------------------------------------------------------


def _gather_rows(
    tensor: Tensor, group: dist.ProcessGroup | None, dst: int | None = None
) -> Tensor | None:
    """Every rank's ``tensor [n_r, *tail]`` concatenated in rank order (collective).

    ``dst=None``: every rank gets the result; else only group rank ``dst`` (others None).
    Sizes may differ: blocks are padded to the largest for the collective and trimmed back.
    """
    world = dist.get_world_size(group)
    n = torch.tensor([tensor.shape[0]], dtype=torch.int64)
    sizes = [torch.empty_like(n) for _ in range(world)]
    dist.all_gather(sizes, n, group=group)
    counts = [int(s) for s in sizes]
    padded = tensor.new_zeros((max(counts), *tensor.shape[1:]))
    padded[: tensor.shape[0]] = tensor
    if dst is None:
        blocks = [torch.empty_like(padded) for _ in range(world)]
        dist.all_gather(blocks, padded, group=group)
    else:
        mine = dist.get_rank(group) == dst
        blocks = [torch.empty_like(padded) for _ in range(world)] if mine else None
        target = dst if group is None else dist.get_global_rank(group, dst)
        dist.gather(padded, blocks, dst=target, group=group)
        if not mine:
            return None
    return torch.cat([b[:c] for b, c in zip(blocks, counts, strict=True)])


def _select_owned(delta: TableDelta, rank: int, world_size: int) -> TableDelta:
    """The part of ``delta`` whose ids (and evicted ids) ``rank`` owns."""
    if not isinstance(delta, TableDelta):
        raise TypeError(f"delta: expected a TableDelta, got {type(delta).__name__}")
    keep = owner_of(delta.ids, world_size) == rank
    return TableDelta(
        ids=delta.ids[keep],
        values=delta.values[keep],
        evicted=delta.evicted[owner_of(delta.evicted, world_size) == rank],
        last_seen=None if delta.last_seen is None else delta.last_seen[keep],
        state={name: value[keep] for name, value in delta.state.items()},
    )


def _snapshot(table: CollisionlessEmbedding) -> TableDelta:
    """Every admitted id of ``table`` with its row, ``last_seen`` and optimizer state, as a
    TableDelta, without resetting the table's delta tracking (``export_delta`` would).

    Reads the table's buffers (``index.last_seen``, ``opt_<state>``) because the table has
    no non-destructive full export. Ids still being counted for admission are not included.
    """
    ids = table.keys()
    rows = table.lookup_rows(ids, insert=False)
    with torch.no_grad():
        values = table.gather_rows(rows)
    last_seen = table.index.last_seen.view(-1)[table.index.find(ids)]
    state = {
        name: getattr(table, f"opt_{name}").index_select(0, rows)
        for name in table.optim_config.state_names
    }
    return TableDelta(
        ids=ids,
        values=values,
        evicted=torch.zeros(0, dtype=torch.int64),
        last_seen=last_seen,
        state=state,
    )


def gather_to_single(
    sharded: ShardedCollisionlessEmbedding, *, dst: int | None = 0
) -> CollisionlessEmbedding | None:
    """Collect every shard into one single-process table (collective), e.g. for serving.

    The result, a ``CollisionlessEmbedding(dim, **table_kwargs)`` of the sharded table's
    arguments, holds every admitted id with its row, ``last_seen`` and sparse optimizer
    state, and its clock is the latest shard clock, so it looks up, expires and trains on
    like the union of the shards. Not carried: counts of ids still waiting for admission
    (they start again from zero) and pending gradients.

    Args:
        sharded: the sharded table (every rank passes its own).
        dst: group rank that receives the table (the others get None); ``None``: all ranks.

    Returns:
        The single table on ``dst`` (or on every rank), else None.
    """
    part = _snapshot(sharded.local)
    group = sharded.process_group
    names = sorted(part.state)
    columns = [part.ids, part.values, part.last_seen, *(part.state[n] for n in names)]
    gathered = [_gather_rows(c, group, dst) for c in columns]
    clock = _gather_rows(sharded.local.clock.reshape(1), group, dst)
    if clock is None:
        return None
    ids, values, last_seen, *state = gathered
    order = torch.argsort(ids)
    table = CollisionlessEmbedding(sharded.dim, **sharded.table_kwargs)
    table.apply_delta(
        TableDelta(
            ids=ids[order],
            values=values[order],
            evicted=torch.zeros(0, dtype=torch.int64),
            last_seen=last_seen[order],
            state={n: s[order] for n, s in zip(names, state, strict=True)},
        )
    )
    table.clock.fill_(float(clock.max()))
    return table


def shard_from_single(
    table: CollisionlessEmbedding,
    *,
    process_group: dist.ProcessGroup | None = None,
    gradient_division: bool = True,
    **table_kwargs: Any,
) -> ShardedCollisionlessEmbedding:
    """A sharded table whose shards hold the admitted ids of the single ``table``.

    No communication: every rank passes the same single table (e.g. loaded from one file)
    and keeps the ids it owns, with their rows, ``last_seen`` and optimizer state; shard
    clocks start at the table's clock. Counts of ids still waiting for admission are not
    carried. Also the way to reshard to another world size:
    ``shard_from_single(gather_to_single(old, dst=None), ...)`` in the new group.

    Args:
        table: the single-process table.
        process_group, gradient_division: as for :class:`ShardedCollisionlessEmbedding`.
        **table_kwargs: shard arguments; default to the table's own (``table.config()``,
            sizes aside).
    """
    if not isinstance(table, CollisionlessEmbedding):
        raise TypeError(f"table: expected a CollisionlessEmbedding, got {type(table).__name__}")
    config = table.config()
    dim = config.pop("dim")
    config["betas"] = tuple(config["betas"])
    sharded = ShardedCollisionlessEmbedding(
        dim,
        process_group=process_group,
        gradient_division=gradient_division,
        **{**config, **table_kwargs},
    )
    sharded.apply_delta(_snapshot(table))
    sharded.local.clock.copy_(table.clock)
    return sharded


def shard_path(directory: str | Path, rank: int, world_size: int) -> Path:
    """File of one shard: ``<directory>/shard-<rank>-of-<world_size>.safetensors``."""
    return Path(directory) / f"shard-{rank:05d}-of-{world_size:05d}.safetensors"


def save_shard(sharded: ShardedCollisionlessEmbedding, directory: str | Path) -> Path:
    """Write this rank's ``state_dict`` to :func:`shard_path` atomically, with a ``.sha256``.

    Not collective: call it on every rank (then ``dist.barrier()`` before anyone reads the
    whole checkpoint). Returns the path written.
    """
    from subspace_core.zoo import save_state_dict

    path = shard_path(directory, sharded.rank, sharded.world_size)
    meta = {
        "rank": sharded.rank,
        "world_size": sharded.world_size,
        "dim": sharded.dim,
        "table_kwargs": json.dumps(sharded.table_kwargs, sort_keys=True, default=str),
    }
    save_state_dict(sharded.state_dict(), path, metadata=meta)
    return path


def load_shard(sharded: ShardedCollisionlessEmbedding, directory: str | Path) -> None:
    """Load this rank's shard written by :func:`save_shard`, refusing a file that does not
    match its ``.sha256`` (``ChecksumError``) or a directory written with another world
    size (FileNotFoundError naming the shard files found)."""
    from subspace_core.zoo import load_state_dict

    path = shard_path(directory, sharded.rank, sharded.world_size)
    sidecar = path.with_name(path.name + ".sha256")
    if not path.exists() or not sidecar.exists():
        found = sorted(p.name for p in Path(directory).glob("shard-*-of-*.safetensors"))
        raise FileNotFoundError(
            f"directory: expected {path.name} (+ .sha256) for rank {sharded.rank} of "
            f"{sharded.world_size}, found {found}"
        )
    sharded.load_state_dict(load_state_dict(path, sha256=sidecar.read_text().split()[0]))
