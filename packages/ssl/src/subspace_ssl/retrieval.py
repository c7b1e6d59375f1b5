"""Embedding-quality metrics: retrieval Recall@K (cosine, leave-one-out) and k-means NMI.

Recall@K is the deep-metric-learning protocol (Song et al. 2016, "lifted structure"): every
sample is a query against all the *other* samples (it is excluded from its own gallery);
Recall@K is the fraction of queries with at least one same-label sample among their K
nearest neighbours by cosine similarity. The similarity matrix is never formed whole: queries
go in chunks, so 10k × 10k needs one ``chunk_size × N`` block at a time.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["clustering_nmi", "recall_at_k"]


def _check_embeddings(embeddings: object, labels: object) -> tuple[torch.Tensor, torch.Tensor]:
    if not isinstance(embeddings, torch.Tensor):
        embeddings = torch.as_tensor(np.asarray(embeddings))
    if not isinstance(labels, torch.Tensor):
        labels = torch.as_tensor(np.asarray(labels))
    if embeddings.ndim != 2 or not embeddings.dtype.is_floating_point:
        raise ValueError(
            f"embeddings: expected a float tensor [N, D], got {embeddings.dtype} "
            f"{tuple(embeddings.shape)}"
        )
    if labels.ndim != 1 or labels.shape[0] != embeddings.shape[0]:
        raise ValueError(
            f"labels: expected shape [{embeddings.shape[0]}] (one per embedding), "
            f"got {tuple(labels.shape)}"
        )
    if labels.dtype.is_floating_point or labels.is_complex():
        raise ValueError(f"labels: expected integer class ids, got {labels.dtype}")
    if not torch.isfinite(embeddings).all():
        raise ValueError("embeddings: expected finite values, got NaN or inf")
    return embeddings, labels


@torch.no_grad()
def recall_at_k(
    embeddings: torch.Tensor,
    labels: torch.Tensor,
    ks: Sequence[int] = (1, 2, 4, 8),
    *,
    chunk_size: int = 1024,
) -> dict[int, float]:
    """Leave-one-out cosine Recall@K of ``embeddings`` [N, D] with class ``labels`` [N].

    Returns ``{k: recall}`` with recall a fraction in [0, 1]: the share of queries ``i`` whose
    ``k`` most cosine-similar samples ``j ≠ i`` include one with ``labels[j] == labels[i]``.
    A query whose class has no other member counts as a miss (it cannot be retrieved).
    Ties in similarity are broken by :func:`torch.topk` (lowest index first on CPU in
    practice; not guaranteed), so hand-built cases should avoid exact ties.

    Args:
        embeddings: float [N, D]; zero rows are allowed (they have similarity 0 to all).
        labels: integer [N].
        ks: positive cut-offs, each at most ``N - 1``.
        chunk_size: queries per block; memory is ``chunk_size × N`` similarities.
    """
    embeddings, labels = _check_embeddings(embeddings, labels)
    n = embeddings.shape[0]
    ks = tuple(int(k) for k in ks)
    if not ks or min(ks) < 1 or max(ks) > n - 1:
        raise ValueError(f"ks: expected cut-offs in [1, N - 1 = {n - 1}], got {ks}")
    if chunk_size < 1:
        raise ValueError(f"chunk_size: expected >= 1, got {chunk_size}")
    # float64 on small inputs would be exact-er, but float32 keeps 10k × 1024 blocks at 40 MB;
    # the ranking only needs the order of cosines, which float32 keeps for non-tied pairs.
    unit = F.normalize(embeddings.float(), dim=1)
    labels = labels.to(unit.device)
    k_max = max(ks)
    hits = torch.zeros(len(ks), dtype=torch.long)
    for start in range(0, n, chunk_size):
        stop = min(start + chunk_size, n)
        sims = unit[start:stop] @ unit.T  # [b, N]
        rows = torch.arange(stop - start, device=unit.device)
        sims[rows, rows + start] = -float("inf")  # the query is not in its own gallery
        neighbours = sims.topk(k_max, dim=1).indices  # [b, k_max], most similar first
        same = labels[neighbours] == labels[start:stop, None]
        # first_hit[i] = rank (0-based) of the first same-label neighbour, k_max if none
        ranks = torch.where(same, torch.arange(k_max, device=unit.device), k_max)
        first_hit = ranks.min(dim=1).values
        for i, k in enumerate(ks):
            hits[i] += int((first_hit < k).sum())
    return {k: hits[i].item() / n for i, k in enumerate(ks)}


def clustering_nmi(
    embeddings: torch.Tensor,
    labels: torch.Tensor,
    n_clusters: int | None = None,
    *,
    seed: int = 0,
    n_init: int = 3,
) -> float:
    """NMI between k-means clusters of the L2-normalised ``embeddings`` [N, D] and ``labels``.

    The clustering protocol of deep metric learning: k-means (scikit-learn, k-means++
    initialisation, best of ``n_init`` runs, fixed ``seed``) with ``n_clusters`` (default:
    the number of distinct labels) on unit-norm embeddings — so Euclidean k-means follows
    cosine geometry — scored by ``sklearn.metrics.normalized_mutual_info_score``
    (arithmetic normalisation). Returns a float in [0, 1].
    """
    from sklearn.metrics import normalized_mutual_info_score

    from subspace_ssl.clustering import kmeans_labels

    embeddings, labels = _check_embeddings(embeddings, labels)
    n_clusters = int(labels.unique().numel()) if n_clusters is None else int(n_clusters)
    if not 1 <= n_clusters <= embeddings.shape[0]:
        raise ValueError(
            f"n_clusters: expected an integer in [1, N = {embeddings.shape[0]}], got {n_clusters}"
        )
    unit = F.normalize(embeddings.detach().double().cpu(), dim=1).numpy()
    assignment = kmeans_labels(unit, n_clusters, seed, n_init=n_init)
    return float(normalized_mutual_info_score(labels.cpu().numpy(), assignment))
