"""The 3dgs plugin: registers the package's datasets (the mesh files ``mesh_bunny_npm`` and
``mesh_pymeshlab_samples``, :mod:`subspace_3dgs.meshes`) and the benchmark ``3dgs/rasterizer``
(:mod:`subspace_3dgs.benchmarks`). Models and protocols are still to come (issue 10)."""

from subspace_3dgs import benchmarks as _benchmarks  # noqa: F401  the benchmarks
from subspace_3dgs import meshes as _meshes  # noqa: F401  the mesh datasets
