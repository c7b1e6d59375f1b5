"""The MatryoshkaKV attention wrapper: keys and values cached in a nested orthogonal subspace.

For each key-value head ``h`` with head size ``d`` there are two orthogonal matrices
``U_k[h], U_v[h] [d, d]``. With ranks ``r_k, r_v``:

* keys (after RoPE) are cached as ``k U_k[:, :r_k]`` and values as ``v U_v[:, :r_v]``, so the
  cache holds ``r_k + r_v`` numbers per head and token instead of ``2 d``;
* every query of the head's group is projected by the same ``U_k[:, :r_k]``, so the score
  ``(q U)(k U)ᵀ = q U Uᵀ kᵀ`` is the original score with ``k`` replaced by its projection
  onto the kept subspace (the softmax scale stays ``1/sqrt(d)``);
* the attention output (a mixture of cached values) is lifted back by ``U_v[:, :r_v]ᵀ``
  before the output projection.

At full rank ``U Uᵀ = I`` and the wrapper computes exactly the original attention, which is
what makes the model its own distillation teacher. Each ``U = U0 · exp(S − Sᵀ)``: ``U0`` is
the frozen initial basis (PCA of calibration keys / values, or the identity) and ``S`` the
trainable parameter, zero at the start, so ``U`` stays orthogonal to rounding whatever the
optimiser does, and the nesting (the leading ``r`` columns of one ``U`` serve every rank) is
what the Matryoshka schedule trains.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

__all__ = ["KVStatistics", "MatryoshkaKVAttention", "orthogonal_basis"]

_REQUIRED = ("q_proj", "k_proj", "v_proj", "o_proj", "head_dim", "num_key_value_groups",
             "scaling", "config", "layer_idx")
#: attributes of attention variants whose forward this wrapper does not reproduce
_UNSUPPORTED = ("q_norm", "k_norm", "sliding_window", "sinks")


def orthogonal_basis(base: torch.Tensor, skew: torch.Tensor) -> torch.Tensor:
    """``base @ matrix_exp(skew - skewᵀ)``: orthogonal when ``base`` is.

    Args:
        base: ``[H, d, d]`` orthogonal matrices (columns are the basis, most important first).
        skew: ``[H, d, d]`` unconstrained parameter (only its antisymmetric part matters).
    Returns:
        ``[H, d, d]`` in the dtype of ``skew``.
    """
    return base.to(skew.dtype) @ torch.linalg.matrix_exp(skew - skew.transpose(-1, -2))


class KVStatistics:
    """Running ``Σ kᵀk`` and ``Σ vᵀv`` per key-value head (float64), for the PCA init."""

    def __init__(self, heads: int, head_dim: int) -> None:
        self.key = torch.zeros(heads, head_dim, head_dim, dtype=torch.float64)
        self.value = torch.zeros_like(self.key)
        self.tokens = 0

    def add(self, key: torch.Tensor, value: torch.Tensor) -> None:
        """Accumulate ``key, value [B, H, T, d]`` (post-RoPE keys, as the cache holds them)."""
        k = key.detach().to(torch.float64).transpose(0, 1).reshape(key.shape[1], -1,
                                                                   key.shape[-1])
        v = value.detach().to(torch.float64).transpose(0, 1).reshape(value.shape[1], -1,
                                                                     value.shape[-1])
        self.key += (k.transpose(1, 2) @ k).cpu()
        self.value += (v.transpose(1, 2) @ v).cpu()
        self.tokens += k.shape[1]


def _principal_basis(second_moment: torch.Tensor) -> torch.Tensor:
    """``[H, d, d]`` eigenvectors of each ``[d, d]`` block, by decreasing eigenvalue."""
    _, vectors = torch.linalg.eigh(second_moment)
    return vectors.flip(-1)


class MatryoshkaKVAttention(nn.Module):
    """Wraps one Llama-family self-attention module (``q/k/v/o_proj``, RoPE, grouped heads).

    The wrapped module's weights stay where they are (and frozen); this module adds
    ``key_skew, value_skew [H_kv, d, d]`` (trainable) and the buffers ``key_base,
    value_base [H_kv, d, d]``. Shapes in :meth:`forward` follow Hugging Face:
    ``hidden_states [B, T, hidden] -> ([B, T, hidden], attention weights or None)``.
    """

    def __init__(self, base: nn.Module) -> None:
        super().__init__()
        missing = [a for a in _REQUIRED if not hasattr(base, a)]
        if missing:
            raise TypeError(f"base: expected a Llama-family attention module with "
                            f"{list(_REQUIRED)}, {type(base).__name__} lacks {missing}")
        extra = [a for a in _UNSUPPORTED if getattr(base, a, None) is not None]
        if extra:
            raise TypeError(f"base: {type(base).__name__} has {extra}, which this wrapper's "
                            f"forward does not reproduce")
        module = sys.modules[type(base).__module__]
        rope = getattr(module, "apply_rotary_pos_emb", None)
        eager = getattr(module, "eager_attention_forward", None)
        if rope is None or eager is None:
            raise TypeError(f"base: {type(base).__module__} lacks apply_rotary_pos_emb or "
                            f"eager_attention_forward")
        self._rope: Callable = rope
        # the model's own eager attention: it only needs the head dimension to agree
        self._eager: Callable = eager
        self.base = base
        d = int(base.head_dim)
        heads = base.k_proj.out_features // d
        if heads * d != base.k_proj.out_features:
            raise ValueError(f"base.k_proj.out_features: expected a multiple of head_dim={d}, "
                             f"got {base.k_proj.out_features}")
        self.head_dim, self.kv_heads = d, heads
        weight = base.k_proj.weight
        eye = torch.eye(d, dtype=torch.float32, device=weight.device).expand(heads, d, d)
        self.register_buffer("key_base", eye.clone())
        self.register_buffer("value_base", eye.clone())
        self.key_skew = nn.Parameter(torch.zeros(heads, d, d, device=weight.device))
        self.value_skew = nn.Parameter(torch.zeros(heads, d, d, device=weight.device))
        self.key_rank = d
        self.value_rank = d
        self.statistics: KVStatistics | None = None

    # ----------------------------------------------------------------- ranks and bases
    def set_ranks(self, key_rank: int, value_rank: int | None = None) -> None:
        """Keep ``key_rank`` key and ``value_rank`` (default: the same) value dimensions."""
        value_rank = key_rank if value_rank is None else value_rank
        for name, r in (("key_rank", key_rank), ("value_rank", value_rank)):
            if isinstance(r, bool) or not isinstance(r, int) or not 1 <= r <= self.head_dim:
                raise ValueError(f"{name}: expected an int in [1, {self.head_dim}], got {r!r}")
        self.key_rank, self.value_rank = key_rank, value_rank

    def bases(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The current orthogonal ``(U_k, U_v)``, each ``[H_kv, d, d]``."""
        return (orthogonal_basis(self.key_base, self.key_skew),
                orthogonal_basis(self.value_base, self.value_skew))

    @torch.no_grad()
    def init_from_statistics(self, stats: KVStatistics) -> None:
        """Set the frozen bases to the principal directions of ``stats`` and zero the skews."""
        if stats.tokens == 0:
            raise ValueError(f"stats: no tokens were collected for layer {self.base.layer_idx}")
        self.key_base.copy_(_principal_basis(stats.key).to(self.key_base))
        self.value_base.copy_(_principal_basis(stats.value).to(self.value_base))
        self.key_skew.zero_()
        self.value_skew.zero_()

    # ----------------------------------------------------------------- forward
    def forward(self, hidden_states: torch.Tensor,
                position_embeddings: tuple[torch.Tensor, torch.Tensor] | None = None,
                attention_mask: torch.Tensor | None = None, cache: Any = None,
                past_key_values: Any = None, **kwargs: Any) -> tuple[torch.Tensor, Any]:
        from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

        base = self.base
        cache = cache if cache is not None else past_key_values
        if position_embeddings is None:
            raise ValueError("position_embeddings: expected the (cos, sin) RoPE tables the "
                             "decoder layer passes, got None")
        shape = (*hidden_states.shape[:-1], -1, self.head_dim)
        query = base.q_proj(hidden_states).view(shape).transpose(1, 2)
        key = base.k_proj(hidden_states).view(shape).transpose(1, 2)
        value = base.v_proj(hidden_states).view(shape).transpose(1, 2)
        query, key = self._rope(query, key, *position_embeddings)
        if self.statistics is not None:
            self.statistics.add(key, value)
        u_k, u_v = self.bases()
        u_k = u_k[..., : self.key_rank].to(query.dtype)      # [H_kv, d, r_k]
        u_v = u_v[..., : self.value_rank].to(query.dtype)    # [H_kv, d, r_v]
        key = key @ u_k                                      # [B, H_kv, T, r_k]
        value = value @ u_v                                  # [B, H_kv, T, r_v]
        groups = base.num_key_value_groups
        query = query @ u_k.repeat_interleave(groups, dim=0)  # [B, H_q, T, r_k]
        if cache is not None:
            key, value = cache.update(key, value, base.layer_idx, kwargs=kwargs)
        attend = ALL_ATTENTION_FUNCTIONS.get_interface(base.config._attn_implementation,
                                                       self._eager)
        out, weights = attend(base, query, key, value, attention_mask,
                              dropout=0.0 if not self.training else base.attention_dropout,
                              scaling=base.scaling, **kwargs)
        # out [B, T, H_q, r_v] -> lift each head back to d dims
        out = out.transpose(1, 2) @ u_v.transpose(-1, -2).repeat_interleave(groups, dim=0)
        out = out.transpose(1, 2).reshape(*hidden_states.shape[:-1], -1).contiguous()
        return base.o_proj(out), weights

    def extra_repr(self) -> str:
        return (f"kv_heads={self.kv_heads}, head_dim={self.head_dim}, "
                f"key_rank={self.key_rank}, value_rank={self.value_rank}")

