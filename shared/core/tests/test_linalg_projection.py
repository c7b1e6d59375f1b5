"""Tests of ``subspace_core.linalg.bases`` and ``subspace_core.linalg.projection``."""

from __future__ import annotations

import pytest
import torch
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from subspace_core.linalg.bases import orthonormal_basis
from subspace_core.linalg.projection import (
    basis_union,
    coordinates,
    extend_basis_by_energy,
    project,
    project_out,
    select_by_energy,
)
from subspace_core.testing import assert_close_to_ref

F64 = torch.float64


def _randn(*shape, seed: int = 0, dtype=F64) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def _orthonormality_error(Q: torch.Tensor) -> float:
    eye = torch.eye(Q.shape[-1], dtype=Q.dtype)
    return float((Q.mT @ Q - eye).abs().max())


def _same_span(P: torch.Tensor, Q: torch.Tensor) -> bool:
    """Whether orthonormal P and Q span the same subspace (projectors agree)."""
    return torch.allclose(P @ P.mT, Q @ Q.mT, atol=1e-8)


# --- orthonormal_basis -----------------------------------------------------------------------


def test_basis_is_orthonormal_spans_a_and_has_positive_r_diagonal():
    A = _randn(9, 4)
    Q = orthonormal_basis(A)
    assert Q.shape == (9, 4)
    assert _orthonormality_error(Q) < 1e-12
    R = Q.mT @ A  # then A = Q R with R upper triangular
    assert_close_to_ref(Q @ R, A, scale=10)
    assert float(torch.tril(R, -1).abs().max()) < 1e-12
    assert bool((torch.diagonal(R) > 0).all())


def test_basis_matches_the_unique_cholesky_qr():
    # For full column rank A, Q with diag(R) > 0 is unique: Q = A R⁻¹, R = chol(AᵀA)ᵀ.
    A = _randn(2, 8, 3)
    R = torch.linalg.cholesky(A.mT @ A).mT
    expected = torch.linalg.solve_triangular(R, A, upper=True, left=False)
    assert_close_to_ref(orthonormal_basis(A), expected, scale=100)


def test_basis_rank_truncates_to_leading_columns():
    A = _randn(7, 5)
    Q = orthonormal_basis(A, rank=2)
    assert Q.shape == (7, 2)
    assert _same_span(Q, orthonormal_basis(A[:, :2]))


def test_rank_revealing_basis_drops_dependent_columns():
    a, b = _randn(8, 1, seed=1), _randn(8, 1, seed=2)
    A = torch.cat([a, b, a + b, 2 * a, a - 3 * b], dim=1)
    Q = orthonormal_basis(A, rank_revealing=True)
    assert Q.shape == (8, 2)
    assert _orthonormality_error(Q) < 1e-12
    assert_close_to_ref(Q @ (Q.mT @ A), A, scale=100)
    # sign convention: each column's largest-magnitude entry is positive
    assert bool((Q.gather(0, Q.abs().argmax(0, keepdim=True)) > 0).all())
    assert orthonormal_basis(A, rank=1, rank_revealing=True).shape == (8, 1)


def test_rank_revealing_tol_and_batch_rank_mismatch():
    S = torch.diag(torch.tensor([1.0, 1e-3, 1e-17], dtype=F64))
    A = torch.cat([S, torch.zeros(2, 3, dtype=F64)])
    assert orthonormal_basis(A, rank_revealing=True).shape == (5, 2)
    assert orthonormal_basis(A, rank_revealing=True, tol=1e-2).shape == (5, 1)
    batch = torch.stack([A, torch.eye(5, 3, dtype=F64)])
    with pytest.raises(ValueError, match=r"numerical ranks differ across the batch \(\[2, 3\]\)"):
        orthonormal_basis(batch, rank_revealing=True)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_basis_half_input_returns_half(dtype):
    Q = orthonormal_basis(_randn(16, 4, dtype=torch.float32).to(dtype))
    assert Q.dtype == dtype
    assert _orthonormality_error(Q.float()) < 2e-2


def test_basis_argument_errors():
    with pytest.raises(ValueError, match=r"rank: expected an int in \[1, min\(m, n\) = 3\], got 4"):
        orthonormal_basis(_randn(5, 3), rank=4)
    with pytest.raises(ValueError, match="tol: only used with rank_revealing=True"):
        orthonormal_basis(_randn(5, 3), tol=1e-3)
    with pytest.raises(ValueError, match=r"A: expected a matrix \[\.\.\., m, n\], got shape \(5,\)"):
        orthonormal_basis(_randn(5))


