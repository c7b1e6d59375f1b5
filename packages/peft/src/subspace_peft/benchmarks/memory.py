"""Exact optimizer-state bytes, analytic (from parameter shapes; nothing is allocated).

What each method keeps per parameter tensor of ``n`` elements (shape ``m × k`` for 2-D):

* ``adamw``: two fp32 moments, ``8 n`` bytes (+ 4 bytes for torch's per-tensor ``step``
  tensor when ``count_step=True``; that is what ``torch.optim.AdamW`` really holds).
* ``adamw8bit``: bitsandbytes-style block-wise 8-bit AdamW: each moment 1 byte/element plus
  one fp32 absmax per block of :data:`BNB_BLOCK` = 2048 elements
  (``2 (n + 4 ceil(n / 2048))``); tensors with fewer than :data:`BNB_MIN_8BIT` = 4096
  elements keep fp32 moments (bitsandbytes' ``min_8bit_size``).
* ``galore`` (rank r): for the projected 2-D weights (the ``attn``/``mlp`` linears; the
  embeddings, LM head and norms stay on AdamW, as in the GaLore paper), galore-torch's
  layout: the projector is the smaller side, ``[min(m,k), r]`` fp32, the moments are
  ``[max(m,k), r]`` fp32 each: ``4 r (2 max + min)`` bytes. ``r`` is capped at ``min(m,k)``.
* ``qgalore``: GaLore with INT4 projectors packed two per byte (``ceil(min·r / 2)``) plus an
  fp32 scale and fp32 zero point per group of :data:`QGALORE_GROUP` = 256 projector
  elements, and 8-bit block-wise moments (as ``adamw8bit``) for every tensor, as in the
  Q-GaLore recipe.
* ``fira``: GaLore plus one fp32 scalar per projected weight (the previous norm of the
  out-of-subspace update used by the norm-growth limiter).
* ``sst`` (rank r): each projected weight is replaced by ``U [m, r]``, ``σ [r]``,
  ``Vh [r, k]``, all trained with fp32 AdamW: ``8 (r (m + k) + r)`` bytes; the frozen
  residual is a weight, not optimizer state; other tensors: AdamW.
* ``lora`` (rank r): AdamW on ``A [r, k]`` and ``B [m, r]`` of each projected weight,
  ``8 r (m + k)`` bytes; the base model is frozen (no state).

Model shapes: LLaMA-1B/7B (GaLore paper configs: hidden 2048/4096, intermediate 5461/11008,
24/32 layers, 32 heads, vocab 32000, untied LM head) and SmolLM2-135M (hidden 576,
intermediate 1536, 30 layers, 9 heads / 3 KV heads (head dim 64), vocab 49152, tied
embeddings; 134,515,008 parameters, as its config and DATA.md's 134.5M).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

__all__ = [
    "BNB_BLOCK",
    "BNB_MIN_8BIT",
    "LLAMA_1B",
    "LLAMA_7B",
    "METHODS",
    "QGALORE_GROUP",
    "SMOLLM2_135M",
    "LlamaShapes",
    "ParamShape",
    "adamw8bit_bytes",
    "adamw_bytes",
    "fira_bytes",
    "galore_bytes",
    "llama_param_shapes",
    "lora_bytes",
    "optimizer_state_bytes",
    "qgalore_bytes",
    "sst_bytes",
]

BNB_BLOCK = 2048
BNB_MIN_8BIT = 4096
QGALORE_GROUP = 256
#: Name patterns of the weights GaLore/SST/LoRA act on (the attention and MLP linears).
DEFAULT_TARGETS = (r"\.attn\.", r"\.mlp\.", r"self_attn", r"\.mlp")


@dataclass(frozen=True)
class ParamShape:
    name: str
    shape: tuple[int, ...]

    @property
    def numel(self) -> int:
        return math.prod(self.shape)


@dataclass(frozen=True)
class LlamaShapes:
    hidden: int
    intermediate: int
    layers: int
    heads: int
    kv_heads: int
    vocab: int
    tied: bool


LLAMA_1B = LlamaShapes(2048, 5461, 24, 32, 32, 32000, tied=False)
LLAMA_7B = LlamaShapes(4096, 11008, 32, 32, 32, 32000, tied=False)
SMOLLM2_135M = LlamaShapes(576, 1536, 30, 9, 3, 49152, tied=True)


def llama_param_shapes(cfg: LlamaShapes) -> list[ParamShape]:
    """Parameter names/shapes of a LLaMA model (``nn.Linear`` weights are ``[out, in]``)."""
    d, f, head = cfg.hidden, cfg.intermediate, cfg.hidden // cfg.heads
    kv = cfg.kv_heads * head
    out = [ParamShape("embed.weight", (cfg.vocab, d))]
    for i in range(cfg.layers):
        p = f"layers.{i}"
        out += [
            ParamShape(f"{p}.attn_norm.weight", (d,)),
            ParamShape(f"{p}.attn.q_proj.weight", (d, d)),
            ParamShape(f"{p}.attn.k_proj.weight", (kv, d)),
            ParamShape(f"{p}.attn.v_proj.weight", (kv, d)),
            ParamShape(f"{p}.attn.o_proj.weight", (d, d)),
            ParamShape(f"{p}.mlp_norm.weight", (d,)),
            ParamShape(f"{p}.mlp.gate_proj.weight", (f, d)),
            ParamShape(f"{p}.mlp.up_proj.weight", (f, d)),
            ParamShape(f"{p}.mlp.down_proj.weight", (d, f)),
        ]
    out.append(ParamShape("norm.weight", (d,)))
    if not cfg.tied:
        out.append(ParamShape("lm_head.weight", (cfg.vocab, d)))
    return out


def _is_target(p: ParamShape, targets: Sequence[str]) -> bool:
    return len(p.shape) == 2 and any(re.search(t, p.name) for t in targets)


def _adam32(n: int) -> int:
    """Both fp32 AdamW moments of n elements."""
    return 8 * n


def _adam8(n: int) -> int:
    if n < BNB_MIN_8BIT:
        return 8 * n
    return 2 * (n + 4 * math.ceil(n / BNB_BLOCK))


def adamw_bytes(params: Sequence[ParamShape], *, count_step: bool = False) -> int:
    return sum(_adam32(p.numel) + (4 if count_step else 0) for p in params)


def adamw8bit_bytes(params: Sequence[ParamShape]) -> int:
    return sum(_adam8(p.numel) for p in params)


def _galore_like(params, rank, targets, moment, projector, per_layer_extra=0) -> int:
    total = 0
    for p in params:
        if _is_target(p, targets):
            big, small = max(p.shape), min(p.shape)
            r = min(rank, small)
            total += moment(big * r)  # both moments
            total += projector(small * r) + per_layer_extra
        else:
            total += moment(p.numel)
    return total


def galore_bytes(params, rank: int, targets: Sequence[str] = DEFAULT_TARGETS) -> int:
    return _galore_like(params, rank, targets, _adam32, lambda n: 4 * n)


def qgalore_bytes(params, rank: int, targets: Sequence[str] = DEFAULT_TARGETS) -> int:
    def int4(n: int) -> int:
        return math.ceil(n / 2) + 8 * math.ceil(n / QGALORE_GROUP)

    return _galore_like(params, rank, targets, _adam8, int4)


def fira_bytes(params, rank: int, targets: Sequence[str] = DEFAULT_TARGETS) -> int:
    return _galore_like(params, rank, targets, _adam32, lambda n: 4 * n, per_layer_extra=4)


def sst_bytes(params, rank: int, targets: Sequence[str] = DEFAULT_TARGETS) -> int:
    total = 0
    for p in params:
        if _is_target(p, targets):
            m, k = p.shape
            r = min(rank, m, k)
            total += _adam32(r * (m + k) + r)
        else:
            total += _adam32(p.numel)
    return total


def lora_bytes(params, rank: int, targets: Sequence[str] = DEFAULT_TARGETS) -> int:
    total = 0
    for p in params:
        if _is_target(p, targets):
            m, k = p.shape
            total += _adam32(min(rank, m, k) * (m + k))
    return total


#: name -> (label, bytes(params, rank)).
METHODS: dict[str, tuple[str, Callable[[Sequence[ParamShape], int], int]]] = {
    "adamw": ("AdamW", lambda ps, r: adamw_bytes(ps)),
    "adamw8bit": ("8-bit AdamW", lambda ps, r: adamw8bit_bytes(ps)),
    "galore": ("GaLore", galore_bytes),
    "qgalore": ("Q-GaLore", qgalore_bytes),
    "fira": ("Fira", fira_bytes),
    "sst": ("SST", sst_bytes),
    "lora": ("LoRA", lora_bytes),
}


def optimizer_state_bytes(cfg: LlamaShapes, rank: int | None = None) -> dict[str, int]:
    """Bytes of every method in :data:`METHODS` for ``cfg``; ``rank`` defaults to hidden/4."""
    rank = cfg.hidden // 4 if rank is None else rank
    shapes = llama_param_shapes(cfg)
    return {name: fn(shapes, rank) for name, (_, fn) in METHODS.items()}
