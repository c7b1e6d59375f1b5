"""The trainable Gaussian-splat container: raw parameters plus their activations."""

from __future__ import annotations

import math

import torch
from torch import nn

from .sh import max_sh_degree, num_sh_bases, rgb_to_sh

__all__ = ["EPS2D_3DGS", "Gaussians", "check_eps2d", "quat_to_rotmat"]


def quat_to_rotmat(quats: torch.Tensor) -> torch.Tensor:
    """Rotation matrices ``[N, 3, 3]`` from quaternions ``[N, 4]`` (w, x, y, z).

    The quaternions are normalised here, so the raw (unnormalised) parameter can be optimised
    freely, as in 3DGS.
    """
    if quats.ndim != 2 or quats.shape[-1] != 4:
        raise ValueError(f"quats: expected shape [N, 4], got {tuple(quats.shape)}")
    w, x, y, z = (quats / quats.norm(dim=-1, keepdim=True).clamp_min(1e-12)).unbind(-1)
    rows = [
        1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y),
        2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x),
        2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y),
    ]  # fmt: skip
    return torch.stack(rows, dim=-1).reshape(-1, 3, 3)


#: Variance (px^2) of 3DGS's screen-space low-pass filter, the default render setting.
EPS2D_3DGS = 0.3


def check_eps2d(eps2d: float) -> float:
    """``eps2d`` as a float; raises ValueError unless it is a finite number >= 0."""
    if isinstance(eps2d, bool) or not isinstance(eps2d, int | float) or not (
        math.isfinite(eps2d) and eps2d >= 0.0
    ):
        raise ValueError(f"eps2d: expected a finite number >= 0 (px^2), got {eps2d!r}")
    return float(eps2d)


