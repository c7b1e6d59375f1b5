"""Linear CKA and SVCCA against their definitions and invariances."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from subspace_core.linalg.similarity import linear_cka, svcca
from subspace_core.testing import assert_close_to_ref

F64 = torch.float64


pytestmark = pytest.mark.usefixtures("single_thread")


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _orthogonal(d: int, gen: torch.Generator) -> torch.Tensor:
    return torch.linalg.qr(torch.randn(d, d, generator=gen, dtype=F64)).Q


def _hsic_gram(K: torch.Tensor, L: torch.Tensor) -> torch.Tensor:
    """Biased HSIC on n×n Gram matrices: tr(K H L H), H the centring matrix."""
    n = K.shape[0]
    H = torch.eye(n, dtype=K.dtype) - 1.0 / n
    return torch.trace(K @ H @ L @ H)


def _hsic_unbiased_gram(K: torch.Tensor, L: torch.Tensor) -> torch.Tensor:
    """Song et al. (2012) unbiased HSIC on n×n Gram matrices, written out literally."""
    n = K.shape[0]
    K = K - torch.diag(torch.diag(K))
    L = L - torch.diag(torch.diag(L))
    one = torch.ones(n, dtype=K.dtype)
    value = (torch.trace(K @ L) + (one @ K @ one) * (one @ L @ one) / ((n - 1) * (n - 2))
             - 2.0 / (n - 2) * one @ K @ L @ one)
    return value / (n * (n - 3))


def _cka_gram(X: torch.Tensor, Y: torch.Tensor, hsic) -> torch.Tensor:
    K, L = X @ X.mT, Y @ Y.mT
    return hsic(K, L) / torch.sqrt(hsic(K, K) * hsic(L, L))


@settings(max_examples=20, deadline=None)
@given(n=st.integers(6, 30), d1=st.integers(1, 6), d2=st.integers(1, 6), seed=st.integers(0, 2**16))
def test_linear_cka_matches_gram_matrix_definitions(n, d1, d2, seed):
    gen = _gen(seed)
    X = torch.randn(n, d1, generator=gen, dtype=F64) + 3.0  # uncentred on purpose
    Y = torch.randn(n, d2, generator=gen, dtype=F64) + X[:, :1]
    assert_close_to_ref(linear_cka(X, Y), _cka_gram(X, Y, _hsic_gram), scale=1e4)
    Xc, Yc = X - X.mean(0), Y - Y.mean(0)
    assert_close_to_ref(linear_cka(X, Y, debiased=True),
                        _cka_gram(Xc, Yc, _hsic_unbiased_gram), scale=1e4)
    value = linear_cka(X, Y)
    assert 0.0 <= value <= 1.0 + 1e-12
    assert_close_to_ref(linear_cka(Y, X), value, scale=100)  # symmetric


@pytest.mark.parametrize("debiased", [False, True])
def test_linear_cka_invariances(debiased):
    gen = _gen(0)
    X = torch.randn(200, 8, generator=gen, dtype=F64)
    Y = X @ torch.randn(8, 5, generator=gen, dtype=F64) + 0.5 * torch.randn(200, 5, generator=gen, dtype=F64)

    def cka(a, b):
        return linear_cka(a, b, debiased=debiased)

    one = torch.ones((), dtype=F64)
    assert_close_to_ref(cka(X, X), one, scale=100)
    # Identical up to rotation, isotropic scaling and translation → 1.
    assert_close_to_ref(cka(X, -3.0 * X @ _orthogonal(8, gen) + 7.0), one, scale=1e3)
    # Orthogonal transforms of either side leave CKA unchanged.
    value = cka(X, Y)
    assert_close_to_ref(cka(X @ _orthogonal(8, gen), Y @ _orthogonal(5, gen)), value, scale=1e3)
    # …but an anisotropic rescaling does change it (CKA is not invertible-linear invariant).
    stretch = torch.diag(torch.logspace(0, 2, 8, dtype=F64))
    assert cka(X, X @ stretch) < 0.99


def test_linear_cka_of_independent_features_is_near_zero():
    gen = _gen(1)
    X = torch.randn(4000, 6, generator=gen, dtype=F64)
    Y = torch.randn(4000, 6, generator=gen, dtype=F64)
    assert linear_cka(X, Y) < 0.02
    assert linear_cka(X, Y, debiased=True).abs() < 0.01


def test_linear_cka_batched_and_float32():
    gen = _gen(2)
    X = torch.randn(3, 50, 4, generator=gen)
    Y = torch.randn(3, 50, 7, generator=gen)
    values = linear_cka(X, Y)
    assert values.shape == (3,) and values.dtype == torch.float32
    assert_close_to_ref(values[1], linear_cka(X[1].double(), Y[1].double()).float(), scale=10)


def test_linear_cka_rejects_bad_input():
    with pytest.raises(ValueError, match="Y: expected the same number of examples n=5"):
        linear_cka(torch.randn(5, 2), torch.randn(6, 2))
    with pytest.raises(ValueError, match="X: expected features with nonzero variance"):
        linear_cka(torch.ones(5, 2), torch.randn(5, 2))
    with pytest.raises(ValueError, match="n >= 4"):
        linear_cka(torch.randn(3, 2), torch.randn(3, 2), debiased=True)
    with pytest.raises(ValueError, match=r"X: expected features \[..., n, d\]"):
        linear_cka(torch.randn(5), torch.randn(5, 2))


def _classical_cca(X: torch.Tensor, Y: torch.Tensor) -> torch.Tensor:
    """Canonical correlations by whitening: σ(Σxx^{-1/2} Σxy Σyy^{-1/2})."""
    X, Y = X - X.mean(0), Y - Y.mean(0)

    def inv_sqrt(S):
        w, Q = torch.linalg.eigh(S)
        return (Q * w.rsqrt()) @ Q.mT

    return torch.linalg.svdvals(inv_sqrt(X.mT @ X) @ (X.mT @ Y) @ inv_sqrt(Y.mT @ Y))


def test_svcca_equals_cca_of_the_svd_reduced_features():
    gen = _gen(3)
    latent = torch.randn(500, 4, generator=gen, dtype=F64)
    X = latent @ torch.randn(4, 12, generator=gen, dtype=F64) + 0.01 * torch.randn(500, 12, generator=gen, dtype=F64)
    Y = latent[:, :3] @ torch.randn(3, 9, generator=gen, dtype=F64) + torch.randn(500, 9, generator=gen, dtype=F64)
    result = svcca(X, Y, keep=0.99)
    # Rebuild the reduction by hand: top singular directions explaining 99 % of variance.
    def reduce(Z):
        Z = Z - Z.mean(0)
        U, S, _ = torch.linalg.svd(Z, full_matrices=False)
        k = int((torch.cumsum(S**2, 0) / (S**2).sum() < 0.99).sum()) + 1
        return U[:, :k] * S[:k], k

    Xr, kx = reduce(X)
    Yr, ky = reduce(Y)
    assert (result.dims_x, result.dims_y) == (kx, ky)
    assert kx == 4  # the latent dimension, noise dropped
    assert_close_to_ref(result.correlations, _classical_cca(Xr, Yr)[: min(kx, ky)], scale=1e4)
    assert_close_to_ref(result.mean, result.correlations.mean())


def test_svcca_is_one_for_invertible_linear_transforms():
    gen = _gen(4)
    X = torch.randn(300, 6, generator=gen, dtype=F64)
    M = torch.randn(6, 6, generator=gen, dtype=F64) + 4 * torch.eye(6, dtype=F64)
    result = svcca(X, X @ M + 2.0, keep=6)
    assert result.correlations.shape == (6,)
    assert_close_to_ref(result.mean, torch.ones((), dtype=F64), scale=1e4)


def test_svcca_of_independent_features_is_small():
    gen = _gen(5)
    X = torch.randn(3000, 5, generator=gen, dtype=F64)
    Y = torch.randn(3000, 5, generator=gen, dtype=F64)
    assert svcca(X, Y, keep=1.0).mean < 0.05


def test_svcca_keep_int_is_capped_by_rank():
    gen = _gen(6)
    X = torch.randn(100, 2, generator=gen, dtype=F64) @ torch.randn(2, 5, generator=gen, dtype=F64)
    result = svcca(X, torch.randn(100, 4, generator=gen, dtype=F64), keep=4)
    assert result.dims_x == 2 and result.dims_y == 4


@pytest.mark.parametrize(
    ("keep", "error", "match"),
    [(0.0, ValueError, "keep: expected a variance fraction"),
     (1.5, ValueError, "keep: expected a variance fraction"),
     (0, ValueError, "keep: expected an int >= 1"),
     (True, TypeError, "keep: expected a float"),
     ("all", TypeError, "keep: expected a float")],
)
def test_svcca_rejects_bad_keep(keep, error, match):
    with pytest.raises(error, match=match):
        svcca(torch.randn(10, 3), torch.randn(10, 3), keep=keep)


def test_svcca_is_unbatched():
    with pytest.raises(ValueError, match=r"X: expected features \[n, d\]"):
        svcca(torch.randn(2, 10, 3), torch.randn(2, 10, 3))
