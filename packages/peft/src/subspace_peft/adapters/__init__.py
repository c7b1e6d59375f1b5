"""Weight-subspace adapters (issue 8): one folder per method on one shared base.

* :mod:`.base` — target selection by qualified-name regex, :class:`AdapterModel` /
  :class:`AdapterLayer`, merge / unload, LoRA-form factors, save / load (safetensors with a
  sha256 sidecar), calibration statistics (:func:`collect_input_covariance`).
* :mod:`.svfit` — SVFit: train the top-r singular values of each weight.
* :mod:`.corda` — CorDA: context-oriented decomposition, knowledge-preserved (``kpm``) and
  instruction-previewed (``ipm``) modes.
* :mod:`.export` — export a LoRA-form adapter as a Hugging Face ``peft`` LoRA folder.

Importing this package registers the built-in methods with :func:`load_adapter`.
"""

from subspace_peft.adapters.base import (
    ADAPTER_FORMAT,
    AdapterConfig,
    AdapterLayer,
    AdapterModel,
    InputCovariance,
    adapter_methods,
    collect_input_covariance,
    find_targets,
    load_adapter,
    name_matches,
    register_adapter_method,
)
from subspace_peft.adapters.corda import (
    CorDAConfig,
    CorDADecomposition,
    CorDALinear,
    CorDAModel,
    corda_decompose,
)
from subspace_peft.adapters.export import export_peft_lora, peft_lora_config
from subspace_peft.adapters.svfit import SVFitConfig, SVFitLinear, SVFitModel, select_rank

# Further methods (each in its own folder, registered on import) are added below this line,
# e.g. ``from subspace_peft.adapters.eora import ...`` (owned by the EoRA work).

__all__ = [
    "ADAPTER_FORMAT",
    "AdapterConfig",
    "AdapterLayer",
    "AdapterModel",
    "CorDAConfig",
    "CorDADecomposition",
    "CorDALinear",
    "CorDAModel",
    "InputCovariance",
    "SVFitConfig",
    "SVFitLinear",
    "SVFitModel",
    "adapter_methods",
    "collect_input_covariance",
    "corda_decompose",
    "export_peft_lora",
    "find_targets",
    "load_adapter",
    "name_matches",
    "peft_lora_config",
    "register_adapter_method",
    "select_rank",
]
