"""Recall@K (cosine, leave-one-out) and k-means NMI on hand-built and brute-forced cases."""

from __future__ import annotations

import math

import pytest
import torch

from subspace_ssl.retrieval import clustering_nmi, recall_at_k


def _unit_circle(degrees: list[float]) -> torch.Tensor:
    radians = torch.tensor(degrees, dtype=torch.float64) * math.pi / 180
    return torch.stack([radians.cos(), radians.sin()], dim=1)


def _brute_force_recall(emb: torch.Tensor, labels: torch.Tensor, k: int) -> float:
    """One query at a time with Python sorting: the definition, written independently."""
    unit = emb / emb.norm(dim=1, keepdim=True)
    hits = 0
    for i in range(len(labels)):
        others = [j for j in range(len(labels)) if j != i]
        ranked = sorted(others, key=lambda j: -float(unit[i] @ unit[j]))
        hits += any(labels[j] == labels[i] for j in ranked[:k])
    return hits / len(labels)


def test_perfect_clusters_give_recall_one():
    generator = torch.Generator().manual_seed(0)
    centres = torch.eye(5) * 10
    labels = torch.arange(5).repeat_interleave(4)
    emb = centres[labels] + 0.1 * torch.randn(20, 5, generator=generator)
    assert recall_at_k(emb, labels) == {1: 1.0, 2: 1.0, 4: 1.0, 8: 1.0}


def test_hand_built_case():
    # angles 0°, 10°, 100°, 210° with labels 0, 1, 0, 1: the first same-label neighbour
    # (by cosine, self excluded) is at rank 2, 3, 2, 3 (worked out by hand; no ties)
    emb = _unit_circle([0, 10, 100, 210])
    labels = torch.tensor([0, 1, 0, 1])
    assert recall_at_k(emb, labels, ks=(1, 2, 3)) == {1: 0.0, 2: 0.5, 3: 1.0}


def test_query_is_excluded_from_its_own_gallery():
    # every point's nearest *other* point belongs to the other class, so Recall@1 = 0;
    # had the query been kept in the gallery it would find itself and score 1
    emb = _unit_circle([0, 5, 90, 95])
    labels = torch.tensor([0, 1, 0, 1])
    assert recall_at_k(emb, labels, ks=(1,)) == {1: 0.0}


def test_singleton_class_is_a_miss_and_scale_does_not_matter():
    emb = _unit_circle([0, 20, 40])
    labels = torch.tensor([0, 0, 1])  # class 1 has no other member: never retrievable
    assert recall_at_k(emb, labels, ks=(1, 2)) == {1: 2 / 3, 2: 2 / 3}
    scaled = emb * torch.tensor([[3.0], [0.01], [70.0]], dtype=torch.float64)
    assert recall_at_k(scaled, labels, ks=(1, 2)) == {1: 2 / 3, 2: 2 / 3}


def test_chunked_matches_brute_force():
    generator = torch.Generator().manual_seed(1)
    emb = torch.randn(53, 6, generator=generator)
    labels = torch.randint(0, 5, (53,), generator=generator)
    expected = {k: _brute_force_recall(emb, labels, k) for k in (1, 2, 4, 8)}
    for chunk in (1, 7, 53, 1000):
        assert recall_at_k(emb, labels, chunk_size=chunk) == pytest.approx(expected, abs=0)


def test_bad_input_raises():
    emb, labels = torch.randn(5, 3), torch.arange(5)
    with pytest.raises(ValueError, match="ks"):
        recall_at_k(emb, labels, ks=(5,))  # at most N - 1 = 4 others
    with pytest.raises(ValueError, match="labels"):
        recall_at_k(emb, labels[:4])
    with pytest.raises(ValueError, match="integer"):
        recall_at_k(emb, labels.float())
    with pytest.raises(ValueError, match="embeddings"):
        recall_at_k(torch.randn(5), labels)
    with pytest.raises(ValueError, match="finite"):
        recall_at_k(torch.full((5, 3), float("nan")), labels)


def test_nmi_perfect_permuted_and_random():
    generator = torch.Generator().manual_seed(2)
    labels = torch.arange(4).repeat_interleave(25)
    emb = torch.eye(4)[labels] + 0.05 * torch.randn(100, 4, generator=generator)
    assert clustering_nmi(emb, labels) == pytest.approx(1.0)
    # NMI does not care how the classes are numbered
    assert clustering_nmi(emb, (labels + 1) % 4) == pytest.approx(1.0)
    noise = torch.randn(400, 8, generator=generator)
    random_labels = torch.randint(0, 4, (400,), generator=generator)
    assert clustering_nmi(noise, random_labels) < 0.05
    with pytest.raises(ValueError, match="n_clusters"):
        clustering_nmi(emb, labels, n_clusters=0)
