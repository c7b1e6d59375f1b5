"""Shared fixtures of the peft tests."""

import pytest
import torch
from torch import nn


def _tiny_bert(seed: int = 0) -> nn.Module:
    """BertModel with hidden 32, 2 layers, dropout off; the same weights for the same seed."""
    transformers = pytest.importorskip("transformers")
    cfg = transformers.BertConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                  intermediate_size=64, vocab_size=100,
                                  max_position_embeddings=32, hidden_dropout_prob=0.0,
                                  attention_probs_dropout_prob=0.0)
    torch.manual_seed(seed)
    return transformers.BertModel(cfg).eval()


@pytest.fixture
def tiny_bert():
    """Factory ``tiny_bert(seed=0)`` of a small randomly initialised ``BertModel``."""
    return _tiny_bert
