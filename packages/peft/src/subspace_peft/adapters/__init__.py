"""Weight-subspace adapters (issue 8): one folder per method on one shared base.

* :mod:`.base` — target selection by qualified-name regex, :class:`AdapterModel` /
  :class:`AdapterLayer`, merge / unload, LoRA-form factors, save / load (safetensors with a
  sha256 sidecar), calibration statistics (:func:`collect_input_covariance`).
* :mod:`.svfit` — SVFit: train the top-r singular values of each weight.
* :mod:`.corda` — CorDA: context-oriented decomposition, knowledge-preserved (``kpm``) and
  instruction-previewed (``ipm``) modes.
* :mod:`.eora` — EoRA: training-free low-rank compensation of a compressed model, fitted in
  the eigenspace of each layer's input covariance (and the plain-SVD baseline).
* :mod:`.compress` — the compressions EoRA compensates (group-wise RTN quantisation,
  magnitude / Wanda / N:M pruning), applied in place.
* :mod:`.flora` — FLoRA: a Tucker core for N-d (conv) weight updates, structure kept.
* :mod:`.intrinsic` — training in a random subspace (dense / Fastfood projections) and the
  search for ``d_int90``.
* :mod:`.sara` — SaRA: the smallest pretrained weights as a sparse trainable set with a
  nuclear-norm penalty, re-selected progressively.
* :mod:`.matryoshka_kv` — MatryoshkaKV: trainable orthogonal key / value projections with
  nested ranks, compressing a decoder's KV cache.
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
from subspace_peft.adapters.eora import EoRAConfig, EoRALinear, EoRAModel, eora_fit, svd_fit
from subspace_peft.adapters.export import export_peft_lora, peft_lora_config
from subspace_peft.adapters.flora import FLoRAConfig, FLoRALayer, FLoRAModel
from subspace_peft.adapters.intrinsic import (
    DenseProjection,
    FastfoodProjection,
    IntrinsicConfig,
    IntrinsicModel,
    find_intrinsic_dimension,
)
from subspace_peft.adapters.matryoshka_kv import (
    MatryoshkaKVAttention,
    MatryoshkaKVConfig,
    MatryoshkaKVModel,
)
from subspace_peft.adapters.sara import SaRAConfig, SaRALayer, SaRAModel, nuclear_norm
from subspace_peft.adapters.svfit import SVFitConfig, SVFitLinear, SVFitModel, select_rank

__all__ = [
    "ADAPTER_FORMAT",
    "AdapterConfig",
    "AdapterLayer",
    "AdapterModel",
    "CorDAConfig",
    "CorDADecomposition",
    "CorDALinear",
    "CorDAModel",
    "DenseProjection",
    "EoRAConfig",
    "EoRALinear",
    "EoRAModel",
    "FLoRAConfig",
    "FLoRALayer",
    "FLoRAModel",
    "FastfoodProjection",
    "InputCovariance",
    "IntrinsicConfig",
    "IntrinsicModel",
    "MatryoshkaKVAttention",
    "MatryoshkaKVConfig",
    "MatryoshkaKVModel",
    "SVFitConfig",
    "SVFitLinear",
    "SVFitModel",
    "SaRAConfig",
    "SaRALayer",
    "SaRAModel",
    "adapter_methods",
    "collect_input_covariance",
    "corda_decompose",
    "eora_fit",
    "export_peft_lora",
    "find_intrinsic_dimension",
    "find_targets",
    "load_adapter",
    "name_matches",
    "nuclear_norm",
    "peft_lora_config",
    "register_adapter_method",
    "select_rank",
    "svd_fit",
]
