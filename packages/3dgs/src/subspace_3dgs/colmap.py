"""Reading COLMAP sparse reconstructions (``cameras``, ``images``, ``points3D``; .bin or .txt).

COLMAP's conventions are this package's: an image's pose ``(qvec, tvec)`` maps world to camera,
``x_cam = R(qvec) x_world + tvec``, with OpenCV axes (x right, y down, z forward), the
quaternion stored w first, and pixel centres at integer + 0.5 (the top-left corner of the
image is the origin). So a pose becomes ``viewmat = [[R, t], [0, 1]]`` and the first four
intrinsics become ``K`` without any flips or half-pixel shifts.

Only pinhole intrinsics are used. Models with lens distortion (SIMPLE_RADIAL, RADIAL, OPENCV,
FULL_OPENCV) keep their focal length and principal point and the distortion is dropped with a
warning: renders then match the captured images only where distortion is small, so undistort
the images first (``colmap image_undistorter``) for real captures. Fisheye and other
non-pinhole models are rejected.

Binary layout (little-endian, as written by COLMAP's ``Write*Binary``):

* cameras.bin: ``u64 count``; per camera ``i32 id, i32 model_id, u64 width, u64 height,
  f64 params[n(model)]``.
* images.bin: ``u64 count``; per image ``i32 id, f64 qvec[4], f64 tvec[3], i32 camera_id,
  name (NUL-terminated), u64 num_points2D, (f64 x, f64 y, i64 point3D_id)[num_points2D]``.
* points3D.bin: ``u64 count``; per point ``u64 id, f64 xyz[3], u8 rgb[3], f64 error,
  u64 track_length, (i32 image_id, i32 point2D_idx)[track_length]``.
"""

from __future__ import annotations

import struct
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .cameras import Camera

__all__ = [
    "CAMERA_MODELS",
    "ColmapCamera",
    "ColmapImage",
    "ColmapModel",
    "ColmapPoints",
    "find_sparse_dir",
    "qvec_to_rotmat",
    "read_colmap_model",
]

#: COLMAP camera models: id -> (name, number of parameters), from COLMAP's camera_models.h.
CAMERA_MODELS: dict[int, tuple[str, int]] = {
    0: ("SIMPLE_PINHOLE", 3),
    1: ("PINHOLE", 4),
    2: ("SIMPLE_RADIAL", 4),
    3: ("RADIAL", 5),
    4: ("OPENCV", 8),
    5: ("OPENCV_FISHEYE", 8),
    6: ("FULL_OPENCV", 12),
    7: ("FOV", 5),
    8: ("SIMPLE_RADIAL_FISHEYE", 4),
    9: ("RADIAL_FISHEYE", 5),
    10: ("THIN_PRISM_FISHEYE", 12),
}
_MODEL_IDS = {name: (i, n) for i, (name, n) in CAMERA_MODELS.items()}
# models whose first parameters are a pinhole (f or fx, fy, then cx, cy); the rest is distortion
_SINGLE_FOCAL = {"SIMPLE_PINHOLE", "SIMPLE_RADIAL", "RADIAL"}
_TWO_FOCALS = {"PINHOLE", "OPENCV", "FULL_OPENCV"}
_UNDISTORTED = {"SIMPLE_PINHOLE", "PINHOLE"}


@dataclass(frozen=True)
class ColmapCamera:
    """One COLMAP camera (intrinsics shared by images): ``params`` in COLMAP's order."""

    camera_id: int
    model: str
    width: int
    height: int
    params: tuple[float, ...]

    @property
    def has_distortion(self) -> bool:
        return self.model not in _UNDISTORTED

    def K(self) -> torch.Tensor:
        """Pinhole intrinsics float32 ``[3, 3]`` (distortion parameters are not included).

        Raises:
            ValueError: for models that are not a pinhole plus distortion (fisheye, FOV).
        """
        p = self.params
        if self.model in _SINGLE_FOCAL:
            fx = fy = p[0]
            cx, cy = p[1], p[2]
        elif self.model in _TWO_FOCALS:
            fx, fy, cx, cy = p[:4]
        else:
            raise ValueError(
                f"camera {self.camera_id}: model {self.model} is not supported (expected one "
                f"of {sorted(_SINGLE_FOCAL | _TWO_FOCALS)}); undistort the images with COLMAP"
            )
        return torch.tensor([[fx, 0.0, cx], [0.0, fy, cy], [0.0, 0.0, 1.0]], dtype=torch.float32)


