"""EoRA options (:class:`EoRAConfig`)."""

from __future__ import annotations

import math
from dataclasses import dataclass

from subspace_peft.adapters.base import AdapterConfig
from subspace_peft.adapters.compress import LLAMA_LINEARS

__all__ = ["COMPENSATIONS", "SOLVERS", "EoRAConfig"]

#: ``EoRAConfig.compensation`` values: EoRA (eigenspace-weighted) or plain truncated SVD.
COMPENSATIONS = ("eora", "svd")
#: ``EoRAConfig.solver`` values (see :func:`~subspace_peft.adapters.eora.layer.eora_fit`).
SOLVERS = ("projection", "inverse")


@dataclass(kw_only=True)
class EoRAConfig(AdapterConfig):
    """How the compression error of every target linear is compensated.

    Attributes:
        target_modules: linears to compensate (default: every linear of the decoder layers of
            a LLaMA-style model, :data:`~subspace_peft.adapters.compress.LLAMA_LINEARS`).
        rank: rank ``r`` of each low-rank path ``B A``; capped per layer at ``min(out, in)``
            (where the compensation is exact).
        compensation: ``"eora"`` (truncated SVD of ``ΔW Q'`` in the eigenspace of the input
            covariance) or ``"svd"`` (truncated SVD of ``ΔW`` itself, the baseline).
        eig_floor: eigenvalues of the input covariance below ``eig_floor * λ_max`` are raised
            to that value, so that ``Q' = Q Λ^{1/2}`` is invertible (directions no calibration
            token excited get a small, not zero, weight).
        damp: ridge added to the covariance before the eigendecomposition, relative to its
            mean eigenvalue (``X̃ + damp * mean(λ) I``); 0 is EoRA as published, larger values
            move the fit towards plain SVD (``damp → ∞`` gives it exactly).
        solver: ``"projection"`` (default) computes ``A = Σ_r⁻¹ U_rᵀ ΔW``, ``"inverse"`` the
            paper's literal ``A = V_rᵀ Q'⁻¹``; they are equal whenever ``Q'`` is invertible
            (which the floor guarantees), the first without multiplying by ``Λ^{-1/2}``.
    """

    method = "eora"
    target_modules: str | tuple[str, ...] = LLAMA_LINEARS
    rank: int = 64
    compensation: str = "eora"
    eig_floor: float = 1e-8
    damp: float = 0.0
    solver: str = "projection"

    def __post_init__(self) -> None:
        super().__post_init__()
        if isinstance(self.rank, bool) or not isinstance(self.rank, int) or self.rank < 1:
            raise ValueError(f"rank: expected an int >= 1, got {self.rank!r}")
        if self.compensation not in COMPENSATIONS:
            raise ValueError(f"compensation: expected one of {list(COMPENSATIONS)}, got "
                             f"{self.compensation!r}")
        if self.solver not in SOLVERS:
            raise ValueError(f"solver: expected one of {list(SOLVERS)}, got {self.solver!r}")
        floor = float(self.eig_floor)
        if not (math.isfinite(floor) and 0.0 < floor < 1.0):
            raise ValueError(f"eig_floor: expected a fraction in (0, 1), got {self.eig_floor!r}")
        damp = float(self.damp)
        if not (math.isfinite(damp) and damp >= 0.0):
            raise ValueError(f"damp: expected a finite value >= 0, got {self.damp!r}")
