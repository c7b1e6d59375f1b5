"""Subspace linear algebra shared by every package (pure PyTorch, CPU and GPU).

- bases: :func:`orthonormal_basis` (sign-fixed QR, rank-revealing option).
- svd: :func:`robust_svd` (upcast, driver retries, a warning, never silent zeros),
  :func:`randomized_svd` (warm-startable range finder), :func:`subspace_iteration`.
- projection: :func:`project`, :func:`project_out`, :func:`coordinates`, GPM-style energy
  selection (:func:`select_by_energy`, :func:`extend_basis_by_energy`), :func:`basis_union`.
- spectra: RankMe :func:`effective_rank`, MCR² :func:`coding_rate` /
  :func:`coding_rate_reduction`, Marchenko–Pastur edges and :func:`spiked_outliers`.
- grassmann: :func:`principal_angles`, subspace distances, exp/log/retraction,
  :class:`GrassmannSGD` and :class:`GrassmannAdam`.
- householder: :func:`householder_product`, :class:`HouseholderFrame`.
- similarity: :func:`linear_cka`, :func:`svcca`.
- krylov: :func:`gmres`, :func:`gcro_dr` (recycled), :func:`sort_by_similarity` (SKR).
"""

from subspace_core.linalg.bases import (
    orthonormal_basis,
)
from subspace_core.linalg.grassmann import (
    GrassmannAdam,
    GrassmannSGD,
    chordal_distance,
    geodesic_distance,
    grassmann_exp,
    grassmann_log,
    grassmann_retraction,
    principal_angles,
    projection_distance,
    tangent_projection,
)
from subspace_core.linalg.householder import (
    HouseholderFrame,
    frame_to_householder,
    householder_product,
)
from subspace_core.linalg.krylov import (
    KrylovInfo,
    Operator,
    gcro_dr,
    gmres,
    solve_sequence,
    sort_by_similarity,
)
from subspace_core.linalg.projection import (
    EnergyBasisUpdate,
    basis_union,
    coordinates,
    extend_basis_by_energy,
    project,
    project_out,
    select_by_energy,
)
from subspace_core.linalg.similarity import (
    SVCCAResult,
    linear_cka,
    svcca,
)
from subspace_core.linalg.spectra import (
    RateReduction,
    SpikedOutliers,
    bbp_threshold,
    coding_rate,
    coding_rate_reduction,
    effective_rank,
    effective_rank_of_spectrum,
    marchenko_pastur_edges,
    marchenko_pastur_median,
    spike_sample_eigenvalue,
    spiked_outliers,
    spiked_outliers_from_eigenvalues,
)
from subspace_core.linalg.svd import (
    SubspaceIterationResult,
    SubspaceIterationWarning,
    SVDFallbackWarning,
    SVDResult,
    randomized_svd,
    robust_svd,
    subspace_iteration,
)

__all__ = [
    "EnergyBasisUpdate",
    "GrassmannAdam",
    "GrassmannSGD",
    "HouseholderFrame",
    "KrylovInfo",
    "Operator",
    "RateReduction",
    "SVCCAResult",
    "SVDFallbackWarning",
    "SVDResult",
    "SpikedOutliers",
    "SubspaceIterationResult",
    "SubspaceIterationWarning",
    "basis_union",
    "bbp_threshold",
    "chordal_distance",
    "coding_rate",
    "coding_rate_reduction",
    "coordinates",
    "effective_rank",
    "effective_rank_of_spectrum",
    "extend_basis_by_energy",
    "frame_to_householder",
    "gcro_dr",
    "geodesic_distance",
    "gmres",
    "grassmann_exp",
    "grassmann_log",
    "grassmann_retraction",
    "householder_product",
    "linear_cka",
    "marchenko_pastur_edges",
    "marchenko_pastur_median",
    "orthonormal_basis",
    "principal_angles",
    "project",
    "project_out",
    "projection_distance",
    "randomized_svd",
    "robust_svd",
    "select_by_energy",
    "solve_sequence",
    "sort_by_similarity",
    "spike_sample_eigenvalue",
    "spiked_outliers",
    "spiked_outliers_from_eigenvalues",
    "subspace_iteration",
    "svcca",
    "tangent_projection",
]
