"""A sequence classifier on any of the package's SSM layers, with masks for variable lengths.

``encoder → n_layers × [x + Dropout(Layer(LayerNorm(x)))] → LayerNorm → masked mean pool →
Linear``. The encoder is ``"linear"`` (features ``[batch, L, d_input]``), ``"embedding"``
(tokens ``[batch, L]``, ``vocab_size``) or any module mapping the input to
``[batch, L, d_model]``.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from subspace_ssm.mamba import Mamba
from subspace_ssm.masks import check_mask
from subspace_ssm.s4 import S4
from subspace_ssm.s4d import S4D
from subspace_ssm.s5 import S5

__all__ = ["KINDS", "SSMClassifier", "make_layer"]

KINDS = ("s4d", "s4", "s5", "mamba")


def make_layer(kind: str, d_model: int, d_state: int, dropout: float, **kwargs: Any) -> nn.Module:
    """One SSM layer of ``kind`` (extra ``kwargs`` go to its constructor)."""
    if kind == "s4d":
        return S4D(d_model, d_state, dropout=dropout, **kwargs)
    if kind == "s4":
        return S4(d_model, d_state, dropout=dropout, **kwargs)
    if kind == "s5":
        return S5(d_model, d_state, dropout=dropout, **kwargs)
    if kind == "mamba":
        return Mamba(d_model, d_state, **kwargs)
    raise ValueError(f"kind: expected one of {KINDS}, got {kind!r}")


class SSMClassifier(nn.Module):
    """Sequence classifier: encoder, residual pre-norm SSM layers, masked mean pooling, head.

    Args:
        n_classes: number of classes.
        kind: ``"s4d"``, ``"s4"``, ``"s5"`` or ``"mamba"``.
        encoder: ``"linear"``, ``"embedding"`` or an ``nn.Module``.
        d_input: input features (``"linear"``).
        vocab_size: token vocabulary (``"embedding"``).
        d_model, n_layers, d_state: sizes.
        dropout: residual dropout (and the layers' own, where they have one).
        layer_kwargs: passed to every layer (e.g. ``init="ptd"``, ``bidirectional=True``).
    """

    def __init__(self, n_classes: int, *, kind: str = "s4d", encoder: str | nn.Module = "linear",
                 d_input: int = 1, vocab_size: int | None = None, d_model: int = 64,
                 n_layers: int = 4, d_state: int = 64, dropout: float = 0.0,
                 layer_kwargs: dict[str, Any] | None = None):
        super().__init__()
        if kind not in KINDS:
            raise ValueError(f"kind: expected one of {KINDS}, got {kind!r}")
        if encoder == "linear":
            self.encoder = nn.Linear(d_input, d_model)
        elif encoder == "embedding":
            if vocab_size is None or vocab_size < 1:
                raise ValueError(f"vocab_size: expected an int >= 1 for encoder='embedding', "
                                 f"got {vocab_size!r}")
            self.encoder = nn.Embedding(vocab_size, d_model)
        elif isinstance(encoder, nn.Module):
            self.encoder = encoder
        else:
            raise ValueError(f"encoder: expected 'linear', 'embedding' or an nn.Module, got {encoder!r}")
        self.kind = kind
        kwargs = dict(layer_kwargs or {})
        self.norms = nn.ModuleList(nn.LayerNorm(d_model) for _ in range(n_layers))
        self.layers = nn.ModuleList(make_layer(kind, d_model, d_state, dropout, **kwargs)
                                    for _ in range(n_layers))
        self.dropout = nn.Dropout(dropout)
        self.norm = nn.LayerNorm(d_model)
        self.head = nn.Linear(d_model, n_classes)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """Logits ``[batch, n_classes]`` for ``x`` (``[batch, L, d_input]`` or tokens
        ``[batch, L]``) with an optional right-padding ``mask [batch, L]``."""
        h = self.encoder(x)
        b, L = h.shape[:2]
        mask = check_mask(mask, b, L)
        for norm, layer in zip(self.norms, self.layers, strict=True):
            h = h + self.dropout(layer(norm(h), mask=mask))
        h = self.norm(h)
        if mask is None:
            pooled = h.mean(1)
        else:
            w = mask[..., None].to(h.dtype)
            pooled = (h * w).sum(1) / w.sum(1).clamp_min(1.0)
        return self.head(pooled)
