"""Models of the peft package: the LLaMA-style micro decoder, its training loop and eval.

Importing :mod:`subspace_peft.models.zoo` registers the zoo ids and the ``text_val_ppl``
protocol (the plugin does that); this package itself has no registration side effects.
"""

from subspace_peft.models.decoder import DecoderConfig, MicroDecoder, RMSNorm, count_params
from subspace_peft.models.perplexity import eval_windows, perplexity
from subspace_peft.models.train import sample_batch, train_decoder

__all__ = [
    "DecoderConfig",
    "MicroDecoder",
    "RMSNorm",
    "count_params",
    "eval_windows",
    "perplexity",
    "sample_batch",
    "train_decoder",
]
