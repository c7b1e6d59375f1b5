"""Fine-tuning harness: MiniLM sentence classification with full AdamW, GaLore, LoRA, SVFit
and CorDA.

One loop (:func:`finetune`), one data order, one schedule for every method; see
:mod:`~subspace_peft.finetune.methods` for what each method trains and
:mod:`subspace_peft.benchmarks.finetuning` for the ``peft/minilm_sentiment`` benchmark.
Needs the ``hf`` extra (``transformers``, ``peft``), imported only when a model is built.

Example::

    from subspace_peft.finetune import FinetuneConfig, encode, finetune
    from subspace_peft.data import load_rotten_tomatoes
    from subspace_peft.hf import load_minilm_tokenizer

    tok = load_minilm_tokenizer()
    train, val, test = (encode(d.texts, d.labels, tok) for d in
                        map(load_rotten_tomatoes, ("train", "validation", "test")))
    result = finetune(FinetuneConfig("galore", lr=1e-4), train, val, test)
"""

from subspace_peft.finetune.data import (
    Encoded,
    collate,
    encode,
    eval_batches,
    subset,
    train_batches,
)
from subspace_peft.finetune.methods import (
    ENCODER_LINEARS,
    METHODS,
    CorDASettings,
    GaLoreSettings,
    LoRASettings,
    Prepared,
    SVFitSettings,
    matrix_parameters,
    optimizer_state_bytes,
    prepare_method,
    trainable_parameters,
)
from subspace_peft.finetune.model import MiniLMClassifier, build_classifier
from subspace_peft.finetune.train import (
    FinetuneConfig,
    FinetuneResult,
    accuracy,
    finetune,
    linear_schedule,
)

__all__ = [
    "ENCODER_LINEARS",
    "METHODS",
    "CorDASettings",
    "Encoded",
    "FinetuneConfig",
    "FinetuneResult",
    "GaLoreSettings",
    "LoRASettings",
    "MiniLMClassifier",
    "Prepared",
    "SVFitSettings",
    "accuracy",
    "build_classifier",
    "collate",
    "encode",
    "eval_batches",
    "finetune",
    "linear_schedule",
    "matrix_parameters",
    "optimizer_state_bytes",
    "prepare_method",
    "subset",
    "train_batches",
    "trainable_parameters",
]
