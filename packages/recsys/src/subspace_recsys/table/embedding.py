"""CollisionlessEmbedding: a Monolith-style embedding table without hash collisions.

Every admitted id owns one row of the storage (a cuckoo index maps ids to rows, so two
ids never share a row, unlike ``hash(id) % num_rows``). Ids are admitted after
``admit_after`` sightings, expire after ``ttl`` without one, and their rows are reused.
Rows are trained by the table's own per-row sparse optimizer: the forward output's
gradient flows into the table (not into a Parameter) and :meth:`step` applies it.
"""

from __future__ import annotations

import json
import math
import os
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from torch import nn
from torch.autograd.function import once_differentiable

from subspace_core.io import atomic_path

from .cuckoo import CuckooIndex
from .delta import TableDelta
from .optim import RowOptimizerConfig, init_state, sparse_update

__all__ = ["CollisionlessEmbedding", "sparse_step", "sparse_zero_grad"]

_FORMAT = "subspace_recsys.CollisionlessEmbedding/1"


class _GatherRows(torch.autograd.Function):
    """rows -> table values; backward hands the gradient to the table instead of a leaf."""

    @staticmethod
    def forward(ctx, anchor, rows, table):
        ctx.table = table
        ctx.save_for_backward(rows)
        return table._gather_values(rows)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad):
        (rows,) = ctx.saved_tensors
        ctx.table._accumulate(rows, grad)
        return None, None, None


