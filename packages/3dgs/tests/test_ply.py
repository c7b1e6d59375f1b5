import numpy as np
import pytest
import torch

from subspace_3dgs.ply import read_splat_ply, write_splat_ply


def _gaussians(n, k, f=0, seed=0):
    g = torch.Generator().manual_seed(seed)
    out = {
        "means": torch.randn(n, 3, generator=g),
        "quats": torch.randn(n, 4, generator=g),
        "log_scales": torch.randn(n, 3, generator=g) - 3,
        "opacity_logits": torch.randn(n, generator=g),
        "sh": torch.randn(n, k, 3, generator=g),
    }
    if f:
        out["features"] = torch.randn(n, f, generator=g)
    return out


def _split(path):
    raw = path.read_bytes()
    end = raw.index(b"end_header\n") + len(b"end_header\n")
    return raw[:end].decode("ascii").splitlines(), raw[end:]


@pytest.mark.parametrize(("k", "f"), [(16, 0), (1, 0), (4, 5)])
def test_round_trip_is_bit_exact(tmp_path, k, f):
    g = _gaussians(37, k, f)
    path = write_splat_ply(tmp_path / "pc.ply", **g)
    back = read_splat_ply(path)
    for name, value in g.items():
        got = getattr(back, name)
        assert got.dtype == torch.float32 and got.shape == value.shape
        assert torch.equal(got, value), name
    if not f:
        assert back.features is None


def test_header_is_the_reference_layout(tmp_path):
    k = 16
    n = 5
    path = write_splat_ply(tmp_path / "pc.ply", **_gaussians(n, k))
    header, body = _split(path)
    # The attribute list the reference implementation builds (construct_list_of_attributes).
    attrs = ["x", "y", "z", "nx", "ny", "nz"]
    attrs += [f"f_dc_{i}" for i in range(3)] + [f"f_rest_{i}" for i in range(3 * (k - 1))]
    attrs += ["opacity"] + [f"scale_{i}" for i in range(3)] + [f"rot_{i}" for i in range(4)]
    assert header[:3] == ["ply", "format binary_little_endian 1.0", f"element vertex {n}"]
    assert header[3:-1] == [f"property float {a}" for a in attrs]
    assert header[-1] == "end_header"
    assert len(attrs) == 62 and len(body) == n * 62 * 4


def test_values_sit_in_the_reference_columns(tmp_path):
    g = _gaussians(6, 9)
    path = write_splat_ply(tmp_path / "pc.ply", **g)
    header, body = _split(path)
    names = [line.split()[-1] for line in header if line.startswith("property")]
    table = np.frombuffer(body, dtype="<f4").reshape(6, len(names))
    col = {name: table[:, i] for i, name in enumerate(names)}
    sh = g["sh"].numpy()
    # f_rest is channel-major: the 8 rest coefficients of red, then green, then blue.
    for c in range(3):
        for j in range(8):
            np.testing.assert_array_equal(col[f"f_rest_{c * 8 + j}"], sh[:, 1 + j, c])
        np.testing.assert_array_equal(col[f"f_dc_{c}"], sh[:, 0, c])
    np.testing.assert_array_equal(col["opacity"], g["opacity_logits"].numpy())
    np.testing.assert_array_equal(col["rot_0"], g["quats"][:, 0].numpy())
    np.testing.assert_array_equal(col["scale_2"], g["log_scales"][:, 2].numpy())
    np.testing.assert_array_equal(col["nx"], np.zeros(6, np.float32))


def test_reader_finds_properties_by_name_in_any_order(tmp_path):
    g = _gaussians(4, 1)
    names = ["rot_0", "rot_1", "rot_2", "rot_3", "x", "y", "z", "opacity"]
    names += ["scale_0", "scale_1", "scale_2", "f_dc_0", "f_dc_1", "f_dc_2"]
    cols = {
        "x": g["means"][:, 0], "y": g["means"][:, 1], "z": g["means"][:, 2],
        "opacity": g["opacity_logits"],
        **{f"rot_{i}": g["quats"][:, i] for i in range(4)},
        **{f"scale_{i}": g["log_scales"][:, i] for i in range(3)},
        **{f"f_dc_{i}": g["sh"][:, 0, i] for i in range(3)},
    }  # fmt: skip
    table = torch.stack([cols[n] for n in names], dim=1).numpy().astype("<f4")
    head = "ply\nformat binary_little_endian 1.0\nelement vertex 4\n"
    head += "".join(f"property float {n}\n" for n in names) + "end_header\n"
    path = tmp_path / "other.ply"
    path.write_bytes(head.encode() + table.tobytes())
    back = read_splat_ply(path)
    assert torch.equal(back.means, g["means"]) and torch.equal(back.quats, g["quats"])
    assert torch.equal(back.sh, g["sh"])


def test_non_3dgs_ply_is_rejected(tmp_path):
    mesh = tmp_path / "mesh.ply"
    mesh.write_bytes(
        b"ply\nformat binary_little_endian 1.0\nelement vertex 1\nproperty float x\n"
        b"property float y\nproperty float z\nend_header\n" + np.zeros(3, "<f4").tobytes()
    )
    with pytest.raises(ValueError, match="not a 3DGS PLY: missing properties"):
        read_splat_ply(mesh)
    ascii_ply = tmp_path / "ascii.ply"
    ascii_ply.write_text("ply\nformat ascii 1.0\nelement vertex 0\nproperty float x\nend_header\n")
    with pytest.raises(ValueError, match="binary_little_endian"):
        read_splat_ply(ascii_ply)
    faces = tmp_path / "faces.ply"
    faces.write_text(
        "ply\nformat binary_little_endian 1.0\nelement vertex 0\nproperty float x\n"
        "element face 0\nproperty list uchar int vertex_indices\nend_header\n"
    )
    with pytest.raises(ValueError, match="single 'vertex' element"):
        read_splat_ply(faces)
    (tmp_path / "junk.ply").write_bytes(b"PK\x03\x04")
    with pytest.raises(ValueError, match="not a PLY"):
        read_splat_ply(tmp_path / "junk.ply")


def test_truncated_file_is_rejected(tmp_path):
    path = write_splat_ply(tmp_path / "pc.ply", **_gaussians(3, 1))
    path.write_bytes(path.read_bytes()[:-4])
    with pytest.raises(ValueError, match="truncated"):
        read_splat_ply(path)


def test_writer_checks_shapes(tmp_path):
    g = _gaussians(3, 4)
    with pytest.raises(ValueError, match=r"sh: expected K in \(1, 4, 9, 16\)"):
        write_splat_ply(tmp_path / "a.ply", **{**g, "sh": torch.zeros(3, 5, 3)})
    with pytest.raises(ValueError, match=r"quats: expected shape \[3, 4\]"):
        write_splat_ply(tmp_path / "a.ply", **{**g, "quats": torch.zeros(3, 3)})
    with pytest.raises(ValueError, match=r"sh: expected \[3, K, 3\]"):
        write_splat_ply(tmp_path / "a.ply", **{**g, "sh": torch.zeros(3, 4, 2)})
    with pytest.raises(TypeError, match="opacity_logits: expected a floating-point"):
        write_splat_ply(
            tmp_path / "a.ply", **{**g, "opacity_logits": torch.zeros(3, dtype=torch.int64)}
        )
