"""Scalar metrics shared by the packages' protocols and benchmarks."""

from __future__ import annotations

import torch

__all__ = ["roc_auc"]


def roc_auc(scores: torch.Tensor, positive: torch.Tensor) -> float:
    """ROC AUC of ``scores [N]`` for the boolean ``positive [N]``: the Mann-Whitney statistic
    with average ranks, so tied scores count one half (as ``sklearn.metrics.roc_auc_score``).
    NaN when one class is absent. Callers validate their inputs; this is the formula only."""
    n_pos = int(positive.sum())
    n_neg = positive.numel() - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    _, group, counts = torch.unique(scores, return_inverse=True, return_counts=True)
    average_rank = counts.cumsum(0).double() - (counts.double() - 1) / 2
    rank_sum = float(average_rank[group][positive].sum())
    return (rank_sum - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)
