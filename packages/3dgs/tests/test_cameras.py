import math

import pytest
import torch

from subspace_3dgs.cameras import (
    Camera,
    camera_center,
    fibonacci_cameras,
    focal_from_fov,
    fov_from_focal,
    intrinsics_from_fov,
    look_at,
    orbit_cameras,
)


def _cam(eye, target=(0.0, 0.0, 0.0), up=(0.0, 0.0, 1.0), w=40, h=30, fov=60.0):
    return Camera(look_at(eye, target, up), intrinsics_from_fov(fov, w, h), w, h)


def test_look_at_is_rigid_and_maps_eye_to_origin_and_target_to_the_axis():
    eye, target = torch.tensor([1.5, -2.0, 0.7]), torch.tensor([0.1, 0.2, -0.3])
    view = look_at(eye, target).double()
    rot = view[:3, :3]
    torch.testing.assert_close(rot @ rot.T, torch.eye(3, dtype=torch.float64), atol=1e-6, rtol=0)
    assert torch.det(rot).item() == pytest.approx(1.0, abs=1e-6)
    cam_eye = rot @ eye.double() + view[:3, 3]
    torch.testing.assert_close(cam_eye, torch.zeros(3, dtype=torch.float64), atol=1e-5, rtol=0)
    cam_target = rot @ target.double() + view[:3, 3]
    # Target straight ahead (+z) at its distance, on the optical axis.
    assert cam_target[2].item() == pytest.approx((target - eye).norm().item(), rel=1e-5)
    assert cam_target[:2].abs().max().item() < 1e-5


def test_look_at_keeps_world_up_pointing_up_in_the_image():
    cam = _cam((3.0, 0.0, 0.0))
    pix, z = cam.project(torch.tensor([[0.0, 0.0, 0.0], [0.0, 0.0, 0.5], [0.0, 0.5, 0.0]]))
    assert (z > 0).all()
    torch.testing.assert_close(pix[0], torch.tensor([20.0, 15.0]))  # principal point
    assert pix[1, 1] < pix[0, 1]  # higher z -> smaller row (OpenCV y down)
    # Camera on +x looking at -x with z up: its right-hand side (forward x up) is world +y.
    assert pix[2, 0] > pix[0, 0]


def test_camera_center_inverts_look_at():
    eye = torch.tensor([0.3, 2.0, -1.0])
    torch.testing.assert_close(camera_center(look_at(eye, (0, 0, 0))), eye, atol=1e-5, rtol=0)


def test_intrinsics_from_fov_puts_the_fov_edge_on_the_image_border():
    w, h, fov = 64, 48, 50.0
    K = intrinsics_from_fov(fov, w, h)
    cam = Camera(torch.eye(4), K, w, h)
    half = math.radians(fov) / 2
    pix, _ = cam.project(torch.tensor([[math.tan(half), 0.0, 1.0]]))
    assert pix[0, 0].item() == pytest.approx(w, rel=1e-5)
    assert cam.fov_x == pytest.approx(math.radians(fov), rel=1e-6)
    assert fov_from_focal(focal_from_fov(0.7, 100), 100) == pytest.approx(0.7)
    assert K[1, 2].item() == h / 2


def test_orbit_cameras_form_an_even_ring_looking_at_the_target():
    n, radius, elev, target = 12, 2.5, 30.0, torch.tensor([0.2, -0.1, 0.4])
    cams = orbit_cameras(n, radius, elev, target, fov_deg=40.0, width=32, height=32)
    centers = torch.stack([c.center for c in cams]) - target
    torch.testing.assert_close(centers.norm(dim=1), torch.full((n,), radius), atol=1e-5, rtol=0)
    heights = centers[:, 2] / radius
    torch.testing.assert_close(
        heights, torch.full((n,), math.sin(math.radians(elev))), atol=1e-5, rtol=0
    )
    az = torch.atan2(centers[:, 1], centers[:, 0])
    steps = torch.remainder(az.roll(-1) - az, 2 * math.pi)
    torch.testing.assert_close(steps, torch.full((n,), 2 * math.pi / n), atol=1e-5, rtol=0)
    for c in cams:
        pix, _ = c.project(target[None])
        torch.testing.assert_close(pix[0], torch.tensor([16.0, 16.0]), atol=1e-4, rtol=0)


def test_fibonacci_cameras_cover_the_sphere_evenly():
    n = 200
    cams = fibonacci_cameras(n, radius=2.0, width=16, height=16)
    dirs = torch.stack([c.center for c in cams]) / 2.0
    torch.testing.assert_close(dirs.norm(dim=1), torch.ones(n), atol=1e-5, rtol=0)
    # Uniform on the sphere: mean direction ~ 0 and E[z^2] = 1/3.
    assert dirs.mean(0).norm() < 0.02
    assert (dirs[:, 2] ** 2).mean().item() == pytest.approx(1 / 3, abs=0.01)
    # The pole cameras (up parallel to the view direction) still get valid rotations.
    for c in cams:
        rot = c.viewmat[:3, :3].double()
        torch.testing.assert_close(
            rot @ rot.T, torch.eye(3, dtype=torch.float64), atol=1e-5, rtol=0
        )
    upper = fibonacci_cameras(50, upper_hemisphere=True)
    assert all(c.center[2] > 0 for c in upper)


def test_bad_inputs_raise_clear_errors():
    with pytest.raises(ValueError, match="n: expected a positive int"):
        orbit_cameras(0)
    with pytest.raises(ValueError, match="up"):
        look_at((0, 0, 2), (0, 0, 0), (0, 0, 1))
    with pytest.raises(ValueError, match="eye, target"):
        look_at((1, 1, 1), (1, 1, 1))
    with pytest.raises(ValueError, match=r"Camera.viewmat: expected a \[4, 4\]"):
        Camera(torch.eye(3), torch.eye(3), 4, 4)
    with pytest.raises(ValueError, match="width"):
        Camera(torch.eye(4), torch.eye(3), 0, 4)
    with pytest.raises(ValueError, match="fov_rad"):
        focal_from_fov(4.0, 10)
