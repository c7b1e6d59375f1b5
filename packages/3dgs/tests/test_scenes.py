import json
import math
import time

import numpy as np
import pytest
import torch

from subspace_3dgs.cameras import Camera, camera_center, intrinsics_from_fov, look_at
from subspace_3dgs.meshes import (
    icosphere,
    load_mesh,
    normalize_mesh,
    parse_bunny_js,
    read_mesh,
)
from subspace_3dgs.scenes import (
    AMBIENT,
    LIGHT_DIR,
    load_colmap_or_nerf,
    make_scene,
    render_mesh,
    vertex_colors,
)


def _sphere_camera(d=3.0, fov=45.0, size=64):
    return Camera(look_at((d, 0.0, 0.0)), intrinsics_from_fov(fov, size, size), size, size)


# ------------------------------------------------------------------ meshes


@pytest.mark.parametrize("s", [0, 1, 3])
def test_icosphere_is_a_closed_outward_unit_sphere(s):
    v, f = icosphere(s)
    assert v.shape == (10 * 4**s + 2, 3) and f.shape == (20 * 4**s, 3)
    np.testing.assert_allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-6)
    edges = np.sort(np.concatenate([f[:, [0, 1]], f[:, [1, 2]], f[:, [2, 0]]]), axis=1)
    _, counts = np.unique(edges, axis=0, return_counts=True)
    assert (counts == 2).all()  # closed 2-manifold
    assert len(v) - len(counts) + len(f) == 2  # Euler characteristic of a sphere
    normals = np.cross(v[f[:, 1]] - v[f[:, 0]], v[f[:, 2]] - v[f[:, 0]])
    assert ((normals * v[f].mean(axis=1)).sum(axis=1) > 0).all()  # counter-clockwise outside


def _write_meshes(tmp_path, v, f):
    """The same mesh as ASCII PLY, binary PLY (with extra vertex properties), OBJ, OFF."""
    ascii_ply = tmp_path / "m_ascii.ply"
    lines = ["ply", "format ascii 1.0", f"element vertex {len(v)}"]
    lines += ["property float x", "property float y", "property float z"]
    lines += [f"element face {len(f)}", "property list uchar int vertex_indices", "end_header"]
    lines += [" ".join(repr(float(c)) for c in p) for p in v] + [f"3 {a} {b} {c}" for a, b, c in f]
    ascii_ply.write_text("\n".join(lines) + "\n")

    binary_ply = tmp_path / "m_bin.ply"
    head = (
        f"ply\nformat binary_little_endian 1.0\ncomment test\nelement vertex {len(v)}\n"
        "property double x\nproperty double y\nproperty double z\nproperty uchar red\n"
        f"element face {len(f)}\nproperty list uchar int vertex_indices\nend_header\n"
    )
    vert = np.zeros(len(v), dtype=[("p", "<f8", 3), ("r", "u1")])
    vert["p"] = v
    face = np.zeros(len(f), dtype=[("n", "u1"), ("i", "<i4", 3)])
    face["n"], face["i"] = 3, f
    binary_ply.write_bytes(head.encode() + vert.tobytes() + face.tobytes())

    obj = tmp_path / "m.obj"
    # Negative (relative) indices and v/vt/vn corners, as in PyMeshLab's bunny10k file.
    obj_lines = [f"v {a!r} {b!r} {c!r}" for a, b, c in v.tolist()] + ["vt 0 0", "vn 0 0 1"]
    obj_lines += [f"f {a - len(v)}/1/1 {b + 1}/1 {c + 1}//1" for a, b, c in f]
    obj.write_text("\n".join(obj_lines) + "\n")

    off = tmp_path / "m.off"
    off.write_text(
        f"OFF\n{len(v)} {len(f)} 0\n"
        + "".join(f"{a!r} {b!r} {c!r}\n" for a, b, c in v.tolist())
        + "".join(f"3 {a} {b} {c}\n" for a, b, c in f)
    )
    return [ascii_ply, binary_ply, obj, off]


