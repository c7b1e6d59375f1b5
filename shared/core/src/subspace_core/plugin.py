"""The core's own plugin: datasets, protocols, the canary model and core benchmarks."""

from subspace_core.benchmarks import canary as _canary  # noqa: F401  registers core/canary
from subspace_core import data as _data  # noqa: F401  registers the core datasets
from subspace_core import protocols as _protocols  # noqa: F401  registers fmnist_test
from subspace_core.models import mlp_tiny as _mlp_tiny  # noqa: F401  registers the canary
