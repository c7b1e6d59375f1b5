"""Collisionless embedding table: cuckoo-hashed ids, admission, expiry, delta sync."""

from .cuckoo import CuckooIndex, mix64
from .delta import TableDelta
from .embedding import CollisionlessEmbedding, sparse_step, sparse_zero_grad
from .optim import OPTIMIZERS, RowOptimizerConfig

__all__ = [
    "OPTIMIZERS",
    "CollisionlessEmbedding",
    "CuckooIndex",
    "RowOptimizerConfig",
    "TableDelta",
    "mix64",
    "sparse_step",
    "sparse_zero_grad",
]
