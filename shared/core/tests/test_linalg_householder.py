"""Householder-product frames against the definition Q = H(v_1) ⋯ H(v_k) I[:, :p]."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from subspace_core.linalg.householder import (
    HouseholderFrame,
    frame_to_householder,
    householder_product,
)
from subspace_core.testing import assert_close_to_ref

F64 = torch.float64


pytestmark = pytest.mark.usefixtures("single_thread")


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _reference_product(V: torch.Tensor, p: int) -> torch.Tensor:
    """The definition, with explicit n×n reflectors (fine for the tiny test sizes)."""
    n = V.shape[-2]
    Q = torch.eye(n, dtype=V.dtype)
    for v in V.unbind(-1):
        Q = Q @ (torch.eye(n, dtype=V.dtype) - 2 * torch.outer(v, v) / v.dot(v))
    return Q[:, :p]


def _orthonormal(n: int, p: int, gen: torch.Generator, dtype=F64) -> torch.Tensor:
    return torch.linalg.qr(torch.randn(n, p, generator=gen, dtype=dtype)).Q


@settings(max_examples=30, deadline=None)
@given(n=st.integers(1, 9), k=st.integers(1, 9), p=st.integers(1, 9), seed=st.integers(0, 2**16))
def test_householder_product_matches_definition_and_is_orthonormal(n, k, p, seed):
    p = min(p, n)
    V = torch.randn(n, k, generator=_gen(seed), dtype=F64)
    Q = householder_product(V, p)
    assert Q.shape == (n, p)
    assert_close_to_ref(Q, _reference_product(V, p), scale=1e3)
    assert_close_to_ref(Q.mT @ Q, torch.eye(p, dtype=F64), scale=1e3)


def test_householder_product_is_scale_invariant_per_vector():
    gen = _gen(0)
    V = torch.randn(7, 3, generator=gen, dtype=F64)
    scales = torch.tensor([-2.0, 1e-3, 50.0], dtype=F64)
    assert_close_to_ref(householder_product(V * scales), householder_product(V), scale=100)


def test_householder_product_batched_and_float32():
    gen = _gen(1)
    V = torch.randn(2, 3, 6, 4, generator=gen)
    Q = householder_product(V, 2)
    assert Q.shape == (2, 3, 6, 2) and Q.dtype == torch.float32
    assert_close_to_ref(Q[1, 2], _reference_product(V[1, 2].double(), 2).float(), scale=10)


def test_householder_product_gradcheck():
    V = torch.randn(5, 3, generator=_gen(2), dtype=F64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda V: householder_product(V, 2), (V,))
    assert torch.autograd.gradgradcheck(lambda V: householder_product(V, 3), (V,))


def test_householder_product_rejects_bad_input():
    with pytest.raises(ValueError, match="V: expected nonzero Householder vectors"):
        householder_product(torch.zeros(4, 2))
    with pytest.raises(ValueError, match="p: expected 1 <= p <= n=4"):
        householder_product(torch.randn(4, 2), p=5)
    with pytest.raises(TypeError, match="V: expected a real floating-point tensor"):
        householder_product(torch.ones(4, 2, dtype=torch.int64))


@settings(max_examples=30, deadline=None)
@given(n=st.integers(2, 9), p=st.integers(1, 8), seed=st.integers(0, 2**16))
def test_frame_to_householder_round_trip(n, p, seed):
    p = min(p, n - 1)  # p < n: every frame is reachable
    Q = _orthonormal(n, p, _gen(seed))
    V = frame_to_householder(Q)
    assert V.shape == (n, p)
    assert_close_to_ref(householder_product(V), Q, scale=1e3)


def test_frame_to_householder_special_frames_and_batches():
    # Columns already equal to e_j (the degenerate reflector) and sign-flipped ones.
    eye = torch.eye(6, 3, dtype=F64)
    flipped = eye * torch.tensor([1.0, -1.0, 1.0], dtype=F64)
    permuted = torch.eye(6, dtype=F64)[:, [2, 0, 5]]
    for Q in (eye, flipped, permuted):
        assert_close_to_ref(householder_product(frame_to_householder(Q)), Q, scale=10)
    batch = torch.linalg.qr(torch.randn(3, 2, 8, 3, generator=_gen(3), dtype=F64)).Q
    assert_close_to_ref(householder_product(frame_to_householder(batch)), batch, scale=1e3)


def test_square_frames_need_the_reachable_determinant():
    # n reflectors have determinant (-1)^n; the sign-matched square frame round-trips.
    Q = _orthonormal(4, 4, _gen(4))
    if torch.linalg.det(Q) < 0:
        Q = Q * torch.tensor([-1.0, 1, 1, 1], dtype=F64)
    assert_close_to_ref(householder_product(frame_to_householder(Q)), Q, scale=1e3)
    wrong = Q * torch.tensor([-1.0, 1, 1, 1], dtype=F64)
    with pytest.raises(ValueError, match=r"must have det\(Q\) = \(-1\)\^4"):
        frame_to_householder(wrong)


def test_frame_to_householder_rejects_non_orthonormal():
    with pytest.raises(ValueError, match="Q: expected an orthonormal frame"):
        frame_to_householder(torch.ones(5, 2, dtype=F64))
    with pytest.raises(ValueError, match=r"Q: expected a frame \[..., n, p\] with p <= n"):
        frame_to_householder(torch.ones(2, 5, dtype=F64))


def test_householder_frame_module():
    torch.manual_seed(0)
    module = HouseholderFrame(8, 3, dtype=F64)
    Q = module()
    assert Q.shape == (8, 3) and module.vectors.shape == (8, 3)
    assert_close_to_ref(Q.mT @ Q, torch.eye(3, dtype=F64), scale=100)
    assert "n=8, p=3, num_reflectors=3" in repr(module)
    with pytest.raises(ValueError, match="num_reflectors: expected 1 <= num_reflectors <= n=8"):
        HouseholderFrame(8, 3, num_reflectors=9)
    with pytest.raises(ValueError, match="p: expected 1 <= p <= n=8"):
        HouseholderFrame(8, 9)


@pytest.mark.parametrize("num_reflectors", [3, 5])
def test_householder_frame_from_svd_basis(num_reflectors):
    gen = _gen(5)
    G = torch.randn(10, 6, generator=gen, dtype=F64)
    basis = torch.linalg.svd(G, full_matrices=False).U[:, :3]  # e.g. a GaLore projector
    module = HouseholderFrame.from_frame(basis, num_reflectors=num_reflectors)
    assert module.vectors.shape == (10, num_reflectors)
    assert_close_to_ref(module(), basis, scale=1e3)
    with pytest.raises(ValueError, match=r"Q: expected shape \(10, 3\)"):
        module.set_frame(basis[:, :2])
    short = HouseholderFrame(10, 3, num_reflectors=2, dtype=F64)
    with pytest.raises(ValueError, match="num_reflectors: expected >= p=3"):
        short.set_frame(basis)


def test_householder_frame_trains_to_the_top_eigenspace():
    # Unconstrained Adam on the vectors: the frame stays orthonormal and maximises tr(QᵀAQ).
    gen = _gen(6)
    basis = _orthonormal(10, 10, gen)
    eigenvalues = torch.tensor([5.0, 4.0] + [1.0 - 0.1 * i for i in range(8)], dtype=F64)
    A = (basis * eigenvalues) @ basis.mT
    torch.manual_seed(6)
    module = HouseholderFrame(10, 2, dtype=F64)
    optimizer = torch.optim.Adam(module.parameters(), lr=0.05)
    for _ in range(300):
        optimizer.zero_grad()
        Q = module()
        (-torch.trace(Q.mT @ A @ Q)).backward()
        optimizer.step()
    Q = module().detach()
    assert_close_to_ref(Q.mT @ Q, torch.eye(2, dtype=F64), scale=100)
    captured = torch.trace(Q.mT @ A @ Q)
    assert captured > 9.0 - 1e-3  # the optimum is 5 + 4
