"""Multi-view scenes: CPU renders of real meshes with known cameras, and NeRF-layout loading.

:func:`render_mesh` is a small z-buffer triangle rasteriser in numpy (pixel centres at
integer + 0.5, perspective-correct barycentrics, Lambertian shading of a smooth
procedural per-vertex colour under a fixed directional light). :func:`make_scene` renders a
mesh from a camera rig and splits the views the NeRF / 3DGS way (every 8th view held out
for testing). :func:`load_colmap_or_nerf` reads a NeRF-synthetic ``transforms_*.json``
folder or a COLMAP capture so users can bring their own captures.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from subspace_3dgs.cameras import Camera, fibonacci_cameras, focal_from_fov, orbit_cameras
from subspace_3dgs.colmap import find_sparse_dir, read_colmap_model
from subspace_3dgs.meshes import load_mesh

__all__ = [
    "HOLDOUT_EVERY",
    "Scene",
    "View",
    "load_colmap",
    "load_colmap_or_nerf",
    "make_scene",
    "render_mesh",
    "vertex_colors",
]

#: Every HOLDOUT_EVERY-th view (index 0, 8, 16, ...) is a test view (the LLFF / 3DGS rule).
HOLDOUT_EVERY = 8
#: Direction *towards* the light (world), and the ambient share of the shading.
LIGHT_DIR = (0.4, -0.5, 0.77)
AMBIENT = 0.3


@dataclass(frozen=True, eq=False)
class View:
    """One image with its camera: ``rgb`` float32 ``[H, W, 3]`` in [0, 1], ``depth`` float32
    ``[H, W]`` (camera z, 0 on background), ``mask`` bool ``[H, W]`` (object pixels).
    Loaded captures may lack some of them (None)."""

    camera: Camera
    rgb: torch.Tensor | None
    depth: torch.Tensor | None
    mask: torch.Tensor | None


@dataclass(frozen=True, eq=False)
class Scene:
    """Views of one object; ``test_indices`` index ``views``, the rest are training views.
    ``vertices [V, 3]`` / ``faces [F, 3]`` hold the source mesh (None for loaded captures).
    ``points [M, 3]`` / ``point_colors [M, 3]`` (float32, colours in [0, 1]) hold a capture's
    sparse structure-from-motion points (COLMAP), the usual 3DGS initialisation, or None."""

    views: tuple[View, ...]
    test_indices: tuple[int, ...]
    background: tuple[float, float, float]
    vertices: np.ndarray | None = None
    faces: np.ndarray | None = None
    name: str = ""
    points: np.ndarray | None = None
    point_colors: np.ndarray | None = None

    @property
    def train_views(self) -> list[View]:
        held = set(self.test_indices)
        return [v for i, v in enumerate(self.views) if i not in held]

    @property
    def test_views(self) -> list[View]:
        return [self.views[i] for i in self.test_indices]


def _holdout(n: int) -> tuple[int, ...]:
    return tuple(range(0, n, HOLDOUT_EVERY)) if n > 1 else ()


def vertex_colors(vertices: np.ndarray, seed: int = 0) -> np.ndarray:
    """Smooth procedural albedo float32 ``[V, 3]`` in [0.1, 0.9]: per channel, a sum of two
    sinusoids of the position along random directions (seeded), so neighbouring vertices
    have similar colours and the object shows several colour regions."""
    rng = np.random.default_rng(seed)
    dirs = rng.normal(size=(2, 3, 3))
    phase = rng.uniform(0, 2 * math.pi, size=(2, 3))
    p = np.asarray(vertices, dtype=np.float64)
    waves = sum(np.sin(2.5 * p @ dirs[k].T + phase[k]) for k in range(2))
    return (0.5 + 0.2 * waves).clip(0.1, 0.9).astype(np.float32)


def _vertex_normals(v: np.ndarray, f: np.ndarray) -> np.ndarray:
    # Area-weighted: the unnormalised face normal's length is twice the face area.
    fn = np.cross(v[f[:, 1]] - v[f[:, 0]], v[f[:, 2]] - v[f[:, 0]])
    vn = np.zeros_like(v)
    for k in range(3):
        np.add.at(vn, f[:, k], fn)
    return vn / np.maximum(np.linalg.norm(vn, axis=1, keepdims=True), 1e-12)


def _fragments(pix: np.ndarray, z: np.ndarray, f: np.ndarray, width: int, height: int):
    """All (pixel, face, screen barycentrics) with the pixel centre inside the face."""
    near = 1e-4
    tri = pix[f]  # [F, 3, 2]
    ok = (z[f] > near).all(axis=1)
    lo = np.ceil(tri.min(axis=1) - 0.5).astype(np.int64)
    hi = np.floor(tri.max(axis=1) - 0.5).astype(np.int64)
    lo = np.maximum(lo, 0)
    hi = np.minimum(hi, [width - 1, height - 1])
    ok &= (hi >= lo).all(axis=1)
    span = (hi - lo + 1).max(axis=1)
    out = []
    # Faces bucketed by bounding-box size: each bucket tests a dense s x s pixel block.
    size = 1
    while True:
        sel = np.nonzero(ok & (span <= size) & (span > size // 2))[0]
        if len(sel):
            oy, ox = np.meshgrid(np.arange(size), np.arange(size), indexing="ij")
            px = lo[sel, 0, None] + ox.reshape(1, -1)
            py = lo[sel, 1, None] + oy.reshape(1, -1)
            a, b, c = (tri[sel, k] for k in range(3))
            cx, cy = px + 0.5, py + 0.5
            area = (b[:, 0] - a[:, 0]) * (c[:, 1] - a[:, 1]) - (b[:, 1] - a[:, 1]) * (
                c[:, 0] - a[:, 0]
            )
            area = np.where(np.abs(area) < 1e-12, np.nan, area)[:, None]
            w0 = (
                (b[:, 0, None] - cx) * (c[:, 1, None] - cy)
                - (b[:, 1, None] - cy) * (c[:, 0, None] - cx)
            ) / area
            w1 = (
                (c[:, 0, None] - cx) * (a[:, 1, None] - cy)
                - (c[:, 1, None] - cy) * (a[:, 0, None] - cx)
            ) / area
            w2 = 1.0 - w0 - w1
            inside = (w0 >= 0) & (w1 >= 0) & (w2 >= 0)
            inside &= (px <= hi[sel, 0, None]) & (py <= hi[sel, 1, None])
            fi, pi = np.nonzero(inside)
            out.append(
                (
                    py[fi, pi] * width + px[fi, pi],
                    sel[fi],
                    np.stack([w0[fi, pi], w1[fi, pi], w2[fi, pi]], axis=1),
                )
            )
        if size >= max(width, height) + 1:
            break
        size *= 2
    if not out:
        return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros((0, 3))
    return tuple(np.concatenate(parts) for parts in zip(*out, strict=True))


def render_mesh(
    vertices: np.ndarray,
    faces: np.ndarray,
    camera: Camera,
    colors: np.ndarray,
    *,
    background: Sequence[float] = (1.0, 1.0, 1.0),
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Render ``rgb [H, W, 3]``, ``depth [H, W]`` (camera z, 0 off the object) and ``mask
    [H, W]`` (bool) of a triangle mesh (``vertices [V, 3]``, ``faces [F, 3]``, per-vertex
    albedo ``colors [V, 3]``) seen by ``camera``.

    Shading is Lambertian, two-sided (normals are turned towards the camera):
    ``albedo * (AMBIENT + (1 - AMBIENT) * max(0, n . LIGHT_DIR))``. No anti-aliasing (one
    sample per pixel centre) and no near-plane clipping: faces with a corner behind the
    camera (z <= 1e-4) are skipped, so keep cameras outside the mesh.
    """
    v = np.asarray(vertices, dtype=np.float64)
    f = np.asarray(faces, dtype=np.int64)
    col = np.asarray(colors, dtype=np.float64)
    if v.ndim != 2 or v.shape[1] != 3:
        raise ValueError(f"vertices: expected [V, 3], got {v.shape}")
    if f.ndim != 2 or f.shape[1] != 3 or (len(f) and (f.min() < 0 or f.max() >= len(v))):
        raise ValueError(f"faces: expected [F, 3] indices into {len(v)} vertices, got {f.shape}")
    if col.shape != v.shape:
        raise ValueError(f"colors: expected {v.shape}, got {col.shape}")
    if len(background) != 3:
        raise ValueError(f"background: expected 3 values, got {background!r}")
    W, H = camera.width, camera.height
    view = camera.viewmat.double().numpy()
    K = camera.K.double().numpy()
    cam = v @ view[:3, :3].T + view[:3, 3]
    z = cam[:, 2]
    with np.errstate(divide="ignore", invalid="ignore"):
        pix = cam[:, :2] / z[:, None] * [K[0, 0], K[1, 1]] + K[:2, 2]
    pixel, face, bary = _fragments(pix, z, f, W, H)

    rgb = np.tile(np.asarray(background, dtype=np.float64), (H * W, 1))
    depth = np.zeros(H * W)
    mask = np.zeros(H * W, dtype=bool)
    if len(pixel):
        # Screen-space barycentrics interpolate 1/z linearly; attributes need w_k / z_k.
        zc = z[f[face]]  # [P, 3]
        inv_z = (bary / zc).sum(axis=1)
        frag_depth = 1.0 / inv_z
        order = np.lexsort((frag_depth, pixel))
        first = order[np.unique(pixel[order], return_index=True)[1]]
        pixel, face, bary, frag_depth = pixel[first], face[first], bary[first], frag_depth[first]
        persp = bary / zc[first] * frag_depth[:, None]
        corners = f[face]
        normals = _vertex_normals(v, f)
        n = (persp[:, :, None] * normals[corners]).sum(axis=1)
        n /= np.maximum(np.linalg.norm(n, axis=1, keepdims=True), 1e-12)
        point = (persp[:, :, None] * v[corners]).sum(axis=1)
        to_cam = camera.center.double().numpy() - point
        n *= np.where((n * to_cam).sum(axis=1, keepdims=True) < 0, -1.0, 1.0)
        light = np.asarray(LIGHT_DIR) / np.linalg.norm(LIGHT_DIR)
        shade = AMBIENT + (1.0 - AMBIENT) * np.maximum(n @ light, 0.0)
        albedo = (persp[:, :, None] * col[corners]).sum(axis=1)
        rgb[pixel] = (albedo * shade[:, None]).clip(0.0, 1.0)
        depth[pixel] = frag_depth
        mask[pixel] = True
    return (
        torch.from_numpy(rgb.reshape(H, W, 3).astype(np.float32)),
        torch.from_numpy(depth.reshape(H, W).astype(np.float32)),
        torch.from_numpy(mask.reshape(H, W)),
    )


