"""Intrinsic dimension (Li et al., 2018): train ``θ = θ0 + P θ_d`` in a random subspace.

Dense and Fastfood projections, a functional wrapper for any ``nn.Module``
(:class:`IntrinsicModel`), and the ``d_int90`` search (:func:`find_intrinsic_dimension`).
"""

from subspace_peft.adapters.intrinsic.config import PROJECTIONS, IntrinsicConfig
from subspace_peft.adapters.intrinsic.model import (
    INTRINSIC_FORMAT,
    DenseProjection,
    FastfoodProjection,
    IntrinsicModel,
    IntrinsicSearch,
    find_intrinsic_dimension,
    fwht,
    make_projection,
)

__all__ = [
    "INTRINSIC_FORMAT",
    "PROJECTIONS",
    "DenseProjection",
    "FastfoodProjection",
    "IntrinsicConfig",
    "IntrinsicModel",
    "IntrinsicSearch",
    "find_intrinsic_dimension",
    "fwht",
    "make_projection",
]
