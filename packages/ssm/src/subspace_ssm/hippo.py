"""HiPPO-LegS and its normal-plus-low-rank (NPLR) / diagonal-plus-low-rank (DPLR) forms.

HiPPO-LegS (Gu et al., 2020; S4's convention, state size N, indices from 0)::

    A[n, k] = -sqrt(2n+1) sqrt(2k+1)   n > k
            = -(n + 1)                 n = k
            = 0                        n < k
    B[n]    = sqrt(2n+1)

A is lower triangular with the real spectrum -1, ..., -N but is far from normal: its
eigenvector matrix has condition number ~1e20 already at N = 64, so it cannot be
diagonalised in floating point. S4's way around it: with ``P[n] = sqrt(n + 1/2)``,
``S = A + P Pᵀ`` is normal (``-1/2 I`` plus a skew-symmetric matrix), hence

    A = S − P Pᵀ = V (Λ − P̃ P̃*) V*,      S = V Λ V*,  V unitary,  P̃ = V* P      (DPLR)

with ``Λ = -1/2 + i·eig(skew part)``. Everything here is computed in float64 and returned as
torch tensors.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

__all__ = ["DPLR", "dplr_legs", "hippo_legs", "nplr_legs"]


def _check_n(N: int) -> None:
    if isinstance(N, bool) or not isinstance(N, int) or N < 1:
        raise ValueError(f"N: expected a state size int >= 1, got {N!r}")


def hippo_legs(N: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(A [N, N], B [N])`` of HiPPO-LegS, float64."""
    _check_n(N)
    r = torch.sqrt(2 * torch.arange(N, dtype=torch.float64) + 1)
    A = -torch.tril(torch.outer(r, r), diagonal=-1) - torch.diag(torch.arange(1, N + 1,
                                                                              dtype=torch.float64))
    return A, r.clone()


def nplr_legs(N: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(S [N, N], P [N], B [N])`` with ``A = S − P Pᵀ`` and S normal (float64)."""
    A, B = hippo_legs(N)
    P = torch.sqrt(torch.arange(N, dtype=torch.float64) + 0.5)
    return A + torch.outer(P, P), P, B


@dataclass(frozen=True)
class DPLR:
    """HiPPO-LegS as ``A = V (diag(Lambda) − P̃ P̃*) V*`` (complex128 tensors).

    Attributes:
        Lambda: eigenvalues of the normal part S, ``[N]`` (real parts all -1/2).
        P: ``V* P``, ``[N]``.
        B: ``V* B``, ``[N]``.
        V: unitary eigenvectors of S, ``[N, N]``.
    """

    Lambda: torch.Tensor
    P: torch.Tensor
    B: torch.Tensor
    V: torch.Tensor

    def dense(self) -> torch.Tensor:
        """``V (diag(Λ) − P̃ P̃*) V*``: HiPPO-LegS again, up to rounding (complex128)."""
        inner = torch.diag(self.Lambda) - torch.outer(self.P, self.P.conj())
        return self.V @ inner @ self.V.conj().T


def dplr_legs(N: int) -> DPLR:
    """The DPLR form of HiPPO-LegS of size N, eigenvalues sorted by imaginary part.

    S's skew part ``K = S + I/2`` is diagonalised through the Hermitian ``-iK`` (``eigh``,
    so V is unitary to machine precision even where ``eig`` of A itself is hopeless).
    """
    S, P, B = nplr_legs(N)
    K = S + 0.5 * torch.eye(N, dtype=torch.float64)
    mu, V = torch.linalg.eigh(-1j * K.to(torch.complex128))  # K = V (i mu) V*
    Lambda = torch.complex(torch.full_like(mu, -0.5), mu)
    Vh = V.conj().T
    return DPLR(Lambda=Lambda, P=Vh @ P.to(torch.complex128), B=Vh @ B.to(torch.complex128), V=V)
