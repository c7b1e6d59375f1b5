"""Gradient-subspace optimizers: GaLore, Fira, Q-GaLore (AdamW) and training mechanics."""

from subspace_peft.optim.galore import GALORE_DEFAULTS, GaLoreAdamW
from subspace_peft.optim.mechanics import PerLayerStepper, UpdateGuard, galore_param_groups
from subspace_peft.optim.projector import METHODS, PROJ_TYPES, SubspaceProjector, resolve_side

__all__ = [
    "GALORE_DEFAULTS",
    "METHODS",
    "PROJ_TYPES",
    "GaLoreAdamW",
    "PerLayerStepper",
    "SubspaceProjector",
    "UpdateGuard",
    "galore_param_groups",
    "resolve_side",
]
