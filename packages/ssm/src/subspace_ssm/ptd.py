"""Perturb-then-diagonalise (PTD) initialisation (Yu, Nigmetov, Morozov, Mahoney, Erichson,
ICLR 2024, "Robustifying State-space Models for Long Sequences via Approximate
Diagonalization").

HiPPO-LegS is diagonalisable in exact arithmetic (distinct eigenvalues -1..-N) but its
eigenvector matrix has condition number ~1e20 at N = 64: any computed diagonalisation of it
is meaningless. S4D / S5 sidestep this by diagonalising only the normal part of the NPLR form
(dropping the rank-1 term), which changes the transfer function of the system by O(1) at
some frequencies (the PTD paper's "weak convergence"). PTD instead diagonalises a nearby
matrix ``Ã = A + E`` with a small perturbation, ``‖E‖₂ = ε‖A‖₂``: its eigenvector matrix is
well conditioned (by the pseudospectral theory behind Davies' conjecture, a random E gives
κ(V) = O(poly(N)/ε); Banks, Kulkarni, Mukherjee & Srivastava, 2021) and ``V Λ V⁻¹ = Ã`` is
computed backward-stably, so the diagonal system's transfer function
``C V (s − Λ)⁻¹ V⁻¹ B`` stays uniformly close to HiPPO's ``C (s − A)⁻¹ B``.

How E is chosen here: the paper picks E by minimising a trade-off between κ(V) and ‖E‖;
this module draws ``n_trials`` real Gaussian matrices, rescales each to exactly
``‖E‖₂ = ε‖A‖₂`` and keeps the draw whose eigenvector matrix (columns of unit norm) has the
smallest condition number. Real perturbations keep Ã real, so its eigenvalues come in
conjugate pairs (plus a few real ones), as the conjugate-pair halving of S4D/S5 needs.
Everything is computed on the fly in float64 for any N (no precomputed files), seeded.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from subspace_ssm.hippo import hippo_legs

__all__ = ["PTDResult", "diagonal_transfer", "ptd_diagonalize", "ptd_legs", "transfer_function"]


@dataclass(frozen=True)
class PTDResult:
    """An approximate diagonalisation ``A + E = V diag(Lambda) V⁻¹``.

    Attributes:
        Lambda: eigenvalues ``[N]`` complex128 (conjugate pairs and a few real ones).
        V: eigenvectors ``[N, N]`` complex128, unit-norm columns.
        V_inv: ``V⁻¹`` ``[N, N]``.
        E: the real perturbation ``[N, N]`` float64.
        kappa: 2-norm condition number of V.
        backward_error: ``‖E‖₂ / ‖A‖₂`` (= ε).
    """

    Lambda: torch.Tensor
    V: torch.Tensor
    V_inv: torch.Tensor
    E: torch.Tensor
    kappa: float
    backward_error: float


def ptd_diagonalize(A: torch.Tensor, eps: float = 1e-4, *, n_trials: int = 8,
                    seed: int = 0) -> PTDResult:
    """Perturb ``A`` (real, ``[N, N]``) by ``‖E‖₂ = eps·‖A‖₂`` and diagonalise; see the module doc.

    Args:
        A: real square matrix.
        eps: relative size of the perturbation (the backward error); larger → better
            conditioned V, farther from A.
        n_trials: random perturbations tried; the best-conditioned one is kept.
        seed: seed of the perturbations (the result is deterministic given it).
    """
    if not isinstance(A, torch.Tensor) or A.dim() != 2 or A.shape[0] != A.shape[1]:
        shape = tuple(A.shape) if isinstance(A, torch.Tensor) else type(A).__name__
        raise ValueError(f"A: expected a square 2-D tensor, got {shape}")
    if A.is_complex():
        raise TypeError(f"A: expected a real matrix, got dtype {A.dtype}")
    if not 0.0 < eps < 1.0:
        raise ValueError(f"eps: expected a relative perturbation size in (0, 1), got {eps!r}")
    if isinstance(n_trials, bool) or not isinstance(n_trials, int) or n_trials < 1:
        raise ValueError(f"n_trials: expected an int >= 1, got {n_trials!r}")
    A = A.detach().to("cpu", torch.float64)
    N = A.shape[0]
    norm_a = torch.linalg.matrix_norm(A, ord=2)
    gen = torch.Generator().manual_seed(seed)
    best = None
    for _ in range(n_trials):
        G = torch.randn(N, N, generator=gen, dtype=torch.float64)
        E = G * (eps * norm_a / torch.linalg.matrix_norm(G, ord=2))
        lam, V = torch.linalg.eig(A + E)
        kappa = float(torch.linalg.cond(V))
        if best is None or kappa < best[0]:
            best = (kappa, lam, V, E)
    kappa, lam, V, E = best
    order = torch.argsort(lam.imag)  # deterministic order: by imaginary part
    lam, V = lam[order], V[:, order]
    return PTDResult(Lambda=lam, V=V, V_inv=torch.linalg.inv(V), E=E, kappa=kappa,
                     backward_error=float(torch.linalg.matrix_norm(E, ord=2) / norm_a))


def ptd_legs(N: int, eps: float = 1e-4, *, n_trials: int = 8, seed: int = 0) -> PTDResult:
    """PTD of HiPPO-LegS of size ``N`` (:func:`ptd_diagonalize` of :func:`hippo_legs`)."""
    return ptd_diagonalize(hippo_legs(N)[0], eps, n_trials=n_trials, seed=seed)


def transfer_function(A: torch.Tensor, B: torch.Tensor, C: torch.Tensor,
                      s: torch.Tensor) -> torch.Tensor:
    """``G(s) = C (sI − A)⁻¹ B`` at the points ``s [K]`` (dense solves; complex128 ``[K]``).

    ``A [N, N]``, ``B [N]``, ``C [N]``.
    """
    N = A.shape[0]
    A = A.to(torch.complex128)
    eye = torch.eye(N, dtype=torch.complex128)
    M = s.to(torch.complex128)[:, None, None] * eye - A  # [K, N, N]
    rhs = B.to(torch.complex128).expand(len(s), N)[..., None]
    x = torch.linalg.solve(M, rhs)[..., 0]
    return x @ C.to(torch.complex128)


def diagonal_transfer(Lambda: torch.Tensor, B: torch.Tensor, C: torch.Tensor,
                      s: torch.Tensor) -> torch.Tensor:
    """``Σ_n C_n B_n / (s − Λ_n)`` at ``s [K]`` (complex128 ``[K]``): a diagonal system's G."""
    s = s.to(torch.complex128)[:, None]
    return ((C * B).to(torch.complex128) / (s - Lambda.to(torch.complex128))).sum(-1)
