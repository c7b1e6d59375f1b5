"""EoRA (Liu et al., 2024, arXiv:2410.21271): training-free compensation of a compressed
model by low-rank residual paths fitted in the eigenspace of the input activations.

For each target linear with original weight ``W`` and compressed ``W_c``, ``ΔW = W - W_c``
is approximated at rank ``r`` by the truncated SVD of ``ΔW Q'`` (``Q' = Q Λ^{1/2}`` from the
eigendecomposition of the calibration covariance ``XᵀX = Q Λ Qᵀ``) mapped back by
``Q'⁻¹``; the layer computes ``W_c x + B (A x)`` with ``B [out, r]``, ``A [r, in]`` (LoRA
form). ``compensation="svd"`` is the plain truncated-SVD baseline in the same layer type.
"""

from subspace_peft.adapters.eora.config import COMPENSATIONS, SOLVERS, EoRAConfig
from subspace_peft.adapters.eora.layer import (
    EigenScaling,
    EoRALinear,
    LowRankFit,
    activation_weighted_error,
    as_eigen_scaling,
    eigen_scaling,
    eora_fit,
    svd_fit,
    weighted_residuals,
)
from subspace_peft.adapters.eora.model import EoRAModel

__all__ = [
    "COMPENSATIONS",
    "SOLVERS",
    "EigenScaling",
    "EoRAConfig",
    "EoRALinear",
    "EoRAModel",
    "LowRankFit",
    "activation_weighted_error",
    "as_eigen_scaling",
    "eigen_scaling",
    "eora_fit",
    "svd_fit",
    "weighted_residuals",
]
