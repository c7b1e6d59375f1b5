"""The 3dgs plugin: registers the package's datasets (the mesh files ``mesh_bunny_npm`` and
``mesh_pymeshlab_samples``, :mod:`subspace_3dgs.meshes`), the benchmarks ``3dgs/rasterizer``
(:mod:`subspace_3dgs.benchmarks`), ``3dgs/feature_field`` (:mod:`subspace_3dgs.feature_bench`)
and ``3dgs/momentum`` (:mod:`subspace_3dgs.momentum_bench`), and the protocol
``bunny_heldout`` and shipped scene ``3dgs/gs_small.bunny_rgb`` of :mod:`subspace_3dgs.zoo`, and
the protocol ``bunny_feature_fidelity`` and shipped feature field ``3dgs/ff16_small.bunny_mnv2``
(:mod:`subspace_3dgs.zoo_features`)."""

from subspace_3dgs import benchmarks as _benchmarks  # noqa: F401  the benchmarks
from subspace_3dgs import feature_bench as _feature_bench  # noqa: F401  3dgs/feature_field
from subspace_3dgs import meshes as _meshes  # noqa: F401  the mesh datasets
from subspace_3dgs import momentum_bench as _momentum_bench  # noqa: F401  3dgs/momentum
from subspace_3dgs import zoo as _zoo  # noqa: F401  bunny_heldout, 3dgs/gs_small.bunny_rgb
from subspace_3dgs import zoo_features as _zoo_features  # noqa: F401  3dgs/ff16_small.bunny_mnv2