def test_mesh_readers_agree_on_every_format(tmp_path):
    v, f = icosphere(1)
    for path in _write_meshes(tmp_path, v, f):
        rv, rf = read_mesh(path)
        np.testing.assert_array_equal(rv, v, err_msg=str(path))
        np.testing.assert_array_equal(rf, f, err_msg=str(path))
        assert rv.dtype == np.float32 and rf.dtype == np.int64


def test_polygons_are_fan_triangulated(tmp_path):
    quad = tmp_path / "quad.obj"
    quad.write_text("v 0 0 0\nv 1 0 0\nv 1 1 0\nv 0 1 0\nf 1 2 3 4\n")
    _, f = read_mesh(quad)
    np.testing.assert_array_equal(f, [[0, 1, 2], [0, 2, 3]])


def test_bunny_js_is_parsed_as_json_not_evaluated():
    text = "exports.positions=[[0,0,0],[1,0,0],[0,1,0.5]]\nexports.cells=[[0,1,2]]\n"
    v, f = parse_bunny_js(text)
    np.testing.assert_array_equal(v, [[0, 0, 0], [1, 0, 0], [0, 1, 0.5]])
    np.testing.assert_array_equal(f, [[0, 1, 2]])
    with pytest.raises(ValueError, match=r"exports\.positions and exports\.cells"):
        parse_bunny_js("exports.positions=[[0,0,0]]\nrequire('child_process')")
    with pytest.raises(ValueError, match=r"cells: face indices must be in \[0, 3\)"):
        parse_bunny_js("exports.positions=[[0,0,0],[1,0,0],[0,1,0]]\nexports.cells=[[0,1,3]]")


def test_load_mesh_normalises_to_the_unit_sphere(tmp_path):
    v, f = icosphere(1)
    path = _write_meshes(tmp_path, v * 7.0 + [1.0, -2.0, 3.0], f)[2]
    nv, nf = load_mesh(str(path))
    lo, hi = nv.min(axis=0), nv.max(axis=0)
    np.testing.assert_allclose(lo + hi, 0.0, atol=1e-6)  # bounding box centred
    assert np.linalg.norm(nv, axis=1).max() == pytest.approx(1.0, abs=1e-6)
    np.testing.assert_allclose(nv, normalize_mesh(v), atol=1e-6)
    np.testing.assert_array_equal(nf, f)
    # y-up files turned to z-up by a proper rotation: (x, y, z) -> (x, -z, y).
    turned, _ = load_mesh(str(path), y_up=True)
    np.testing.assert_allclose(turned, nv[:, [0, 2, 1]] * [1, -1, 1], atol=1e-6)
    with pytest.raises(ValueError, match="name: expected one of"):
        load_mesh("teapot")


# ------------------------------------------------------------------ rendering


def test_sphere_silhouette_and_depth_match_the_analytic_sphere():
    d, fov, size = 3.0, 45.0, 64
    v, f = icosphere(4)
    cam = _sphere_camera(d, fov, size)
    rgb, depth, mask = render_mesh(v, f, cam, np.full_like(v, 0.5), background=(1.0, 1.0, 1.0))
    # The silhouette of a unit sphere at distance d is a disk of radius f tan(asin(1/d)).
    focal = cam.K[0, 0].item()
    disk = math.pi * (focal * math.tan(math.asin(1.0 / d))) ** 2
    assert mask.sum().item() == pytest.approx(disk, rel=0.03)
    # Depth along each pixel ray: camera z of the near intersection with the sphere.
    ys, xs = torch.nonzero(mask, as_tuple=True)
    rays = torch.stack([(xs + 0.5 - size / 2) / focal, (ys + 0.5 - size / 2) / focal], dim=1)
    rays = torch.cat([rays, torch.ones(len(rays), 1)], dim=1).double()
    center = torch.tensor([0.0, 0.0, d], dtype=torch.float64)  # sphere centre in camera space
    b = (rays @ center) / (rays * rays).sum(1)
    c = (center @ center - 1.0) / (rays * rays).sum(1)
    t = b - torch.sqrt((b * b - c).clamp_min(0))
    inner = (b * b - c) > 0.05  # away from the rim, where the polyhedron deviates most
    torch.testing.assert_close(depth[ys, xs].double()[inner], t[inner], atol=5e-3, rtol=0)
    assert (depth[~mask] == 0).all() and (rgb[~mask] == 1.0).all()


