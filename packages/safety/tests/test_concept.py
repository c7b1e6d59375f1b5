"""ConceptSubspace: SVD construction, projections, distances, persistence, errors."""

from __future__ import annotations

import math

import pytest
import torch
from safetensors.torch import save_file

from subspace_safety.concept import ConceptSubspace


def _planted(n: int = 12, d: int = 16, k: int = 3, seed: int = 0):
    """Rows exactly inside a random k-dim subspace; returns (rows, orthonormal basis)."""
    g = torch.Generator().manual_seed(seed)
    Q, _ = torch.linalg.qr(torch.randn(d, k, generator=g, dtype=torch.float64))
    return (torch.randn(n, k, generator=g, dtype=torch.float64) @ Q.T), Q


def test_full_span_recovers_planted_subspace():
    X, Q = _planted()
    c = ConceptSubspace.from_embeddings(X)
    assert c.rank == 3 and c.dim == 16 and not c.centered
    # Same subspace: projectors agree.
    torch.testing.assert_close(c.projector(), Q @ Q.T, atol=1e-10, rtol=0)
    # Singular values are those of X.
    torch.testing.assert_close(c.singular_values, torch.linalg.svdvals(X)[:3])


def test_project_out_is_orthogonal_and_complements_project_in():
    X, _ = _planted()
    c = ConceptSubspace.from_embeddings(X)
    x = torch.randn(4, 5, 16, dtype=torch.float64)
    out = c.project_out(x)
    assert out.shape == x.shape
    assert float((out @ c.basis).abs().max()) < 1e-12
    torch.testing.assert_close(c.project_in(x) + out, x)
    # Concept rows are removed entirely; orthogonal vectors are untouched.
    assert float(c.project_out(X).abs().max()) < 1e-10
    ortho = x - c.project_in(x)
    torch.testing.assert_close(c.project_out(ortho), ortho)


def test_distance_and_proximity_closed_form():
    X, Q = _planted()
    c = ConceptSubspace.from_embeddings(X)
    # x = a·q0 + b·w with w ⟂ span(Q): distance b, relative b/√(a²+b²), proximity a²/(a²+b²).
    w = torch.randn(16, dtype=torch.float64)
    w = w - Q @ (Q.T @ w)
    w = w / w.norm()
    a, b = 3.0, 4.0
    x = a * Q[:, 0] + b * w
    assert math.isclose(float(c.distance(x)), b, rel_tol=1e-10)
    assert math.isclose(float(c.distance(x, relative=True)), b / 5, rel_tol=1e-10)
    assert math.isclose(float(c.proximity(x)), a**2 / 25, rel_tol=1e-10)
    assert float(c.proximity(torch.zeros(16, dtype=torch.float64))) == 0.0
    tokens = torch.stack([x, Q[:, 1], w]).unsqueeze(0)           # [1, 3, d]
    torch.testing.assert_close(c.proximity(tokens), torch.tensor([[0.36, 1.0, 0.0]],
                                                                 dtype=torch.float64))


def test_rank_and_energy_selection():
    g = torch.Generator().manual_seed(1)
    U, _ = torch.linalg.qr(torch.randn(10, 4, generator=g, dtype=torch.float64))
    V, _ = torch.linalg.qr(torch.randn(8, 4, generator=g, dtype=torch.float64))
    S = torch.tensor([4.0, 2.0, 1.0, 0.5], dtype=torch.float64)
    X = U @ torch.diag(S) @ V.T                                   # [10, 8], known spectrum
    assert ConceptSubspace.from_embeddings(X, rank=2).rank == 2
    energies = S.square() / S.square().sum()                      # .7529, .1882, .0471, .0118
    assert ConceptSubspace.from_embeddings(X, energy=0.9).rank == 2
    assert ConceptSubspace.from_embeddings(X, energy=float(energies[:3].sum()) + 1e-6).rank == 4
    assert ConceptSubspace.from_embeddings(X, energy=0.5).rank == 1
    torch.testing.assert_close(ConceptSubspace.from_embeddings(X).projector(), V @ V.T)


