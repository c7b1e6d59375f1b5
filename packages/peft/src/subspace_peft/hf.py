"""all-MiniLM-L6-v2 through Hugging Face ``transformers`` (re-exported from the core).

The loaders moved to :mod:`subspace_core.text_encoders` (so that packages other than peft
can use the encoder without depending on subspace-peft); this module keeps their names
working. ``transformers`` stays a lazy import (the ``hf`` extra of ``subspace-peft``).

Sentence embeddings follow sentence-transformers' configuration of this model: mean of
the last hidden states over the non-padding tokens, then L2 normalisation.
"""

from __future__ import annotations

from subspace_core.text_encoders import (
    MINILM_DATASET,
    MINILM_HIDDEN,
    embed,
    load_minilm,
    load_minilm_tokenizer,
    mean_pool,
    minilm_dir,
    require_hf,
)

__all__ = [
    "MINILM_DATASET",
    "MINILM_HIDDEN",
    "embed",
    "load_minilm",
    "load_minilm_tokenizer",
    "mean_pool",
    "minilm_dir",
    "require_hf",
]
