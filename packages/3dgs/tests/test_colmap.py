"""COLMAP sparse models: round trips through an independent writer, projection, bad files."""

import dataclasses
import math
import struct

import numpy as np
import pytest
import torch

from subspace_3dgs.colmap import (
    CAMERA_MODELS,
    ColmapCamera,
    find_sparse_dir,
    qvec_to_rotmat,
    read_colmap_model,
)
from subspace_3dgs.scenes import load_colmap, load_colmap_or_nerf

MODEL_IDS = {name: i for i, (name, _) in CAMERA_MODELS.items()}

# (id, model, width, height, params)
CAMERAS = [
    (1, "PINHOLE", 40, 30, (35.0, 33.0, 20.5, 14.0)),
    (2, "SIMPLE_RADIAL", 32, 24, (28.0, 16.0, 12.5, 0.01)),
    (7, "OPENCV", 40, 30, (30.0, 31.0, 19.0, 15.5, 0.1, -0.02, 0.001, 0.002)),
    (9, "SIMPLE_PINHOLE", 20, 20, (25.0, 10.0, 10.0)),
]


def _axis_angle(axis, angle):
    """Rotation matrix (Rodrigues) and COLMAP qvec (w, x, y, z) of the same rotation."""
    a = np.asarray(axis, dtype=np.float64)
    a = a / np.linalg.norm(a)
    k = np.array([[0, -a[2], a[1]], [a[2], 0, -a[0]], [-a[1], a[0], 0]])
    rot = np.eye(3) + math.sin(angle) * k + (1 - math.cos(angle)) * k @ k
    qvec = np.concatenate([[math.cos(angle / 2)], math.sin(angle / 2) * a])
    return rot, qvec


def _synthetic_model(seed=0):
    """Cameras, posed images and points with observations made by pinhole projection."""
    rng = np.random.default_rng(seed)
    points = rng.uniform(-0.5, 0.5, size=(6, 3))
    colors = rng.integers(0, 256, size=(6, 3))
    images = []
    for iid, (cid, name) in enumerate([(1, "b.png"), (2, "a 1.png"), (7, "c.png"), (9, "d.png")]):
        rot, qvec = _axis_angle(rng.normal(size=3), rng.uniform(0.1, 0.6))
        # camera 4 units in front of the points along its own axis
        tvec = np.array([0.05, -0.1, 4.0]) + rng.normal(size=3) * 0.05
        cam = next(c for c in CAMERAS if c[0] == cid)
        p = cam[4]
        single_focal = cam[1] in ("SIMPLE_PINHOLE", "SIMPLE_RADIAL")
        fx, fy, cx, cy = (p[0], p[0], p[1], p[2]) if single_focal else p[:4]
        xc = points @ rot.T + tvec
        xy = np.stack([fx * xc[:, 0] / xc[:, 2] + cx, fy * xc[:, 1] / xc[:, 2] + cy], axis=1)
        # observe every other point, plus one keypoint without a 3-D point
        pids = np.arange(len(points))[iid % 2 :: 2]
        obs = [(x, y, int(pid) + 100) for (x, y), pid in zip(xy[pids], pids, strict=True)]
        obs.append((1.5, 2.5, -1))
        images.append((iid + 10, qvec, tvec, cid, name, obs))
    pts = [
        (i + 100, points[i], colors[i], 0.25 * i, [(10 + j, 0) for j in range(i % 3 + 1)])
        for i in range(len(points))
    ]
    return images, pts


def _write_bin(folder, images, points, cameras=CAMERAS):
    folder.mkdir(parents=True, exist_ok=True)
    out = struct.pack("<Q", len(cameras))
    for cid, model, w, h, params in cameras:
        out += struct.pack("<iiQQ", cid, MODEL_IDS[model], w, h)
        out += struct.pack(f"<{len(params)}d", *params)
    (folder / "cameras.bin").write_bytes(out)
    out = struct.pack("<Q", len(images))
    for iid, qvec, tvec, cid, name, obs in images:
        out += struct.pack("<i4d3di", iid, *qvec, *tvec, cid) + name.encode() + b"\0"
        out += struct.pack("<Q", len(obs))
        for x, y, pid in obs:
            out += struct.pack("<ddq", x, y, pid)
    (folder / "images.bin").write_bytes(out)
    out = struct.pack("<Q", len(points))
    for pid, xyz, rgb, err, track in points:
        out += struct.pack("<Q3d3BdQ", pid, *xyz, *(int(c) for c in rgb), err, len(track))
        for iid, idx in track:
            out += struct.pack("<ii", iid, idx)
    (folder / "points3D.bin").write_bytes(out)


