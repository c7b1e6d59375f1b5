"""Subspace Zoo PEFT: gradient-subspace optimizers and weight-subspace adapters.

Optimizers: :class:`GaLoreAdamW` (GaLore, Fira, Q-GaLore as group options; N-d weights by
Tucker projection; INT8 weights via :class:`QuantizedLinear`), :class:`GaLoreAdamW8bit`
(8-bit moments) and :class:`GaLoreAdafactor`, with
:func:`galore_param_groups`, per-layer stepping (:class:`PerLayerStepper`) correct under
gradient accumulation, and :class:`UpdateGuard`. Layers: :class:`SSTLinear` (Sparse
Spectral Training). Models: the LLaMA-style :class:`MicroDecoder`.
"""

from subspace_peft.models import DecoderConfig, MicroDecoder, perplexity, train_decoder
from subspace_peft.optim import (
    GaLoreAdafactor,
    GaLoreAdamW,
    GaLoreAdamW8bit,
    PerLayerStepper,
    QuantizedLinear,
    SubspaceProjector,
    TuckerProjector,
    UpdateGuard,
    convert_linear_to_int8,
    galore_param_groups,
)
from subspace_peft.sst import SSTController, SSTLinear, convert_to_sst

__all__ = [
    "DecoderConfig",
    "GaLoreAdafactor",
    "GaLoreAdamW",
    "GaLoreAdamW8bit",
    "MicroDecoder",
    "PerLayerStepper",
    "QuantizedLinear",
    "SSTController",
    "SSTLinear",
    "SubspaceProjector",
    "TuckerProjector",
    "UpdateGuard",
    "convert_linear_to_int8",
    "convert_to_sst",
    "galore_param_groups",
    "perplexity",
    "train_decoder",
]
