"""Validation perplexity of a next-token model on a fixed set of windows.

Definition (protocol ``text_val_ppl``): the validation token stream (``lm_corpus
("validation")``: byte tokens of 20 Newsgroups' then Reuters R8's test files, one EOS
after each document, 11,867,931 tokens) is cut into non-overlapping blocks of
``context + 1`` tokens; ``num_windows`` blocks are taken at evenly spaced block indices
(``linspace(0, n_blocks - 1, num_windows)`` rounded down). In each window the model
reads tokens ``0..context-1`` and is scored on tokens ``1..context`` (every position,
stride = context, no overlap, so early positions see little context). Reported:
``loss`` = mean cross-entropy in nats/token, ``ppl = exp(loss)``, ``bits_per_token =
loss / ln 2`` (a token is a byte, or an end-of-document mark, so this is ~bits/byte).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["CONTEXT", "NUM_WINDOWS", "CausalLMLogits", "eval_windows", "perplexity", "token_stream"]

CONTEXT = 256
NUM_WINDOWS = 256


def eval_windows(tokens: torch.Tensor, context: int, num_windows: int) -> torch.Tensor:
    """The ``[num_windows, context + 1]`` evaluation windows of ``tokens`` (see module doc)."""
    if tokens.dim() != 1:
        raise ValueError(f"tokens: expected 1-D, got shape {tuple(tokens.shape)}")
    n_blocks = tokens.numel() // (context + 1)
    if n_blocks < 1 or num_windows < 1:
        raise ValueError(
            f"tokens: need >= {context + 1} tokens and num_windows >= 1, got "
            f"{tokens.numel()} tokens, num_windows={num_windows}"
        )
    num_windows = min(num_windows, n_blocks)
    blocks = torch.linspace(0, n_blocks - 1, num_windows, dtype=torch.float64).floor().long()
    index = blocks[:, None] * (context + 1) + torch.arange(context + 1)[None, :]
    return tokens[index]


@torch.no_grad()
def perplexity(
    model: nn.Module,
    tokens: torch.Tensor,
    *,
    context: int = CONTEXT,
    num_windows: int = NUM_WINDOWS,
    batch: int = 32,
    device: torch.device | str | None = None,
) -> dict[str, float]:
    """``{"ppl", "bits_per_token", "loss"}`` of ``model`` on :func:`eval_windows`."""
    device = torch.device(device) if device is not None else next(model.parameters()).device
    windows = eval_windows(tokens, context, num_windows)
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    try:
        for chunk in windows.split(batch):
            chunk = chunk.to(device)
            logits = model(chunk[:, :-1]).float()
            total += F.cross_entropy(
                logits.reshape(-1, logits.shape[-1]), chunk[:, 1:].reshape(-1), reduction="sum"
            ).item()
            count += chunk[:, 1:].numel()
    finally:
        model.train(was_training)
    loss = total / count
    return {"ppl": math.exp(loss), "bits_per_token": loss / math.log(2), "loss": loss}


class CausalLMLogits(nn.Module):
    """``ids [B, T] -> logits [B, T, V]`` of a Hugging Face causal LM (for :func:`perplexity`)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.model(input_ids=ids, use_cache=False).logits


def token_stream(tokenizer, texts: list[str]) -> torch.Tensor:
    """The documents' tokens (a Hugging Face ``tokenizer``) joined by the tokens of
    ``"\\n\\n"``, as one 1-D int64 tensor."""
    sep = tokenizer("\n\n", add_special_tokens=False).input_ids
    ids: list[int] = []
    for doc in tokenizer(texts, add_special_tokens=False).input_ids:
        ids += doc + sep
    return torch.tensor(ids, dtype=torch.long)
