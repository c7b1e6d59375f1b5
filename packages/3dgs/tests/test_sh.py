import math

import numpy as np
import pytest
import torch
from scipy.special import sph_harm_y

from subspace_3dgs.sh import SH_C0, eval_sh, max_sh_degree, num_sh_bases, rgb_to_sh, sh_to_rgb


def _scipy_real_sh(deg: int, m: int, dirs: np.ndarray) -> np.ndarray:
    """3DGS real SH from scipy's complex Y_l^m (which includes the Condon-Shortley phase)."""
    x, y, z = dirs.T
    polar = np.arccos(np.clip(z, -1.0, 1.0))
    azimuth = np.arctan2(y, x)
    if m == 0:
        return sph_harm_y(deg, 0, polar, azimuth).real
    ylm = sph_harm_y(deg, abs(m), polar, azimuth)
    return math.sqrt(2.0) * (ylm.imag if m < 0 else ylm.real)


def _random_dirs(n: int, seed: int = 0) -> np.ndarray:
    v = np.random.default_rng(seed).normal(size=(n, 3))
    return v / np.linalg.norm(v, axis=1, keepdims=True)


@pytest.mark.parametrize("degree", [0, 1, 2, 3])
def test_basis_matches_scipy(degree):
    dirs = _random_dirs(200)
    k = num_sh_bases(degree)
    for idx in range(k):
        deg = math.isqrt(idx)
        m = idx - deg * deg - deg
        coeffs = torch.zeros(len(dirs), k, 1, dtype=torch.float64)
        coeffs[:, idx, 0] = 1.0
        got = eval_sh(degree, coeffs, torch.from_numpy(dirs))[:, 0].numpy()
        np.testing.assert_allclose(
            got, _scipy_real_sh(deg, m, dirs), atol=1e-12, err_msg=f"{deg},{m}"
        )


def test_orthonormal_by_quadrature():
    # Gauss-Legendre in cos(polar) x uniform azimuth integrates degree <= 6 products exactly
    nodes, w = np.polynomial.legendre.leggauss(8)
    az = np.arange(16) * 2 * np.pi / 16
    cz, phi = np.meshgrid(nodes, az, indexing="ij")
    sz = np.sqrt(1 - cz**2)
    dirs = np.stack([sz * np.cos(phi), sz * np.sin(phi), cz], -1).reshape(-1, 3)
    weights = np.repeat(w, len(az)) * (2 * np.pi / len(az))
    eye = torch.eye(16, dtype=torch.float64)
    coeffs = eye[None].expand(len(dirs), 16, 16)
    basis = eval_sh(3, coeffs, torch.from_numpy(dirs)).numpy()  # [P, 16]
    gram = basis.T @ (basis * weights[:, None])
    np.testing.assert_allclose(gram, np.eye(16), atol=1e-12)


def test_lower_degree_ignores_higher_coefficients():
    g = torch.Generator().manual_seed(0)
    coeffs = torch.randn(10, 16, 3, generator=g, dtype=torch.float64)
    dirs = torch.randn(10, 3, generator=g, dtype=torch.float64)
    trunc = coeffs.clone()
    trunc[:, 4:] = 0
    torch.testing.assert_close(eval_sh(1, coeffs, dirs), eval_sh(3, trunc, dirs))


def test_direction_is_normalised_and_dc_is_constant():
    coeffs = torch.tensor([[[0.7, -0.2]]], dtype=torch.float64).expand(2, 1, 2)
    dirs = torch.tensor([[0.0, 0.0, 5.0], [3.0, -1.0, 0.1]], dtype=torch.float64)
    torch.testing.assert_close(eval_sh(0, coeffs, dirs), SH_C0 * coeffs[:, 0])
    c = torch.randn(1, 16, 1, dtype=torch.float64).expand(2, 16, 1)
    d = torch.tensor([[1.0, 2.0, -2.0]], dtype=torch.float64)
    torch.testing.assert_close(
        eval_sh(3, c, torch.cat([d, 7 * d])), eval_sh(3, c, torch.cat([d, d]))
    )


def test_rgb_roundtrip():
    rgb = torch.rand(5, 3)
    torch.testing.assert_close(sh_to_rgb(rgb_to_sh(rgb)), rgb)


def test_errors():
    with pytest.raises(ValueError, match="degree"):
        num_sh_bases(4)
    with pytest.raises(ValueError, match="num_bases"):
        max_sh_degree(5)
    with pytest.raises(ValueError, match="coeffs"):
        eval_sh(2, torch.zeros(3, 4, 3), torch.zeros(3, 3))
    with pytest.raises(ValueError, match="dirs"):
        eval_sh(1, torch.zeros(3, 4, 3), torch.zeros(2, 3))
