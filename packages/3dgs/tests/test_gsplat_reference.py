"""The torch path's projection, covariances and SH against gsplat's own pure-PyTorch reference
(``gsplat.cuda._torch_impl``), which runs on CPU: the maths the GPU parity test relies on,
checked in every CI run. gsplat's rasterizer itself needs CUDA (see test_gsplat_backend)."""

import pytest
import torch

from subspace_3dgs.gaussians import Gaussians
from subspace_3dgs.projection import project_gaussians
from subspace_3dgs.sh import eval_sh

gsplat_ref = pytest.importorskip("gsplat.cuda._torch_impl")

F64 = torch.float64
W, H = 48, 32


def _camera() -> tuple[torch.Tensor, torch.Tensor]:
    # a rotated, translated camera with an off-centre principal point and fx != fy
    angle = torch.tensor(0.3, dtype=F64)
    c, s = torch.cos(angle), torch.sin(angle)
    view = torch.eye(4, dtype=F64)
    view[:3, :3] = torch.tensor([[c, 0, s], [0, 1, 0], [-s, 0, c]], dtype=F64)
    view[:3, 3] = torch.tensor([0.2, -0.1, 0.5], dtype=F64)
    K = torch.tensor([[40.0, 0.0, 21.0], [0.0, 36.0, 17.5], [0.0, 0.0, 1.0]], dtype=F64)
    return view, K


def _gaussians(n: int = 300, seed: int = 0) -> Gaussians:
    """Centres spread well beyond the image on every side (the Jacobian clamp matters there),
    anisotropic and rotated."""
    g = torch.Generator().manual_seed(seed)
    xy = (torch.rand(n, 2, generator=g, dtype=F64) * 2 - 1) * 3.0
    z = torch.rand(n, 1, generator=g, dtype=F64) * 4 + 2
    return Gaussians(
        means=torch.cat([xy, z], 1),
        quats=torch.randn(n, 4, generator=g, dtype=F64),
        log_scales=torch.randn(n, 3, generator=g, dtype=F64) * 0.5 - 2.0,
        opacity_logits=torch.randn(n, generator=g, dtype=F64),
        sh=torch.randn(n, 1, 3, generator=g, dtype=F64),
    )


def test_covariances_equal_gsplat():
    g = _gaussians()
    covars, _ = gsplat_ref._quat_scale_to_covar_preci(g.quats, g.scales(), compute_preci=False)
    torch.testing.assert_close(g.covariances(), covars, rtol=1e-10, atol=1e-14)


@pytest.mark.parametrize("eps2d", [0.3, 0.1])
def test_projection_equals_gsplat_inside_and_outside_the_image(eps2d):
    g = _gaussians()
    view, K = _camera()
    ours = project_gaussians(g.means, g.covariances(), g.opacities(), view, K, W, H,
                             eps2d=eps2d)  # fmt: skip
    _, means2d, depths, conics, _ = gsplat_ref._fully_fused_projection(
        g.means, g.covariances(), view[None], K[None], W, H, eps2d=eps2d
    )
    means2d, depths, conics = means2d[0], depths[0], conics[0]
    # the scene really exercises the clamp: many centres fall outside the image
    outside = (ours.means2d < 0).any(1) | (ours.means2d[:, 0] > W) | (ours.means2d[:, 1] > H)
    assert outside.sum() > 100 and (~outside).sum() > 20
    torch.testing.assert_close(ours.means2d, means2d, rtol=1e-10, atol=1e-9)
    torch.testing.assert_close(ours.depths, depths, rtol=1e-12, atol=0)
    torch.testing.assert_close(ours.conics, conics, rtol=1e-9, atol=1e-12)
    # culling radii differ by design (gsplat's reference: a 3.33-sigma box without opacity;
    # ours: an opacity-aware bound, with exact boxes for tile binning), so they are not compared


@pytest.mark.parametrize("degree", [0, 1, 2, 3])
def test_sh_equals_gsplat(degree):
    g = torch.Generator().manual_seed(degree)
    dirs = torch.randn(200, 3, generator=g, dtype=F64)
    coeffs = torch.randn(200, 16, 3, generator=g, dtype=F64)
    torch.testing.assert_close(
        eval_sh(degree, coeffs, dirs), gsplat_ref._spherical_harmonics(degree, dirs, coeffs),
        rtol=1e-10, atol=1e-12,
    )  # fmt: skip