def make_scene(
    mesh_name: str = "bunny",
    num_views: int = 32,
    width: int = 64,
    height: int = 64,
    *,
    seed: int = 0,
    radius: float = 3.0,
    fov_deg: float = 45.0,
    rig: str = "fibonacci",
    background: Sequence[float] = (1.0, 1.0, 1.0),
) -> Scene:
    """Render ``num_views`` views of mesh ``mesh_name`` (see
    :func:`subspace_3dgs.meshes.load_mesh`; normalised to the unit sphere) from cameras at
    distance ``radius`` looking at the origin.

    ``rig``: ``"fibonacci"`` (near-uniform on the sphere) or ``"orbit"`` (turntable ring at
    20 degrees elevation). ``seed`` rotates the rig about the up axis and picks the
    procedural colours. Test views: indices ``0, 8, 16, ...`` (:data:`HOLDOUT_EVERY`).
    """
    if isinstance(num_views, bool) or not isinstance(num_views, int) or num_views <= 0:
        raise ValueError(f"num_views: expected a positive int, got {num_views!r}")
    if rig not in ("fibonacci", "orbit"):
        raise ValueError(f"rig: expected 'fibonacci' or 'orbit', got {rig!r}")
    vertices, faces = load_mesh(mesh_name)
    rng = np.random.default_rng(seed)
    # Rotating the mesh (not the rig) about z keeps the rig's up-vector handling simple.
    angle = rng.uniform(0.0, 2.0 * math.pi)
    c, s = math.cos(angle), math.sin(angle)
    vertices = (vertices @ np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]], np.float32).T).astype(
        np.float32
    )
    colors = vertex_colors(vertices, seed=int(rng.integers(2**31)))
    make_rig = fibonacci_cameras if rig == "fibonacci" else orbit_cameras
    cameras = make_rig(num_views, radius, fov_deg=fov_deg, width=width, height=height)
    views = tuple(
        View(cam, *render_mesh(vertices, faces, cam, colors, background=background))
        for cam in cameras
    )
    return Scene(
        views, _holdout(num_views), tuple(float(b) for b in background), vertices, faces, mesh_name
    )


