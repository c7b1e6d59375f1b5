"""Spatial partition of a scene into blocks for block-wise training (CityGS / Momentum-GS).

A :class:`BlockPartition` is an axis-aligned grid of ``nx x ny x nz`` blocks whose cut
positions are quantiles of the scene's points along each axis, so every block holds about
the same number of points (CityGaussian's balanced split). The outermost faces of the grid
are open (they extend to infinity), so :func:`block_index` gives *every* point exactly one
owning block. For training, each block's core box is grown by ``overlap`` times its width on
each side (:func:`block_membership`), so a Gaussian near a cut belongs to the blocks on both
sides, and cameras are assigned to the blocks whose points they see
(:func:`assign_cameras`). All functions are pure: they return new tensors.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from .cameras import Camera

__all__ = [
    "BlockPartition",
    "assign_cameras",
    "block_index",
    "block_membership",
    "partition_points",
]


@dataclass(frozen=True, eq=False)
class BlockPartition:
    """A grid of blocks.

    Attributes:
        splits: per axis (x, y, z) the sorted interior cut positions, float64 ``[n_axis - 1]``;
            block ``i`` along an axis covers ``(splits[i - 1], splits[i]]`` with
            ``splits[-1] = -inf`` and ``splits[n_axis - 1] = +inf``.
        lo, hi: float64 ``[3]`` bounds of the points the grid was fitted to; they give the
            width of the open outer blocks when the overlap margin is computed.
        overlap: margin on each side of a block, as a fraction of the block's width.
    """

    splits: tuple[torch.Tensor, torch.Tensor, torch.Tensor]
    lo: torch.Tensor
    hi: torch.Tensor
    overlap: float

    @property
    def dims(self) -> tuple[int, int, int]:
        """Number of blocks along x, y, z."""
        return tuple(len(s) + 1 for s in self.splits)  # type: ignore[return-value]

    @property
    def num_blocks(self) -> int:
        nx, ny, nz = self.dims
        return nx * ny * nz

    def bounds(self, expanded: bool = False) -> torch.Tensor:
        """Boxes float64 ``[B, 2, 3]`` (min corner, max corner) of the blocks in
        :func:`block_index` order; open outer faces are ``-inf`` / ``+inf``.
        ``expanded=True`` adds the overlap margin."""
        per_axis = []
        for axis, cuts in enumerate(self.splits):
            inf = torch.tensor([float("inf")], dtype=torch.float64)
            edges = torch.cat([-inf, cuts, inf])
            a, b = edges[:-1], edges[1:]
            if expanded:
                # width of an open outer block = distance from its cut to the data bound
                width = b.clamp(max=float(self.hi[axis])) - a.clamp(min=float(self.lo[axis]))
                margin = self.overlap * width.clamp_min(0.0)
                a, b = a - margin, b + margin
            per_axis.append(torch.stack([a, b], dim=-1))  # [n_axis, 2]
        nx, ny, nz = self.dims
        ix, iy, iz = torch.meshgrid(
            torch.arange(nx), torch.arange(ny), torch.arange(nz), indexing="ij"
        )
        boxes = torch.stack(
            [per_axis[0][ix.flatten()], per_axis[1][iy.flatten()], per_axis[2][iz.flatten()]],
            dim=-1,
        )  # [B, 2, 3]
        return boxes


def _check_points(name: str, points: torch.Tensor) -> torch.Tensor:
    if not isinstance(points, torch.Tensor):
        raise TypeError(f"{name}: expected a torch.Tensor, got {type(points).__name__}")
    if points.ndim != 2 or points.shape[1] != 3:
        raise ValueError(f"{name}: expected shape [N, 3], got {list(points.shape)}")
    return points.detach().to(torch.float64)


def partition_points(
    points: torch.Tensor,
    dims: Sequence[int] = (2, 1, 1),
    overlap: float = 0.2,
    method: str = "quantile",
) -> BlockPartition:
    """Fit a ``dims = (nx, ny, nz)`` grid to ``points [N, 3]``.

    ``method="quantile"``: the cuts along each axis are the ``k / n_axis`` quantiles of the
    points' coordinates, so blocks hold equal shares of the points (CityGS).
    ``method="uniform"``: equal-width cuts between the points' min and max (VastGaussian's
    regular grid), for scenes whose content is evenly spread but unevenly sampled.

    ``overlap`` (>= 0): margin added on each side of a block, as a fraction of its width,
    when Gaussians and cameras are assigned for training (CityGS / VastGaussian expand the
    block boxes the same way so that neighbouring blocks agree at the seams).
    """
    pts = _check_points("points", points)
    if pts.shape[0] == 0:
        raise ValueError("points: expected at least one point, got none")
    dims = tuple(dims)
    if len(dims) != 3 or any(isinstance(d, bool) or not isinstance(d, int) or d < 1 for d in dims):
        raise ValueError(f"dims: expected three positive ints (nx, ny, nz), got {dims!r}")
    if not overlap >= 0.0:
        raise ValueError(f"overlap: expected >= 0, got {overlap!r}")
    if method not in ("quantile", "uniform"):
        raise ValueError(f"method: expected 'quantile' or 'uniform', got {method!r}")
    lo, hi = pts.min(0).values, pts.max(0).values
    splits = []
    for axis, n in enumerate(dims):
        q = torch.arange(1, n, dtype=torch.float64) / n
        if method == "quantile":
            splits.append(torch.quantile(pts[:, axis].contiguous(), q))
        else:
            splits.append(lo[axis] + q * (hi[axis] - lo[axis]))
    return BlockPartition(tuple(splits), lo, hi, float(overlap))  # type: ignore[arg-type]


def block_index(partition: BlockPartition, points: torch.Tensor) -> torch.Tensor:
    """The one block that owns each point: int64 ``[N]`` in ``[0, B)``, flat index
    ``(ix * ny + iy) * nz + iz``. Every point has an owner (the outer faces are open)."""
    pts = _check_points("points", points)
    _, ny, nz = partition.dims
    # right=False: x in (splits[i-1], splits[i]] -> i, matching BlockPartition.bounds
    ix, iy, iz = (torch.bucketize(pts[:, a].contiguous(), partition.splits[a]) for a in range(3))
    return (ix * ny + iy) * nz + iz


def block_membership(partition: BlockPartition, points: torch.Tensor) -> torch.Tensor:
    """bool ``[B, N]``: point ``n`` lies in block ``b``'s box grown by the overlap margin
    (``min - margin < x <= max + margin`` on every axis). Each point is a member of at
    least its owner block (:func:`block_index`)."""
    pts = _check_points("points", points)
    boxes = partition.bounds(expanded=True)  # [B, 2, 3]
    inside = (pts[None] > boxes[:, None, 0]) & (pts[None] <= boxes[:, None, 1])
    member = inside.all(dim=-1)
    # the owner must hold the point even when a margin of 0 meets float round-off
    member[block_index(partition, pts), torch.arange(pts.shape[0])] = True
    return member


def assign_cameras(
    partition: BlockPartition,
    cameras: Sequence[Camera],
    points: torch.Tensor,
    min_visible: float = 0.25,
) -> torch.Tensor:
    """bool ``[B, V]``: camera ``v`` trains block ``b``.

    A camera goes to every block of which at least ``min_visible`` of the member points
    (:func:`block_membership` of ``points [N, 3]``) project inside its image in front of it,
    and always to the block it sees the largest share of, so every camera is used (the
    visibility rule of VastGaussian / CityGS, simplified to a point-count ratio).
    """
    pts = _check_points("points", points)
    if not 0.0 <= min_visible <= 1.0:
        raise ValueError(f"min_visible: expected in [0, 1], got {min_visible!r}")
    if len(cameras) == 0:
        raise ValueError("cameras: expected at least one camera, got none")
    member = block_membership(partition, pts).double()  # [B, N]
    counts = member.sum(dim=1).clamp_min(1.0)
    share = torch.empty(partition.num_blocks, len(cameras), dtype=torch.float64)
    for v, cam in enumerate(cameras):
        pix, z = cam.project(pts.float())
        seen = (
            (z > 0)
            & (pix[:, 0] >= 0) & (pix[:, 0] < cam.width)
            & (pix[:, 1] >= 0) & (pix[:, 1] < cam.height)
        ).float()  # fmt: skip
        share[:, v] = (member @ seen.double()) / counts
    assigned = share >= min_visible
    assigned[share.argmax(dim=0), torch.arange(len(cameras))] = True
    return assigned
