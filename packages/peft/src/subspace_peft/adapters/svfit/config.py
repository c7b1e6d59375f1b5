"""SVFit options (:class:`SVFitConfig`)."""

from __future__ import annotations

from dataclasses import dataclass

from subspace_peft.adapters.base import AdapterConfig

__all__ = ["SVFitConfig"]


@dataclass(kw_only=True)
class SVFitConfig(AdapterConfig):
    """Which singular values of each target weight are trained.

    At most one of ``rank`` and ``energy`` may be given; with neither, every singular value
    is trained (``r = min(out, in)``), which for MiniLM's 36 encoder matrices is 13,824
    scalars, 24x fewer than LoRA at rank 8.

    Attributes:
        rank: train the top-``rank`` singular values of every target (clipped to
            ``min(out, in)`` of each layer).
        energy: choose per layer the smallest ``r`` whose top-``r`` singular values carry at
            least this fraction of ``sum(s**2)`` (the SVFit paper keeps the values that
            "capture over 99 % of the matrix's information"; ``0.99`` reproduces that reading).
    """

    method = "svfit"
    rank: int | None = None
    energy: float | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.rank is not None and self.energy is not None:
            raise ValueError(f"SVFitConfig: give rank or energy, not both (got rank={self.rank!r},"
                             f" energy={self.energy!r})")
        if self.rank is not None and (isinstance(self.rank, bool) or not isinstance(self.rank, int)
                                      or self.rank < 1):
            raise ValueError(f"rank: expected an int >= 1 or None, got {self.rank!r}")
        if self.energy is not None and not 0.0 < float(self.energy) <= 1.0:
            raise ValueError(f"energy: expected a fraction in (0, 1] or None, got {self.energy!r}")
