"""Tests of ``subspace_core.linalg.svd`` and the ``core/randomized_svd`` benchmark."""

from __future__ import annotations

import math
import warnings

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from subspace_core.bench import Measurement
from subspace_core.linalg.svd import (
    SubspaceIterationWarning,
    SVDFallbackWarning,
    randomized_svd,
    robust_svd,
    subspace_iteration,
)
from subspace_core.testing import assert_close_to_ref


def _matrix_with_spectrum(sigma: torch.Tensor, m: int, n: int, seed: int = 0,
                          dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """``U diag(σ) Vᵀ`` [m, n] with random orthonormal ``U`` [m, k], ``V`` [n, k]."""
    g = torch.Generator().manual_seed(seed)
    k = sigma.numel()
    U = torch.linalg.qr(torch.randn(m, k, generator=g, dtype=torch.float64)).Q
    V = torch.linalg.qr(torch.randn(n, k, generator=g, dtype=torch.float64)).Q
    return ((U * sigma.to(torch.float64)) @ V.T).to(dtype)


def _decaying(m: int = 120, n: int = 90, seed: int = 0, dtype=torch.float64):
    sigma = 1.0 / torch.arange(1, min(m, n) + 1, dtype=torch.float64)
    return _matrix_with_spectrum(sigma, m, n, seed, dtype), sigma


def _error(A, U, S, Vh) -> float:
    return float(torch.linalg.matrix_norm(A - (U * S) @ Vh))


def _assert_orthonormal(U: torch.Tensor, atol: float = 1e-5) -> None:
    eye = torch.eye(U.shape[-1], dtype=U.dtype)
    assert float((U.mT @ U - eye).abs().max()) < atol


# --- robust_svd ------------------------------------------------------------------------------


def test_robust_svd_matches_torch_and_reconstructs():
    A = torch.randn(7, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    U, S, Vh = robust_svd(A)
    assert (U.shape, S.shape, Vh.shape) == ((7, 5), (5,), (5, 5))
    assert_close_to_ref(S, torch.linalg.svdvals(A))
    assert_close_to_ref((U * S) @ Vh, A, scale=10)


def test_robust_svd_full_matrices_and_batch():
    A = torch.randn(3, 6, 4)
    U, S, Vh = robust_svd(A, full_matrices=True)
    assert (U.shape, S.shape, Vh.shape) == ((3, 6, 6), (3, 4), (3, 4, 4))


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_robust_svd_half_input_returns_half(dtype):
    A = torch.randn(8, 6).to(dtype)
    U, S, Vh = robust_svd(A)
    assert U.dtype == S.dtype == Vh.dtype == dtype
    assert_close_to_ref(S, torch.linalg.svdvals(A.float()).to(dtype))


def test_robust_svd_complex():
    A = torch.randn(5, 4, dtype=torch.complex128)
    U, S, Vh = robust_svd(A)
    assert S.dtype == torch.float64 and U.dtype == torch.complex128
    assert_close_to_ref((U * S) @ Vh, A, scale=10)


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_robust_svd_refuses_non_finite_input(bad):
    A = torch.randn(4, 4)
    A[1, 2] = bad
    with pytest.raises(ValueError, match=r"A: expected finite values, got 1 NaN/Inf"):
        robust_svd(A)


def test_robust_svd_retries_and_warns_when_first_call_does_not_converge(monkeypatch):
    real_svd = torch.linalg.svd
    calls = []

    def flaky(*args, **kwargs):
        calls.append(args[0].dtype)
        if len(calls) == 1:
            raise torch.linalg.LinAlgError("linalg.svd: The algorithm failed to converge")
        return real_svd(*args, **kwargs)

    monkeypatch.setattr(torch.linalg, "svd", flaky)
    A = torch.randn(6, 4)
    with pytest.warns(SVDFallbackWarning, match=r"failed to converge.*succeeded with.*float64"):
        U, S, Vh = robust_svd(A)
    assert calls == [torch.float32, torch.float64]
    assert U.dtype == torch.float32
    assert_close_to_ref((U * S) @ Vh, A, scale=10)
    assert float(S.min()) > 0  # a real decomposition, not zeros


def test_robust_svd_retries_on_non_finite_factors(monkeypatch):
    real_svd = torch.linalg.svd
    calls = []

    def poisoned(*args, **kwargs):
        calls.append(1)
        U, S, Vh = real_svd(*args, **kwargs)
        return (U, S * math.nan, Vh) if len(calls) == 1 else (U, S, Vh)

    monkeypatch.setattr(torch.linalg, "svd", poisoned)
    with pytest.warns(SVDFallbackWarning, match="non-finite factors"):
        _, S, _ = robust_svd(torch.randn(5, 5))
    assert bool(torch.isfinite(S).all())


def test_robust_svd_raises_when_every_attempt_fails(monkeypatch):
    def broken(*args, **kwargs):
        raise torch.linalg.LinAlgError("no convergence")

    monkeypatch.setattr(torch.linalg, "svd", broken)
    with pytest.raises(torch.linalg.LinAlgError, match=r"every SVD attempt failed.*jitter"):
        robust_svd(torch.randn(4, 3))


def test_robust_svd_argument_errors():
    with pytest.raises(TypeError, match=r"A: expected a torch\.Tensor"):
        robust_svd([[1.0]])
    with pytest.raises(ValueError, match=r"A: expected a matrix"):
        robust_svd(torch.randn(3))
    with pytest.raises(TypeError, match="floating-point"):
        robust_svd(torch.ones(3, 3, dtype=torch.int64))


# --- randomized_svd --------------------------------------------------------------------------


def test_randomized_svd_near_eckart_young_optimum():
    A, sigma = _decaying()
    rank = 10
    optimal = float(sigma[rank:].norm())
    U, S, Vh = randomized_svd(A, rank, generator=torch.Generator().manual_seed(0))
    assert (U.shape, S.shape, Vh.shape) == ((120, rank), (rank,), (rank, 90))
    assert _error(A, U, S, Vh) <= 1.05 * optimal
    _assert_orthonormal(U, 1e-10)
    _assert_orthonormal(Vh.mT, 1e-10)
    assert bool((S[:-1] >= S[1:]).all())
    assert_close_to_ref(S, sigma[:rank], rtol=5e-2, atol=0)


def test_randomized_svd_more_power_iterations_help():
    A, _ = _decaying()
    errors = [_error(A, *randomized_svd(A, 10, power_iters=q, oversample=2,
                                        generator=torch.Generator().manual_seed(0)))
              for q in (0, 3)]
    assert errors[1] < errors[0]


def test_randomized_svd_exact_on_low_rank_matrix():
    sigma = torch.tensor([5.0, 3.0, 2.0, 1.0, 0.5], dtype=torch.float64)
    A = _matrix_with_spectrum(sigma, 40, 30)
    U, S, Vh = randomized_svd(A, 5, power_iters=0)
    assert_close_to_ref(S, sigma, scale=100)
    assert_close_to_ref((U * S) @ Vh, A, atol=1e-10, rtol=0)


def test_randomized_svd_generator_makes_it_deterministic():
    A, _ = _decaying(dtype=torch.float32)
    first = randomized_svd(A, 8, generator=torch.Generator().manual_seed(3))
    second = randomized_svd(A, 8, generator=torch.Generator().manual_seed(3))
    for a, b in zip(first, second, strict=True):
        assert torch.equal(a, b)


def test_randomized_svd_warm_start_from_exact_basis_needs_no_power_iterations():
    A, sigma = _decaying()
    rank = 10
    exact_U = torch.linalg.svd(A).U[:, :rank]
    warm = randomized_svd(A, rank, power_iters=0, init=exact_U)
    cold = randomized_svd(A, rank, power_iters=0, generator=torch.Generator().manual_seed(0))
    optimal = float(sigma[rank:].norm())
    assert _error(A, *warm) <= 1.0001 * optimal < _error(A, *cold)


def test_randomized_svd_batched_and_dtypes():
    A = torch.stack([_decaying(40, 30, seed=s, dtype=torch.float32)[0] for s in range(3)])
    U, S, Vh = randomized_svd(A, 4)
    assert (U.shape, S.shape, Vh.shape) == ((3, 40, 4), (3, 4), (3, 4, 30))
    for b in range(3):
        assert_close_to_ref(S[b], torch.linalg.svdvals(A[b])[:4], rtol=1e-3, atol=1e-5)
    U16, S16, Vh16 = randomized_svd(A[0].bfloat16(), 4)
    assert U16.dtype == S16.dtype == Vh16.dtype == torch.bfloat16


def test_randomized_svd_argument_errors():
    A = torch.randn(10, 8)
    with pytest.raises(ValueError, match=r"rank: expected an int in \[1, 8\], got 9"):
        randomized_svd(A, 9)
    with pytest.raises(ValueError, match="oversample"):
        randomized_svd(A, 2, oversample=-1)
    with pytest.raises(ValueError, match=r"init: expected a basis \[\.\.\., 10, k\]"):
        randomized_svd(A, 2, init=torch.randn(9, 2))
    with pytest.raises(ValueError, match="init: batch shape"):
        randomized_svd(A, 2, init=torch.randn(2, 10, 2))
    A[0, 0] = math.nan
    with pytest.raises(ValueError, match="A: expected finite values"):
        randomized_svd(A, 2)


@settings(max_examples=20, deadline=None)
@given(m=st.integers(4, 24), n=st.integers(4, 24), rank=st.integers(1, 4),
       seed=st.integers(0, 2**16))
def test_randomized_svd_recovers_any_low_rank_matrix(m, n, rank, seed):
    g = torch.Generator().manual_seed(seed)
    A = torch.randn(m, rank, generator=g, dtype=torch.float64) @ torch.randn(
        rank, n, generator=g, dtype=torch.float64)
    U, S, Vh = randomized_svd(A, rank, generator=g)
    assert _error(A, U, S, Vh) <= 1e-8 * max(1.0, float(torch.linalg.matrix_norm(A)))
    _assert_orthonormal(U, 1e-10)


# --- subspace_iteration ----------------------------------------------------------------------


def test_subspace_iteration_converges_to_top_singular_triplets():
    A, sigma = _decaying()
    rank = 5
    result = subspace_iteration(A, rank, tol=1e-6, iters=100, oversample=5,
                                generator=torch.Generator().manual_seed(0))
    assert result.converged and 1 < result.iters <= 100
    assert result.residual <= 1e-6
    assert_close_to_ref(result.S, sigma[:rank], rtol=1e-6, atol=0)
    _assert_orthonormal(result.U, 1e-10)
    assert _error(A, result.U, result.S, result.Vh) <= (1 + 1e-6) * float(sigma[rank:].norm())


def test_warm_start_after_small_perturbation_needs_fewer_iterations_than_cold():
    A, _ = _decaying()
    rank = 8
    previous = torch.linalg.svd(A).U[:, :rank]
    noise = torch.randn(A.shape, dtype=A.dtype, generator=torch.Generator().manual_seed(1))
    perturbed = A + 1e-5 * noise
    kwargs = dict(tol=1e-3, iters=50, generator=torch.Generator().manual_seed(0))
    warm = subspace_iteration(perturbed, rank, init=previous, **kwargs)
    cold = subspace_iteration(perturbed, rank, **kwargs)
    assert warm.converged and cold.converged
    assert warm.iters < cold.iters
    assert warm.iters == 1


def test_subspace_iteration_residual_estimate_tracks_exact_residual():
    A, _ = _decaying()
    rank = 6
    for iters in (1, 2, 4):
        r = subspace_iteration(A, rank, iters=iters, oversample=2,
                               generator=torch.Generator().manual_seed(0))
        exact = float(torch.linalg.matrix_norm(A @ r.Vh.mT - r.U * r.S)) / float(r.S[0])
        assert r.iters == iters and not r.converged
        assert exact / 2 <= r.residual <= 2 * exact


def test_subspace_iteration_warns_when_tol_not_reached():
    A, _ = _decaying()
    with pytest.warns(SubspaceIterationWarning, match=r"residual .* > tol 1e-12 after 2"):
        result = subspace_iteration(A, 5, iters=2, tol=1e-12, oversample=0)
    assert not result.converged and result.iters == 2


def test_subspace_iteration_fixed_iterations_without_tol_does_not_warn():
    A, _ = _decaying(dtype=torch.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        result = subspace_iteration(A, 3, iters=3)
    assert result.iters == 3 and not result.converged
    assert result.U.dtype == torch.float32


def test_subspace_iteration_batched_half_and_errors():
    A = torch.randn(2, 30, 20)
    result = subspace_iteration(A.bfloat16(), 3, iters=2)
    assert result.U.shape == (2, 30, 3) and result.U.dtype == torch.bfloat16
    with pytest.raises(ValueError, match="iters: expected an int"):
        subspace_iteration(A, 3, iters=0)
    with pytest.raises(ValueError, match="tol: expected a positive float"):
        subspace_iteration(A, 3, tol=0.0)


# --- benchmark -------------------------------------------------------------------------------


def test_benchmark_measures_every_method_at_tiny_size():
    from subspace_core.benchmarks import linalg_svd as bench

    rows = bench.measure_truncated_svds(96, 8, torch.device("cpu"), repeats=1)
    assert all(isinstance(r, Measurement) for r in rows)
    methods = {r.method for r in rows}
    assert methods == {bench.METHOD, bench.FULL_SVD, bench.COLD_RSVD}
    errors = {(r.case, r.method): r.value for r in rows if r.metric == "error_vs_optimal"}
    assert len(errors) == 4
    assert all(0.99 <= e <= 1.2 for e in errors.values())
    assert all(r.value > 0 for r in rows if r.metric == "seconds")


def test_benchmark_is_registered_with_its_baselines():
    from subspace_core.bench import registry
    from subspace_core.benchmarks import linalg_svd as bench

    registered = registry._BENCHMARKS["core/randomized_svd"]
    assert registered.method == bench.METHOD
    assert set(registered.baselines) == {bench.FULL_SVD, bench.COLD_RSVD}