class CollisionlessEmbedding(nn.Module):
    """Embedding table keyed by arbitrary non-negative int64 ids, one row per id.

    Args:
        dim: embedding size.
        initial_capacity: rows (and index entries) allocated up front; both double on need.
        admit_after: an id gets a row once it has been seen this many times (counted
            exactly, in the index); before that it looks up as a zero vector.
        ttl: ids not seen for longer than this (in units of ``now``) are evicted by
            :meth:`expire`; None keeps ids forever.
        optimizer: "sgd" | "adagrad" | "adam" (per row, see :mod:`.optim`).
        lr, eps, betas: the optimizer's hyper-parameters.
        init_std: new rows are drawn from N(0, init_std**2) with the table's own generator.
        seed: seed of that generator.
        slots_per_bucket, max_load: cuckoo index layout (see :class:`.CuckooIndex`).

    All arrays are buffers, so ``state_dict()`` holds the whole table, and
    ``load_state_dict`` accepts a table of any size. Pending gradients (between backward
    and :meth:`step`) are not part of the state. The table lives on the CPU in float32
    (``last_seen`` and ``clock`` in float64): do not ``.half()`` / ``.cuda()`` a model
    holding one.
    """

    # found by sparse_step / sparse_zero_grad in a module tree
    sparse_step_target = True

    def __init__(
        self,
        dim: int,
        *,
        initial_capacity: int = 1024,
        admit_after: int = 1,
        ttl: float | None = None,
        optimizer: str = "adagrad",
        lr: float = 0.05,
        init_std: float = 0.01,
        eps: float = 1e-8,
        betas: tuple[float, float] = (0.9, 0.999),
        seed: int = 0,
        slots_per_bucket: int = 8,
        max_load: float = 0.9,
    ) -> None:
        super().__init__()
        _check_int_arg("dim", dim, 1)
        _check_int_arg("initial_capacity", initial_capacity, 1)
        _check_int_arg("admit_after", admit_after, 1)
        _check_int_arg("seed", seed, 0)
        if ttl is not None and not (_is_number(ttl) and 0 < ttl < math.inf):
            raise ValueError(f"ttl: expected None or a finite number > 0, got {ttl!r}")
        if not _is_number(init_std) or not 0 <= init_std < math.inf:
            raise ValueError(f"init_std: expected a finite number >= 0, got {init_std!r}")
        self.dim = dim
        self.admit_after = admit_after
        self.ttl = None if ttl is None else float(ttl)
        self.init_std = float(init_std)
        self.seed = seed
        self.optim_config = RowOptimizerConfig(optimizer, lr, eps, betas)
        self.index = CuckooIndex(
            initial_capacity, slots_per_bucket=slots_per_bucket, max_load=max_load
        )
        self.register_buffer("weight", torch.zeros(initial_capacity, dim))
        for name, tensor in init_state(optimizer, initial_capacity, dim).items():
            self.register_buffer(f"opt_{name}", tensor)
        self.register_buffer("free_rows", torch.zeros(0, dtype=torch.int64))
        self.register_buffer("rows_used", torch.zeros((), dtype=torch.int64))
        self.register_buffer("clock", torch.zeros((), dtype=torch.float64))
        self.register_buffer("row_dirty", torch.zeros(initial_capacity, dtype=torch.bool))
        self.register_buffer("evicted_ids", torch.zeros(0, dtype=torch.int64))
        self._generator = torch.Generator().manual_seed(seed)
        self.register_buffer("generator_state", self._generator.get_state())
        self._pending_rows: list[torch.Tensor] = []
        self._pending_grads: list[torch.Tensor] = []
        # a leaf that makes outputs differentiable without being a Parameter
        self._grad_anchor = torch.zeros((), requires_grad=True)
        self._load_complete = False
        self._load_errors: list[str] = []
        self.register_load_state_dict_post_hook(_after_load)

    # -- configuration ---------------------------------------------------------------------

    @property
    def optimizer(self) -> str:
        return self.optim_config.name

    @property
    def lr(self) -> float:
        return self.optim_config.lr

    @lr.setter
    def lr(self, value: float) -> None:
        if not _is_number(value) or not 0 < value < math.inf:
            raise ValueError(f"lr: expected a finite number > 0, got {value!r}")
        self.optim_config.lr = float(value)

    def config(self) -> dict[str, Any]:
        """Constructor arguments that rebuild this table (sizes aside); JSON-serialisable."""
        return {
            "dim": self.dim,
            "admit_after": self.admit_after,
            "ttl": self.ttl,
            "optimizer": self.optim_config.name,
            "lr": self.optim_config.lr,
            "init_std": self.init_std,
            "eps": self.optim_config.eps,
            "betas": list(self.optim_config.betas),
            "seed": self.seed,
            "slots_per_bucket": self.index.slots,
            "max_load": self.index.max_load,
        }

    def extra_repr(self) -> str:
        return (
            f"dim={self.dim}, ids={len(self)}, num_rows={self.num_rows}, "
            f"admit_after={self.admit_after}, ttl={self.ttl}, optimizer={self.optimizer!r}"
        )

    # -- lookup ----------------------------------------------------------------------------

    def forward(self, ids: torch.Tensor, now: float | None = None) -> torch.Tensor:
        """Embeddings ``[*ids.shape, dim]`` float32 of ``ids`` (int64, non-negative).

        Training mode records every occurrence (count, last_seen = ``now``; None advances
        the internal clock by one), admits ids seen ``admit_after`` times and returns their
        rows; ids not admitted give zeros. Eval mode only reads (unknown ids give zeros).
        The output is differentiable; its gradient is kept by the table until :meth:`step`.
        """
        rows = self.lookup_rows(ids, insert=self.training, now=now)
        return self._gather(rows)

    def lookup_rows(
        self, ids: torch.Tensor, *, insert: bool, now: float | None = None
    ) -> torch.Tensor:
        """Row index ``[*ids.shape]`` int64 of each id, -1 where not admitted.

        With ``insert=True`` it records and admits like a training forward; with
        ``insert=False`` it changes nothing (``now`` is ignored).
        """
        ids = _check_ids(ids, "ids")
        flat = ids.reshape(-1)
        if not insert:
            return self.index.lookup_rows(flat).view(ids.shape)
        now = self._advance_clock(now)
        uniq, inverse, occurrences = torch.unique(flat, return_inverse=True, return_counts=True)
        slots = self._find_or_insert(uniq)
        index = self.index
        counts = index.counts.view(-1)
        counts.index_add_(0, slots, occurrences)
        index.last_seen.view(-1).index_fill_(0, slots, now)
        rows = index.rows.view(-1).index_select(0, slots)
        admit = torch.nonzero((rows < 0) & (counts.index_select(0, slots) >= self.admit_after))
        if admit.shape[0]:
            admit = admit.view(-1)
            new_rows = self._allocate_rows(admit.shape[0])
            rows.index_copy_(0, admit, new_rows)
            index.rows.view(-1).index_copy_(0, slots.index_select(0, admit), new_rows)
        return rows.index_select(0, inverse).view(ids.shape)

    def _find_or_insert(self, ids: torch.Tensor) -> torch.Tensor:
        """Flat index slots ``[N]`` of distinct ``ids [N]``, inserting the absent ones."""
        slots = self.index.find(ids)
        new = torch.nonzero(slots < 0).view(-1)
        if new.shape[0] == 0:
            return slots
        new_ids = ids.index_select(0, new)
        if self.index.insert(new_ids):  # present ids moved: look everything up again
            return self.index.find(ids)
        return slots.index_copy_(0, new, self.index.find(new_ids))

    def gather_rows(self, rows: torch.Tensor) -> torch.Tensor:
        """Values ``[*rows.shape, dim]`` of ``rows`` (int64 in [-1, num_rows); -1 -> zeros).

        Differentiable into the table like :meth:`forward`.
        """
        rows = _check_integer(rows, "rows")
        if rows.numel() and (int(rows.min()) < -1 or int(rows.max()) >= self.num_rows):
            raise ValueError(
                f"rows: expected values in [-1, {self.num_rows}), got "
                f"[{int(rows.min())}, {int(rows.max())}]"
            )
        return self._gather(rows)

    def _gather(self, rows: torch.Tensor) -> torch.Tensor:
        flat = rows.reshape(-1)
        if torch.is_grad_enabled():
            out = _GatherRows.apply(self._grad_anchor, flat, self)
        else:
            out = self._gather_values(flat)
        return out.view(*rows.shape, self.dim)

    def _gather_values(self, flat_rows: torch.Tensor) -> torch.Tensor:
        out = self.weight.index_select(0, flat_rows.clamp(min=0))
        return out.masked_fill_((flat_rows < 0).unsqueeze(1), 0.0)

    def _advance_clock(self, now) -> float:
        if now is None:
            self.clock += 1
        else:
            self.clock.fill_(_as_time(now))
        return float(self.clock)

    # -- gradients and optimizer -----------------------------------------------------------

    def accumulate_grad(self, rows: torch.Tensor, grad: torch.Tensor) -> None:
        """Add ``grad [N, dim]`` to rows ``rows [N]`` (-1 entries ignored) until :meth:`step`."""
        rows = _check_integer(rows, "rows")
        if rows.dim() != 1:
            raise ValueError(f"rows: expected a 1-D tensor, got shape {list(rows.shape)}")
        if not isinstance(grad, torch.Tensor) or not grad.is_floating_point():
            raise TypeError(f"grad: expected a float tensor, got {_describe(grad)}")
        if tuple(grad.shape) != (rows.shape[0], self.dim):
            raise ValueError(
                f"grad: expected shape [{rows.shape[0]}, {self.dim}], got {list(grad.shape)}"
            )
        if rows.numel() and (int(rows.min()) < -1 or int(rows.max()) >= self.num_rows):
            raise ValueError(f"rows: expected values in [-1, {self.num_rows})")
        self._accumulate(rows, grad)

    def _accumulate(self, rows: torch.Tensor, grad: torch.Tensor) -> None:
        keep = rows >= 0
        # boolean indexing copies, so later in-place use of ``grad`` by autograd is harmless
        self._pending_rows.append(rows[keep])
        self._pending_grads.append(grad.detach().reshape(-1, self.dim)[keep].float())

    def zero_grad(self, set_to_none: bool = True) -> None:
        """Drop the gradients accumulated since the last :meth:`step`."""
        self._pending_rows.clear()
        self._pending_grads.clear()

    @property
    def has_pending_grad(self) -> bool:
        return bool(self._pending_rows)

    def step(self) -> None:
        """Apply the per-row optimizer to every row that got gradients (duplicates summed)."""
        if not self._pending_rows:
            return
        rows = torch.cat(self._pending_rows)
        grads = torch.cat(self._pending_grads)
        self.zero_grad()
        if rows.shape[0] == 0:
            return
        uniq, inverse = torch.unique(rows, return_inverse=True)
        summed = torch.zeros(uniq.shape[0], self.dim).index_add_(0, inverse, grads)
        sparse_update(self.optim_config, self.weight, self._optimizer_state(), uniq, summed)
        self.row_dirty[uniq] = True

    def _optimizer_state(self) -> dict[str, torch.Tensor]:
        return {name: getattr(self, f"opt_{name}") for name in self.optim_config.state_names}

    # -- rows ------------------------------------------------------------------------------

    @property
    def num_rows(self) -> int:
        """Capacity of the row storage (admitted ids + free rows + never used rows)."""
        return self.weight.shape[0]

    def reserve(self, num_ids: int) -> None:
        """Allocate room for ``num_ids`` admitted ids now, so that no later batch pays for
        growing (a rehash of the index, a copy of the rows)."""
        _check_int_arg("num_ids", num_ids, 0)
        self.index.reserve(num_ids)
        if num_ids > self.num_rows:
            self._grow_rows(num_ids)

    def _row_buffers(self) -> list[str]:
        names = ["weight", "row_dirty"]
        return names + [f"opt_{n}" for n in self.optim_config.state_names]

    def _grow_rows(self, needed: int) -> None:
        size = max(self.num_rows, 1)  # a loaded table may have no rows at all
        while size < needed:
            size *= 2
        for name in self._row_buffers():
            old = getattr(self, name)
            new = torch.zeros((size, *old.shape[1:]), dtype=old.dtype)
            new[: old.shape[0]] = old
            setattr(self, name, new)

    def _allocate_rows(self, n: int, *, init: bool = True) -> torch.Tensor:
        """Take ``n`` rows (freed ones first, lowest first), reset their optimizer state."""
        free = self.free_rows
        reused = min(n, free.shape[0])
        taken = free[free.shape[0] - reused :].flip(0)
        self.free_rows = free[: free.shape[0] - reused].clone()
        used = int(self.rows_used)
        fresh = torch.arange(used, used + n - reused)
        if used + n - reused > self.num_rows:
            self._grow_rows(used + n - reused)
        self.rows_used.fill_(used + n - reused)
        rows = torch.cat((taken, fresh))
        if init:
            values = torch.empty(n, self.dim).normal_(0.0, self.init_std, generator=self._generator)
            self.weight.index_copy_(0, rows, values)
        for state in self._optimizer_state().values():
            state.index_fill_(0, rows, 0)
        self.row_dirty.index_fill_(0, rows, True)
        return rows

    def _release_rows(self, rows: torch.Tensor) -> None:
        # descending on the stack, so the lowest freed rows are handed out first
        self.free_rows = torch.cat((self.free_rows, rows.sort(descending=True).values))
        self.row_dirty[rows] = False
        if self._pending_rows:
            freed = torch.zeros(self.num_rows, dtype=torch.bool)
            freed[rows] = True
            keep = [~freed[r] for r in self._pending_rows]
            self._pending_rows = [r[k] for r, k in zip(self._pending_rows, keep, strict=True)]
            self._pending_grads = [g[k] for g, k in zip(self._pending_grads, keep, strict=True)]

    # -- eviction --------------------------------------------------------------------------

    def expire(self, now: float | None = None) -> int:
        """Evict every id (admitted or still counting) with ``last_seen < now - ttl``.

        ``now=None`` uses the table's clock (the last ``now`` seen, or the step count).
        Returns the number of ids evicted; their rows are reused by later admissions (with
        fresh values and optimizer state). Does nothing when ``ttl`` is None.
        """
        if self.ttl is None:
            return 0
        now = float(self.clock) if now is None else _as_time(now)
        index = self.index
        stale = (index.keys.view(-1) >= 0) & (index.last_seen.view(-1) < now - self.ttl)
        return self._evict_slots(torch.nonzero(stale).view(-1))

    def evict(self, ids: torch.Tensor) -> int:
        """Evict the given ids (unknown ones are ignored); returns how many were present."""
        ids = _check_ids(ids, "ids").reshape(-1).unique()
        slots = self.index.find(ids)
        return self._evict_slots(slots[slots >= 0])

    def _evict_slots(self, slots: torch.Tensor) -> int:
        if slots.shape[0] == 0:
            return 0
        index = self.index
        rows = index.rows.view(-1)[slots]
        admitted = rows >= 0
        self.evicted_ids = torch.cat((self.evicted_ids, index.keys.view(-1)[slots][admitted]))
        self._release_rows(rows[admitted])
        index.remove(slots)
        return int(slots.shape[0])

    # -- introspection ---------------------------------------------------------------------

    def __len__(self) -> int:
        """Number of admitted ids."""
        return int((self.index.rows >= 0).sum())

    def keys(self) -> torch.Tensor:
        """Admitted ids, ascending, int64 ``[len(self)]``."""
        admitted = self.index.rows.view(-1) >= 0
        return self.index.keys.view(-1)[admitted].sort().values

    def contains(self, ids: torch.Tensor) -> torch.Tensor:
        """Whether each id of ``ids`` is admitted: bool ``[*ids.shape]``; changes nothing."""
        return self.lookup_rows(ids, insert=False) >= 0

    def bytes_per_entry(self) -> float:
        """Bytes of every array of the table (index, rows, optimizer state) per admitted id."""
        total = sum(b.numel() * b.element_size() for b in self.buffers())
        return total / max(len(self), 1)

    # -- delta sync ------------------------------------------------------------------------

    def export_delta(self, *, include_optimizer_state: bool = False) -> TableDelta:
        """Ids admitted or updated since the last export (with their rows) and ids evicted
        since then; resets the tracking. Replay with :meth:`apply_delta` on a copy."""
        index = self.index
        slots = index.live_slots()
        rows = index.rows.view(-1)[slots]
        changed = (rows >= 0) & self.row_dirty[rows.clamp(min=0)]
        slots, rows = slots[changed], rows[changed]
        ids = index.keys.view(-1)[slots]
        order = torch.argsort(ids)
        ids, rows, slots = ids[order], rows[order], slots[order]
        evicted = self.evicted_ids.unique()
        evicted = evicted[self.index.lookup_rows(evicted) < 0]
        state = {}
        if include_optimizer_state:
            state = {k: v.index_select(0, rows) for k, v in self._optimizer_state().items()}
        delta = TableDelta(
            ids=ids,
            values=self.weight.index_select(0, rows),
            evicted=evicted,
            last_seen=index.last_seen.view(-1)[slots],
            state=state,
        )
        self.row_dirty.zero_()
        self.evicted_ids = torch.zeros(0, dtype=torch.int64)
        return delta

    def apply_delta(self, delta: TableDelta) -> None:
        """Replay ``delta`` (from another table's :meth:`export_delta`): evict its evicted
        ids, then upsert its ids with their values (admitting them regardless of counts)."""
        if not isinstance(delta, TableDelta):
            raise TypeError(f"delta: expected a TableDelta, got {type(delta).__name__}")
        if delta.dim != self.dim:
            raise ValueError(f"delta: expected values of dim {self.dim}, got {delta.dim}")
        unknown = set(delta.state) - set(self.optim_config.state_names)
        if unknown:
            raise ValueError(
                f"delta.state: expected state of optimizer {self.optimizer!r} "
                f"{self.optim_config.state_names}, got {sorted(delta.state)}"
            )
        self.evict(delta.evicted)
        ids = _check_ids(delta.ids, "delta.ids")
        if ids.shape[0] == 0:
            return
        if ids.unique().shape[0] != ids.shape[0]:
            raise ValueError("delta.ids: expected distinct ids")
        index = self.index
        slots = self._find_or_insert(ids)
        rows = index.rows.view(-1)[slots]
        need = rows < 0
        if bool(need.any()):
            new_rows = self._allocate_rows(int(need.sum()), init=False)
            rows[need] = new_rows
            index.rows.view(-1)[slots[need]] = new_rows
        self.weight.index_copy_(0, rows, delta.values.to(self.weight.dtype))
        counts = index.counts.view(-1)
        counts[slots] = counts[slots].clamp(min=self.admit_after)
        seen = delta.last_seen if delta.last_seen is not None else self.clock.expand(ids.shape)
        index.last_seen.view(-1)[slots] = seen.to(torch.float64)
        state = self._optimizer_state()
        for name, values in delta.state.items():
            state[name].index_copy_(0, rows, values.to(state[name].dtype))
        self.row_dirty[rows] = True

    # -- persistence -----------------------------------------------------------------------

    def _save_to_state_dict(self, destination, prefix, keep_vars):
        self.generator_state = self._generator.get_state()
        super()._save_to_state_dict(destination, prefix, keep_vars)

    def _load_from_state_dict(
        self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
    ):
        # Tables of any size load: resize each growable array to the incoming one.
        growable = [*self._row_buffers(), "free_rows", "evicted_ids"]
        for name in growable:
            key = prefix + name
            if key not in state_dict:
                continue
            incoming, own = state_dict[key], self._buffers[name]
            if incoming.dtype != own.dtype:
                error_msgs.append(f"{key}: expected dtype {own.dtype}, got {incoming.dtype}")
            elif incoming.dim() != own.dim() or incoming.shape[1:] != own.shape[1:]:
                expected = ["*", *own.shape[1:]]
                error_msgs.append(f"{key}: expected shape {expected}, got {list(incoming.shape)}")
            elif incoming.shape != own.shape:
                self._buffers[name] = torch.empty_like(incoming)
        own_keys = [prefix + n for n in self._buffers if n not in self._non_persistent_buffers_set]
        index_keys = [prefix + "index." + n for n in ("keys", "rows", "counts", "last_seen")]
        self._load_complete = all(k in state_dict for k in own_keys + index_keys)
        # the same list collects the errors of the children (the index) too
        self._load_errors = error_msgs
        super()._load_from_state_dict(
            state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
        )

    def check_consistency(self) -> None:
        """Raise ValueError unless the arrays describe a valid table (run after loading)."""
        self.index.check_consistency()
        n, used = self.num_rows, int(self.rows_used)
        for name in self._row_buffers():
            if getattr(self, name).shape[0] != n:
                raise ValueError(
                    f"{name}: expected {n} rows like weight, got {getattr(self, name).shape[0]}"
                )
        if not 0 <= used <= n:
            raise ValueError(f"rows_used: expected a value in [0, {n}], got {used}")
        live = self.index.rows.view(-1)
        live = live[live >= 0]
        free = self.free_rows
        every = torch.cat((live, free))
        if every.numel() and (int(every.max()) >= used or int(every.min()) < 0):
            raise ValueError(f"index.rows/free_rows: expected rows in [0, {used})")
        if every.unique().shape[0] != used or every.shape[0] != used:
            raise ValueError(
                f"index.rows/free_rows: expected each of the {used} used rows owned by exactly "
                f"one id or free, got {live.shape[0]} owned + {free.shape[0]} free"
            )
        if not math.isfinite(float(self.clock)):
            raise ValueError(f"clock: expected a finite number, got {float(self.clock)}")
        if self.evicted_ids.numel() and int(self.evicted_ids.min()) < 0:
            raise ValueError("evicted_ids: expected non-negative ids")

    def save(self, path: str | os.PathLike) -> None:
        """Write the table (arrays + config) to one safetensors file, atomically."""
        path = os.fspath(path)
        tensors = {k: v.detach().contiguous() for k, v in self.state_dict().items()}
        metadata = {"format": _FORMAT, "config": json.dumps(self.config())}
        with atomic_path(path) as tmp:
            save_file(tensors, str(tmp), metadata=metadata)

    @classmethod
    def load(cls, path: str | os.PathLike) -> CollisionlessEmbedding:
        """Rebuild a table written by :meth:`save`; ValueError on a foreign or broken file."""
        path = os.fspath(path)
        try:
            with safe_open(path, framework="pt") as f:
                metadata = f.metadata() or {}
                tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (not a dict)
        except SafetensorError as e:
            raise ValueError(f"{path}: not a readable safetensors file ({e})") from e
        if metadata.get("format") != _FORMAT:
            raise ValueError(
                f"{path}: expected metadata format {_FORMAT!r}, got {metadata.get('format')!r}"
            )
        try:
            config = json.loads(metadata["config"])
            table = cls(**config, initial_capacity=1)
        except (KeyError, TypeError, json.JSONDecodeError) as e:
            raise ValueError(f"{path}: unreadable table config ({e})") from e
        try:
            table.load_state_dict(tensors)
        except RuntimeError as e:
            raise ValueError(f"{path}: arrays do not fit the table config: {e}") from e
        return table