def _num(x) -> str:
    """Shortest exact text of a float (what COLMAP's text writer round-trips)."""
    return repr(float(x))


def _write_txt(folder, images, points, cameras=CAMERAS):
    folder.mkdir(parents=True, exist_ok=True)
    lines = ["# Camera list with one line of data per camera:", "# CAMERA_ID, MODEL, ..."]
    for cid, model, w, h, params in cameras:
        lines.append(" ".join([str(cid), model, str(w), str(h), *map(_num, params)]))
    (folder / "cameras.txt").write_text("\n".join(lines) + "\n")
    lines = ["# Image list with two lines of data per image:"]
    for n, (iid, qvec, tvec, cid, name, obs) in enumerate(images):
        lines.append(" ".join([str(iid), *map(_num, qvec), *map(_num, tvec), str(cid), name]))
        # the last image has no keypoints: COLMAP writes an empty second line
        lines.append(
            "" if n == len(images) - 1 else " ".join(f"{_num(x)} {_num(y)} {p}" for x, y, p in obs)
        )
    (folder / "images.txt").write_text("\n".join(lines) + "\n")
    lines = ["# 3D point list with one line of data per point:"]
    for pid, xyz, rgb, err, track in points:
        t = " ".join(f"{i} {j}" for i, j in track)
        lines.append(f"{pid} {' '.join(map(_num, xyz))} {' '.join(map(str, rgb))} {_num(err)} {t}")
    (folder / "points3D.txt").write_text("\n".join(lines) + "\n")


@pytest.fixture
def model_data():
    return _synthetic_model()


@pytest.mark.parametrize("fmt", ["bin", "txt"])
def test_read_back_matches_written(tmp_path, model_data, fmt):
    images, points = model_data
    (_write_bin if fmt == "bin" else _write_txt)(tmp_path, images, points)
    model = read_colmap_model(tmp_path)
    assert sorted(model.cameras) == [c[0] for c in CAMERAS]
    for cid, name, w, h, params in CAMERAS:
        cam = model.cameras[cid]
        assert (cam.model, cam.width, cam.height, cam.params) == (name, w, h, params)
    assert sorted(model.images) == [im[0] for im in images]
    for iid, qvec, tvec, cid, name, obs in images:
        im = model.images[iid]
        assert (im.camera_id, im.name) == (cid, name)
        np.testing.assert_array_equal(im.qvec, qvec)
        np.testing.assert_array_equal(im.tvec, tvec)
        if fmt == "txt" and iid == images[-1][0]:
            assert im.xys.shape == (0, 2) and im.point3D_ids.shape == (0,)
        else:
            np.testing.assert_array_equal(im.xys, [o[:2] for o in obs])
            np.testing.assert_array_equal(im.point3D_ids, [o[2] for o in obs])
    assert len(model.points) == len(points)
    np.testing.assert_array_equal(model.points.ids, [p[0] for p in points])
    np.testing.assert_array_equal(model.points.xyz, [p[1] for p in points])
    np.testing.assert_array_equal(model.points.rgb, [p[2] for p in points])
    np.testing.assert_array_equal(model.points.errors, [p[3] for p in points])


def test_bin_and_txt_give_the_same_model(tmp_path, model_data):
    _write_bin(tmp_path / "b", *model_data)
    _write_txt(tmp_path / "t", *model_data)
    b, t = read_colmap_model(tmp_path / "b"), read_colmap_model(tmp_path / "t")
    assert {k: v.params for k, v in b.cameras.items()} == {
        k: v.params for k, v in t.cameras.items()
    }
    for iid in b.images:
        torch.testing.assert_close(b.images[iid].viewmat(), t.images[iid].viewmat(), rtol=0, atol=0)


def test_qvec_to_rotmat_matches_axis_angle():
    rng = np.random.default_rng(1)
    for _ in range(5):
        rot, qvec = _axis_angle(rng.normal(size=3), rng.uniform(-3, 3))
        np.testing.assert_allclose(qvec_to_rotmat(qvec), rot, atol=1e-12)
        np.testing.assert_allclose(qvec_to_rotmat(-2.0 * qvec), rot, atol=1e-12)  # q ~ -q, norm
    with pytest.raises(ValueError, match="qvec"):
        qvec_to_rotmat([0.0, 0.0, 0.0, 0.0])


