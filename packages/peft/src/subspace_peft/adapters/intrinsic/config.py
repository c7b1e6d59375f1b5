"""Options of intrinsic-dimension training (:class:`IntrinsicConfig`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from subspace_peft.adapters.base import DictConfig, check_patterns

__all__ = ["PROJECTIONS", "IntrinsicConfig"]

#: Random projections ``P [D, d]`` available: a dense Gaussian matrix with unit columns, or
#: the Fastfood transform (see :mod:`subspace_peft.adapters.intrinsic.model`).
PROJECTIONS = ("dense", "fastfood")


@dataclass(kw_only=True)
class IntrinsicConfig(DictConfig):
    """How ``θ = θ0 + P θ_d`` is built.

    Attributes:
        dim: ``d``, the number of trained coordinates (``1 <= d <= D``).
        projection: ``"fastfood"`` (``O(D log D)`` time, ``O(D)`` memory; the default, as in
            Li et al. for large ``D``) or ``"dense"`` (Gaussian, unit-norm columns).
        seed: seed of the random projection (the same seed gives the same ``P`` on every
            device: it is generated on the CPU).
        per_tensor: one projection per parameter tensor (``θ_i = θ0_i + P_i θ_d``, each
            ``P_i [D_i, d]`` from its own seed, as in Aghajanyan et al.'s per-layer Fastfood)
            instead of one global ``P [D, d]`` over the concatenated parameters.
        parameters: regex(es) selecting the parameters that move (matched against
            ``named_parameters`` names as a whole dotted suffix, e.g. ``"weight"`` or
            ``r"layers\\.\\d+\\..*"``); None = every parameter that requires grad.
        dense_max_entries: a dense ``P`` with at most this many entries is generated once and
            kept; a larger one is regenerated chunk by chunk in every forward and backward
            (no ``D x d`` storage, but ``2 D d`` Gaussian draws per step).
    """

    method: ClassVar[str] = "intrinsic"
    dim: int
    projection: str = "fastfood"
    seed: int = 0
    per_tensor: bool = False
    parameters: str | tuple[str, ...] | None = None
    dense_max_entries: int = 1 << 24

    def __post_init__(self) -> None:
        if isinstance(self.dim, bool) or not isinstance(self.dim, int) or self.dim < 1:
            raise ValueError(f"dim: expected an int >= 1, got {self.dim!r}")
        if self.projection not in PROJECTIONS:
            raise ValueError(f"projection: expected one of {PROJECTIONS}, got "
                             f"{self.projection!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise ValueError(f"seed: expected an int >= 0, got {self.seed!r}")
        if not isinstance(self.per_tensor, bool):
            raise ValueError(f"per_tensor: expected a bool, got {self.per_tensor!r}")
        if self.parameters is not None:
            value = self.parameters
            self.parameters = value if isinstance(value, str) else tuple(value)
            check_patterns("parameters", self.parameters)
        if (isinstance(self.dense_max_entries, bool) or not isinstance(self.dense_max_entries,
                                                                       int)
                or self.dense_max_entries < 0):
            raise ValueError(f"dense_max_entries: expected an int >= 0, got "
                             f"{self.dense_max_entries!r}")