def _after_load(module: CollisionlessEmbedding, incompatible_keys) -> None:
    # runs after the index (a child) has loaded too, so the whole table can be checked
    complete, errors = module._load_complete, module._load_errors
    module._load_complete, module._load_errors = False, []
    if not complete or errors:
        return  # load_state_dict raises for missing keys and shape errors itself
    module.check_consistency()
    module._generator.set_state(module.generator_state.clone())
    module.zero_grad()


def sparse_step(module: nn.Module) -> None:
    """Call ``step()`` on every CollisionlessEmbedding (``sparse_step_target``) in ``module``."""
    for m in module.modules():
        if getattr(m, "sparse_step_target", False):
            m.step()


def sparse_zero_grad(module: nn.Module) -> None:
    """Call ``zero_grad()`` on every ``sparse_step_target`` module in ``module``."""
    for m in module.modules():
        if getattr(m, "sparse_step_target", False):
            m.zero_grad()


def _is_number(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def _as_time(now) -> float:
    """``now`` (a number or a one-element tensor) as a finite float."""
    if isinstance(now, torch.Tensor) and now.numel() == 1:
        now = now.item()
    if not _is_number(now):
        raise TypeError(f"now: expected a number or None, got {type(now).__name__}")
    if not math.isfinite(now):
        raise ValueError(f"now: expected a finite number or None, got {now!r}")
    return float(now)


def _check_int_arg(name: str, value, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name}: expected an int >= {minimum}, got {value!r}")


def _describe(x) -> str:
    if isinstance(x, torch.Tensor):
        return f"{x.dtype} tensor of shape {list(x.shape)}"
    return type(x).__name__


def _check_integer(x, name: str) -> torch.Tensor:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name}: expected an integer torch.Tensor, got {type(x).__name__}")
    if x.dtype == torch.bool or x.is_floating_point() or x.is_complex():
        raise TypeError(f"{name}: expected an integer tensor (int64), got dtype {x.dtype}")
    return x if x.dtype == torch.int64 else x.to(torch.int64)


def _check_ids(ids, name: str) -> torch.Tensor:
    ids = _check_integer(ids, name)
    if ids.numel() and bool((ids < 0).any()):
        raise ValueError(f"{name}: expected non-negative ids, got min {int(ids.min())}")
    return ids
