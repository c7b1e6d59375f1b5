"""Clustering metrics (ACC / NMI / ARI) and the k-means baseline.

* :func:`clustering_accuracy` — accuracy under the best one-to-one map of predicted clusters
  to classes (Hungarian algorithm on the contingency table); clusters left without a class
  (or classes without a cluster) count as errors, so it also works when the number of
  clusters differs from the number of classes.
* :func:`cluster_scores` — ``{"acc", "nmi", "ari"}`` of one clustering (scikit-learn's NMI
  with the arithmetic-mean normaliser and ARI).
* :func:`kmeans_labels` — scikit-learn k-means (k-means++ seeding, several restarts), the
  baseline every clustering table carries.

Labels are 1-D integer arrays or tensors of length ``n``; the cluster ids are arbitrary.
"""

from __future__ import annotations

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment
from sklearn.cluster import KMeans
from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

__all__ = ["cluster_scores", "clustering_accuracy", "contingency_table", "kmeans_labels"]


def _as_labels(name: str, labels: object) -> np.ndarray:
    if isinstance(labels, torch.Tensor):
        labels = labels.detach().cpu().numpy()
    if not isinstance(labels, np.ndarray):
        labels = np.asarray(labels)
    if labels.ndim != 1:
        raise ValueError(f"{name}: expected a 1-D array of labels [n], got shape {labels.shape}")
    if labels.size and not np.issubdtype(labels.dtype, np.integer):
        raise TypeError(f"{name}: expected integer labels, got dtype {labels.dtype}")
    return labels.astype(np.int64, copy=False)


def _pair(y_true: object, y_pred: object) -> tuple[np.ndarray, np.ndarray]:
    t = _as_labels("y_true", y_true)
    p = _as_labels("y_pred", y_pred)
    if t.shape != p.shape:
        raise ValueError(f"y_pred: expected shape {t.shape} (that of y_true), got {p.shape}")
    if t.size == 0:
        raise ValueError("y_true: expected at least one sample, got 0")
    return t, p


def contingency_table(y_true: object, y_pred: object) -> np.ndarray:
    """Counts ``N[i, j]`` of samples of the ``i``-th class (sorted ids) in the ``j``-th cluster.

    Returns:
        int64 array ``[num_classes, num_clusters]`` over the ids that occur.
    """
    t, p = _pair(y_true, y_pred)
    classes, ti = np.unique(t, return_inverse=True)
    clusters, pi = np.unique(p, return_inverse=True)
    table = np.zeros((len(classes), len(clusters)), dtype=np.int64)
    np.add.at(table, (ti, pi), 1)
    return table


def clustering_accuracy(y_true: object, y_pred: object) -> float:
    """Accuracy of ``y_pred`` under the best one-to-one map of clusters to classes.

    ``max_σ (1/n) Σ_i 1[y_true_i = σ(y_pred_i)]`` over injective partial maps σ, solved
    exactly by ``scipy.optimize.linear_sum_assignment`` on the (rectangular) contingency
    table. Invariant to renaming the clusters; with more clusters than classes the extra
    clusters' samples count as errors (and vice versa).

    Args:
        y_true: class labels [n] (integers).
        y_pred: cluster ids [n] (integers, any values).

    Returns:
        A float in ``[0, 1]``.
    """
    table = contingency_table(y_true, y_pred)
    rows, cols = linear_sum_assignment(table, maximize=True)
    return float(table[rows, cols].sum() / table.sum())


def cluster_scores(y_true: object, y_pred: object) -> dict[str, float]:
    """``{"acc": ..., "nmi": ..., "ari": ...}`` of a clustering against class labels.

    ``acc`` is :func:`clustering_accuracy`; ``nmi`` is scikit-learn's
    ``normalized_mutual_info_score`` (arithmetic normaliser) and ``ari`` its
    ``adjusted_rand_score``. All three equal 1 for a perfect clustering (up to renaming).
    """
    t, p = _pair(y_true, y_pred)
    return {
        "acc": clustering_accuracy(t, p),
        "nmi": float(normalized_mutual_info_score(t, p)),
        "ari": float(adjusted_rand_score(t, p)),
    }


def kmeans_labels(
    features: torch.Tensor | np.ndarray, k: int, seed: int = 0, *, n_init: int = 10
) -> np.ndarray:
    """k-means cluster ids of the rows of ``features`` (the clustering baseline).

    scikit-learn ``KMeans(n_clusters=k, init="k-means++", n_init=n_init, random_state=seed)``
    (Lloyd iterations; the best of ``n_init`` seedings by inertia), run in float64 on the
    features as given — normalise or whiten them first if that is part of the protocol.

    Args:
        features: ``[n, D]`` float tensor or array.
        k: number of clusters, ``1 <= k <= n``.
        seed: seed of the k-means++ seedings.
        n_init: number of restarts.

    Returns:
        int64 array [n] of cluster ids in ``0..k-1``.
    """
    if isinstance(features, torch.Tensor):
        features = features.detach().cpu().numpy()
    x = np.asarray(features)
    if x.ndim != 2 or not np.issubdtype(x.dtype, np.floating):
        raise ValueError(
            f"features: expected a float array [n, D], got {x.dtype} of shape {x.shape}"
        )
    if not np.isfinite(x).all():
        raise ValueError("features: expected finite values, got NaN/Inf")
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= len(x):
        raise ValueError(f"k: expected an int in [1, {len(x)}] (the number of samples), got {k!r}")
    if isinstance(n_init, bool) or not isinstance(n_init, int) or n_init < 1:
        raise ValueError(f"n_init: expected a positive int, got {n_init!r}")
    model = KMeans(n_clusters=k, init="k-means++", n_init=n_init, random_state=seed)
    return model.fit_predict(x.astype(np.float64, copy=False)).astype(np.int64)
