"""Subspace Zoo PEFT: gradient-subspace optimizers and weight-subspace adapters.

Optimizers: :class:`GaLoreAdamW` (GaLore, Fira, Q-GaLore as group options) with
:func:`galore_param_groups`, per-layer stepping (:class:`PerLayerStepper`) correct under
gradient accumulation, and :class:`UpdateGuard`. Layers: :class:`SSTLinear` (Sparse
Spectral Training). Models: the LLaMA-style :class:`MicroDecoder`.
"""

from subspace_peft.models import DecoderConfig, MicroDecoder, perplexity, train_decoder
from subspace_peft.optim import (
    GaLoreAdamW,
    PerLayerStepper,
    SubspaceProjector,
    UpdateGuard,
    galore_param_groups,
)
from subspace_peft.sst import SSTController, SSTLinear, convert_to_sst

__all__ = [
    "DecoderConfig",
    "GaLoreAdamW",
    "MicroDecoder",
    "PerLayerStepper",
    "SSTController",
    "SSTLinear",
    "SubspaceProjector",
    "UpdateGuard",
    "convert_to_sst",
    "galore_param_groups",
    "perplexity",
    "train_decoder",
]
