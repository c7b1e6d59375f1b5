"""The model zoo: registry, pretrained configs, verified safetensors checkpoints."""

from subspace_core.io import ChecksumError
from subspace_core.zoo.checkpoint import count_parameters, load_state_dict, save_state_dict
from subspace_core.zoo.pretrained import (
    CheckpointNotFound,
    PretrainedCfg,
    ResolvedCheckpoint,
    resolve_checkpoint,
)
from subspace_core.zoo.registry import (
    ModelEntry,
    create_model,
    get_model_entry,
    list_models,
    load,
    register_model,
)

__all__ = [
    "CheckpointNotFound",
    "ChecksumError",
    "ModelEntry",
    "PretrainedCfg",
    "ResolvedCheckpoint",
    "count_parameters",
    "create_model",
    "get_model_entry",
    "list_models",
    "load",
    "load_state_dict",
    "register_model",
    "resolve_checkpoint",
    "save_state_dict",
]
