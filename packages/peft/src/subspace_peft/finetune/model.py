"""MiniLM sentence classifier: the all-MiniLM-L6-v2 encoder, mean pooling, a linear head.

The pooled feature is the model's own sentence embedding (mean of the last hidden states
over non-padding tokens, as sentence-transformers uses it), so the classifier starts from
the representation the checkpoint was trained to produce; dropout (0.1, BERT's) is applied
to it before the head. The head (``head``, ``Linear(384, num_classes)``) is initialised as
BERT initialises its classifier: weights N(0, 0.02), zero bias, from ``seed``.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from subspace_peft.hf import MINILM_HIDDEN, load_minilm, mean_pool

__all__ = ["MiniLMClassifier", "build_classifier"]


class MiniLMClassifier(nn.Module):
    """``logits = head(dropout(mean_pool(encoder(input_ids, attention_mask))))``.

    ``encoder`` is a ``transformers`` BERT-style model returning ``last_hidden_state``.
    """

    def __init__(self, encoder: nn.Module, num_classes: int = 2, dropout: float = 0.1,
                 hidden: int = MINILM_HIDDEN) -> None:
        super().__init__()
        if num_classes < 2:
            raise ValueError(f"num_classes: expected >= 2, got {num_classes}")
        self.encoder = encoder
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(hidden, num_classes)
        nn.init.normal_(self.head.weight, std=0.02)
        nn.init.zeros_(self.head.bias)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        return self.head(self.dropout(mean_pool(hidden, attention_mask)))


def build_classifier(num_classes: int = 2, *, seed: int = 0, encoder: nn.Module | None = None,
                     dropout: float = 0.1) -> MiniLMClassifier:
    """A fresh classifier: a deep copy of ``encoder`` (loaded with
    :func:`~subspace_peft.hf.load_minilm` when None) and a head initialised from ``seed``."""
    encoder = load_minilm() if encoder is None else copy.deepcopy(encoder)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return MiniLMClassifier(encoder, num_classes, dropout)
