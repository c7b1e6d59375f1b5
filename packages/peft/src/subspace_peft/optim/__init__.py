"""Gradient-subspace optimizers: GaLore, Fira, Q-GaLore (AdamW, 8-bit AdamW, Adafactor), Tucker
projection of N-d weights, INT8 weights with stochastic rounding, and training mechanics
(per-layer stepping, update guard, DDP/FSDP2)."""

from subspace_peft.optim.adafactor import ADAFACTOR_DEFAULTS, GaLoreAdafactor
from subspace_peft.optim.base import PROJECTION_DEFAULTS, SubspaceOptimizer
from subspace_peft.optim.galore import GALORE_DEFAULTS, GaLoreAdamW, GaLoreAdamW8bit
from subspace_peft.optim.mechanics import PerLayerStepper, UpdateGuard, galore_param_groups
from subspace_peft.optim.projector import METHODS, PROJ_TYPES, SubspaceProjector, resolve_side
from subspace_peft.optim.qweights import Int8Weight, QuantizedLinear, convert_linear_to_int8
from subspace_peft.optim.tucker import TuckerProjector

__all__ = [
    "ADAFACTOR_DEFAULTS",
    "GALORE_DEFAULTS",
    "METHODS",
    "PROJECTION_DEFAULTS",
    "PROJ_TYPES",
    "GaLoreAdafactor",
    "GaLoreAdamW",
    "GaLoreAdamW8bit",
    "Int8Weight",
    "PerLayerStepper",
    "QuantizedLinear",
    "SubspaceOptimizer",
    "SubspaceProjector",
    "TuckerProjector",
    "UpdateGuard",
    "convert_linear_to_int8",
    "galore_param_groups",
    "resolve_side",
]
