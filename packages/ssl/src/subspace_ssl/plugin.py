"""The ssl plugin: registers the package's protocols, shipped models and benchmarks."""

from subspace_ssl import pretrained as _pretrained  # noqa: F401  shipped encoders
from subspace_ssl import protocols as _protocols  # noqa: F401  fmnist_probe
from subspace_ssl.benchmarks import rankme_selection as _rankme  # noqa: F401  ssl/rankme
from subspace_ssl.benchmarks import readout as _readout  # noqa: F401  ssl/linear_probe
