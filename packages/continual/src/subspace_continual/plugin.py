"""The continual plugin: registers the package's models, protocols and benchmarks.

Registered: benchmarks ``continual/pmnist`` and ``continual/federated``; protocol
``pmnist_cl``; model ``continual/gpm_mlp.pmnist`` (shipped). Scenarios are built from the
core datasets ``mnist_10k`` and ``fashion_mnist`` (no new datasets).
"""

from subspace_continual import benchmarks as _benchmarks  # noqa: F401  continual/pmnist, /federated
from subspace_continual import zoo as _zoo  # noqa: F401  pmnist_cl, continual/gpm_mlp.pmnist
