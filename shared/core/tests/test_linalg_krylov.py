"""GMRES(m), recycled GCRO-DR and similarity sorting of system sequences."""

from __future__ import annotations

import warnings

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from subspace_core.linalg.grassmann import principal_angles
from subspace_core.linalg.krylov import (
    gcro_dr,
    gmres,
    solve_sequence,
    sort_by_similarity,
)
from subspace_core.testing import assert_close_to_ref

F64 = torch.float64


pytestmark = pytest.mark.usefixtures("single_thread")


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _nonsymmetric(n: int, gen: torch.Generator) -> torch.Tensor:
    """Well-conditioned nonsymmetric matrix: shifted identity plus a random perturbation."""
    return 3 * torch.eye(n, dtype=F64) + torch.randn(n, n, generator=gen, dtype=F64) / n**0.5


def _slow_spectrum(n: int, gen: torch.Generator, slow: torch.Tensor):
    """SPD ``B diag(slow, 1…3) Bᵀ``: a few small eigenvalues that stall restarted GMRES."""
    fast = torch.linspace(1.0, 3.0, n - slow.numel(), dtype=F64)
    basis = torch.linalg.qr(torch.randn(n, n, generator=gen, dtype=F64)).Q
    return (basis * torch.cat([slow, fast])) @ basis.mT, basis


def _relative_residual(A, x, b) -> float:
    return (torch.linalg.vector_norm(b - A @ x) / torch.linalg.vector_norm(b)).item()


# --------------------------------------------------------------------------- GMRES


@pytest.mark.parametrize("solver", [gmres, gcro_dr])
def test_solvers_reach_the_tolerance_and_the_exact_solution(solver):
    gen = _gen(0)
    A = _nonsymmetric(60, gen)
    b = torch.randn(60, generator=gen, dtype=F64)
    kwargs = dict(restart=10) if solver is gmres else dict(restart=10, recycle=4)
    x, info = solver(A, b, rtol=1e-10, **kwargs)
    assert info.converged
    assert info.relative_residual <= 1e-10
    assert_close_to_ref(torch.tensor(info.relative_residual, dtype=F64),
                        torch.tensor(_relative_residual(A, x, b), dtype=F64))
    assert_close_to_ref(x, torch.linalg.solve(A, b), rtol=0, atol=1e-9)
    assert info.iterations == len(info.residual_history) - 1
    assert info.matvecs >= info.iterations
    history = torch.tensor(info.residual_history)
    assert (history.diff() <= 1e-12).all()  # minimal residual: never increases


@settings(max_examples=15, deadline=None)
@given(n=st.integers(2, 40), restart=st.integers(1, 12), seed=st.integers(0, 2**16))
def test_gmres_solves_random_well_conditioned_systems(n, restart, seed):
    gen = _gen(seed)
    A = _nonsymmetric(n, gen)
    b = torch.randn(n, generator=gen, dtype=F64)
    x, info = gmres(A, b, restart=restart, rtol=1e-9)
    assert info.converged and _relative_residual(A, x, b) <= 1e-9


def test_gmres_accepts_callables_sparse_matrices_and_float32():
    gen = _gen(1)
    A = _nonsymmetric(40, gen)
    b = torch.randn(40, generator=gen, dtype=F64)
    x_dense, info_dense = gmres(A, b, restart=8)
    x_callable, info_callable = gmres(lambda v: A @ v, b, restart=8)
    assert_close_to_ref(x_callable, x_dense)
    assert info_callable.iterations == info_dense.iterations
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch's "sparse CSR is beta" notice
        sparse = A.to_sparse_csr()
    x_sparse, _ = gmres(sparse, b, restart=8)
    assert_close_to_ref(x_sparse, x_dense, scale=100)
    x32, info32 = gmres(A.float(), b.float(), restart=8)
    assert x32.dtype == torch.float32 and info32.relative_residual <= 1e-8  # float64 inside


def test_gmres_warm_start_and_zero_rhs():
    gen = _gen(2)
    A = _nonsymmetric(30, gen)
    b = torch.randn(30, generator=gen, dtype=F64)
    exact = torch.linalg.solve(A, b)
    _, info = gmres(A, b, x0=exact)
    assert info.converged and info.iterations == 0
    x, info = gmres(A, torch.zeros(30, dtype=F64))
    assert info.converged and info.iterations == 0 and not x.any()


