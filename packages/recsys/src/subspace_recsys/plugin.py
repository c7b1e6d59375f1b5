"""The recsys plugin: registers the package's dataset, benchmarks, protocol and models.

Registered: dataset ``movielens_100k`` (:mod:`subspace_recsys.data`); benchmarks
``recsys/table_throughput``, ``recsys/movielens_ctr``, ``recsys/criteo_like``,
``recsys/optfs`` and ``recsys/streaming`` (:mod:`subspace_recsys.benchmarks`); protocol
``movielens_ctr`` and model ``recsys/deepfm_small.ml100k`` (shipped,
:mod:`subspace_recsys.zoo`).
"""

from subspace_recsys import benchmarks as _benchmarks  # noqa: F401  the benchmarks
from subspace_recsys import data as _data  # noqa: F401  the movielens_100k dataset
from subspace_recsys import zoo as _zoo  # noqa: F401  protocol and shipped model
