import math

import pytest
import torch

from subspace_3dgs.cameras import camera_center
from subspace_3dgs.gaussians import Gaussians, quat_to_rotmat
from subspace_3dgs.projection import project_gaussians, view_dependent_colors
from subspace_3dgs.sh import SH_C0, eval_sh

F64 = torch.float64


def _rot_z(angle: float) -> torch.Tensor:
    c, s = math.cos(angle), math.sin(angle)
    return torch.tensor([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]], dtype=F64)


def _viewmat(R: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    v = torch.eye(4, dtype=F64)
    v[:3, :3], v[:3, 3] = R, t
    return v


K = torch.tensor([[50.0, 0.0, 16.0], [0.0, 60.0, 12.0], [0.0, 0.0, 1.0]], dtype=F64)


def test_quat_to_rotmat_is_rotation_and_matches_axis_angle():
    q = torch.tensor([[math.cos(0.35), 0.0, 0.0, math.sin(0.35)]], dtype=F64)  # 0.7 rad about z
    torch.testing.assert_close(quat_to_rotmat(3.0 * q)[0], _rot_z(0.7))  # normalised inside
    R = quat_to_rotmat(torch.randn(20, 4, dtype=F64))
    torch.testing.assert_close(R @ R.transpose(1, 2), torch.eye(3, dtype=F64).expand(20, 3, 3))
    torch.testing.assert_close(torch.linalg.det(R), torch.ones(20, dtype=F64))


def test_covariances_rotate_the_scale_axes():
    quarter = [math.cos(math.pi / 4), 0.0, 0.0, math.sin(math.pi / 4)]  # 90 deg about z
    g = Gaussians(
        means=torch.zeros(1, 3, dtype=F64),
        quats=torch.tensor([quarter], dtype=F64),
        log_scales=torch.log(torch.tensor([[1.0, 2.0, 3.0]], dtype=F64)),
        opacity_logits=torch.zeros(1, dtype=F64),
        sh=torch.zeros(1, 1, 3, dtype=F64),
    )
    torch.testing.assert_close(
        g.covariances()[0], torch.diag(torch.tensor([4.0, 1.0, 9.0], dtype=F64))
    )
    torch.testing.assert_close(g.opacities(), torch.tensor([0.5], dtype=F64))


def test_from_points_scales_are_neighbour_distances():
    h = 0.25
    grid = torch.stack(torch.meshgrid(*[torch.arange(4, dtype=F64)] * 3, indexing="ij"), -1)
    xyz = h * grid.reshape(-1, 3)
    rgb = torch.rand(64, 3, dtype=F64)
    g = Gaussians.from_points(xyz, rgb, sh_degree=2, feature_dim=4, chunk_size=7)
    # every grid point has at least three neighbours at distance exactly h
    torch.testing.assert_close(g.scales(), torch.full((64, 3), h, dtype=F64))
    torch.testing.assert_close(SH_C0 * g.sh[:, 0] + 0.5, rgb)
    assert g.sh.shape == (64, 9, 3) and g.sh_degree == 2
    assert g.features.shape == (64, 4) and isinstance(g.features, torch.nn.Parameter)
    torch.testing.assert_close(g.opacities(), torch.full((64,), 0.1, dtype=F64))
    with pytest.raises(ValueError, match="xyz"):
        Gaussians.from_points(torch.zeros(5, 2))
    with pytest.raises(ValueError, match="rgb"):
        Gaussians.from_points(xyz, rgb[:3])


def test_camera_center_and_view_dependent_colour():
    R, centre = _rot_z(0.3), torch.tensor([1.0, -2.0, 0.5], dtype=F64)
    view = _viewmat(R, -R @ centre)
    torch.testing.assert_close(camera_center(view), centre)
    means = torch.randn(6, 3, dtype=F64)
    sh = torch.randn(6, 4, 3, dtype=F64)
    expected = (eval_sh(1, sh, means - centre) + 0.5).clamp_min(0)
    torch.testing.assert_close(view_dependent_colors(sh, means, view, 1), expected)


def test_isotropic_on_axis_projection_closed_form():
    sigma, z, eps2d = 0.1, 4.0, 0.3
    out = project_gaussians(
        torch.tensor([[0.0, 0.0, z]], dtype=F64),
        (sigma**2 * torch.eye(3, dtype=F64))[None],
        torch.tensor([0.999], dtype=F64),
        torch.eye(4, dtype=F64), K, 32, 24, eps2d=eps2d,
    )  # fmt: skip
    var = torch.tensor([(50 * sigma / z) ** 2 + eps2d, (60 * sigma / z) ** 2 + eps2d], dtype=F64)
    torch.testing.assert_close(out.means2d[0], torch.tensor([16.0, 12.0], dtype=F64))
    torch.testing.assert_close(out.cov2d[0], torch.diag(var))
    torch.testing.assert_close(
        out.conics[0], torch.stack([1 / var[0], var.new_zeros(()), 1 / var[1]])
    )
    assert out.radii[0] == math.ceil(3 * math.sqrt(var.max()))  # opacity ~1: 3-sigma box
    assert out.depths[0] == z and bool(out.visible[0])


def test_ewa_covariance_matches_autograd_jacobian():
    g = torch.Generator().manual_seed(1)
    R = _rot_z(0.4) @ quat_to_rotmat(torch.tensor([[0.9, 0.2, -0.3, 0.1]], dtype=F64))[0]
    view = _viewmat(R, torch.tensor([0.2, -0.1, 5.0], dtype=F64))
    means = 0.5 * torch.randn(5, 3, generator=g, dtype=F64)
    A = torch.randn(5, 3, 3, generator=g, dtype=F64)
    covs = 0.01 * A @ A.transpose(1, 2)
    out = project_gaussians(means, covs, torch.full((5,), 0.9, dtype=F64), view, K, 32, 24)

    def pixel(p):
        c = R @ p + view[:3, 3]
        return torch.stack([K[0, 0] * c[0] / c[2] + K[0, 2], K[1, 1] * c[1] / c[2] + K[1, 2]])

    for i in range(5):
        J = torch.autograd.functional.jacobian(pixel, means[i])
        expected = J @ covs[i] @ J.T + 0.3 * torch.eye(2, dtype=F64)
        torch.testing.assert_close(out.cov2d[i], expected)
        torch.testing.assert_close(out.means2d[i], pixel(means[i]))
        cinv = torch.linalg.inv(out.cov2d[i])
        torch.testing.assert_close(out.conics[i], torch.stack([cinv[0, 0], cinv[0, 1], cinv[1, 1]]))


def test_low_opacity_shrinks_radius_and_eps2d_is_added():
    cov = (0.17**2 * torch.eye(3, dtype=F64))[None].expand(2, 3, 3)
    means = torch.tensor([[0.0, 0.0, 2.0]] * 2, dtype=F64)
    ops = torch.tensor([0.999, 0.02], dtype=F64)
    a = project_gaussians(means, cov, ops, torch.eye(4, dtype=F64), K, 32, 24, eps2d=0.0)
    b = project_gaussians(means, cov, ops, torch.eye(4, dtype=F64), K, 32, 24, eps2d=1.5)
    torch.testing.assert_close(b.cov2d - a.cov2d, 1.5 * torch.eye(2, dtype=F64).expand(2, 2, 2))
    sd = 60 * 0.17 / 2.0  # not an integer multiple, so ceil is well defined
    assert a.radii.tolist() == [
        math.ceil(3 * sd),
        math.ceil(math.sqrt(2 * math.log(255 * 0.02)) * sd),
    ]


def test_culling_near_plane_behind_and_off_screen():
    means = torch.tensor(
        [[0.0, 0.0, 3.0], [0.0, 0.0, -3.0], [0.0, 0.0, 0.005], [40.0, 0.0, 3.0]], dtype=F64
    )
    cov = (0.05**2 * torch.eye(3, dtype=F64))[None].expand(4, 3, 3)
    out = project_gaussians(
        means, cov, torch.full((4,), 0.9, dtype=F64), torch.eye(4, dtype=F64), K, 32, 24
    )
    assert out.visible.tolist() == [True, False, False, False]
    assert (out.radii[1:] == 0).all() and out.radii[0] > 0
    assert torch.isfinite(out.conics).all() and torch.isfinite(out.means2d).all()
