"""Pinhole cameras in the OpenCV convention and standard camera rigs.

A camera maps a world point ``p`` to camera coordinates ``viewmat @ [p, 1]`` (x right,
y down, z forward, so visible points have z > 0) and to pixels ``K @ (x/z, y/z, 1)``, with
pixel centres at integer + 0.5 (pixel ``(0, 0)`` covers ``[0, 1) x [0, 1)``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch

__all__ = [
    "Camera",
    "camera_center",
    "fibonacci_cameras",
    "focal_from_fov",
    "fov_from_focal",
    "intrinsics_from_fov",
    "look_at",
    "orbit_cameras",
]

Vec3 = Sequence[float] | torch.Tensor


def _vec3(value: Vec3, name: str) -> torch.Tensor:
    t = torch.as_tensor(value, dtype=torch.float64)
    if t.shape != (3,) or not torch.isfinite(t).all():
        raise ValueError(f"{name}: expected 3 finite numbers, got shape {tuple(t.shape)}")
    return t


def _check_size(width: int, height: int) -> None:
    for name, v in (("width", width), ("height", height)):
        if isinstance(v, bool) or not isinstance(v, int) or v <= 0:
            raise ValueError(f"{name}: expected a positive int, got {v!r}")


@dataclass(frozen=True, eq=False)
class Camera:
    """One pinhole camera.

    ``viewmat``: float32 ``[4, 4]`` world->camera rigid transform (OpenCV axes);
    ``K``: float32 ``[3, 3]`` intrinsics ``[[fx, 0, cx], [0, fy, cy], [0, 0, 1]]`` in pixels;
    ``width``, ``height``: image size in pixels; ``name``: free label (an image file stem).
    """

    viewmat: torch.Tensor
    K: torch.Tensor
    width: int
    height: int
    name: str = ""

    def __post_init__(self) -> None:
        if not isinstance(self.viewmat, torch.Tensor) or self.viewmat.shape != (4, 4):
            raise ValueError(
                f"Camera.viewmat: expected a [4, 4] tensor, got "
                f"{getattr(self.viewmat, 'shape', type(self.viewmat).__name__)}"
            )
        if not isinstance(self.K, torch.Tensor) or self.K.shape != (3, 3):
            raise ValueError(
                f"Camera.K: expected a [3, 3] tensor, got "
                f"{getattr(self.K, 'shape', type(self.K).__name__)}"
            )
        _check_size(self.width, self.height)
        bottom = self.viewmat[3].double()
        if not torch.allclose(bottom, torch.tensor([0.0, 0.0, 0.0, 1.0], dtype=torch.float64)):
            raise ValueError(
                f"Camera.viewmat: expected last row [0, 0, 0, 1], got {bottom.tolist()}"
            )
        object.__setattr__(self, "viewmat", self.viewmat.detach().to(torch.float32))
        object.__setattr__(self, "K", self.K.detach().to(torch.float32))

    @property
    def center(self) -> torch.Tensor:
        """Camera centre in world coordinates, ``[3]``."""
        return camera_center(self.viewmat)

    @property
    def fov_x(self) -> float:
        """Horizontal field of view in radians."""
        return fov_from_focal(float(self.K[0, 0]), self.width)

    @property
    def fov_y(self) -> float:
        """Vertical field of view in radians."""
        return fov_from_focal(float(self.K[1, 1]), self.height)

    def project(self, points: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Pixels ``[N, 2]`` (x, y) and depths ``[N]`` (camera z) of world ``points [N, 3]``."""
        if points.ndim != 2 or points.shape[1] != 3:
            raise ValueError(f"points: expected [N, 3], got {tuple(points.shape)}")
        cam = points.to(self.viewmat) @ self.viewmat[:3, :3].T + self.viewmat[:3, 3]
        z = cam[:, 2]
        uv = cam[:, :2] / z[:, None]
        pix = uv * torch.stack([self.K[0, 0], self.K[1, 1]]) + self.K[:2, 2]
        return pix, z


def focal_from_fov(fov_rad: float, size: int) -> float:
    """Focal length in pixels for a field of view ``fov_rad`` across ``size`` pixels."""
    if not 0.0 < fov_rad < math.pi:
        raise ValueError(f"fov_rad: expected a value in (0, pi), got {fov_rad!r}")
    return 0.5 * size / math.tan(0.5 * fov_rad)


def fov_from_focal(focal: float, size: int) -> float:
    """Field of view in radians of a focal length ``focal`` (pixels) across ``size`` pixels."""
    if not focal > 0.0:
        raise ValueError(f"focal: expected a positive number, got {focal!r}")
    return 2.0 * math.atan(0.5 * size / focal)


def intrinsics_from_fov(fov_deg: float, width: int, height: int) -> torch.Tensor:
    """``K [3, 3]`` with square pixels, horizontal field of view ``fov_deg``, centred principal
    point ``(width / 2, height / 2)``."""
    _check_size(width, height)
    f = focal_from_fov(math.radians(fov_deg), width)
    return torch.tensor(
        [[f, 0.0, width / 2.0], [0.0, f, height / 2.0], [0.0, 0.0, 1.0]], dtype=torch.float32
    )


