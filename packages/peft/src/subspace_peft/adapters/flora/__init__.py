"""FLoRA (Si et al., 2024, arXiv:2405.14739): a low-rank Tucker core for N-d weight updates.

``ΔW = s · G ×_0 U_0 ×_1 U_1 ... ×_{N-1} U_{N-1}`` for a conv kernel ``[out, in, k_1, ...]``
(or a linear, ``ΔW = s U_0 G U_1ᵀ``), with a small trainable core ``G`` (zero at init) and
trainable factors ``U_k``; the kernel's structure is kept (no flattening to a matrix).
"""

from subspace_peft.adapters.flora.config import FLoRAConfig
from subspace_peft.adapters.flora.layer import (
    FLORA_TARGET_TYPES,
    FLoRALayer,
    flora_parameter_count,
    flora_ranks,
    tucker_compose,
)
from subspace_peft.adapters.flora.model import FLoRAModel, find_flora_targets

__all__ = [
    "FLORA_TARGET_TYPES",
    "FLoRAConfig",
    "FLoRALayer",
    "FLoRAModel",
    "find_flora_targets",
    "flora_parameter_count",
    "flora_ranks",
    "tucker_compose",
]