@settings(max_examples=25, deadline=None)
@given(m=st.integers(1, 12), n=st.integers(1, 12), seed=st.integers(0, 2**16))
def test_basis_properties(m, n, seed):
    A = _randn(m, n, seed=seed)
    Q = orthonormal_basis(A)
    assert Q.shape == (m, min(m, n))
    assert _orthonormality_error(Q) < 1e-10
    if n <= m:
        assert torch.allclose(Q @ (Q.mT @ A), A, atol=1e-10)


# --- project / coordinates / project_out -----------------------------------------------------


@pytest.fixture
def basis() -> torch.Tensor:
    return orthonormal_basis(_randn(10, 3, seed=5))


def test_projection_is_idempotent_and_complement_is_orthogonal(basis):
    X = _randn(10, 6, seed=1)
    P = project(X, basis)
    assert_close_to_ref(project(P, basis), P, scale=10)
    out = project_out(X, basis)
    assert_close_to_ref(project_out(out, basis), out, scale=10)
    assert float((basis.mT @ out).abs().max()) < 1e-12
    assert_close_to_ref(P + out, X)
    assert_close_to_ref(P, basis @ coordinates(X, basis))


def test_right_side_projects_row_vectors_like_gpm(basis):
    g = _randn(4, 10, seed=2)  # gradient [out, in], basis over the input space
    out = project_out(g, basis, side="right")
    assert_close_to_ref(out, g - g @ basis @ basis.mT)
    assert float((out @ basis).abs().max()) < 1e-12
    assert_close_to_ref(project(g, basis, side="right"), g @ basis @ basis.mT)
    assert coordinates(g, basis, side="right").shape == (4, 3)
    assert_close_to_ref(project_out(g, basis, side="right"), project_out(g.mT, basis).mT)


def test_projection_of_vectors_batches_and_dtypes(basis):
    x = _randn(10, seed=3)
    assert coordinates(x, basis).shape == (3,)
    assert_close_to_ref(project(x, basis, side="right"), project(x, basis))
    Xb = _randn(2, 10, 5, seed=4)
    assert project_out(Xb, basis).shape == (2, 10, 5)
    g16 = _randn(4, 10, seed=6, dtype=torch.float32).bfloat16()
    out = project_out(g16, basis.float(), side="right")
    assert out.dtype == torch.bfloat16
    assert_close_to_ref(out, (g16.float() - g16.float() @ basis.float() @ basis.float().mT)
                        .bfloat16())


def test_projection_argument_errors(basis):
    with pytest.raises(ValueError, match="side: expected one of"):
        project(_randn(10, 2), basis, side="up")
    with pytest.raises(ValueError, match=r"X: with side='left' its rows must match U's 10 rows"):
        project(_randn(9, 2), basis)
    with pytest.raises(ValueError, match="U: expected orthonormal columns"):
        project(_randn(10, 2), 2 * basis, check_orthonormal=True)
    project(_randn(10, 2), basis, check_orthonormal=True)


@settings(max_examples=25, deadline=None)
@given(m=st.integers(2, 12), k=st.integers(1, 6), n=st.integers(1, 5), seed=st.integers(0, 999))
def test_projection_properties(m, k, n, seed):
    U = orthonormal_basis(_randn(m, min(k, m), seed=seed))
    X = _randn(m, n, seed=seed + 1)
    P, out = project(X, U), project_out(X, U)
    assert torch.allclose(project(P, U), P, atol=1e-10)
    assert torch.allclose(P + out, X, atol=1e-10)
    assert float((P * out).sum()) == pytest.approx(0.0, abs=1e-9)  # ⟨P X, (I − P) X⟩ = 0


# --- energy criterion and GPM basis growth ---------------------------------------------------


@pytest.mark.parametrize(("threshold", "k"), [(0.5, 1), (0.64, 1), (0.65, 2), (0.9, 3),
                                              (0.97, 4), (1.0, 4)])
def test_select_by_energy_known_spectrum(threshold, k):
    # energies 64, 16, 12, 8 of 100 → cumulative fractions 0.64, 0.80, 0.92, 1.00
    S = torch.tensor([64.0, 16.0, 12.0, 8.0]).sqrt()
    assert select_by_energy(S, threshold) == k


def test_select_by_energy_zero_tail_and_errors():
    assert select_by_energy(torch.tensor([2.0, 1.0, 0.0, 0.0]), 1.0) == 2
    assert select_by_energy(torch.zeros(3), 0.9) == 0
    with pytest.raises(ValueError, match=r"threshold: expected a float in \(0, 1\]"):
        select_by_energy(torch.ones(3), 1.5)
    with pytest.raises(ValueError, match="descending"):
        select_by_energy(torch.tensor([1.0, 2.0]), 0.5)


