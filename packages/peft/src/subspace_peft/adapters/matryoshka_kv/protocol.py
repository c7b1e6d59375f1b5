"""The data and the score of MatryoshkaKV on SmolLM2-135M: 20 Newsgroups text, perplexity
at a chosen KV-cache budget (the ``kv_cache_ppl`` protocol, registered on import).

Streams (SmolLM2 tokens, documents joined by ``"\\n\\n"``, :func:`token_stream`):

* calibration: the first :data:`CALIB_DOCS` training documents, cut into
  :data:`CALIB_SEQUENCES` windows of :data:`SEQ_LEN` tokens (the PCA bases);
* training: the next :data:`TRAIN_DOCS` training documents, windows of :data:`SEQ_LEN`;
* evaluation: the first :data:`EVAL_DOCS` test documents; perplexity on :data:`EVAL_WINDOWS`
  evenly spaced windows of :data:`SEQ_LEN` tokens (:func:`subspace_peft.models.perplexity.
  perplexity`, every position scored, no overlap).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import torch

__all__ = ["CACHE_RANKS", "CALIB_DOCS", "CALIB_SEQUENCES", "EVAL_DOCS", "EVAL_WINDOWS",
           "SEQ_LEN", "TRAIN_DOCS", "KVStreams", "kv_perplexity", "newsgroups_streams"]

SEQ_LEN = 256
CALIB_DOCS = 300
CALIB_SEQUENCES = 16
TRAIN_DOCS = 3000
EVAL_DOCS = 300
EVAL_WINDOWS = 16


@dataclass(frozen=True)
class KVStreams:
    """Token streams (1-D int64) and the calibration windows ``[CALIB_SEQUENCES, SEQ_LEN]``."""

    calibration: torch.Tensor
    train: torch.Tensor
    evaluation: torch.Tensor


@lru_cache(maxsize=1)
def newsgroups_streams() -> KVStreams:
    """The three 20 Newsgroups streams of the module docstring, tokenised by SmolLM2's
    tokenizer (loaded from the GGUF file)."""
    from subspace_core.data.datasets.text import load_text
    from subspace_peft.models.perplexity import eval_windows, token_stream
    from subspace_peft.smollm2 import load_smollm2_tokenizer

    tokenizer = load_smollm2_tokenizer()
    train_texts = load_text("newsgroups20", "train").texts
    calib = token_stream(tokenizer, train_texts[:CALIB_DOCS])
    train = token_stream(tokenizer, train_texts[CALIB_DOCS:CALIB_DOCS + TRAIN_DOCS])
    evaluation = token_stream(tokenizer, load_text("newsgroups20", "test").texts[:EVAL_DOCS])
    windows = eval_windows(calib, SEQ_LEN - 1, CALIB_SEQUENCES)
    return KVStreams(windows, train, evaluation)


def kv_perplexity(model: torch.nn.Module, evaluation: torch.Tensor, *,
                  windows: int = EVAL_WINDOWS, batch: int = 4,
                  device: torch.device | str | None = None) -> float:
    """Perplexity of a Hugging Face causal LM on ``windows`` windows of ``evaluation``."""
    from subspace_peft.models.perplexity import CausalLMLogits, perplexity

    return perplexity(CausalLMLogits(model), evaluation, context=SEQ_LEN, num_windows=windows,
                      batch=batch, device=device)["ppl"]


#: protocol metric name -> kept key / value dimensions per head (of SmolLM2's 64)
CACHE_RANKS = {"ppl_cache_50": 32, "ppl_cache_25": 16, "ppl_cache_75": 48, "ppl_full": 64}


def _run_kv_cache_ppl(model: torch.nn.Module, device: torch.device) -> dict[str, float]:
    from subspace_peft.adapters.matryoshka_kv.model import MatryoshkaKVModel

    kv = getattr(model, "adapter", model)
    if not isinstance(kv, MatryoshkaKVModel):
        raise TypeError(f"model: expected a MatryoshkaKVModel (or a ShippedAdapter of one), "
                        f"got {type(kv).__name__}")
    evaluation = newsgroups_streams().evaluation
    out = {}
    for metric, rank in CACHE_RANKS.items():
        with kv.ranks(rank):
            out[metric] = kv_perplexity(kv.model, evaluation, device=device)
    return out


def _register() -> None:
    from subspace_core.eval import Protocol, register_protocol

    register_protocol(Protocol(
        name="kv_cache_ppl",
        dataset="newsgroups20",
        split="test",
        preprocessing=f"SmolLM2 tokens of the first {EVAL_DOCS} test documents joined by "
        f"'\\n\\n'; {EVAL_WINDOWS} evenly spaced windows of {SEQ_LEN} tokens, every position "
        "scored",
        metrics=tuple(CACHE_RANKS),
        higher_is_better=(False,) * len(CACHE_RANKS),
        run=_run_kv_cache_ppl,
        description="Perplexity of a MatryoshkaKV-wrapped SmolLM2-135M with every key / value "
        "head cached at 32, 16, 48 and 64 of 64 dimensions (50 / 25 / 75 / 100 % of the KV "
        "cache).",
    ))


_register()
