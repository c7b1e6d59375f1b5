"""Subspace Zoo: collisionless embedding tables and real-time recommendation training.

Importing the package does not register anything with the core; the ``subzoo`` plugin
(:mod:`subspace_recsys.plugin`) does. Subpackages: :mod:`~subspace_recsys.table` (the
collisionless table), :mod:`~subspace_recsys.stream` (event sources, Redis Streams, the
online trainer), :mod:`~subspace_recsys.distributed` (row-wise sharding over
``torch.distributed``). The Redis source needs the ``redis`` extra.
"""

from subspace_recsys.batch import evaluate_ctr, predict_ctr, train_ctr
from subspace_recsys.data import (
    MOVIELENS_FIELDS,
    CriteoLikeGenerator,
    CTRBatch,
    CTRSplit,
    global_ids,
    iter_batches,
    load_movielens_ctr,
)
from subspace_recsys.distributed import ShardedCollisionlessEmbedding
from subspace_recsys.hashed import HashedEmbedding, equal_memory_rows
from subspace_recsys.metrics import SlidingWindowAUC, auc, logloss
from subspace_recsys.models import DCNv2, DeepFM, WideAndDeep
from subspace_recsys.optfs import MaskedEmbedding, OptFS
from subspace_recsys.stream import (
    Event,
    FileSource,
    IteratorSource,
    OnlineTrainer,
    RedisStreamProducer,
    RedisStreamSource,
)
from subspace_recsys.table import CollisionlessEmbedding, TableDelta, sparse_step, sparse_zero_grad

__all__ = [
    "MOVIELENS_FIELDS",
    "CTRBatch",
    "CTRSplit",
    "CollisionlessEmbedding",
    "CriteoLikeGenerator",
    "DCNv2",
    "DeepFM",
    "Event",
    "FileSource",
    "HashedEmbedding",
    "IteratorSource",
    "MaskedEmbedding",
    "OnlineTrainer",
    "OptFS",
    "RedisStreamProducer",
    "RedisStreamSource",
    "ShardedCollisionlessEmbedding",
    "SlidingWindowAUC",
    "TableDelta",
    "WideAndDeep",
    "auc",
    "equal_memory_rows",
    "evaluate_ctr",
    "global_ids",
    "iter_batches",
    "load_movielens_ctr",
    "logloss",
    "predict_ctr",
    "sparse_step",
    "sparse_zero_grad",
    "train_ctr",
]
