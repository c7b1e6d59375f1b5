"""The continual plugin: registers the package's datasets, models, protocols and benchmarks.

Registered: benchmark ``continual/pmnist``. (Scenarios are built from the core datasets
``mnist_10k`` and ``fashion_mnist``; no new datasets, models or protocols yet.)
"""

from subspace_continual import benchmarks as _benchmarks  # noqa: F401  continual/pmnist