def look_at(eye: Vec3, target: Vec3 = (0.0, 0.0, 0.0), up: Vec3 = (0.0, 0.0, 1.0)) -> torch.Tensor:
    """World->camera ``viewmat [4, 4]`` (OpenCV) of a camera at ``eye`` looking at ``target``.

    The image's up direction (-y) is the projection of ``up`` on the image plane.
    """
    e, t, u = _vec3(eye, "eye"), _vec3(target, "target"), _vec3(up, "up")
    forward = t - e
    if forward.norm() < 1e-12:
        raise ValueError("eye, target: expected distinct points, got the same point")
    z = forward / forward.norm()
    x = torch.linalg.cross(z, u)
    if x.norm() < 1e-9 * max(float(u.norm()), 1e-300):
        raise ValueError(
            f"up: expected a direction not parallel to the view direction, got {u.tolist()}"
        )
    x = x / x.norm()
    # y points down in OpenCV, so y = z cross x (and -y follows `up`).
    y = torch.linalg.cross(z, x)
    rot = torch.stack([x, y, z])  # rows: camera axes in world coordinates
    view = torch.eye(4, dtype=torch.float64)
    view[:3, :3] = rot
    view[:3, 3] = -rot @ e
    return view.to(torch.float32)


def camera_center(viewmat: torch.Tensor) -> torch.Tensor:
    """World position ``[3]`` of the camera with world->camera ``viewmat [4, 4]``: ``-R^T t``."""
    if viewmat.shape != (4, 4):
        raise ValueError(f"viewmat: expected [4, 4], got {tuple(viewmat.shape)}")
    rot, trans = viewmat[:3, :3], viewmat[:3, 3]
    return -(rot.T @ trans)


def _rig(
    eyes: torch.Tensor,
    target: torch.Tensor,
    up: torch.Tensor,
    fov_deg: float,
    width: int,
    height: int,
    prefix: str,
) -> list[Camera]:
    K = intrinsics_from_fov(fov_deg, width, height)
    cams = []
    for i, eye in enumerate(eyes):
        up_i = up
        # At the poles the requested up is parallel to the view direction: pick another one.
        if torch.linalg.cross(target - eye, up).norm() < 1e-6 * (target - eye).norm():
            up_i = torch.tensor([0.0, 1.0, 0.0], dtype=torch.float64)
        cams.append(
            Camera(look_at(eye, target, up_i), K.clone(), width, height, f"{prefix}_{i:03d}")
        )
    return cams


def orbit_cameras(
    n: int,
    radius: float = 3.0,
    elevation_deg: float = 20.0,
    target: Vec3 = (0.0, 0.0, 0.0),
    fov_deg: float = 45.0,
    width: int = 64,
    height: int = 64,
    *,
    up: Vec3 = (0.0, 0.0, 1.0),
) -> list[Camera]:
    """``n`` cameras on a turntable ring around ``target`` (``up`` = z), evenly spaced in
    azimuth starting at +x, all at ``elevation_deg`` above the ring plane and distance
    ``radius``, looking at ``target``."""
    if isinstance(n, bool) or not isinstance(n, int) or n <= 0:
        raise ValueError(f"n: expected a positive int, got {n!r}")
    if not radius > 0:
        raise ValueError(f"radius: expected a positive number, got {radius!r}")
    t, u = _vec3(target, "target"), _vec3(up, "up")
    u = u / u.norm()
    # An orthonormal basis (a, b) of the ring plane.
    helper = torch.tensor([1.0, 0.0, 0.0], dtype=torch.float64)
    if abs(float(u @ helper)) > 0.9:
        helper = torch.tensor([0.0, 1.0, 0.0], dtype=torch.float64)
    a = helper - (helper @ u) * u
    a = a / a.norm()
    b = torch.linalg.cross(u, a)
    az = torch.arange(n, dtype=torch.float64) * (2.0 * math.pi / n)
    el = math.radians(elevation_deg)
    dirs = (
        math.cos(el) * (torch.cos(az)[:, None] * a + torch.sin(az)[:, None] * b) + math.sin(el) * u
    )
    return _rig(t + radius * dirs, t, u, fov_deg, width, height, "orbit")


def fibonacci_cameras(
    n: int,
    radius: float = 3.0,
    target: Vec3 = (0.0, 0.0, 0.0),
    fov_deg: float = 45.0,
    width: int = 64,
    height: int = 64,
    *,
    up: Vec3 = (0.0, 0.0, 1.0),
    upper_hemisphere: bool = False,
) -> list[Camera]:
    """``n`` cameras spread near-uniformly on a sphere (Fibonacci lattice) of ``radius``
    around ``target``, looking at it; ``upper_hemisphere`` keeps them above the ``up`` plane
    (as in the NeRF-synthetic captures)."""
    if isinstance(n, bool) or not isinstance(n, int) or n <= 0:
        raise ValueError(f"n: expected a positive int, got {n!r}")
    if not radius > 0:
        raise ValueError(f"radius: expected a positive number, got {radius!r}")
    t, u = _vec3(target, "target"), _vec3(up, "up")
    u = u / u.norm()
    i = torch.arange(n, dtype=torch.float64) + 0.5
    # Heights uniform in [-1, 1] (or [0, 1]) give equal areas (Archimedes); golden-angle azimuths.
    h = 1.0 - i / n if upper_hemisphere else 1.0 - 2.0 * i / n
    phi = i * math.pi * (3.0 - math.sqrt(5.0))
    r = torch.sqrt((1.0 - h * h).clamp_min(0.0))
    helper = torch.tensor([1.0, 0.0, 0.0], dtype=torch.float64)
    if abs(float(u @ helper)) > 0.9:
        helper = torch.tensor([0.0, 1.0, 0.0], dtype=torch.float64)
    a = helper - (helper @ u) * u
    a = a / a.norm()
    b = torch.linalg.cross(u, a)
    dirs = (r * torch.cos(phi))[:, None] * a + (r * torch.sin(phi))[:, None] * b + h[:, None] * u
    return _rig(t + radius * dirs, t, u, fov_deg, width, height, "fib")
