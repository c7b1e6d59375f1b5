"""Clustering metrics against hand-computed cases and brute force; the k-means baseline."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from subspace_ssl.clustering import (
    cluster_scores,
    clustering_accuracy,
    contingency_table,
    kmeans_labels,
)


def _brute_force_accuracy(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """max over injective maps cluster → class, by enumeration (tiny cases only)."""
    classes, clusters = np.unique(y_true), np.unique(y_pred)
    best = 0
    slots = list(classes) + [None] * len(clusters)  # None: cluster left unmatched
    for image in itertools.permutations(slots, len(clusters)):
        used = [c for c in image if c is not None]
        if len(used) != len(set(used)):
            continue
        mapping = dict(zip(clusters, image, strict=True))
        best = max(best, sum(mapping[p] == t for t, p in zip(y_true, y_pred, strict=True)))
    return best / len(y_true)


def test_accuracy_hand_examples():
    assert clustering_accuracy([0, 0, 1, 1, 2, 2], [1, 1, 0, 0, 2, 2]) == 1.0
    # clusters {0,1,2 | 3,4,5}: cluster 0 → class 0 (2 right), cluster 1 → class 2 (2 right)
    assert clustering_accuracy([0, 0, 1, 1, 2, 2], [0, 0, 0, 1, 1, 1]) == pytest.approx(4 / 6)
    # one cluster for everything: the largest class is all that can be right
    assert clustering_accuracy([0, 0, 0, 1, 2], [7, 7, 7, 7, 7]) == pytest.approx(3 / 5)
    # more clusters than classes: the extra cluster's samples are errors
    assert clustering_accuracy([0, 0, 0, 1, 1, 1], [0, 0, 1, 2, 2, 3]) == pytest.approx(4 / 6)


def test_accuracy_is_invariant_to_renaming_clusters():
    rng = np.random.default_rng(0)
    y_true = rng.integers(0, 5, size=200)
    y_pred = np.where(rng.random(200) < 0.7, y_true, rng.integers(0, 6, size=200))
    base = clustering_accuracy(y_true, y_pred)
    perm = rng.permutation(6) * 10 + 3  # arbitrary, non-contiguous ids
    assert clustering_accuracy(y_true, perm[y_pred]) == pytest.approx(base)
    assert clustering_accuracy(torch.as_tensor(y_true), torch.as_tensor(y_pred)) == base


@pytest.mark.parametrize("seed", range(6))
def test_accuracy_matches_brute_force(seed):
    rng = np.random.default_rng(seed)
    n_classes, n_clusters = rng.integers(2, 5), rng.integers(1, 5)
    y_true = rng.integers(0, n_classes, size=12)
    y_pred = rng.integers(0, n_clusters, size=12)
    assert clustering_accuracy(y_true, y_pred) == pytest.approx(
        _brute_force_accuracy(y_true, y_pred)
    )


def test_contingency_table_counts():
    table = contingency_table([0, 0, 1, 2, 2, 2], [5, 9, 9, 9, 5, 5])
    np.testing.assert_array_equal(table, [[1, 1], [0, 1], [2, 1]])


def test_scores_perfect_and_hand_examples():
    y = np.array([0, 0, 1, 1, 2, 2, 2])
    perfect = cluster_scores(y, (y + 1) % 3 * 4)
    assert perfect == pytest.approx({"acc": 1.0, "nmi": 1.0, "ari": 1.0})
    # two balanced classes split orthogonally: no information shared, ARI = -1/2
    s = cluster_scores([0, 0, 1, 1], [0, 1, 0, 1])
    assert s["acc"] == pytest.approx(0.5)
    assert s["nmi"] == pytest.approx(0.0, abs=1e-12)
    assert s["ari"] == pytest.approx(-0.5)


def test_bad_labels_raise():
    with pytest.raises(ValueError, match="y_pred"):
        clustering_accuracy([0, 1, 1], [0, 1])
    with pytest.raises(TypeError, match="integer"):
        cluster_scores([0.0, 1.0], [0, 1])
    with pytest.raises(ValueError, match="1-D"):
        clustering_accuracy(np.zeros((2, 2), dtype=int), np.zeros((2, 2), dtype=int))
    with pytest.raises(ValueError, match="at least one"):
        clustering_accuracy([], [])


def test_kmeans_recovers_separated_blobs_and_is_seeded():
    g = torch.Generator().manual_seed(0)
    centres = torch.tensor([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])
    y = torch.arange(3).repeat_interleave(40)
    x = centres[y] + 0.5 * torch.randn(120, 2, generator=g)
    pred = kmeans_labels(x, 3, seed=1)
    assert pred.dtype == np.int64 and pred.shape == (120,)
    assert clustering_accuracy(y, pred) == 1.0
    np.testing.assert_array_equal(pred, kmeans_labels(x.numpy(), 3, seed=1))


def test_kmeans_bad_input_raises():
    x = torch.randn(5, 2)
    with pytest.raises(ValueError, match="k: expected"):
        kmeans_labels(x, 6)
    with pytest.raises(ValueError, match="features"):
        kmeans_labels(torch.randn(5), 2)
    with pytest.raises(ValueError, match="finite"):
        kmeans_labels(torch.full((5, 2), float("nan")), 2)