def test_centring_gives_affine_subspace():
    X, Q = _planted(n=20, d=8, k=2)
    offset = torch.randn(8, dtype=torch.float64) * 5
    c = ConceptSubspace.from_embeddings(X + offset, center=True)
    torch.testing.assert_close(c.mean, (X + offset).mean(0))
    # The offset is absorbed by the centre: the directions are those of the planted subspace.
    torch.testing.assert_close(c.projector(), Q @ Q.T, atol=1e-10, rtol=0)
    # Points of the affine subspace are at distance 0 and are fixed by project_in.
    torch.testing.assert_close(c.distance(X + offset), torch.zeros(20, dtype=torch.float64),
                               atol=1e-10, rtol=0)
    torch.testing.assert_close(c.project_in(X + offset), X + offset)
    y = torch.randn(8, dtype=torch.float64)
    # project_out removes the concept part of the deviation from the centre.
    dev = c.project_out(y) - c.mean
    expected = (y - c.mean) - c.basis @ (c.basis.T @ (y - c.mean))
    torch.testing.assert_close(dev, expected)
    assert float((dev @ c.basis).abs().max()) < 1e-10


def test_save_load_roundtrip(tmp_path):
    X, _ = _planted()
    c = ConceptSubspace.from_embeddings(X.float(), center=True, metadata={"concept": "nudity"})
    path = c.save(tmp_path / "sub" / "nudity.safetensors", metadata={"note": "test"})
    back = ConceptSubspace.load(path)
    torch.testing.assert_close(back.basis, c.basis, rtol=0, atol=0)
    torch.testing.assert_close(back.singular_values, c.singular_values, rtol=0, atol=0)
    torch.testing.assert_close(back.mean, c.mean, rtol=0, atol=0)
    assert back.metadata["concept"] == "nudity" and back.metadata["note"] == "test"
    assert back.metadata["n_embeddings"] == "12"
    assert not list(tmp_path.glob("sub/.*.tmp"))


def test_load_refuses_foreign_or_tampered_files(tmp_path):
    foreign = tmp_path / "foreign.safetensors"
    save_file({"basis": torch.eye(4)[:, :2].contiguous(),
               "singular_values": torch.ones(2)}, str(foreign))
    with pytest.raises(ValueError, match="not a ConceptSubspace file"):
        ConceptSubspace.load(foreign)
    bad = tmp_path / "bad.safetensors"
    save_file({"basis": torch.ones(4, 2), "singular_values": torch.ones(2)}, str(bad),
              metadata={"format": "subspace_safety.ConceptSubspace", "format_version": "1",
                        "centered": "false"})
    with pytest.raises(ValueError, match="orthonormal"):
        ConceptSubspace.load(bad)
    with pytest.raises(FileNotFoundError, match="path"):
        ConceptSubspace.load(tmp_path / "missing.safetensors")


@pytest.mark.parametrize(
    ("kwargs", "exc", "match"),
    [
        ({"embeddings": torch.ones(3)}, ValueError, "embeddings"),
        ({"embeddings": torch.ones(3, 4, dtype=torch.int64)}, TypeError, "embeddings"),
        ({"embeddings": torch.full((3, 4), float("nan"))}, ValueError, "NaN"),
        ({"embeddings": torch.zeros(3, 4)}, ValueError, "zero"),
        ({"embeddings": torch.randn(3, 4), "rank": 4}, ValueError, "rank"),
        ({"embeddings": torch.randn(3, 4), "rank": 1, "energy": 0.9}, ValueError, "rank, energy"),
        ({"embeddings": torch.randn(3, 4), "energy": 1.5}, ValueError, "threshold"),
    ],
)
def test_from_embeddings_errors(kwargs, exc, match):
    with pytest.raises(exc, match=match):
        ConceptSubspace.from_embeddings(**kwargs)


def test_projection_errors_name_argument():
    c = ConceptSubspace.from_embeddings(torch.randn(3, 8))
    with pytest.raises(ValueError, match="last dimension of 8"):
        c.project_out(torch.randn(2, 7))
    with pytest.raises(TypeError, match=r"x: expected a torch\.Tensor"):
        c.distance([1.0] * 8)
    with pytest.raises(ValueError, match="basis: expected orthonormal"):
        ConceptSubspace(torch.ones(4, 2), torch.ones(2))
