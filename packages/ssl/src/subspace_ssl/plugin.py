"""The ssl plugin: registers the package's protocols, shipped models and benchmarks."""

from subspace_ssl import pretrained as _pretrained
from subspace_ssl import protocols as _protocols  # noqa: F401  fmnist_probe, mnist_transfer, ...
from subspace_ssl import text_knn as _text_knn  # noqa: F401  minilm_knn_ng20, minilm_knn_r8
from subspace_ssl.benchmarks import heads as _heads  # noqa: F401  ssl/gcr
from subspace_ssl.benchmarks import rankme_selection as _rankme  # noqa: F401  ssl/rankme
from subspace_ssl.benchmarks import readout as _readout  # noqa: F401  ssl/linear_probe

if "ssl/starbucks_minilm_l6.ng20r8" in _pretrained.SHIPPED:
    # the grid compares the shipped adapter with its base: nothing to measure before it ships
    from subspace_ssl.benchmarks import starbucks_grid as _starbucks  # noqa: F401