@dataclass(frozen=True, eq=False)
class ColmapImage:
    """One registered image: pose ``qvec [4]`` (w, x, y, z) and ``tvec [3]`` (world to
    camera), and its keypoints ``xys [P, 2]`` (pixels) with ``point3D_ids [P]`` (-1: none)."""

    image_id: int
    qvec: np.ndarray
    tvec: np.ndarray
    camera_id: int
    name: str
    xys: np.ndarray
    point3D_ids: np.ndarray

    def viewmat(self) -> torch.Tensor:
        """World-to-camera float32 ``[4, 4]`` (OpenCV axes, as COLMAP's)."""
        view = np.eye(4)
        view[:3, :3] = qvec_to_rotmat(self.qvec)
        view[:3, 3] = self.tvec
        return torch.from_numpy(view).to(torch.float32)


@dataclass(frozen=True, eq=False)
class ColmapPoints:
    """Sparse points: ``ids [M]`` int64, ``xyz [M, 3]`` float64, ``rgb [M, 3]`` uint8,
    ``errors [M]`` float64 (mean reprojection error in pixels)."""

    ids: np.ndarray
    xyz: np.ndarray
    rgb: np.ndarray
    errors: np.ndarray

    def __len__(self) -> int:
        return len(self.ids)


@dataclass(frozen=True, eq=False)
class ColmapModel:
    """A sparse model: cameras and images by id, and the 3-D points."""

    cameras: dict[int, ColmapCamera]
    images: dict[int, ColmapImage]
    points: ColmapPoints

    def camera(self, image: ColmapImage) -> Camera:
        """The package :class:`~subspace_3dgs.cameras.Camera` of ``image`` (named by its file
        stem). Warns when the COLMAP camera's distortion is dropped."""
        if image.camera_id not in self.cameras:
            raise ValueError(
                f"image {image.name!r}: camera_id {image.camera_id} is not in cameras "
                f"(have {sorted(self.cameras)})"
            )
        cam = self.cameras[image.camera_id]
        if cam.has_distortion:
            warnings.warn(
                f"camera {cam.camera_id} ({cam.model}): lens distortion "
                f"{cam.params[3 if cam.model in _SINGLE_FOCAL else 4 :]} is ignored; undistort "
                "the images for accurate renders",
                stacklevel=2,
            )
        return Camera(image.viewmat(), cam.K(), cam.width, cam.height, Path(image.name).stem)