def test_lambertian_shading_matches_the_formula():
    v, f = icosphere(4)
    cam = _sphere_camera()
    rgb, depth, mask = render_mesh(v, f, cam, np.full_like(v, 0.8), background=(0.0, 0.0, 0.0))
    ys, xs = torch.nonzero(mask, as_tuple=True)
    K, view = cam.K.double(), cam.viewmat.double()
    cam_pts = (
        torch.stack(
            [(xs + 0.5 - K[0, 2]) / K[0, 0], (ys + 0.5 - K[1, 2]) / K[1, 1], torch.ones(len(xs))], 1
        )
        * depth[ys, xs].double()[:, None]
    )
    world = (cam_pts - view[:3, 3]) @ view[:3, :3]  # inverse of the rigid transform
    normal = world / world.norm(dim=1, keepdim=True)  # unit sphere: normal = position
    light = torch.tensor(LIGHT_DIR, dtype=torch.float64)
    expected = 0.8 * (AMBIENT + (1 - AMBIENT) * (normal @ (light / light.norm())).clamp_min(0))
    got = rgb[ys, xs].double()
    assert (got[:, 0] == got[:, 1]).all() and (got[:, 1] == got[:, 2]).all()
    assert (got[:, 0] - expected).abs().mean().item() < 0.01
    assert (got[:, 0] - expected).abs().max().item() < 0.05


def test_z_buffer_keeps_the_nearest_surface():
    v, f = icosphere(2)
    small = v * 0.3 + [1.2, 0.0, 0.0]  # between the camera (x = 3) and the big sphere
    verts = np.concatenate([v, small]).astype(np.float32)
    faces = np.concatenate([f, f + len(v)])
    colors = np.concatenate(
        [np.tile([0.0, 0.0, 1.0], (len(v), 1)), np.tile([1.0, 0.0, 0.0], (len(v), 1))]
    )
    cam = _sphere_camera()
    for order in (slice(None), slice(None, None, -1)):  # result must not depend on face order
        rgb, depth, _ = render_mesh(verts, faces[order], cam, colors)
        centre = rgb[32, 32]
        assert centre[0] > 0 and centre[2] == 0
        assert depth[32, 32].item() == pytest.approx(3.0 - 1.5, abs=0.01)


def test_vertex_colors_are_smooth_and_in_range():
    v, f = icosphere(3)
    col = vertex_colors(v, seed=1)
    assert col.shape == v.shape and col.min() >= 0.1 and col.max() <= 0.9
    assert col.std(axis=0).min() > 0.05  # real variation across the object
    edge_jump = np.abs(col[f[:, 0]] - col[f[:, 1]]).mean()
    assert edge_jump < 0.25 * np.abs(col[:, None] - col[None, :200]).mean()
    assert not np.array_equal(col, vertex_colors(v, seed=2))


def test_make_scene_splits_every_8th_view_and_is_deterministic():
    t0 = time.perf_counter()
    scene = make_scene("icosphere", 17, 32, 24, seed=3, rig="orbit", background=(0.0, 0.0, 0.0))
    assert time.perf_counter() - t0 < 5.0
    assert scene.test_indices == (0, 8, 16)
    assert len(scene.train_views) == 14 and len(scene.test_views) == 3
    view = scene.views[1]
    assert (
        view.rgb.shape == (24, 32, 3)
        and view.depth.shape == (24, 32)
        and view.mask.dtype == torch.bool
    )
    assert view.camera.width == 32 and view.camera.height == 24
    again = make_scene("icosphere", 17, 32, 24, seed=3, rig="orbit", background=(0.0, 0.0, 0.0))
    assert all(torch.equal(a.rgb, b.rgb) for a, b in zip(scene.views, again.views, strict=True))
    other = make_scene("icosphere", 17, 32, 24, seed=4, rig="orbit", background=(0.0, 0.0, 0.0))
    assert not torch.equal(scene.views[1].rgb, other.views[1].rgb)
    with pytest.raises(ValueError, match="rig"):
        make_scene("icosphere", 2, 8, 8, rig="spiral")


