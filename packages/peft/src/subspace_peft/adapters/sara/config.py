"""SaRA options (:class:`SaRAConfig`)."""

from __future__ import annotations

from dataclasses import dataclass

from subspace_peft.adapters.base import AdapterConfig

__all__ = ["NUCLEAR_TARGETS", "SaRAConfig"]

#: What the nuclear-norm penalty acts on: ``"delta"`` (the sparse update ``ΔW``) or
#: ``"masked_weight"`` (``(W0 + ΔW) ⊙ mask``, what the reference code penalises).
NUCLEAR_TARGETS = ("delta", "masked_weight")


@dataclass(kw_only=True)
class SaRAConfig(AdapterConfig):
    """Which weights SaRA trains and how it regularises and re-selects them.

    Exactly one of ``fraction`` and ``threshold`` selects the trainable set of each target
    weight ``W0``: the ``floor(fraction · numel)`` entries of smallest ``|W0|`` in that layer
    (ties broken by flat index), or every entry with ``|W0| < threshold`` (the reference
    code's global absolute threshold, e.g. ``2e-3`` for Stable Diffusion).

    Attributes:
        fraction: per-layer fraction of the weight entries trained (default 0.1; the paper
            finds the smallest 10-20 % of a diffusion model's weights ineffective).
        threshold: absolute threshold instead of ``fraction``.
        nuclear_weight: ``λ`` of the low-rank penalty ``λ Σ_layers ||ΔW||_*`` returned by
            :meth:`~subspace_peft.adapters.sara.model.SaRAModel.nuclear_norm_penalty`
            (added to the task loss by the training loop); ``5e-4`` is the reference
            training script's ``lambda_rank``. ``0`` disables it.
        nuclear_target: ``"delta"`` (default) penalises the update ``ΔW``, zero at init;
            ``"masked_weight"`` penalises ``(W0 + ΔW) ⊙ mask`` like the reference code.
        progressive_at: fraction of the training steps after which
            :meth:`~subspace_peft.adapters.sara.model.SaRAModel.maybe_reselect` re-selects the
            trainable set once (the reference script uses step 2,500 of 5,005); None
            disables the progressive strategy.
    """

    method = "sara"
    fraction: float | None = None
    threshold: float | None = None
    nuclear_weight: float = 5e-4
    nuclear_target: str = "delta"
    progressive_at: float | None = 0.5

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.fraction is not None and self.threshold is not None:
            raise ValueError(f"SaRAConfig: give fraction or threshold, not both (got "
                             f"fraction={self.fraction!r}, threshold={self.threshold!r})")
        if self.fraction is None and self.threshold is None:
            self.fraction = 0.1
        if self.fraction is not None:
            if isinstance(self.fraction, bool) or not isinstance(self.fraction, int | float) \
                    or not 0.0 < float(self.fraction) <= 1.0:
                raise ValueError(f"fraction: expected a number in (0, 1], got {self.fraction!r}")
            self.fraction = float(self.fraction)
        if self.threshold is not None:
            if isinstance(self.threshold, bool) or not isinstance(self.threshold, int | float) \
                    or not float(self.threshold) > 0.0:
                raise ValueError(f"threshold: expected a positive number, got "
                                 f"{self.threshold!r}")
            self.threshold = float(self.threshold)
        if isinstance(self.nuclear_weight, bool) or not isinstance(
                self.nuclear_weight, int | float) or not float(self.nuclear_weight) >= 0.0:
            raise ValueError(f"nuclear_weight: expected a number >= 0, got "
                             f"{self.nuclear_weight!r}")
        self.nuclear_weight = float(self.nuclear_weight)
        if self.nuclear_target not in NUCLEAR_TARGETS:
            raise ValueError(f"nuclear_target: expected one of {list(NUCLEAR_TARGETS)}, got "
                             f"{self.nuclear_target!r}")
        if self.progressive_at is not None:
            if isinstance(self.progressive_at, bool) or not isinstance(
                    self.progressive_at, int | float) or not 0.0 < float(self.progressive_at) < 1.0:
                raise ValueError(f"progressive_at: expected a fraction in (0, 1) or None, got "
                                 f"{self.progressive_at!r}")
            self.progressive_at = float(self.progressive_at)
