"""The core's own plugin: datasets, protocols, the canary model, core and kernel benchmarks."""

from subspace_core import data as _data  # noqa: F401  registers the core datasets
from subspace_core import protocols as _protocols  # noqa: F401  registers fmnist_test
from subspace_core.backbones import weights as _backbone_weights  # noqa: F401  ImageNet weights
from subspace_core.benchmarks import canary as _canary  # noqa: F401  registers core/canary
from subspace_core.benchmarks import krylov as _krylov  # noqa: F401  core/krylov_recycling
from subspace_core.benchmarks import linalg_svd as _linalg_svd  # noqa: F401  core/randomized_svd
from subspace_core.models import mlp_tiny as _mlp_tiny  # noqa: F401  registers the canary
from subspace_core.ops.lowrank_linear import bench as _lowrank_linear_bench
from subspace_core.ops.projected_adam import bench as _projected_adam_bench
from subspace_core.ops.quantize import bench as _quantize_bench
from subspace_core.ops.selective_scan import bench as _selective_scan_bench

for _kernel_bench in (_lowrank_linear_bench, _projected_adam_bench, _quantize_bench,
                      _selective_scan_bench):
    _kernel_bench.register()
