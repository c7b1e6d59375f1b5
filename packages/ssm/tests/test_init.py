"""HiPPO-LegS, its NPLR/DPLR forms, the S4D diagonal inits and the PTD initialisation."""

from __future__ import annotations

import math

import pytest
import torch

from subspace_ssm.hippo import dplr_legs, hippo_legs, nplr_legs
from subspace_ssm.init import DIAGONAL_INITS, conj_half, diagonal_init
from subspace_ssm.ptd import diagonal_transfer, ptd_diagonalize, ptd_legs, transfer_function


def test_hippo_legs_entries():
    A, B = hippo_legs(4)
    assert A[2, 0] == pytest.approx(-math.sqrt(5) * 1.0)
    assert A[3, 1] == pytest.approx(-math.sqrt(7 * 3))
    assert torch.equal(torch.diag(A), -torch.arange(1.0, 5.0, dtype=torch.float64))
    assert torch.all(torch.triu(A, 1) == 0)
    torch.testing.assert_close(B, torch.sqrt(torch.tensor([1.0, 3, 5, 7], dtype=torch.float64)))


def test_nplr_normal_part_and_dplr_reconstruct_hippo():
    A, _ = hippo_legs(12)
    S, P, _ = nplr_legs(12)
    torch.testing.assert_close(S - torch.outer(P, P), A)
    K = S + 0.5 * torch.eye(12, dtype=torch.float64)
    torch.testing.assert_close(K, -K.T)  # S = -I/2 + skew: normal
    d = dplr_legs(12)
    torch.testing.assert_close(d.V @ d.V.conj().T, torch.eye(12, dtype=torch.complex128))
    torch.testing.assert_close(d.dense(), A.to(torch.complex128), rtol=1e-12, atol=1e-11)
    assert torch.allclose(d.Lambda.real, torch.full((12,), -0.5, dtype=torch.float64))


def test_diagonal_inits_follow_their_formulas():
    N = 16
    n = torch.arange(N // 2, dtype=torch.float64)
    lin = diagonal_init("lin", N)
    torch.testing.assert_close(lin.imag, math.pi * n)
    inv = diagonal_init("inv", N)
    torch.testing.assert_close(inv.imag, N / math.pi * (N / (2 * n + 1) - 1))
    for kind in ("lin", "inv", "legs"):
        assert torch.allclose(diagonal_init(kind, N).real, torch.full((N // 2,), -0.5,
                                                                       dtype=torch.float64))
    real = diagonal_init("real", N)
    torch.testing.assert_close(real.real, -(n + 1))
    assert torch.all(real.imag == 0)
    legs = diagonal_init("legs", N)
    assert torch.all(legs.imag > 0) and legs.shape == (N // 2,)
    # LegS's eigenvalues are those of the normal part, upper half of each conjugate pair
    full = torch.linalg.eigvals(nplr_legs(N)[0])
    torch.testing.assert_close(torch.sort(legs.imag).values,
                               torch.sort(full.imag[full.imag > 0]).values)
    assert set(DIAGONAL_INITS) == {"legs", "inv", "lin", "real"}
    with pytest.raises(ValueError, match=r"kind: expected one of"):
        diagonal_init("foo", N)
    with pytest.raises(ValueError, match=r"N: expected an even state size"):
        diagonal_init("lin", 7)


def test_conj_half_keeps_a_real_systems_transfer_function():
    g = torch.Generator().manual_seed(0)
    M = torch.randn(9, 9, dtype=torch.float64, generator=g)  # odd: at least one real eigenvalue
    lam, V = torch.linalg.eig(M)
    B = torch.linalg.solve(V, torch.randn(9, dtype=torch.float64, generator=g).to(V.dtype))
    C = torch.randn(9, dtype=torch.float64, generator=g).to(V.dtype) @ V
    lh, bh, ch = conj_half(lam, B, C)
    s = 1j * torch.linspace(-5, 5, 11, dtype=torch.float64)
    full = diagonal_transfer(lam, B, C, s)
    half = diagonal_transfer(lh, bh, ch, s) + diagonal_transfer(lh.conj(), bh.conj(), ch.conj(), s)
    torch.testing.assert_close(half, full)
    with pytest.raises(ValueError, match="conjugate pairs"):
        conj_half(torch.tensor([1 + 1j, 2 + 2j]), torch.ones(2), torch.ones(2))


def _errors(N: int, eps: float):
    A, B = hippo_legs(N)
    C = torch.randn(N, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    s = 1j * torch.linspace(-4 * N, 4 * N, 201, dtype=torch.float64)
    g_hippo = transfer_function(A, B, C, s)
    res = ptd_legs(N, eps)
    g_ptd = diagonal_transfer(res.Lambda, res.V_inv @ B.to(torch.complex128),
                              C.to(torch.complex128) @ res.V, s)
    d = dplr_legs(N)  # S4D-LegS: the normal part only
    g_s4d = diagonal_transfer(d.Lambda, d.B, C.to(torch.complex128) @ d.V, s)
    scale = g_hippo.abs().max()
    return res, float((g_ptd - g_hippo).abs().max() / scale), float((g_s4d - g_hippo).abs().max() / scale)


@pytest.mark.parametrize("N", [16, 64])
def test_ptd_is_well_conditioned_and_close_to_hippo_unlike_s4d_legs(N):
    _, V = torch.linalg.eig(hippo_legs(N)[0])
    assert float(torch.linalg.cond(V)) > 1e10  # naive diagonalisation: meaningless
    res, err_ptd, err_s4d = _errors(N, 1e-4)
    assert res.kappa < 3e4  # measured: 7.7e3 (N=16), 9.3e3 (N=64)
    assert res.backward_error == pytest.approx(1e-4)
    torch.testing.assert_close(res.V @ torch.diag(res.Lambda) @ res.V_inv,
                               (hippo_legs(N)[0] + res.E).to(torch.complex128),
                               rtol=0, atol=1e-8 * N)
    assert err_ptd < 0.05  # measured: 2.6e-3 (N=16), 1.7e-2 (N=64)
    assert err_s4d > 1.0   # S4D-LegS misses HiPPO's transfer function by O(1)
    assert err_ptd < err_s4d / 50
    assert torch.all(res.Lambda.real < 0)


def test_ptd_any_state_size_deterministic_and_bigger_eps_better_conditioned():
    a, b = ptd_legs(15, 1e-3, seed=3), ptd_legs(15, 1e-3, seed=3)
    assert torch.equal(a.Lambda, b.Lambda) and a.Lambda.shape == (15,)
    assert ptd_legs(32, 1e-2).kappa < ptd_legs(32, 1e-5).kappa
    with pytest.raises(ValueError, match=r"eps: expected"):
        ptd_diagonalize(hippo_legs(4)[0], eps=0.0)
    with pytest.raises(ValueError, match=r"A: expected a square 2-D tensor"):
        ptd_diagonalize(torch.zeros(3, 4))
