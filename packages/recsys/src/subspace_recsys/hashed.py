"""The hashing-trick baseline: a fixed-size embedding table indexed by ``hash(id) % num_rows``.

This is what most production CTR stacks do when the id space is unbounded (TensorFlow's
``categorical_column_with_hash_bucket``, torchrec's ``EmbeddingBagCollection`` fed with
hashed ids): memory is fixed, no vocabulary is kept, and distinct ids that land in the same
row *collide* -- they share (and fight over) one embedding. With ``n`` distinct ids
hashed uniformly into ``m`` rows, a fraction of about ``1 - exp(-n / m)`` of the ids shares
its row with another id (39 % at ``n = m / 2``; :func:`expected_colliding_ids`).
The collisionless table (:mod:`subspace_recsys.table`) removes those collisions.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from subspace_recsys.data import _check_ids
from subspace_recsys.hashing import shr64, signed64, splitmix64

__all__ = [
    "HashedEmbedding",
    "equal_memory_rows",
    "expected_colliding_ids",
    "mix64",
]


def mix64(ids: torch.Tensor, seed: int = 0) -> torch.Tensor:
    """SplitMix64 hash of int64 ``ids`` (any shape) salted by ``seed``; int64, same shape.

    The result is the 64-bit hash read as a signed int64 (int64 arithmetic wraps modulo
    2**64, which is what the unsigned algorithm needs).
    """
    if not isinstance(ids, torch.Tensor) or ids.dtype != torch.int64:
        raise TypeError(
            f"ids: expected a torch.int64 tensor, got {getattr(ids, 'dtype', type(ids).__name__)}"
        )
    # SplitMix64 hashes its state advanced by the golden-ratio increment; the seed picks
    # the starting state.
    return splitmix64(ids + signed64((seed + 1) * 0x9E3779B97F4A7C15))


class HashedEmbedding(nn.Module):
    """``num_rows`` x ``dim`` embedding rows indexed by ``mix64(id, seed) mod num_rows``.

    Collisions are allowed and silent: any two ids whose hashes agree modulo ``num_rows``
    read and train the same row. The table is an ordinary dense ``nn.Parameter``
    (``weight [num_rows, dim]``), so a dense optimizer over ``model.parameters()`` trains
    it; rows start ~ ``N(0, init_std**2)`` drawn from ``torch.Generator().manual_seed(seed)``
    (``init_std=0`` gives zeros). Two tables with the same ``num_rows`` and ``seed`` map
    every id to the same row.

    ``forward(ids, now=None)``: ``ids`` int64, any shape, non-negative; returns float32
    ``[*ids.shape, dim]``. ``now`` is accepted for interface compatibility with
    :class:`~subspace_recsys.table.CollisionlessEmbedding` and ignored (nothing expires).
    """

    def __init__(self, num_rows: int, dim: int, *, seed: int = 0, init_std: float = 0.01) -> None:
        super().__init__()
        for name, value in (("num_rows", num_rows), ("dim", dim)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name}: expected a positive int, got {value!r}")
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise TypeError(f"seed: expected an int, got {type(seed).__name__}")
        if not (isinstance(init_std, int | float) and init_std >= 0):
            raise ValueError(f"init_std: expected a non-negative float, got {init_std!r}")
        self.num_rows = num_rows
        self.dim = dim
        self.seed = seed
        self.init_std = float(init_std)
        generator = torch.Generator().manual_seed(seed)
        self.weight = nn.Parameter(torch.randn(num_rows, dim, generator=generator) * init_std)

    def rows(self, ids: torch.Tensor) -> torch.Tensor:
        """Row index ``[*ids.shape]`` (int64 in ``[0, num_rows)``) of every id."""
        _check_ids(ids)
        # Drop the sign bit first so the remainder is of a non-negative number.
        return shr64(mix64(ids, self.seed), 1) % self.num_rows

    def forward(self, ids: torch.Tensor, now: float | None = None) -> torch.Tensor:
        return self.weight[self.rows(ids)]

    def memory_bytes(self) -> int:
        """Bytes of the table's values (``num_rows * dim * element size``); optimizer state
        (e.g. Adam's two moments, 2x more) is not counted."""
        return self.weight.numel() * self.weight.element_size()

    def bytes_per_entry(self) -> float:
        """Bytes of one row."""
        return float(self.dim * self.weight.element_size())

    def extra_repr(self) -> str:
        return f"num_rows={self.num_rows}, dim={self.dim}, seed={self.seed}"


def equal_memory_rows(
    num_ids: int, bytes_per_entry: float, dim: int, *, dtype_bytes: int = 4
) -> int:
    """Rows a :class:`HashedEmbedding` of ``dim`` columns can have in the memory a
    collisionless table spends on ``num_ids`` ids.

    ``bytes_per_entry`` is what the collisionless table reports per stored id (its
    ``bytes_per_entry()``: row values plus index/metadata overhead), so the hashed table
    gets ``floor(num_ids * bytes_per_entry / (dim * dtype_bytes))`` rows (at least 1).
    """
    if isinstance(num_ids, bool) or not isinstance(num_ids, int) or num_ids < 0:
        raise ValueError(f"num_ids: expected a non-negative int, got {num_ids!r}")
    if not (isinstance(bytes_per_entry, int | float) and bytes_per_entry > 0):
        raise ValueError(f"bytes_per_entry: expected a positive number, got {bytes_per_entry!r}")
    for name, value in (("dim", dim), ("dtype_bytes", dtype_bytes)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name}: expected a positive int, got {value!r}")
    return max(1, math.floor(num_ids * bytes_per_entry / (dim * dtype_bytes)))


def expected_colliding_ids(num_ids: int, num_rows: int) -> float:
    """Expected number of ids that share their row with at least one other id when
    ``num_ids`` distinct ids hash uniformly into ``num_rows`` rows:
    ``n * (1 - (1 - 1/m) ** (n - 1))``."""
    if num_ids < 0 or num_rows < 1:
        raise ValueError(
            f"num_ids/num_rows: expected num_ids >= 0 and num_rows >= 1, got {num_ids}, {num_rows}"
        )
    return num_ids * (1.0 - (1.0 - 1.0 / num_rows) ** max(num_ids - 1, 0))
