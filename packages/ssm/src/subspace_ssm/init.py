"""Diagonal state-matrix initialisations of S4D (Gu et al., 2022, "On the Parameterization and
Initialization of Diagonal State Space Models") and the conjugate-pair halving they rely on.

A real diagonal SSM of state size N has eigenvalues in conjugate pairs, so only N/2 of them
(those with positive imaginary part) are stored, and the output is ``2·Re(C x)``. Inits,
``n = 0 .. N/2 − 1``::

    "legs"  eigenvalues of the normal part of HiPPO-LegS (-1/2 + i·μ_n)   S4D-LegS
    "inv"   -1/2 + i (N/π) (N / (2n + 1) − 1)                              S4D-Inv
    "lin"   -1/2 + i π n                                                   S4D-Lin
    "real"  -(n + 1), no imaginary part                                     S4D-Real

(Mamba's A init is S4D-Real over all N real modes, ``-(1..N)``; see ``subspace_ssm.mamba``.)
"""

from __future__ import annotations

import math

import torch

from subspace_ssm.hippo import dplr_legs

__all__ = ["DIAGONAL_INITS", "conj_half", "diagonal_init"]

DIAGONAL_INITS = ("legs", "inv", "lin", "real")


def diagonal_init(kind: str, N: int) -> torch.Tensor:
    """Eigenvalues of a diagonal init: complex128 ``[N // 2]``.

    Args:
        kind: one of ``"legs"``, ``"inv"``, ``"lin"``, ``"real"``.
        N: state size (even for the complex inits: N/2 conjugate pairs).
    """
    if kind not in DIAGONAL_INITS:
        raise ValueError(f"kind: expected one of {DIAGONAL_INITS}, got {kind!r}")
    if isinstance(N, bool) or not isinstance(N, int) or N < 1:
        raise ValueError(f"N: expected a state size int >= 1, got {N!r}")
    if N % 2:
        raise ValueError(f"N: expected an even state size for kind={kind!r} (conjugate pairs), "
                         f"got {N}")
    n = torch.arange(N // 2, dtype=torch.float64)
    real = torch.full_like(n, -0.5)
    if kind == "real":
        return torch.complex(-(n + 1), torch.zeros_like(n))
    if kind == "inv":
        return torch.complex(real, N / math.pi * (N / (2 * n + 1) - 1))
    if kind == "lin":
        return torch.complex(real, math.pi * n)
    lam = dplr_legs(N).Lambda
    return lam[lam.imag > 0]


def conj_half(Lambda: torch.Tensor, B: torch.Tensor, C: torch.Tensor, *, tol: float = 1e-9
              ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Halve a real system's diagonal form so that ``y = 2·Re(C_h x_h)`` gives the same output.

    Args:
        Lambda: ``[N]`` eigenvalues of a real matrix (closed under conjugation).
        B: ``[N, ...]`` rows of the input matrix in the eigenbasis (``V⁻¹ B``).
        C: ``[..., N]`` columns of the output matrix in the eigenbasis (``C V``).

    Returns ``(Λ_h, B_h, C_h)`` keeping the eigenvalues with positive imaginary part and the
    real ones; a real mode's C is halved (``2·Re`` would count it twice). Its length is
    ``(N − r)/2 + r`` for r real eigenvalues.
    """
    if Lambda.dim() != 1:
        raise ValueError(f"Lambda: expected a 1-D tensor, got shape {tuple(Lambda.shape)}")
    is_real = Lambda.imag.abs() <= tol * Lambda.abs().clamp_min(1.0)
    upper = (Lambda.imag > 0) & ~is_real
    n_lower = int(((Lambda.imag < 0) & ~is_real).sum())
    if n_lower != int(upper.sum()):
        raise ValueError("Lambda: expected eigenvalues in conjugate pairs (a real matrix), got "
                         f"{int(upper.sum())} with Im > 0 and {n_lower} with Im < 0")
    keep = upper | is_real
    weight = torch.where(is_real, 0.5, 1.0).to(C.dtype)
    return Lambda[keep], B[keep], (C * weight)[..., keep]
