"""Krylov recycling on sequences of discretised PDEs: sorted GCRO-DR vs GMRES and unsorted GCRO-DR.

The setting is data generation for neural operators (Wang et al. 2024, "sorting Krylov
recycling"): many PDE instances with randomly sampled parameters are solved one after the
other. Each case builds such a sequence on the unit square (Dirichlet boundary, 5-point
finite differences, sparse CSR matrices) and solves every system to the same relative
tolerance with

* the method: GCRO-DR(m, k) carrying its recycle space along the order given by
  :func:`~subspace_core.linalg.krylov.sort_by_similarity` over the sampled parameters;
* baseline "GMRES(m) from scratch": each system on its own;
* baseline "GCRO-DR (sampled order)": the same recycling solver in the sampling order.

Measured per case: total Arnoldi iterations, total operator applications (matvecs,
including the residual evaluations and the ``k`` products that map a recycled space
through a new matrix) and wall time; the runner's ratio method/baseline is the fraction
of the baseline's work left (``1 − ratio`` = iterations saved). A solve that stalls is
charged ``maxiter`` (``10 n``) iterations and counted in ``unconverged``. On CPU the
benchmark runs single-threaded (see :func:`run_krylov_recycling`).
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import torch

from subspace_core.bench import BenchContext, Benchmark, Measurement, register_benchmark
from subspace_core.linalg.krylov import solve_sequence, sort_by_similarity

METHOD = "GCRO-DR (SKR-sorted order)"
GMRES = "GMRES(m) from scratch"
UNSORTED = "GCRO-DR (sampled order)"

RESTART, RECYCLE, RTOL = 40, 10, 1e-8


@dataclass(frozen=True)
class _Case:
    name: str
    grid: int  # interior points per side
    systems: int
    build: Callable[[int, torch.Tensor], torch.Tensor]  # (grid, parameters) -> sparse A
    sample: Callable[[torch.Generator, int], torch.Tensor]  # (generator, count) -> [count, d]


def _stencil(grid: int, east: torch.Tensor, north: torch.Tensor, shift: float) -> torch.Tensor:
    """Sparse CSR matrix of ``−∇·(a∇u) − shift·u`` on ``grid×grid`` interior nodes.

    ``east[i, j]`` is ``a`` on the face between nodes ``(i, j)`` and ``(i+1, j)`` for
    ``i = −1 … grid−1`` (shape ``[grid+1, grid]``); ``north`` likewise along ``j``
    (``[grid, grid+1]``). Faces on the boundary couple to the Dirichlet zero boundary.
    """
    h2 = (grid + 1) ** 2
    idx = torch.arange(grid * grid).reshape(grid, grid)
    diag = (east[:-1] + east[1:] + north[:, :-1] + north[:, 1:]) * h2 - shift
    rows, cols, vals = [idx.reshape(-1)], [idx.reshape(-1)], [diag.reshape(-1)]
    inner_x, inner_y = east[1:-1] * h2, north[:, 1:-1] * h2  # couplings between interior nodes
    for a, b, w in ((idx[:-1], idx[1:], inner_x), (idx[:, :-1], idx[:, 1:], inner_y)):
        rows += [a.reshape(-1), b.reshape(-1)]
        cols += [b.reshape(-1), a.reshape(-1)]
        vals += [-w.reshape(-1), -w.reshape(-1)]
    coo = torch.sparse_coo_tensor(torch.stack([torch.cat(rows), torch.cat(cols)]),
                                  torch.cat(vals).to(torch.float64), (grid * grid,) * 2,
                                  check_invariants=True)
    return coo.coalesce().to_sparse_csr()


def _diffusion(grid: int, mu: torch.Tensor, shift: float = 0.0) -> torch.Tensor:
    """``−∇·(a∇u) − shift·u`` with ``log a = μ₁ sin 2πx + μ₂ sin 2πy + μ₃ sin 2π(x+y)``.

    ``a`` is evaluated at the face midpoints, where the 5-point flux differences need it.
    """
    h = 1.0 / (grid + 1)
    nodes = torch.arange(1, grid + 1, dtype=torch.float64) * h
    faces = torch.arange(0, grid + 1, dtype=torch.float64) * h + h / 2

    def coefficient(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return torch.exp(mu[0] * torch.sin(2 * math.pi * x) + mu[1] * torch.sin(2 * math.pi * y)
                         + mu[2] * torch.sin(2 * math.pi * (x + y)))

    east = coefficient(faces[:, None], nodes[None, :])
    north = coefficient(nodes[:, None], faces[None, :])
    return _stencil(grid, east, north, shift)


def _helmholtz(grid: int, mu: torch.Tensor) -> torch.Tensor:
    """``−∇·(a∇u) − k²u`` with ``k = μ₁`` and ``log a = μ₂ sin 2πx + μ₃ sin 2πy``.

    Indefinite once ``k²`` passes the smallest eigenvalue of the diffusion part, and badly
    conditioned when ``k²`` lands near one of its eigenvalues: restarted GMRES may stall.
    """
    return _diffusion(grid, torch.stack([mu[1], mu[2], torch.zeros_like(mu[0])]), float(mu[0]) ** 2)


def _uniform(bounds: list[tuple[float, float]]) -> Callable[[torch.Generator, int], torch.Tensor]:
    low = torch.tensor([b[0] for b in bounds], dtype=torch.float64)
    high = torch.tensor([b[1] for b in bounds], dtype=torch.float64)

    def sample(generator: torch.Generator, count: int) -> torch.Tensor:
        return low + (high - low) * torch.rand(count, len(bounds), generator=generator,
                                               dtype=torch.float64)
    return sample


def _cases(quick: bool) -> list[_Case]:
    grid, count = (24, 24) if quick else (48, 64)
    size = f"{grid}x{grid}_x{count}"
    return [
        _Case(f"diffusion_{size}", grid, count, _diffusion, _uniform([(-1.5, 1.5)] * 3)),
        _Case(f"helmholtz_{size}", grid, count, _helmholtz,
              _uniform([(1.0, 5.0), (-1.0, 1.0), (-1.0, 1.0)])),
    ]


def _measure(case: str, name: str, systems: list, **solve_kwargs) -> list[Measurement]:
    start = time.perf_counter()
    results = solve_sequence(systems, restart=RESTART, recycle=RECYCLE, rtol=RTOL, **solve_kwargs)
    elapsed = time.perf_counter() - start
    infos = [info for _, info in results]
    # A solve that hit maxiter is charged its maxiter iterations and counted here, so a
    # stalled baseline is visible instead of silently flattering (or hiding) the ratio.
    unconverged = sum(not info.converged for info in infos)
    return [
        Measurement(case, name, "iterations", float(sum(i.iterations for i in infos)), "",
                    higher_is_better=False),
        Measurement(case, name, "matvecs", float(sum(i.matvecs for i in infos)), "",
                    higher_is_better=False),
        Measurement(case, name, "unconverged", float(unconverged), "systems",
                    higher_is_better=False),
        Measurement(case, name, "time", elapsed, "s", higher_is_better=False),
    ]


def run_krylov_recycling(ctx: BenchContext) -> list[Measurement]:
    # Krylov iterations are chains of small dependent ops, which intra-op threads do not
    # speed up on CPU but make timings swing tenfold on a shared machine; one thread for all
    # methods keeps the time ratios meaningful (restored afterwards).
    threads = torch.get_num_threads()
    if ctx.device.type == "cpu":
        torch.set_num_threads(1)
    try:
        return _run_cases(ctx)
    finally:
        torch.set_num_threads(threads)


def _run_cases(ctx: BenchContext) -> list[Measurement]:
    rows: list[Measurement] = []
    for case in _cases(ctx.quick):
        generator = torch.Generator().manual_seed(0)
        params = case.sample(generator, case.systems)
        # One fixed random right-hand side: it excites every mode, unlike a smooth source.
        rhs = torch.randn(case.grid * case.grid, generator=generator, dtype=torch.float64)
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
            matrices = [case.build(case.grid, mu).to(ctx.device) for mu in params]
        systems = [(A, rhs.to(ctx.device)) for A in matrices]
        order = sort_by_similarity(params, start=None)
        rows += _measure(case.name, METHOD, systems, method="gcro_dr", order=order)
        rows += _measure(case.name, GMRES, systems, method="gmres")
        rows += _measure(case.name, UNSORTED, systems, method="gcro_dr")
    return rows


BENCHMARK = register_benchmark(
    Benchmark(
        name="core/krylov_recycling",
        method=METHOD,
        baselines=(GMRES, UNSORTED),
        run=run_krylov_recycling,
        description=f"Sequences of 2-D variable-coefficient diffusion and Helmholtz systems with "
        f"random parameters, solved to rtol={RTOL:g}: GCRO-DR({RESTART},{RECYCLE}) over the "
        f"similarity-sorted sequence vs GMRES({RESTART}) per system and GCRO-DR in sampling "
        "order (total iterations, matvecs, unconverged systems, seconds; lower is better).",
    )
)
