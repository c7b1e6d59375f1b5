"""The ssm plugin: registers the package's models, evaluation protocols and benchmarks."""

from subspace_ssm import pretrained as _pretrained  # noqa: F401  shipped checkpoints
from subspace_ssm import protocols as _protocols  # noqa: F401  sfmnist_test, listops_test, ptd_robustness
from subspace_ssm import zoo as _zoo  # noqa: F401  ssm/<arch>_small.<task> entries
from subspace_ssm.benchmarks import accuracy as _accuracy  # noqa: F401  ssm/accuracy benchmark
from subspace_ssm.benchmarks import ptd as _ptd  # noqa: F401  ssm/ptd_robustness benchmark
from subspace_ssm.benchmarks import scaling as _scaling  # noqa: F401  ssm/scaling benchmark
from subspace_ssm.benchmarks import selective_scan as _selective_scan  # noqa: F401  ssm/selective_scan
