"""The continual plugin: registers the package's models, protocols and benchmarks.

Registered: benchmarks ``continual/pmnist``, ``continual/federated``,
``continual/sfmnist_class`` and ``continual/power_law``; protocols ``pmnist_cl`` and ``split_fmnist_cl``; models
``continual/gpm_mlp.pmnist`` and ``continual/fot_mlp.split_fmnist`` (shipped). Scenarios are
built from the core datasets ``mnist_10k`` and ``fashion_mnist`` (no new datasets).
"""

from subspace_continual import benchmarks as _benchmarks  # noqa: F401  the four benchmarks
from subspace_continual import zoo as _zoo  # noqa: F401  protocols and shipped models