def _representation(energies: list[float], m: int = 12, n: int = 30, seed: int = 0):
    """R = U diag(√energies) Vᵀ with known directions U [m, k]."""
    g = torch.Generator().manual_seed(seed)
    k = len(energies)
    U = torch.linalg.qr(torch.randn(m, k, generator=g, dtype=F64)).Q
    V = torch.linalg.qr(torch.randn(n, k, generator=g, dtype=F64)).Q
    return (U * torch.tensor(energies, dtype=F64).sqrt()) @ V.mT, U


def test_extend_basis_from_scratch_uses_the_energy_criterion():
    R, U = _representation([50.0, 30.0, 15.0, 5.0])
    update = extend_basis_by_energy(R, 0.9)
    assert update.basis.shape == (12, 3) and update.new.shape == (12, 3)
    assert update.captured == pytest.approx(0.95)
    assert _same_span(update.basis, U[:, :3])


def test_extend_basis_counts_energy_already_captured():
    R, U = _representation([50.0, 30.0, 15.0, 5.0])
    # The existing basis holds the 2nd direction (30 %): 50 % more reaches 80 % < 0.9, so
    # two new directions are needed (50 + 15 → 95 %), the 5 % one is not.
    update = extend_basis_by_energy(R, 0.9, basis=U[:, 1:2])
    assert update.new.shape == (12, 2)
    assert torch.equal(update.basis[:, :1], U[:, 1:2])
    assert _orthonormality_error(update.basis) < 1e-12
    assert _same_span(update.basis, U[:, :3])
    assert update.captured == pytest.approx(0.95)
    # Enough energy already captured: nothing is added.
    none_added = extend_basis_by_energy(R, 0.75, basis=U[:, :2])
    assert none_added.new.shape == (12, 0) and none_added.captured == pytest.approx(0.8)


def test_extend_basis_errors_and_zero_matrix():
    zero = extend_basis_by_energy(torch.zeros(5, 4), 0.9)
    assert zero.basis.shape == (5, 0) and zero.captured == 1.0
    with pytest.raises(ValueError, match=r"basis: expected \[5, k\]"):
        extend_basis_by_energy(torch.ones(5, 4), 0.9, basis=torch.zeros(4, 1))
    with pytest.raises(ValueError, match="R: expected a 2-D representation matrix"):
        extend_basis_by_energy(torch.ones(2, 5, 4), 0.9)


# --- basis_union -----------------------------------------------------------------------------


def test_union_of_overlapping_subspaces_has_the_right_dimension():
    E = orthonormal_basis(_randn(10, 5, seed=7))
    U, V = E[:, :3], E[:, 1:5]  # share two directions
    union = basis_union(U, V)
    assert union.shape == (10, 5)
    assert torch.equal(union[:, :3], U)
    assert _orthonormality_error(union) < 1e-12
    assert _same_span(union, E)


def test_union_drops_directions_inside_the_first_subspace():
    U = orthonormal_basis(_randn(8, 3, seed=8))
    inside = U @ _randn(3, 2, seed=9)
    assert basis_union(U, inside + 1e-12 * _randn(8, 2, seed=10)).shape == (8, 3)
    assert basis_union(U, torch.cat([inside, _randn(8, 1, seed=11)], 1)).shape == (8, 4)
    # Tolerance as a principal-angle sine: a direction 1e-3 off span(U) is new at tol 1e-4.
    w = project_out(_randn(8, 1, seed=12), U)
    tilted = U[:, :1] + 1e-3 * w / w.norm()
    assert basis_union(U, tilted, tol=1e-4).shape == (8, 4)
    assert basis_union(U, tilted, tol=1e-2).shape == (8, 3)


def test_union_batched_full_space_and_errors():
    U = orthonormal_basis(_randn(2, 4, 3, seed=13))
    union = basis_union(U, _randn(2, 4, 3, seed=14))
    assert union.shape == (2, 4, 4)  # capped at the ambient dimension
    with pytest.raises(ValueError, match=r"V: expected shape \[\.\.\., 4, l\]"):
        basis_union(U, _randn(2, 5, 3))


@settings(max_examples=20, deadline=None)
@given(m=st.integers(3, 10), k=st.integers(1, 3), j=st.integers(1, 3), shared=st.integers(0, 3),
       seed=st.integers(0, 999))
def test_union_dimension_property(m, k, j, shared, seed):
    total = min(m, k + j)
    shared = min(shared, k, j)
    E = orthonormal_basis(_randn(m, total, seed=seed))
    U = E[:, :k]
    V = torch.cat([E[:, k - shared:k], E[:, k:k + j - shared]], dim=1)
    assume(V.shape[1] > 0)
    union = basis_union(U, V @ orthonormal_basis(_randn(V.shape[1], V.shape[1], seed=seed + 1)))
    assert union.shape[1] == min(m, k + V.shape[1] - shared)
    assert _orthonormality_error(union) < 1e-10
