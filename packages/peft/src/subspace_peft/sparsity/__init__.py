"""Sparse training methods (not adapters: they train the model's own weights).

* :mod:`.nm` — N:M semi-structured sparse training: straight-through estimators (STE,
  SR-STE) and progressive gradient flow (Bambhaniya et al. 2024: mask-decay MDGF,
  decaying-gradient DGF, structure-decay SDGF) with :func:`apply_nm_sparsity` /
  :meth:`NMSparsity.finalize`.
"""

from subspace_peft.sparsity.nm import (
    DECAY_FUNCTIONS,
    RECIPES,
    SDGF_KINDS,
    NMSchedule,
    NMSparseLinear,
    NMSparsity,
    NMStepState,
    apply_nm_sparsity,
    is_nm_sparse,
    nm_group_nonzeros,
    nm_mask,
    nm_weight,
)

__all__ = [
    "DECAY_FUNCTIONS",
    "RECIPES",
    "SDGF_KINDS",
    "NMSchedule",
    "NMSparseLinear",
    "NMSparsity",
    "NMStepState",
    "apply_nm_sparsity",
    "is_nm_sparse",
    "nm_group_nonzeros",
    "nm_mask",
    "nm_weight",
]
