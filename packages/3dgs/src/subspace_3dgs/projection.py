"""Projection of 3-D Gaussians to screen-space 2-D Gaussians (EWA splatting).

Cameras follow the OpenCV convention: ``viewmat [4, 4]`` maps world to camera coordinates
(x right, y down, z forward) and ``K [3, 3]`` holds ``fx, fy, cx, cy`` in pixels; pixel centres
sit at integer + 0.5.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .cameras import camera_center
from .gaussians import EPS2D_3DGS
from .sh import eval_sh

__all__ = [
    "ALPHA_THRESHOLD",
    "Projected",
    "project_gaussians",
    "view_dependent_colors",
]

# Contributions below this alpha are skipped (3DGS); it also bounds the screen-space extent.
ALPHA_THRESHOLD = 1.0 / 255.0


@dataclass
class Projected:
    """Screen-space Gaussians; rows of culled Gaussians hold finite dummies and ``radii == 0``.

    Attributes:
        means2d: ``[N, 2]`` pixel coordinates of the projected centres.
        depths: ``[N]`` camera-space z of the centres.
        cov2d: ``[N, 2, 2]`` screen-space covariances including the low-pass dilation.
        conics: ``[N, 3]`` upper triangle ``(a, b, c)`` of the inverse of ``cov2d``.
        radii: ``[N]`` integer pixel radius of the bounding square, 0 when culled.
        visible: ``[N]`` bool, ``radii > 0``.
    """

    means2d: torch.Tensor
    depths: torch.Tensor
    cov2d: torch.Tensor
    conics: torch.Tensor
    radii: torch.Tensor
    visible: torch.Tensor


def view_dependent_colors(
    sh: torch.Tensor, means: torch.Tensor, viewmat: torch.Tensor, degree: int
) -> torch.Tensor:
    """Colours ``[N, C] = max(eval_sh(degree, sh, means - camera_centre) + 0.5, 0)`` (3DGS)."""
    dirs = means - camera_center(viewmat).to(means.dtype)
    return (eval_sh(degree, sh, dirs) + 0.5).clamp_min(0.0)


def project_gaussians(
    means: torch.Tensor,
    covs3d: torch.Tensor,
    opacities: torch.Tensor,
    viewmat: torch.Tensor,
    K: torch.Tensor,
    width: int,
    height: int,
    *,
    near: float = 0.01,
    far: float = 1e10,
    eps2d: float = EPS2D_3DGS,
    sigma_cutoff: float = 3.0,
    jacobian_margin: float = 0.3,
) -> Projected:
    """Project 3-D Gaussians with the local affine (EWA) approximation of Zwicker et al. 2001.

    ``cov2d = J W cov3d W^T J^T + eps2d * I`` where ``W`` is the camera rotation and ``J`` the
    Jacobian of the perspective map at the centre. ``eps2d`` (0.3 px^2 in 3DGS) is the
    variance of a screen-space low-pass filter: it keeps every splat at least about a pixel
    wide so that tiny or far Gaussians cannot fall between pixel centres (aliasing) and
    ``cov2d`` stays invertible.

    Args:
        means: ``[N, 3]`` world centres.
        covs3d: ``[N, 3, 3]`` world covariances.
        opacities: ``[N]`` activated opacities; used only (without gradient) to shrink the
            radius to where ``opacity * exp(-r^2 / 2) >= 1/255``, beyond which nothing is drawn.
        viewmat, K, width, height: the camera (module docstring).
        near, far: Gaussians with centre depth outside ``(near, far)`` are culled.
        eps2d: low-pass dilation added to the 2-D covariance diagonal, in px^2.
        sigma_cutoff: splats are truncated at this Mahalanobis distance (3 sigma in 3DGS).
        jacobian_margin: the Jacobian is evaluated with ``x/z, y/z`` clamped to the image
            frustum widened on each side by this fraction of ``tan(fov/2)``, i.e. of half the
            image (0.3: 3DGS's ``1.3 tan(fov/2)`` limit, gsplat's too), because the affine
            approximation explodes for centres far outside.

    Returns:
        :class:`Projected`.
    """
    n = means.shape[0]
    R = viewmat[:3, :3].to(means.dtype)
    t = viewmat[:3, 3].to(means.dtype)
    p_cam = means @ R.T + t
    x, y, z = p_cam.unbind(-1)
    fx, fy, cx, cy = K[0, 0], K[1, 1], K[0, 2], K[1, 2]
    in_depth = (z > near) & (z < far)
    # culled rows get a harmless depth so the divisions below stay finite (their gradient is
    # masked out later)
    zs = torch.where(in_depth, z, torch.ones_like(z))

    # 3DGS clamps x/z to 1.3 tan(fov/2) = half the image plus 0.3 of the half-width
    mx_, my_ = jacobian_margin * 0.5 * width / fx, jacobian_margin * 0.5 * height / fy
    tx = torch.minimum(torch.maximum(x / zs, -cx / fx - mx_), (width - cx) / fx + mx_)
    ty = torch.minimum(torch.maximum(y / zs, -cy / fy - my_), (height - cy) / fy + my_)
    zero = torch.zeros_like(zs)
    J = torch.stack([fx / zs, zero, -fx * tx / zs, zero, fy / zs, -fy * ty / zs], dim=-1).reshape(
        n, 2, 3
    )
    M = J @ R
    cov2d = M @ covs3d @ M.transpose(1, 2)
    cov2d = cov2d + eps2d * torch.eye(2, dtype=cov2d.dtype, device=cov2d.device)

    a, b, c = cov2d[:, 0, 0], cov2d[:, 0, 1], cov2d[:, 1, 1]
    det = a * c - b * b
    valid = in_depth & (det > 0)
    det_safe = torch.where(valid, det, torch.ones_like(det))
    conics = torch.stack([c / det_safe, -b / det_safe, a / det_safe], dim=-1)
    means2d = torch.stack([fx * x / zs + cx, fy * y / zs + cy], dim=-1)

    with torch.no_grad():
        half_tr = 0.5 * (a + c)
        lam_max = half_tr + (half_tr * half_tr - det).clamp_min(0.0).sqrt()
        # beyond this Mahalanobis distance alpha < 1/255 anyway, so the box can be tighter
        extent = torch.sqrt(2.0 * torch.log(opacities.detach() / ALPHA_THRESHOLD).clamp_min(0.0))
        extent = extent.clamp_max(sigma_cutoff)
        radii = torch.ceil(extent * lam_max.clamp_min(0.0).sqrt()).to(torch.int64)
        mx, my = means2d[:, 0], means2d[:, 1]
        on_screen = (
            (mx + radii > 0) & (mx - radii < width) & (my + radii > 0) & (my - radii < height)
        )
        visible = valid & on_screen & (radii > 0)
        radii = torch.where(visible, radii, torch.zeros_like(radii))
    return Projected(means2d, z, cov2d, conics, radii, visible)