# ---------------------------------------------------------------- user captures

_OPENGL_TO_OPENCV = np.diag([1.0, -1.0, -1.0, 1.0])


def _read_image(path: Path, background: np.ndarray):
    try:
        from PIL import Image
    except ImportError:  # Pillow is optional: cameras still load, images do not.
        return None, None
    with Image.open(path) as im:
        arr = np.asarray(im.convert("RGBA"), dtype=np.float32) / 255.0
    alpha = arr[..., 3:]
    # Composite on the scene background as 3DGS does for NeRF-synthetic RGBA images.
    rgb = arr[..., :3] * alpha + background * (1.0 - alpha)
    return torch.from_numpy(rgb), torch.from_numpy(alpha[..., 0] > 0.5)


def load_colmap_or_nerf(
    path: str | Path,
    *,
    background: Sequence[float] = (1.0, 1.0, 1.0),
    load_images: bool = True,
) -> Scene:
    """A scene from a NeRF-synthetic folder (``transforms_train.json``, optional
    ``transforms_test.json`` / ``transforms_val.json``) or a COLMAP capture (see
    :func:`load_colmap`; used when there is no ``transforms_train.json``).

    Each JSON has ``camera_angle_x`` (horizontal FOV, radians) and ``frames`` with
    ``file_path`` and a camera-to-world ``transform_matrix`` in the OpenGL convention (y up,
    z backwards), converted here to OpenCV world->camera ``viewmat``. Image sizes come from
    the images (read with Pillow when installed; RGBA composited on ``background``, alpha >
    0.5 as mask) or from ``w`` / ``h`` keys. Test views are those of
    ``transforms_test.json``; without it, every 8th view.
    """
    root = Path(path)
    if not root.is_dir():
        raise ValueError(f"path: expected a directory, got {str(path)!r}")
    if not (root / "transforms_train.json").is_file():
        if find_sparse_dir(root) is not None:
            return load_colmap(root, background=background, load_images=load_images)
        raise ValueError(
            f"path: expected {root}/transforms_train.json (NeRF-synthetic) or a COLMAP model "
            f"(sparse/0/cameras.bin|txt, sparse/cameras.*, or cameras.* in {root})"
        )
    bg = np.asarray(background, dtype=np.float32)
    views: list[View] = []
    test: list[int] = []
    for split in ("train", "val", "test"):
        file = root / f"transforms_{split}.json"
        if not file.is_file() or split == "val":
            continue
        meta = json.loads(file.read_text(encoding="utf-8"))
        if "camera_angle_x" not in meta or "frames" not in meta:
            raise ValueError(f"{file}: expected keys 'camera_angle_x' and 'frames'")
        for i, frame in enumerate(meta["frames"]):
            c2w = np.asarray(frame["transform_matrix"], dtype=np.float64)
            if c2w.shape != (4, 4):
                raise ValueError(
                    f"{file}: frame {i}: transform_matrix: expected 4x4, got {c2w.shape}"
                )
            viewmat = np.linalg.inv(c2w @ _OPENGL_TO_OPENCV)
            rgb = mask = None
            image = root / frame["file_path"]
            if not image.suffix:
                image = image.with_suffix(".png")
            if load_images and image.is_file():
                rgb, mask = _read_image(image, bg)
            if rgb is not None:
                height, width = rgb.shape[:2]
            elif "w" in meta and "h" in meta:
                width, height = int(meta["w"]), int(meta["h"])
            else:
                raise ValueError(
                    f"{file}: frame {i}: image size unknown (image {image} not readable and "
                    "no 'w'/'h' keys)"
                )
            f = focal_from_fov(float(meta["camera_angle_x"]), width)
            K = torch.tensor(
                [[f, 0, width / 2], [0, f, height / 2], [0, 0, 1]], dtype=torch.float32
            )
            cam = Camera(torch.from_numpy(viewmat), K, width, height, Path(frame["file_path"]).stem)
            if split == "test":
                test.append(len(views))
            views.append(View(cam, rgb, None, mask))
    return Scene(
        tuple(views),
        tuple(test) if test else _holdout(len(views)),
        tuple(float(b) for b in bg),
        name=root.name,
    )


