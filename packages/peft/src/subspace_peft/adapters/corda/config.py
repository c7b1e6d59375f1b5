"""CorDA options (:class:`CorDAConfig`)."""

from __future__ import annotations

from dataclasses import dataclass

from subspace_peft.adapters.base import AdapterConfig

__all__ = ["MODES", "CorDAConfig"]

#: ``"kpm"``: knowledge-preserved (adapt the r smallest components); ``"ipm"``:
#: instruction-previewed (adapt the r largest).
MODES = ("kpm", "ipm")


@dataclass(kw_only=True)
class CorDAConfig(AdapterConfig):
    """CorDA options (defaults follow Hugging Face ``peft``'s ``CordaConfig``/``LoraConfig``).

    Attributes:
        rank: ``r``, the number of context-oriented components made trainable per target
            (must be ``<= min(out, in)`` of every target).
        mode: ``"kpm"`` or ``"ipm"`` (:data:`MODES`).
        alpha: LoRA scaling numerator: the adapter adds ``(alpha / rank) · B A``; the factors
            are initialised so that ``(alpha / rank) · B0 A0`` is the selected part of ``W``
            whatever ``alpha`` is (``alpha`` only changes the balance between the factors'
            scale and the step size). ``None`` means ``alpha = rank`` (scaling 1).
        damping: initial ridge ``λ = damping · mean(diag C)`` added to the covariance before
            the decomposition (peft's 0.01), doubled until ``C + λI`` inverts accurately.
        normalize_inputs: scale each calibration call's inputs by their largest absolute
            entry before ``XᵀX`` (CorDA's reference code and peft do).
        dropout: dropout on the adapter path's input (0 keeps the output at init unchanged
            in train mode too).
    """

    method = "corda"
    rank: int = 8
    mode: str = "kpm"
    alpha: float | None = None
    damping: float = 0.01
    normalize_inputs: bool = True
    dropout: float = 0.0

    def __post_init__(self) -> None:
        super().__post_init__()
        if isinstance(self.rank, bool) or not isinstance(self.rank, int) or self.rank < 1:
            raise ValueError(f"rank: expected an int >= 1, got {self.rank!r}")
        if self.mode not in MODES:
            raise ValueError(f"mode: expected one of {MODES}, got {self.mode!r}")
        if self.alpha is not None and not float(self.alpha) > 0:
            raise ValueError(f"alpha: expected > 0 or None, got {self.alpha!r}")
        if not float(self.damping) > 0:
            raise ValueError(f"damping: expected > 0, got {self.damping!r}")
        if not 0.0 <= float(self.dropout) < 1.0:
            raise ValueError(f"dropout: expected a probability in [0, 1), got {self.dropout!r}")

    @property
    def scaling(self) -> float:
        """``alpha / rank``."""
        return (self.rank if self.alpha is None else float(self.alpha)) / self.rank
