"""Benchmark ``core/randomized_svd``: truncated SVDs of ``subspace_core.linalg`` vs baselines.

Two cases, both on an ``n × n`` float32 matrix ``A = U diag(σ) Vᵀ`` with random orthogonal
``U, V`` and the slowly decaying spectrum ``σ_i = 1/i`` (slow decay is the hard case for
randomized methods), at rank ``r = 128``:

1. **randomized SVD** — :func:`~subspace_core.linalg.svd.randomized_svd` (defaults:
   oversample 10, 2 power iterations) against a full ``torch.linalg.svd`` truncated to ``r``.
   Targets: ≥ 5× faster, error ≤ 1.05× the Eckart–Young optimum.
2. **warm refresh** — after a small change ``A' = A + δE`` (``‖δE‖₂ ≈ 10⁻³ σ₁``),
   :func:`~subspace_core.linalg.svd.subspace_iteration` warm-started from case 1's basis and
   stopped at a residual tolerance, against a cold ``randomized_svd`` of ``A'``. Target:
   ≥ 3× faster at equal accuracy (both errors are reported).

Metrics per method: ``seconds`` (median wall time, lower is better) and
``error_vs_optimal`` = ``‖A − U_r Σ_r V_rᵀ‖_F / ‖A − A_r‖_F`` (1 is optimal, lower is
better), where ``‖A − A_r‖_F`` comes from the exact singular values.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable

import torch

from subspace_core.bench import (
    BenchContext,
    Benchmark,
    Measurement,
    median_time,
    register_benchmark,
)
from subspace_core.linalg.svd import randomized_svd, subspace_iteration

METHOD = "subspace_core.linalg"
FULL_SVD = "torch.linalg.svd (truncated)"
COLD_RSVD = "randomized_svd (cold)"

RANK = 128
#: Spectral size of the perturbation relative to σ₁ = 1.
PERTURBATION = 1e-3
#: Stop tolerance of the warm refresh: its relative residual ‖AV − UΣ‖_F/σ₁.
WARM_TOL = 2e-2


def _decaying_matrix(n: int, device: torch.device, generator: torch.Generator
                     ) -> tuple[torch.Tensor, torch.Tensor]:
    """``A = U diag(1/i) Vᵀ`` [n, n] with Haar-like orthogonal ``U, V``; returns (A, σ)."""
    def orthogonal() -> torch.Tensor:
        return torch.linalg.qr(torch.randn(n, n, generator=generator)).Q

    sigma = 1.0 / torch.arange(1, n + 1, dtype=torch.float32)
    A = (orthogonal() * sigma) @ orthogonal().T
    return A.to(device), sigma.to(device)


def _interleaved_median_seconds(fns: dict[str, Callable[[], object]], device: torch.device,
                                rounds: int) -> dict[str, float]:
    """Median seconds of each function, timed in alternation round by round.

    Methods compared against each other are interleaved (rather than timed one after the
    other) so that a change of load on a shared machine hits both alike.
    """
    for fn in fns.values():  # warm-up: allocator, LAPACK workspaces
        fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            times[name].append(median_time(fn, device, warmup=0, repeats=1)["median"])
    return {name: statistics.median(values) for name, values in times.items()}


def _error_vs_optimal(A: torch.Tensor, U: torch.Tensor, S: torch.Tensor, Vh: torch.Tensor,
                      optimal: float) -> float:
    return float(torch.linalg.matrix_norm(A - (U * S) @ Vh)) / optimal


def _rows(case: str, method: str, seconds: float, error: float) -> list[Measurement]:
    return [
        Measurement(case, method, "seconds", seconds, "s", higher_is_better=False),
        Measurement(case, method, "error_vs_optimal", error, "x optimal", higher_is_better=False),
    ]


def measure_truncated_svds(n: int, rank: int, device: torch.device, *, repeats: int,
                           baseline_repeats: int = 1) -> list[Measurement]:
    """Both cases at size ``n`` and ``rank`` (small values let a test run this in seconds)."""
    if not 1 <= rank < n:
        raise ValueError(f"rank: expected 1 <= rank < n = {n}, got {rank}")
    generator = torch.Generator().manual_seed(0)
    A, sigma = _decaying_matrix(n, device, generator)
    rows: list[Measurement] = []

    # Case 1: randomized SVD vs the full SVD truncated to the rank.
    case = f"rank {rank} of {n}x{n}, sigma_i=1/i"
    optimal = float(sigma[rank:].norm())
    last: dict[str, tuple[torch.Tensor, ...]] = {}

    def full_svd() -> None:
        last["svd"] = tuple(torch.linalg.svd(A, full_matrices=False))

    t_full = median_time(full_svd, device, warmup=0, repeats=baseline_repeats)["median"]
    U, S, Vh = last.pop("svd")
    rows += _rows(case, FULL_SVD, t_full,
                  _error_vs_optimal(A, U[:, :rank], S[:rank], Vh[:rank], optimal))
    sketch = torch.Generator(device).manual_seed(1)
    t_rsvd = median_time(lambda: randomized_svd(A, rank, generator=sketch), device,
                         warmup=1, repeats=repeats)["median"]
    previous = randomized_svd(A, rank, generator=sketch)
    rows += _rows(case, METHOD, t_rsvd, _error_vs_optimal(A, *previous, optimal))

    # Case 2: refresh the basis after a small change of the matrix. ‖G‖₂ ≈ 2√n for an
    # n×n standard Gaussian G, so G/(2√n) has spectral norm ≈ 1.
    noise = torch.randn(n, n, generator=generator).to(device) / (2 * math.sqrt(n))
    A2 = A + PERTURBATION * noise
    optimal2 = float(torch.linalg.svdvals(A2)[rank:].norm())
    case2 = f"refresh after |dA|_2={PERTURBATION:g}*sigma_1, rank {rank} of {n}x{n}"

    def warm():
        return subspace_iteration(A2, rank, init=previous.U, tol=WARM_TOL, iters=20,
                                  generator=sketch)

    def cold():
        return randomized_svd(A2, rank, generator=sketch)

    seconds = _interleaved_median_seconds({"warm": warm, "cold": cold}, device, repeats)
    refreshed = warm()
    rows += _rows(case2, METHOD, seconds["warm"],
                  _error_vs_optimal(A2, refreshed.U, refreshed.S, refreshed.Vh, optimal2))
    rows.append(Measurement(case2, METHOD, "iterations", float(refreshed.iters), "",
                            higher_is_better=False))
    rows += _rows(case2, COLD_RSVD, seconds["cold"], _error_vs_optimal(A2, *cold(), optimal2))
    return rows


def run_linalg_svd(ctx: BenchContext) -> list[Measurement]:
    # A full 4096² SVD takes tens of seconds on a small CPU; quick mode halves n (8x less).
    n = 2048 if ctx.quick else 4096
    return measure_truncated_svds(n, RANK, ctx.device, repeats=5 if ctx.quick else 11,
                                  baseline_repeats=1 if ctx.quick else 3)


register_benchmark(
    Benchmark(
        name="core/randomized_svd",
        method=METHOD,
        baselines=(FULL_SVD, COLD_RSVD),
        run=run_linalg_svd,
        description="Rank-128 randomized SVD vs truncated torch.linalg.svd, and a warm-started "
        "subspace_iteration refresh vs a cold randomized SVD after a small perturbation "
        "(seconds, error relative to the Eckart–Young optimum).",
    )
)