def test_gmres_reports_non_convergence():
    gen = _gen(3)
    A, _ = _slow_spectrum(80, gen, torch.logspace(-4, -3, 5, dtype=F64))
    b = torch.randn(80, generator=gen, dtype=F64)
    x, info = gmres(A, b, restart=5, maxiter=20)
    assert not info.converged
    assert info.iterations == 20
    assert info.relative_residual == pytest.approx(_relative_residual(A, x, b), rel=1e-10)


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: gmres(torch.eye(3, dtype=F64), torch.ones(4, dtype=F64)),
         r"A: expected a square matrix \[4, 4\]"),
        (lambda: gmres(torch.eye(3, dtype=F64), torch.ones(3, 1, dtype=F64)),
         r"b: expected a real floating-point vector \[n\]"),
        (lambda: gmres(lambda v: v[:2], torch.ones(3, dtype=F64)),
         r"A: expected A\(v\) to return a vector \[3\]"),
        (lambda: gmres(torch.eye(3, dtype=F64), torch.ones(3, dtype=F64), restart=0),
         "restart: expected an int >= 1"),
        (lambda: gcro_dr(torch.eye(3, dtype=F64), torch.ones(3, dtype=F64), restart=5, recycle=5),
         "recycle: expected 1 <= recycle < restart=5"),
        (lambda: gcro_dr(torch.eye(3, dtype=F64), torch.ones(3, dtype=F64), restart=5, recycle=2,
                         recycle_space=torch.ones(4, 2, dtype=F64)),
         r"recycle_space: expected a matrix \[3, <= 2\]"),
        (lambda: gmres("A", torch.ones(3, dtype=F64)), "A: expected a tensor"),
    ],
)
def test_solvers_reject_bad_input(call, match):
    with pytest.raises((ValueError, TypeError), match=match):
        call()


# --------------------------------------------------------------------------- GCRO-DR


def test_gcro_dr_recycle_space_holds_the_slow_eigenvectors():
    # Harmonic Ritz vectors of the smallest harmonic Ritz values approximate the
    # eigenvectors of the smallest eigenvalues; a solve leaves them in the recycle space.
    gen = _gen(4)
    A, basis = _slow_spectrum(120, gen, torch.logspace(-3, -2, 6, dtype=F64))
    b = torch.randn(120, generator=gen, dtype=F64)
    _, info = gcro_dr(A, b, restart=20, recycle=6)
    assert info.recycle_space.shape == (120, 6)
    assert principal_angles(info.recycle_space, basis[:, :6]).max() < 1e-4
    # Recycling that space for a new right-hand side: far fewer iterations than from scratch.
    b2 = torch.randn(120, generator=gen, dtype=F64)
    x, recycled = gcro_dr(A, b2, restart=20, recycle=6, recycle_space=info.recycle_space)
    _, fresh = gcro_dr(A, b2, restart=20, recycle=6)
    _, plain = gmres(A, b2, restart=20)
    assert recycled.converged and _relative_residual(A, x, b2) <= 1e-8
    assert recycled.iterations < fresh.iterations / 2 < plain.iterations / 4
    # Operator applications: Arnoldi steps, A Ỹ for the 6 recycled vectors, one true
    # residual per cycle (the first residual is b itself for x0 = 0).
    assert recycled.matvecs == recycled.iterations + 6 + recycled.cycles


def _rotating_sequence(count: int, span: float, seed: int):
    """SPD systems A(t) = G(t) D G(t)ᵀ, G(t) = exp(tK) G₀: the slow eigenvectors turn with t."""
    gen = _gen(seed)
    n = 120
    skew = torch.randn(n, n, generator=gen, dtype=F64)
    skew = (skew - skew.mT) / (2 * n**0.5)
    slow = torch.logspace(-2, -1.3, 6, dtype=F64)
    eigenvalues = torch.cat([slow, torch.linspace(1.0, 3.0, n - 6, dtype=F64)])
    G0 = torch.linalg.qr(torch.randn(n, n, generator=gen, dtype=F64)).Q
    b = torch.randn(n, generator=gen, dtype=F64)
    times = torch.linspace(0.0, span, count, dtype=F64)
    systems = []
    for t in times:
        G = torch.linalg.matrix_exp(t * skew) @ G0
        systems.append(((G * eigenvalues) @ G.mT, b))
    shuffle = torch.randperm(count, generator=gen).tolist()
    return [systems[i] for i in shuffle], times[shuffle]


def test_recycling_beats_gmres_and_sorting_beats_the_shuffled_order():
    systems, times = _rotating_sequence(12, 0.2, seed=5)
    settings_ = dict(restart=20, recycle=6, rtol=1e-8)
    plain = solve_sequence(systems, method="gmres", **settings_)
    shuffled = solve_sequence(systems, method="gcro_dr", **settings_)
    order = sort_by_similarity(times, start=None)
    ordered = solve_sequence(systems, method="gcro_dr", order=order, **settings_)
    for results in (plain, shuffled, ordered):
        for (A, b), (x, info) in zip(systems, results, strict=True):
            assert info.converged and _relative_residual(A, x, b) <= 1e-8

    def total(results):
        return sum(info.iterations for _, info in results)

    assert total(shuffled) < 0.5 * total(plain)
    assert total(ordered) < 0.9 * total(shuffled)


