"""The peft plugin: registers the package's datasets, models, protocols and benchmarks."""

from subspace_peft import data as _data  # noqa: F401  rotten_tomatoes, all_minilm_l6_v2
from subspace_peft import smollm2 as _smollm2  # noqa: F401  smollm2_135m_instruct weights
from subspace_peft.adapters import pretrained as _adapters  # noqa: F401  shipped adapters, rt_sentiment
from subspace_peft.benchmarks import eora as _eora  # noqa: F401  peft/eora_smollm2
from subspace_peft.benchmarks import finetuning as _finetuning  # noqa: F401  peft/minilm_{sentiment,adapters}
from subspace_peft.benchmarks import flora_conv as _flora_conv  # noqa: F401  peft/flora_conv
from subspace_peft.benchmarks import intrinsic as _intrinsic  # noqa: F401  peft/intrinsic_dimension
from subspace_peft.benchmarks import matryoshka_kv as _matryoshka_kv  # noqa: F401  peft/matryoshka_kv
from subspace_peft.benchmarks import measured_memory as _measured  # noqa: F401  peft/measured_memory
from subspace_peft.benchmarks import merging as _merging  # noqa: F401  peft/merging
from subspace_peft.benchmarks import nm_sparsity as _nm_sparsity  # noqa: F401  peft/nm_sparsity
from subspace_peft.benchmarks import optimizer_memory as _memory  # noqa: F401  peft/optimizer_memory
from subspace_peft.benchmarks import pretraining as _pretraining  # noqa: F401  decoder_pretraining
from subspace_peft.benchmarks import refresh as _refresh  # noqa: F401  peft/projector_refresh
from subspace_peft.models import pretrained as _pretrained  # noqa: F401  shipped decoders
from subspace_peft.models import zoo as _zoo  # noqa: F401  peft/llama_*.text, text_val_ppl
