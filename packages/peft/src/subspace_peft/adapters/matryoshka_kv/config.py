"""MatryoshkaKV options (:class:`MatryoshkaKVConfig`)."""

from __future__ import annotations

from dataclasses import dataclass

from subspace_peft.adapters.base import DictConfig, check_patterns

__all__ = ["MatryoshkaKVConfig"]


@dataclass(kw_only=True)
class MatryoshkaKVConfig(DictConfig):
    """Which attention modules get key / value projections, and the ranks trained.

    Attributes:
        target_modules: regex(es) selecting the self-attention modules (matched as a whole
            dotted suffix, as for the linear adapters); ``"self_attn"`` selects every decoder
            layer's attention of Llama-family models (Llama, SmolLM2, Mistral, Qwen2).
        rank_schedule: the nested ranks a training step samples from (per layer, keys and
            values independently). ``None``: the multiples of ``head_dim / 8`` up to
            ``head_dim`` (8, 16, ..., 64 for SmolLM2), as in the paper's Matryoshka schedule.
        init: ``"pca"`` (principal directions of each key / value head from calibration data,
            the training-free baseline and the paper's initialisation) or ``"identity"``
            (keep the leading coordinates, the naive truncation).
    """

    method = "matryoshka_kv"
    target_modules: str | tuple[str, ...] = "self_attn"
    rank_schedule: tuple[int, ...] | None = None
    init: str = "pca"

    def __post_init__(self) -> None:
        value = self.target_modules
        self.target_modules = value if isinstance(value, str) else tuple(value)
        check_patterns("target_modules", self.target_modules)
        if self.rank_schedule is not None:
            ranks = tuple(self.rank_schedule)
            if not ranks or any(isinstance(r, bool) or not isinstance(r, int) or r < 1
                                for r in ranks):
                raise ValueError(f"rank_schedule: expected a non-empty sequence of ints >= 1 "
                                 f"or None, got {self.rank_schedule!r}")
            self.rank_schedule = tuple(sorted(set(ranks)))
        if self.init not in ("pca", "identity"):
            raise ValueError(f"init: expected 'pca' or 'identity', got {self.init!r}")
