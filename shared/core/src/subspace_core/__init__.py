"""Subspace Zoo core: registries (zoo, data, eval, bench), subspace maths and kernels.

Submodules are imported on use: ``subspace_core.zoo``, ``.data``, ``.eval``, ``.bench``,
``.testing``, ``.cli``.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("subspace-core")
except PackageNotFoundError:  # running from a source tree that was not installed
    __version__ = "0.2.0.dev0"

__all__ = ["__version__"]