@pytest.mark.parametrize("fmt", ["bin", "txt"])
def test_points_project_to_their_observations(tmp_path, model_data, fmt):
    images, points = model_data
    (_write_bin if fmt == "bin" else _write_txt)(tmp_path, images, points)
    model = read_colmap_model(tmp_path)
    xyz = {int(i): p for i, p in zip(model.points.ids, model.points.xyz, strict=True)}
    checked = 0
    with pytest.warns(UserWarning, match="distortion"):
        for im in model.images.values():
            cam = model.camera(im)
            for xy, pid in zip(im.xys, im.point3D_ids, strict=True):
                if pid < 0:
                    continue
                pix, z = cam.project(torch.tensor(xyz[int(pid)], dtype=torch.float32)[None])
                assert z.item() > 0
                torch.testing.assert_close(pix[0], torch.tensor(xy, dtype=torch.float32),
                                           rtol=0, atol=1e-3)  # fmt: skip
                checked += 1
    assert checked >= 6


def test_camera_intrinsics_by_model():
    K = ColmapCamera(1, "SIMPLE_RADIAL", 10, 8, (12.0, 5.0, 4.5, 0.1)).K()
    torch.testing.assert_close(K, torch.tensor([[12.0, 0, 5.0], [0, 12.0, 4.5], [0, 0, 1]]))
    K = ColmapCamera(1, "OPENCV", 10, 8, (12.0, 13.0, 5.0, 4.5, 0, 0, 0, 0)).K()
    torch.testing.assert_close(K, torch.tensor([[12.0, 0, 5.0], [0, 13.0, 4.5], [0, 0, 1]]))
    with pytest.raises(ValueError, match="OPENCV_FISHEYE is not supported"):
        ColmapCamera(3, "OPENCV_FISHEYE", 10, 8, (1.0,) * 8).K()


def test_undistorted_cameras_do_not_warn(tmp_path, model_data, recwarn):
    images, points = model_data
    _write_bin(tmp_path, images, points)
    model = read_colmap_model(tmp_path)
    model.camera(model.images[10])  # PINHOLE
    model.camera(model.images[13])  # SIMPLE_PINHOLE
    assert not [w for w in recwarn if "distortion" in str(w.message)]


# --- bad files ----------------------------------------------------------------------------


def test_bad_models_raise_clear_errors(tmp_path, model_data):
    images, points = model_data
    with pytest.raises(ValueError, match="expected a COLMAP sparse-model directory"):
        read_colmap_model(tmp_path / "missing")
    _write_bin(tmp_path / "m", images, points)
    (tmp_path / "m" / "images.bin").unlink()
    with pytest.raises(ValueError, match=r"images\.bin"):
        read_colmap_model(tmp_path / "m")

    _write_bin(tmp_path / "t", images, points)
    data = (tmp_path / "t" / "cameras.bin").read_bytes()
    (tmp_path / "t" / "cameras.bin").write_bytes(data[:-5])
    with pytest.raises(ValueError, match=r"cameras\.bin: truncated"):
        read_colmap_model(tmp_path / "t")
    (tmp_path / "t" / "cameras.bin").write_bytes(data + b"\0\0")
    with pytest.raises(ValueError, match="trailing bytes"):
        read_colmap_model(tmp_path / "t")

    bad = [(1, "PINHOLE", 40, 30, (1.0, 2.0, 3.0, 4.0))]
    _write_bin(tmp_path / "u", images[:1], points, cameras=bad)
    raw = bytearray((tmp_path / "u" / "cameras.bin").read_bytes())
    raw[12:16] = struct.pack("<i", 42)  # model id of the first camera
    (tmp_path / "u" / "cameras.bin").write_bytes(bytes(raw))
    with pytest.raises(ValueError, match="unknown model id 42"):
        read_colmap_model(tmp_path / "u")

    _write_txt(tmp_path / "x", images, points)
    text = (
        (tmp_path / "x" / "cameras.txt").read_text().replace("PINHOLE 40 30 35.0", "PINHOLE 40 30")
    )
    (tmp_path / "x" / "cameras.txt").write_text(text)
    with pytest.raises(ValueError, match=r"cameras\.txt: camera 1: model PINHOLE expects 4 params"):
        read_colmap_model(tmp_path / "x")

    _write_txt(tmp_path / "y", images, points)
    lines = (tmp_path / "y" / "images.txt").read_text().splitlines()
    lines[1] = lines[1].replace(lines[1].split()[1], "not-a-number", 1)
    (tmp_path / "y" / "images.txt").write_text("\n".join(lines))
    with pytest.raises(ValueError, match=r"images\.txt:2: malformed field"):
        read_colmap_model(tmp_path / "y")

    _write_bin(tmp_path / "z", images, points, cameras=CAMERAS[:1])
    model = read_colmap_model(tmp_path / "z")
    with pytest.raises(ValueError, match="camera_id 2 is not in cameras"):
        model.camera(model.images[11])


