"""Spatial block partition: coverage, overlap margins, camera assignment."""

import pytest
import torch

from subspace_3dgs.blocks import (
    assign_cameras,
    block_index,
    block_membership,
    partition_points,
)
from subspace_3dgs.cameras import Camera, intrinsics_from_fov, look_at


def _points(n=2000, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 3, generator=g) * torch.tensor([8.0, 4.0, 2.0]) - 1.0


def test_quantile_cuts_balance_the_blocks_and_every_point_has_one_owner():
    pts = _points()
    part = partition_points(pts, (4, 2, 1), overlap=0.0)
    assert part.num_blocks == 8
    owner = block_index(part, pts)
    assert owner.min() >= 0 and owner.max() < 8
    # the cuts are per-axis quantiles, so each axis' slabs hold equal shares (up to the
    # point sitting on a cut); flat index = ix * 2 + iy here
    slabs_x = torch.bincount(owner // 2, minlength=4)
    slabs_y = torch.bincount(owner % 2, minlength=2)
    assert (slabs_x - 500).abs().max() <= 1
    assert (slabs_y - 1000).abs().max() <= 1
    # points far outside the fitted data still get an owner (open outer faces)
    far = torch.tensor([[-100.0, -100.0, -100.0], [100.0, 100.0, 100.0]])
    assert block_index(part, far).tolist() == [0, 7]


def test_owner_agrees_with_the_core_boxes():
    pts = _points()
    part = partition_points(pts, (3, 2, 2), overlap=0.0)
    boxes = part.bounds()
    owner = block_index(part, pts)
    p = pts.double()
    inside = ((p[None] > boxes[:, None, 0]) & (p[None] <= boxes[:, None, 1])).all(-1)
    # exactly one core box holds each point, and it is the owner
    assert (inside.sum(0) == 1).all()
    assert torch.equal(inside.float().argmax(0), owner)


def test_uniform_cuts_are_equally_spaced():
    pts = torch.tensor([[0.0, 0.0, 0.0], [9.0, 1.0, 1.0], [0.5, 0.2, 0.3]])
    part = partition_points(pts, (3, 1, 1), method="uniform")
    torch.testing.assert_close(part.splits[0], torch.tensor([3.0, 6.0], dtype=torch.float64))


def test_membership_respects_the_overlap_margin():
    # two blocks along x with the cut at 5 (data from 0 to 10): widths 5, margin 0.2 * 5 = 1
    pts = torch.tensor([[0.0, 0, 0], [10.0, 0, 0]])
    part = partition_points(pts, (2, 1, 1), overlap=0.2, method="uniform")
    xs = torch.tensor([4.9, 5.0, 5.1, 5.9, 6.1, 4.1, 3.9])
    probe = torch.stack([xs, torch.zeros(7), torch.zeros(7)], dim=1)
    member = block_membership(part, probe)
    # block 0 core (-inf, 5], grown to (-inf, 6]; block 1 core (5, inf), grown to (4, inf)
    assert member[0].tolist() == [True, True, True, True, False, True, True]
    assert member[1].tolist() == [True, True, True, True, True, True, False]
    # membership contains ownership
    owner = block_index(part, probe)
    assert member[owner, torch.arange(7)].all()


def test_zero_overlap_membership_is_ownership():
    pts = _points(500)
    part = partition_points(pts, (2, 2, 1), overlap=0.0)
    member = block_membership(part, pts)
    assert (member.sum(0) == 1).all()
    assert torch.equal(member.float().argmax(0), block_index(part, pts))


def test_cameras_go_to_the_blocks_they_see_and_every_camera_is_used():
    # two point clusters at x = -3 and x = +3; cameras close to each, looking at it
    g = torch.Generator().manual_seed(1)
    left = torch.randn(300, 3, generator=g) * 0.3 + torch.tensor([-3.0, 0, 0])
    right = torch.randn(300, 3, generator=g) * 0.3 + torch.tensor([3.0, 0, 0])
    pts = torch.cat([left, right])
    part = partition_points(pts, (2, 1, 1), overlap=0.1, method="uniform")
    K = intrinsics_from_fov(40.0, 32, 32)
    cams = [
        Camera(look_at((-3.0, -2.0, 0.5), (-3.0, 0, 0)), K, 32, 32),
        Camera(look_at((3.0, -2.0, 0.5), (3.0, 0, 0)), K, 32, 32),
        Camera(look_at((0.0, -15.0, 1.0), (0.0, 0, 0)), K, 32, 32),  # sees both
        Camera(look_at((0.0, 5.0, 30.0), (0.0, 0, 100.0)), K, 32, 32),  # sees nothing
    ]
    assigned = assign_cameras(part, cams, pts, min_visible=0.5)
    assert assigned[:, 0].tolist() == [True, False]
    assert assigned[:, 1].tolist() == [False, True]
    assert assigned[:, 2].tolist() == [True, True]
    assert assigned.any(dim=0).all()  # even the camera that sees nothing has a block


def test_bad_arguments_raise_clear_errors():
    pts = _points(10)
    with pytest.raises(ValueError, match="dims"):
        partition_points(pts, (0, 1, 1))
    with pytest.raises(ValueError, match="overlap"):
        partition_points(pts, (2, 1, 1), overlap=-0.1)
    with pytest.raises(ValueError, match="points"):
        partition_points(pts[:, :2])
    with pytest.raises(ValueError, match="method"):
        partition_points(pts, method="kmeans")
    with pytest.raises(TypeError, match="points"):
        partition_points(pts.numpy())
