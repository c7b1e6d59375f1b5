"""SaRA (Hu et al., 2024, arXiv:2409.06633): progressive sparse low-rank adaptation.

The smallest-magnitude pretrained weights of each target (a per-layer fraction, or an absolute
threshold) are trained as a sparse update ``ΔW`` stored as a 1-D vector plus flat indices
("unstructured backpropagation"), regularised by ``λ ||ΔW||_*``, and re-selected once during
training (entries that left the small-magnitude band are frozen: "progressive parameter
adjustment").
"""

from subspace_peft.adapters.sara.config import NUCLEAR_TARGETS, SaRAConfig
from subspace_peft.adapters.sara.layer import (
    SARA_TARGET_TYPES,
    SaRALayer,
    nuclear_norm,
    select_small_weights,
)
from subspace_peft.adapters.sara.model import SaRAModel, find_sara_targets

__all__ = [
    "NUCLEAR_TARGETS",
    "SARA_TARGET_TYPES",
    "SaRAConfig",
    "SaRALayer",
    "SaRAModel",
    "find_sara_targets",
    "nuclear_norm",
    "select_small_weights",
]
