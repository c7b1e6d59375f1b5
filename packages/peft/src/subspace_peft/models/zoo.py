"""Zoo entries (architectures only, no shipped weights yet) and the ``text_val_ppl`` protocol."""

from __future__ import annotations

from functools import lru_cache

import torch
from torch import nn

from subspace_core.data.datasets.text import lm_corpus
from subspace_core.eval import Protocol, register_protocol
from subspace_core.zoo import register_model
from subspace_peft.models.decoder import DecoderConfig, MicroDecoder
from subspace_peft.models.perplexity import CONTEXT, NUM_WINDOWS, perplexity
from subspace_peft.models.perplexity import __doc__ as _PPL_DOC

__all__ = ["LLAMA_MICRO", "LLAMA_MINI", "TEXT_VAL_PPL", "llama_micro_text", "llama_mini_text"]

#: ~1.22M params: 4.9 MB as fp32 (fits the 5 MB checkpoint budget in fp32).
LLAMA_MICRO = DecoderConfig(dim=128, n_layers=6, n_heads=4, hidden_dim=344, max_seq_len=512)
#: ~2.26M params: 4.5 MB only when stored as bf16/fp16 (9.1 MB as fp32).
LLAMA_MINI = DecoderConfig(dim=192, n_layers=5, n_heads=6, hidden_dim=512, max_seq_len=512)


@register_model(
    "peft/llama_micro.text",
    description="LLaMA-style byte-level decoder, 1.22M params (d=128, 6 layers, 4 heads, "
    "SwiGLU 344, tied embeddings, vocab 257); 20NG+R8 text. No weights shipped yet.",
)
def llama_micro_text(**overrides) -> nn.Module:
    return MicroDecoder(LLAMA_MICRO, **overrides)


@register_model(
    "peft/llama_mini.text",
    description="LLaMA-style byte-level decoder, 2.26M params (d=192, 5 layers, 6 heads, "
    "SwiGLU 512, tied embeddings, vocab 257); 20NG+R8 text; ships as bf16. No weights yet.",
)
def llama_mini_text(**overrides) -> nn.Module:
    return MicroDecoder(LLAMA_MINI, **overrides)


@lru_cache(maxsize=1)
def _validation_tokens() -> torch.Tensor:
    return lm_corpus("validation")


def _run_text_val_ppl(model: nn.Module, device: torch.device) -> dict[str, float]:
    return perplexity(model, _validation_tokens(), context=CONTEXT, num_windows=NUM_WINDOWS,
                      device=device)


TEXT_VAL_PPL = register_protocol(
    Protocol(
        name="text_val_ppl",
        dataset="newsgroups20+reuters",
        split="test",
        preprocessing=f"UTF-8 bytes + EOS per document (vocab 257); {NUM_WINDOWS} evenly "
        f"spaced non-overlapping windows of {CONTEXT} predicted tokens",
        metrics=("ppl", "bits_per_token", "loss"),
        higher_is_better=(False, False, False),
        run=_run_text_val_ppl,
        description=(_PPL_DOC or "").strip(),
    )
)