def qvec_to_rotmat(qvec) -> np.ndarray:
    """Rotation ``[3, 3]`` float64 of a quaternion ``(w, x, y, z)`` (normalised here)."""
    q = np.asarray(qvec, dtype=np.float64)
    if q.shape != (4,) or not np.isfinite(q).all() or np.linalg.norm(q) == 0:
        raise ValueError(f"qvec: expected 4 finite numbers, not all zero, got {q.tolist()}")
    w, x, y, z = q / np.linalg.norm(q)
    return np.array(
        [
            [1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
            [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
            [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)],
        ]
    )


def find_sparse_dir(root: str | Path) -> Path | None:
    """The folder holding a COLMAP model in a capture ``root``: ``sparse/0``, ``sparse`` or
    ``root`` itself (the first with a cameras file), else None."""
    root = Path(root)
    for cand in (root / "sparse" / "0", root / "sparse", root):
        if any((cand / f"cameras{ext}").is_file() for ext in (".bin", ".txt")):
            return cand
    return None


def read_colmap_model(path: str | Path) -> ColmapModel:
    """Read ``cameras``, ``images`` and ``points3D`` from ``path`` (a sparse-model folder),
    binary when ``cameras.bin`` exists, else text. A missing points file gives no points.

    Raises:
        ValueError: naming the file, for a missing folder / cameras / images file, a truncated
            or malformed file, or an unknown camera model.
    """
    root = Path(path)
    if not root.is_dir():
        raise ValueError(f"path: expected a COLMAP sparse-model directory, got {str(path)!r}")
    ext = ".bin" if (root / "cameras.bin").is_file() else ".txt"
    for name in ("cameras", "images"):
        if not (root / f"{name}{ext}").is_file():
            raise ValueError(f"path: expected {root / (name + ext)} (a COLMAP sparse model)")
    if ext == ".bin":
        cameras = _read_cameras_bin(root / "cameras.bin")
        images = _read_images_bin(root / "images.bin")
        points_file, read_points = root / "points3D.bin", _read_points_bin
    else:
        cameras = _read_cameras_txt(root / "cameras.txt")
        images = _read_images_txt(root / "images.txt")
        points_file, read_points = root / "points3D.txt", _read_points_txt
    points = read_points(points_file) if points_file.is_file() else _no_points()
    return ColmapModel(cameras, images, points)


# ---------------------------------------------------------------- binary


class _Reader:
    """Sequential little-endian reads that fail with the file name and offset."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.data = path.read_bytes()
        self.pos = 0

    def read(self, fmt: str) -> tuple:
        size = struct.calcsize("<" + fmt)
        if self.pos + size > len(self.data):
            raise ValueError(
                f"{self.path}: truncated at byte {self.pos} (needed {size} more bytes of "
                f"{len(self.data)})"
            )
        out = struct.unpack_from("<" + fmt, self.data, self.pos)
        self.pos += size
        return out

    def array(self, dtype: str, count: int) -> np.ndarray:
        dt = np.dtype(dtype).newbyteorder("<")
        size = dt.itemsize * count
        if count < 0 or self.pos + size > len(self.data):
            raise ValueError(
                f"{self.path}: truncated at byte {self.pos} (needed {size} more bytes of "
                f"{len(self.data)})"
            )
        out = np.frombuffer(self.data, dtype=dt, count=count, offset=self.pos)
        self.pos += size
        return out

    def cstring(self) -> str:
        end = self.data.find(b"\0", self.pos)
        if end < 0:
            raise ValueError(f"{self.path}: unterminated image name at byte {self.pos}")
        out = self.data[self.pos : end].decode("utf-8")
        self.pos = end + 1
        return out

    def finish(self) -> None:
        if self.pos != len(self.data):
            raise ValueError(
                f"{self.path}: {len(self.data) - self.pos} unexpected trailing bytes at byte "
                f"{self.pos} (wrong file type or corrupt count)"
            )


def _camera(path: Path, cid: int, model: str, width: int, height: int, params) -> ColmapCamera:
    if model not in _MODEL_IDS:
        raise ValueError(f"{path}: camera {cid}: unknown model {model!r}")
    want = _MODEL_IDS[model][1]
    if len(params) != want:
        raise ValueError(
            f"{path}: camera {cid}: model {model} expects {want} params, got {len(params)}"
        )
    if width <= 0 or height <= 0:
        raise ValueError(f"{path}: camera {cid}: expected a positive size, got {width}x{height}")
    return ColmapCamera(cid, model, int(width), int(height), tuple(float(p) for p in params))


def _read_cameras_bin(path: Path) -> dict[int, ColmapCamera]:
    r = _Reader(path)
    (count,) = r.read("Q")
    cameras = {}
    for _ in range(count):
        cid, model_id, width, height = r.read("iiQQ")
        if model_id not in CAMERA_MODELS:
            raise ValueError(f"{path}: camera {cid}: unknown model id {model_id}")
        name, n = CAMERA_MODELS[model_id]
        cameras[cid] = _camera(path, cid, name, width, height, r.read(f"{n}d"))
    r.finish()
    return cameras


def _read_images_bin(path: Path) -> dict[int, ColmapImage]:
    r = _Reader(path)
    (count,) = r.read("Q")
    images = {}
    for _ in range(count):
        iid, *pose, cid = r.read("i7di")
        name = r.cstring()
        (num,) = r.read("Q")
        obs = r.array("f8,f8,i8", num)
        xys = np.stack([obs["f0"], obs["f1"]], axis=1) if num else np.zeros((0, 2))
        images[iid] = ColmapImage(
            iid, np.array(pose[:4]), np.array(pose[4:]), cid, name, xys,
            obs["f2"].astype(np.int64),
        )  # fmt: skip
    r.finish()
    return images


def _read_points_bin(path: Path) -> ColmapPoints:
    r = _Reader(path)
    (count,) = r.read("Q")
    ids, xyz, rgb, err = [], [], [], []
    for _ in range(count):
        pid, x, y, z, cr, cg, cb, e, track = r.read("Q3d3BdQ")
        r.array("i4", 2 * track)  # the track is not needed for initialisation
        ids.append(pid)
        xyz.append((x, y, z))
        rgb.append((cr, cg, cb))
        err.append(e)
    r.finish()
    return _points(ids, xyz, rgb, err)


def _points(ids, xyz, rgb, err) -> ColmapPoints:
    return ColmapPoints(
        np.asarray(ids, dtype=np.int64),
        np.asarray(xyz, dtype=np.float64).reshape(-1, 3),
        np.asarray(rgb, dtype=np.uint8).reshape(-1, 3),
        np.asarray(err, dtype=np.float64),
    )


def _no_points() -> ColmapPoints:
    return _points([], [], [], [])


# ---------------------------------------------------------------- text


def _data_lines(path: Path) -> list[tuple[int, str]]:
    """(line number, text) of the non-comment lines; empty lines are kept because an image
    without keypoints has an empty second line in images.txt."""
    lines = path.read_text(encoding="utf-8").splitlines()
    return [(i + 1, s.strip()) for i, s in enumerate(lines) if not s.lstrip().startswith("#")]


def _parse(path: Path, lineno: int, fields: list[str], types: list) -> list:
    if len(fields) < len(types):
        raise ValueError(
            f"{path}:{lineno}: expected at least {len(types)} fields, got {len(fields)}"
        )
    try:
        return [t(f) for t, f in zip(types, fields, strict=False)]
    except ValueError as exc:
        raise ValueError(f"{path}:{lineno}: malformed field ({exc})") from None


def _read_cameras_txt(path: Path) -> dict[int, ColmapCamera]:
    cameras = {}
    for lineno, line in _data_lines(path):
        if not line:
            continue
        f = line.split()
        cid, model, width, height = _parse(path, lineno, f, [int, str, int, int])
        if model not in _MODEL_IDS:
            raise ValueError(f"{path}:{lineno}: camera {cid}: unknown model {model!r}")
        params = _parse(path, lineno, f[4:], [float] * len(f[4:]))
        cameras[cid] = _camera(path, cid, model, width, height, params)
    return cameras


def _read_images_txt(path: Path) -> dict[int, ColmapImage]:
    lines = _data_lines(path)
    images = {}
    i = 0
    while i < len(lines):
        lineno, line = lines[i]
        if not line:
            i += 1
            continue
        f = line.split()
        if len(f) < 10:
            raise ValueError(
                f"{path}:{lineno}: expected 'IMAGE_ID QW QX QY QZ TX TY TZ CAMERA_ID NAME', "
                f"got {len(f)} fields"
            )
        iid, *pose, cid = _parse(path, lineno, f[:9], [int] + [float] * 7 + [int])
        name = " ".join(f[9:])  # COLMAP allows spaces in names
        pts = lines[i + 1][1].split() if i + 1 < len(lines) else []
        if len(pts) % 3:
            raise ValueError(
                f"{path}:{lineno + 1}: expected POINTS2D as (X, Y, POINT3D_ID) triples, got "
                f"{len(pts)} numbers"
            )
        vals = _parse(path, lineno + 1, pts, [float] * len(pts))
        obs = np.asarray(vals, dtype=np.float64).reshape(-1, 3)
        images[iid] = ColmapImage(
            iid, np.array(pose[:4]), np.array(pose[4:]), cid, name, obs[:, :2].copy(),
            obs[:, 2].astype(np.int64),
        )  # fmt: skip
        i += 2
    return images


def _read_points_txt(path: Path) -> ColmapPoints:
    ids, xyz, rgb, err = [], [], [], []
    for lineno, line in _data_lines(path):
        if not line:
            continue
        f = line.split()
        vals = _parse(path, lineno, f, [int, float, float, float, int, int, int, float])
        if (len(f) - 8) % 2:
            raise ValueError(f"{path}:{lineno}: expected TRACK as (IMAGE_ID, POINT2D_IDX) pairs")
        if not all(0 <= c <= 255 for c in vals[4:7]):
            raise ValueError(f"{path}:{lineno}: expected RGB in 0..255, got {vals[4:7]}")
        ids.append(vals[0])
        xyz.append(vals[1:4])
        rgb.append(vals[4:7])
        err.append(vals[7])
    return _points(ids, xyz, rgb, err)