# --- scenes --------------------------------------------------------------------------------


def test_load_colmap_scene_with_images(tmp_path, model_data):
    from PIL import Image

    images, points = model_data
    _write_bin(tmp_path / "sparse" / "0", images, points)
    (tmp_path / "images").mkdir()
    # b.png at full size (camera 1: 40x30); c.png at half size (camera 7) -> K scales
    full = np.zeros((30, 40, 3), np.uint8)
    full[:, :, 0] = 255
    Image.fromarray(full).save(tmp_path / "images" / "b.png")
    Image.fromarray(np.full((15, 20, 3), 128, np.uint8)).save(tmp_path / "images" / "c.png")
    assert find_sparse_dir(tmp_path) == tmp_path / "sparse" / "0"
    with pytest.warns(UserWarning, match="distortion"):
        scene = load_colmap_or_nerf(tmp_path, background=(0.0, 0.0, 1.0))
    names = [v.camera.name for v in scene.views]
    assert names == ["a 1", "b", "c", "d"]  # sorted by file name
    assert scene.test_indices == (0,)
    b, c = scene.views[1], scene.views[2]
    torch.testing.assert_close(b.rgb[0, 0], torch.tensor([1.0, 0.0, 0.0]))
    assert b.mask is None and b.depth is None
    assert scene.views[0].rgb is None  # no file: camera only
    assert (c.camera.width, c.camera.height) == (20, 15)
    torch.testing.assert_close(
        c.camera.K, torch.tensor([[15.0, 0, 9.5], [0, 15.5, 7.75], [0, 0, 1]])
    )
    assert scene.points.shape == (6, 3) and scene.points.dtype == np.float32
    np.testing.assert_allclose(scene.point_colors, np.array([p[2] for p in points]) / 255.0)


def test_load_colmap_without_images_and_txt_in_sparse(tmp_path, model_data):
    _write_txt(tmp_path / "sparse", *model_data, cameras=CAMERAS)
    with pytest.warns(UserWarning):
        scene = load_colmap(tmp_path, load_images=False)
    assert len(scene.views) == 4 and all(v.rgb is None for v in scene.views)
    assert (scene.views[0].camera.width, scene.views[0].camera.height) == (32, 24)


def test_load_colmap_or_nerf_rejects_other_folders(tmp_path):
    with pytest.raises(ValueError, match="COLMAP model"):
        load_colmap_or_nerf(tmp_path)
    with pytest.raises(ValueError, match="COLMAP model"):
        load_colmap(tmp_path)


def test_points_init_seeds_gaussians_from_the_sfm_points(tmp_path, model_data):
    from subspace_3dgs.train import initial_points

    images, points = model_data
    _write_bin(tmp_path / "sparse" / "0", images, points)
    with pytest.warns(UserWarning):
        scene = load_colmap(tmp_path, load_images=False)
    gen = torch.Generator().manual_seed(0)
    xyz, rgb = initial_points(scene, "points", 100, gen)
    np.testing.assert_allclose(xyz.numpy(), scene.points)
    np.testing.assert_allclose(rgb.numpy(), scene.point_colors, rtol=1e-6)
    xyz3, rgb3 = initial_points(scene, "points", 3, gen)  # subsampled, pairs kept together
    assert xyz3.shape == (3, 3) and rgb3.shape == (3, 3)
    rows = [int(np.flatnonzero((scene.points == p).all(1))[0]) for p in xyz3.numpy()]
    np.testing.assert_allclose(rgb3.numpy(), scene.point_colors[rows], rtol=1e-6)
    empty = dataclasses.replace(scene, points=None, point_colors=None)
    with pytest.raises(ValueError, match="structure-from-motion"):
        initial_points(empty, "points", 10, gen)
