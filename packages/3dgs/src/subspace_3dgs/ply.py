"""The standard 3D Gaussian Splatting ``.ply`` (as written by the reference implementation
and opened by viewers such as SuperSplat or antimatter15/splat).

Binary little-endian, one ``vertex`` element with float32 properties, in this order::

    x y z nx ny nz f_dc_0 f_dc_1 f_dc_2 f_rest_0 ... f_rest_{3(K-1)-1}
    opacity scale_0 scale_1 scale_2 rot_0 rot_1 rot_2 rot_3 [feat_0 ... feat_{F-1}]

``f_dc_c`` is the degree-0 SH coefficient of channel ``c``; ``f_rest`` holds the higher
coefficients channel-major (all K-1 coefficients of red, then green, then blue), as the
reference code's ``features_rest.transpose(1, 2).flatten(1)``. ``opacity`` is the logit,
``scale_*`` the log scale, ``rot_*`` the quaternion (w, x, y, z), normals are zeros.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

__all__ = ["SplatPly", "read_splat_ply", "write_splat_ply"]


@dataclass(frozen=True, eq=False)
class SplatPly:
    """Tensors of a 3DGS ``.ply``: ``means [N, 3]``, ``quats [N, 4]`` (w, x, y, z),
    ``log_scales [N, 3]``, ``opacity_logits [N]``, ``sh [N, K, 3]``, ``features [N, F]``
    or None. All float32."""

    means: torch.Tensor
    quats: torch.Tensor
    log_scales: torch.Tensor
    opacity_logits: torch.Tensor
    sh: torch.Tensor
    features: torch.Tensor | None = None


def _names(num_sh: int, num_features: int) -> list[str]:
    names = ["x", "y", "z", "nx", "ny", "nz", "f_dc_0", "f_dc_1", "f_dc_2"]
    names += [f"f_rest_{i}" for i in range(3 * (num_sh - 1))]
    names += ["opacity", "scale_0", "scale_1", "scale_2", "rot_0", "rot_1", "rot_2", "rot_3"]
    names += [f"feat_{i}" for i in range(num_features)]
    return names


def _as_f32(value: torch.Tensor, name: str, shape: tuple) -> np.ndarray:
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"{name}: expected a torch.Tensor, got {type(value).__name__}")
    if value.shape != shape:
        raise ValueError(f"{name}: expected shape {list(shape)}, got {list(value.shape)}")
    if not value.is_floating_point():
        raise TypeError(f"{name}: expected a floating-point tensor, got {value.dtype}")
    return value.detach().to("cpu", torch.float32).numpy()


def write_splat_ply(
    path: str | Path,
    means: torch.Tensor,
    quats: torch.Tensor,
    log_scales: torch.Tensor,
    opacity_logits: torch.Tensor,
    sh: torch.Tensor,
    features: torch.Tensor | None = None,
) -> Path:
    """Write Gaussians to a 3DGS ``.ply`` at ``path``; returns the path.

    ``means [N, 3]``, ``quats [N, 4]`` (w, x, y, z; written as given), ``log_scales [N, 3]``,
    ``opacity_logits [N]``, ``sh [N, K, 3]`` with K in {1, 4, 9, 16}, optional
    ``features [N, F]`` (written as ``feat_*``; plain viewers ignore them). Values are
    stored as float32. The layout has no field for the render filter
    (:attr:`Gaussians.eps2d <subspace_3dgs.gaussians.Gaussians>`): viewers draw with 3DGS's
    0.3 px^2, so splats trained with a smaller filter look slightly softer there.
    """
    if not isinstance(means, torch.Tensor) or means.ndim != 2 or means.shape[1] != 3:
        raise ValueError(f"means: expected [N, 3], got {list(getattr(means, 'shape', []))}")
    n = means.shape[0]
    if not isinstance(sh, torch.Tensor) or sh.ndim != 3 or sh.shape[0] != n or sh.shape[2] != 3:
        raise ValueError(f"sh: expected [{n}, K, 3], got {list(getattr(sh, 'shape', []))}")
    k = sh.shape[1]
    if math.isqrt(k) ** 2 != k or not 1 <= k <= 16:
        raise ValueError(f"sh: expected K in (1, 4, 9, 16) coefficients, got {k}")
    cols = [
        _as_f32(means, "means", (n, 3)),
        np.zeros((n, 3), np.float32),
        _as_f32(sh[:, 0, :], "sh", (n, 3)),
        # Channel-major rest coefficients: [N, K-1, 3] -> [N, 3, K-1] -> [N, 3(K-1)].
        _as_f32(sh[:, 1:, :].transpose(1, 2).reshape(n, -1), "sh", (n, 3 * (k - 1))),
        _as_f32(opacity_logits, "opacity_logits", (n,))[:, None],
        _as_f32(log_scales, "log_scales", (n, 3)),
        _as_f32(quats, "quats", (n, 4)),
    ]
    num_features = 0
    if features is not None:
        if not isinstance(features, torch.Tensor) or features.ndim != 2:
            raise ValueError(
                f"features: expected [{n}, F], got {list(getattr(features, 'shape', []))}"
            )
        num_features = features.shape[1]
        cols.append(_as_f32(features, "features", (n, num_features)))
    data = np.ascontiguousarray(np.concatenate(cols, axis=1), dtype="<f4")
    names = _names(k, num_features)
    header = ["ply", "format binary_little_endian 1.0", f"element vertex {n}"]
    header += [f"property float {name}" for name in names]
    header.append("end_header")
    out = Path(path)
    with open(out, "wb") as fh:
        fh.write(("\n".join(header) + "\n").encode("ascii"))
        fh.write(data.tobytes())
    return out


_PLY_TYPES = {
    "char": "i1", "int8": "i1", "uchar": "u1", "uint8": "u1",
    "short": "i2", "int16": "i2", "ushort": "u2", "uint16": "u2",
    "int": "i4", "int32": "i4", "uint": "u4", "uint32": "u4",
    "float": "f4", "float32": "f4", "double": "f8", "float64": "f8",
}  # fmt: skip


def ply_header(fh, path) -> tuple[str, list[tuple[str, int, list[tuple]]]]:
    """Parse a PLY header from the binary file ``fh`` (left at the first data byte).

    Returns ``(format, elements)``; each element is ``(name, count, properties)`` with a
    property ``(name, numpy dtype)`` or, for lists, ``(name, count dtype, item dtype)``.
    Only ``ascii`` and ``binary_little_endian`` are accepted.
    """
    if fh.readline().strip() != b"ply":
        raise ValueError(f"{path}: not a PLY file (first line is not 'ply')")
    fmt = None
    elements: list[tuple[str, int, list[tuple]]] = []
    while True:
        line = fh.readline()
        if not line:
            raise ValueError(f"{path}: PLY header has no 'end_header'")
        parts = line.decode("ascii", errors="replace").split()
        if not parts or parts[0] in ("comment", "obj_info"):
            continue
        if parts[0] == "end_header":
            break
        if parts[0] == "format":
            fmt = parts[1]
        elif parts[0] == "element":
            elements.append((parts[1], int(parts[2]), []))
        elif parts[0] == "property":
            if not elements:
                raise ValueError(f"{path}: PLY property before any element")
            unknown = [t for t in parts[1:-1] if t != "list" and t not in _PLY_TYPES]
            if unknown:
                raise ValueError(f"{path}: PLY property {parts[-1]!r}: unknown type {unknown[0]!r}")
            if parts[1] == "list":
                elements[-1][2].append((parts[4], _PLY_TYPES[parts[2]], _PLY_TYPES[parts[3]]))
            else:
                elements[-1][2].append((parts[2], _PLY_TYPES[parts[1]]))
    if fmt not in ("ascii", "binary_little_endian"):
        raise ValueError(f"{path}: PLY format: expected ascii or binary_little_endian, got {fmt!r}")
    return fmt, elements


def _read_header(fh, path: Path) -> tuple[int, list[str]]:
    """The vertex count and property names of a 3DGS PLY header (one ``vertex`` element of
    float32 properties, binary little-endian)."""
    fmt, elements = ply_header(fh, path)
    if len(elements) > 1:
        raise ValueError(
            f"{path}: expected a single 'vertex' element (3DGS layout), got elements "
            f"{[name for name, _, _ in elements]}"
        )
    if fmt != "binary_little_endian":
        raise ValueError(f"{path}: format: expected binary_little_endian, got {fmt!r}")
    if not elements or elements[0][0] != "vertex":
        raise ValueError(f"{path}: expected a 'vertex' element, got {elements[:1]!r}")
    _, count, properties = elements[0]
    for prop in properties:
        if len(prop) != 2 or prop[1] != "f4":
            raise ValueError(
                f"{path}: property {prop[0]!r}: expected float (3DGS layout), got {prop[1:]}"
            )
    return count, [name for name, _ in properties]


def read_splat_ply(path: str | Path) -> SplatPly:
    """Read a 3DGS ``.ply`` (the layout :func:`write_splat_ply` writes and the reference
    implementation saves); extra ``feat_*`` properties come back as ``features``.

    Raises ValueError naming the missing or misplaced property for any other PLY.
    """
    path = Path(path)
    with open(path, "rb") as fh:
        n, names = _read_header(fh, path)
        raw = fh.read()
    num_rest = sum(name.startswith("f_rest_") for name in names)
    num_features = sum(name.startswith("feat_") for name in names)
    if num_rest % 3 or math.isqrt(num_rest // 3 + 1) ** 2 != num_rest // 3 + 1:
        raise ValueError(f"{path}: expected 3 * (K - 1) f_rest_* properties, got {num_rest}")
    k = num_rest // 3 + 1
    # Looked up by name (other writers may order or add properties differently).
    col = {name: i for i, name in enumerate(names)}
    # Normals are unused by 3DGS and some exporters omit them.
    optional = {"nx", "ny", "nz"}
    missing = [e for e in _names(k, num_features) if e not in col and e not in optional]
    if missing:
        raise ValueError(
            f"{path}: not a 3DGS PLY: missing properties {missing[:6]} "
            f"(file has {names[:10]}{'...' if len(names) > 10 else ''})"
        )
    width = len(names)
    if len(raw) < 4 * width * n:
        raise ValueError(f"{path}: truncated: expected {4 * width * n} data bytes, got {len(raw)}")
    data = torch.from_numpy(
        np.frombuffer(raw, dtype="<f4", count=width * n).reshape(n, width).astype(np.float32)
    )

    def take(*props: str) -> torch.Tensor:
        return data[:, [col[p] for p in props]].contiguous()

    dc = take("f_dc_0", "f_dc_1", "f_dc_2")
    rest = take(*(f"f_rest_{i}" for i in range(num_rest))).reshape(n, 3, k - 1).transpose(1, 2)
    return SplatPly(
        means=take("x", "y", "z"),
        quats=take("rot_0", "rot_1", "rot_2", "rot_3"),
        log_scales=take("scale_0", "scale_1", "scale_2"),
        opacity_logits=data[:, col["opacity"]].clone(),
        sh=torch.cat([dc[:, None, :], rest], dim=1).contiguous(),
        features=take(*(f"feat_{i}" for i in range(num_features))) if num_features else None,
    )