def load_colmap(
    path: str | Path,
    *,
    background: Sequence[float] = (1.0, 1.0, 1.0),
    load_images: bool = True,
    images_dir: str = "images",
) -> Scene:
    """A scene from a COLMAP capture folder: a sparse model in ``sparse/0``, ``sparse`` or
    ``path`` itself (.bin or .txt, see :mod:`subspace_3dgs.colmap`) and the photos in
    ``path/images_dir``.

    Views are ordered by image name; every 8th is a test view (the 3DGS rule). Images are read
    with Pillow when installed; an image whose size differs from its COLMAP camera (e.g. a
    downscaled ``images_4`` folder) scales the intrinsics to it. ``mask`` is set only for
    images with transparency. The sparse points and their colours become ``Scene.points`` /
    ``Scene.point_colors``. Lens distortion is ignored with a warning.
    """
    root = Path(path)
    sparse = find_sparse_dir(root)
    if sparse is None:
        raise ValueError(f"path: expected a COLMAP model (sparse/0/cameras.bin or .txt) in {root}")
    model = read_colmap_model(sparse)
    if not model.images:
        raise ValueError(f"{sparse}: the COLMAP model has no registered images")
    bg = np.asarray(background, dtype=np.float32)
    views: list[View] = []
    for image in sorted(model.images.values(), key=lambda im: im.name):
        cam = model.camera(image)
        rgb = mask = None
        file = root / images_dir / image.name
        if load_images and file.is_file():
            rgb, mask = _read_image(file, bg)
        if rgb is not None:
            height, width = rgb.shape[:2]
            if (width, height) != (cam.width, cam.height):
                scale = torch.tensor([[width / cam.width], [height / cam.height], [1.0]])
                cam = Camera(cam.viewmat, cam.K * scale, width, height, cam.name)
            if bool(mask.all()):
                mask = None  # an opaque photo carries no object mask
        views.append(View(cam, rgb, None, mask))
    pts = model.points
    return Scene(
        tuple(views),
        _holdout(len(views)),
        tuple(float(b) for b in bg),
        name=root.name,
        points=pts.xyz.astype(np.float32),
        point_colors=(pts.rgb.astype(np.float32) / 255.0),
    )