# ------------------------------------------------------------------ NeRF-synthetic folders


def test_load_nerf_synthetic_layout(tmp_path):
    eyes = [(3.0, 0.5, 1.0), (-1.0, 2.5, 0.3), (0.5, -2.0, 2.0)]
    fov_x, w, h = 0.69, 12, 10
    opencv = [look_at(e) for e in eyes]
    frames = []
    for i, view in enumerate(opencv):
        c2w = torch.linalg.inv(view.double())
        c2w[:3, 1:3] *= -1  # OpenCV -> OpenGL camera axes (y up, z backwards)
        frames.append({"file_path": f"./train/r_{i}", "transform_matrix": c2w.tolist()})
    meta = {"camera_angle_x": fov_x, "w": w, "h": h}
    (tmp_path / "transforms_train.json").write_text(json.dumps({**meta, "frames": frames[:2]}))
    (tmp_path / "transforms_test.json").write_text(json.dumps({**meta, "frames": frames[2:]}))
    pil = pytest.importorskip("PIL.Image")
    (tmp_path / "train").mkdir()
    rgba = np.zeros((h, w, 4), np.uint8)
    rgba[..., 0], rgba[:5, :, 3] = 255, 255  # top half opaque red, bottom transparent
    pil.fromarray(rgba, "RGBA").save(tmp_path / "train" / "r_0.png")

    scene = load_colmap_or_nerf(tmp_path, background=(0.0, 1.0, 0.0))
    assert len(scene.views) == 3 and scene.test_indices == (2,)
    for view, expected, eye in zip(scene.views, opencv, eyes, strict=True):
        torch.testing.assert_close(view.camera.viewmat, expected, atol=1e-5, rtol=0)
        torch.testing.assert_close(
            camera_center(view.camera.viewmat), torch.tensor(eye), atol=1e-5, rtol=0
        )
        assert view.camera.K[0, 0].item() == pytest.approx(0.5 * w / math.tan(fov_x / 2), rel=1e-6)
    first = scene.views[0]
    assert first.rgb.shape == (h, w, 3)
    torch.testing.assert_close(first.rgb[0, 0], torch.tensor([1.0, 0.0, 0.0]))
    torch.testing.assert_close(first.rgb[-1, 0], torch.tensor([0.0, 1.0, 0.0]))  # background
    assert first.mask[:5].all() and not first.mask[5:].any()
    assert scene.views[1].rgb is None  # image file absent: camera only


def test_load_nerf_rejects_other_folders(tmp_path):
    with pytest.raises(ValueError, match=r"transforms_train\.json"):
        load_colmap_or_nerf(tmp_path)
    with pytest.raises(ValueError, match="expected a directory"):
        load_colmap_or_nerf(tmp_path / "missing")


# ------------------------------------------------------------------ the real bunny (npm)


@pytest.mark.network
def test_npm_bunny_renders():
    v, f = load_mesh("bunny")
    assert v.shape == (1839, 3) and f.shape == (3674, 3)
    assert np.linalg.norm(v, axis=1).max() == pytest.approx(1.0, abs=1e-6)
    t0 = time.perf_counter()
    scene = make_scene("bunny", 8, 64, 64, seed=0)
    assert time.perf_counter() - t0 < 10.0
    coverage = [v.mask.float().mean().item() for v in scene.views]
    assert all(0.05 < c < 0.6 for c in coverage)
    # Shading and colours vary over the object.
    assert all(v.rgb[v.mask].std(0).min().item() > 0.02 for v in scene.views)