class Gaussians(nn.Module):
    """A set of N 3-D Gaussians with raw (pre-activation) parameters.

    Parameters (all ``nn.Parameter``):
        means ``[N, 3]``: centres in world coordinates.
        quats ``[N, 4]``: rotations as (w, x, y, z) quaternions, normalised on use.
        log_scales ``[N, 3]``: log of the per-axis standard deviations.
        opacity_logits ``[N]``: opacity before the sigmoid.
        sh ``[N, K, C]``: real SH coefficients, ``K = (d+1)^2`` for degree ``d <= 3``;
            rendered colour is ``max(eval_sh(...) + 0.5, 0)``.
        features ``[N, F]`` or None: extra per-Gaussian features rendered alongside colour.

    Render setting:
        eps2d: variance (px^2) of the screen-space low-pass filter added to every projected
            covariance (0.3 in 3DGS). Splats are fitted *through* this filter, so they only
            reproduce their training images when rendered with the same value:
            :func:`~subspace_3dgs.rasterize.rasterize` uses it unless told otherwise. It is not
            a tensor (not in the state dict); checkpoints record it in their metadata or model
            card.
    """

    def __init__(
        self,
        means: torch.Tensor,
        quats: torch.Tensor,
        log_scales: torch.Tensor,
        opacity_logits: torch.Tensor,
        sh: torch.Tensor,
        features: torch.Tensor | None = None,
        *,
        eps2d: float = EPS2D_3DGS,
    ) -> None:
        super().__init__()
        self.eps2d = check_eps2d(eps2d)
        n = check_shape("means", means, (None, 3))[0]
        check_shape("quats", quats, (n, 4))
        check_shape("log_scales", log_scales, (n, 3))
        check_shape("opacity_logits", opacity_logits, (n,))
        check_shape("sh", sh, (n, None, None))
        max_sh_degree(sh.shape[1])  # validates K
        if features is not None:
            check_shape("features", features, (n, None))
        self.means = nn.Parameter(means.detach().clone())
        self.quats = nn.Parameter(quats.detach().clone())
        self.log_scales = nn.Parameter(log_scales.detach().clone())
        self.opacity_logits = nn.Parameter(opacity_logits.detach().clone())
        self.sh = nn.Parameter(sh.detach().clone())
        self.features = None if features is None else nn.Parameter(features.detach().clone())

    @classmethod
    def from_points(
        cls,
        xyz: torch.Tensor,
        rgb: torch.Tensor | None = None,
        sh_degree: int = 3,
        *,
        feature_dim: int = 0,
        initial_opacity: float = 0.1,
        num_neighbors: int = 3,
        chunk_size: int = 1024,
        eps2d: float = EPS2D_3DGS,
    ) -> Gaussians:
        """Initialise isotropic Gaussians on a point cloud, as 3DGS does from SfM points.

        Args:
            xyz: ``[N, 3]`` points (N >= 2).
            rgb: ``[N, 3]`` colours in [0, 1], or None for mid-grey; stored as the DC SH term.
            sh_degree: SH degree (0..3); higher-order coefficients start at zero.
            feature_dim: width F of zero-initialised extra features (0 for none).
            initial_opacity: opacity of every Gaussian (0.1 in 3DGS).
            num_neighbors: the scale is the RMS distance to this many nearest neighbours.
            chunk_size: rows of the pairwise-distance matrix computed at once (bounds memory
                at ``chunk_size * N`` floats).
            eps2d: the render setting (see the class doc).
        """
        n = check_shape("xyz", xyz, (None, 3))[0]
        if n < 2:
            raise ValueError(f"xyz: expected at least 2 points, got {n}")
        if rgb is not None:
            check_shape("rgb", rgb, (n, 3))
        if not 0.0 < initial_opacity < 1.0:
            raise ValueError(f"initial_opacity: expected in (0, 1), got {initial_opacity}")
        xyz = xyz.detach()
        k = min(num_neighbors, n - 1)
        sq_dists = []
        for start in range(0, n, chunk_size):
            d = torch.cdist(xyz[start : start + chunk_size], xyz)
            # k+1 smallest include the point itself (distance 0), dropped below
            sq_dists.append(d.topk(k + 1, dim=1, largest=False).values[:, 1:].square().mean(1))
        # clamp: duplicated points would otherwise give log(0)
        log_scales = 0.5 * torch.cat(sq_dists).clamp_min(1e-14).log()
        sh = torch.zeros(n, num_sh_bases(sh_degree), 3, dtype=xyz.dtype, device=xyz.device)
        if rgb is not None:
            sh[:, 0] = rgb_to_sh(rgb.detach().to(xyz.dtype))
        quats = torch.zeros(n, 4, dtype=xyz.dtype, device=xyz.device)
        quats[:, 0] = 1.0
        logit = math.log(initial_opacity / (1.0 - initial_opacity))
        features = (
            torch.zeros(n, feature_dim, dtype=xyz.dtype, device=xyz.device)
            if feature_dim > 0
            else None
        )
        return cls(
            means=xyz,
            quats=quats,
            log_scales=log_scales[:, None].expand(n, 3),
            opacity_logits=torch.full((n,), logit, dtype=xyz.dtype, device=xyz.device),
            sh=sh,
            features=features,
            eps2d=eps2d,
        )

    @property
    def num_gaussians(self) -> int:
        return self.means.shape[0]

    def extra_repr(self) -> str:
        return f"num_gaussians={self.num_gaussians}, sh_degree={self.sh_degree}, eps2d={self.eps2d}"

    @property
    def sh_degree(self) -> int:
        return max_sh_degree(self.sh.shape[1])

    def scales(self) -> torch.Tensor:
        """Per-axis standard deviations ``[N, 3]`` (``exp(log_scales)``)."""
        return self.log_scales.exp()

    def opacities(self) -> torch.Tensor:
        """Opacities ``[N]`` in (0, 1) (``sigmoid(opacity_logits)``)."""
        return torch.sigmoid(self.opacity_logits)

    def rotations(self) -> torch.Tensor:
        """Rotation matrices ``[N, 3, 3]`` from the normalised quaternions."""
        return quat_to_rotmat(self.quats)

    def covariances(self) -> torch.Tensor:
        """World-space covariances ``[N, 3, 3] = R S S^T R^T`` with ``S = diag(scales)``."""
        rs = self.rotations() * self.scales()[:, None, :]
        return rs @ rs.transpose(1, 2)


def check_shape(name: str, t: torch.Tensor, shape: tuple[int | None, ...]) -> torch.Size:
    """Raise a ValueError naming ``name`` unless ``t`` matches ``shape`` (None = any size)."""
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name}: expected a torch.Tensor, got {type(t).__name__}")
    ok = t.ndim == len(shape) and all(
        s is None or s == a for s, a in zip(shape, t.shape, strict=True)
    )
    if not ok:
        want = "[" + ", ".join("*" if s is None else str(s) for s in shape) + "]"
        raise ValueError(f"{name}: expected shape {want}, got {list(t.shape)}")
    return t.shape