def test_solve_sequence_validates_its_arguments():
    systems = [(torch.eye(3, dtype=F64), torch.ones(3, dtype=F64))] * 2
    with pytest.raises(ValueError, match="method: expected 'gcro_dr' or 'gmres'"):
        solve_sequence(systems, method="cg")
    with pytest.raises(ValueError, match=r"order: expected a permutation of range\(2\)"):
        solve_sequence(systems, order=[0, 0])
    results = solve_sequence(systems, order=[1, 0], restart=3, recycle=1)
    assert all(info.converged for _, info in results)


# --------------------------------------------------------------------------- SKR sorting


@settings(max_examples=25, deadline=None)
@given(count=st.integers(1, 15), seed=st.integers(0, 2**16))
def test_sort_by_similarity_on_a_line_is_monotone(count, seed):
    gen = _gen(seed)
    positions = torch.randperm(count, generator=gen).to(F64) * 1.5  # distinct points on a line
    order = sort_by_similarity(positions, start=None)
    assert sorted(order) == list(range(count))
    walked = positions[order]
    steps = walked.diff()
    assert (steps > 0).all() or (steps < 0).all()  # from one end to the other


def test_sort_by_similarity_greedy_path_and_options():
    points = torch.tensor([[0.0, 0.0], [10.0, 0.0], [1.0, 0.0], [2.5, 0.0], [9.0, 0.0]])
    assert sort_by_similarity(points) == [0, 2, 3, 4, 1]
    assert sort_by_similarity(points, start=3) == [3, 2, 0, 4, 1]  # greedy, not optimal
    matrices = [torch.eye(3) * s for s in (5.0, 1.0, 3.0)]
    assert sort_by_similarity(matrices, start=1) == [1, 2, 0]  # ‖A_i − A_j‖_F
    manhattan = sort_by_similarity(points, distance=lambda a, b: float((a - b).abs().sum()))
    assert manhattan == [0, 2, 3, 4, 1]
    assert sort_by_similarity([]) == []


def test_sort_by_similarity_rejects_bad_input():
    with pytest.raises(ValueError, match=r"start: expected an index in \[0, 2\)"):
        sort_by_similarity(torch.zeros(2, 3), start=2)
    with pytest.raises(ValueError, match=r"features\[1\]: expected 3 elements"):
        sort_by_similarity([torch.zeros(3), torch.zeros(4)])
    with pytest.raises(TypeError, match=r"features\[0\]: expected a dense tensor"):
        sort_by_similarity([torch.eye(3).to_sparse(), torch.eye(3).to_sparse()])


# --------------------------------------------------------------------------- the benchmark


def test_benchmark_stencil_is_the_five_point_laplacian():
    from subspace_core.benchmarks.krylov import _diffusion

    grid = 5
    second = 2 * torch.eye(grid, dtype=F64) - torch.diag(torch.ones(grid - 1, dtype=F64), 1)
    second = second - torch.diag(torch.ones(grid - 1, dtype=F64), -1)
    eye = torch.eye(grid, dtype=F64)
    laplacian = (torch.kron(second, eye) + torch.kron(eye, second)) * (grid + 1) ** 2
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        A = _diffusion(grid, torch.zeros(3, dtype=F64)).to_dense()  # a ≡ 1
        shifted = _diffusion(grid, torch.zeros(3, dtype=F64), shift=2.0).to_dense()
    assert_close_to_ref(A, laplacian)
    assert_close_to_ref(shifted, laplacian - 2 * torch.eye(grid * grid, dtype=F64))


def test_benchmark_measures_method_and_baselines(monkeypatch, tmp_path):
    from subspace_core.bench import BenchContext, run_benchmark
    from subspace_core.benchmarks import krylov as bench

    tiny = [bench._Case("diffusion_6x6_x3", 6, 3, bench._diffusion, bench._uniform([(-1, 1)] * 3))]
    monkeypatch.setattr(bench, "_cases", lambda quick: tiny)
    threads = torch.get_num_threads()
    report = run_benchmark(bench.BENCHMARK, BenchContext(True, torch.device("cpu"), tmp_path))
    assert torch.get_num_threads() == threads  # restored
    assert bench.BENCHMARK.name == "core/krylov_recycling"
    metrics = {(row["baseline"], row["metric"]) for row in report.ratios}
    for baseline in bench.BENCHMARK.baselines:
        assert {(baseline, "iterations"), (baseline, "matvecs"), (baseline, "time")} <= metrics
    assert all(row["value"] == 0 for row in report.measurements if row["metric"] == "unconverged")
