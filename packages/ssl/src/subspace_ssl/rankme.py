"""RankMe (Garrido et al. 2023, arXiv:2210.02885): the effective rank of embeddings as an
unsupervised quality score, and model selection by it.

``RankMe(Z) = exp(−Σ_k p_k log p_k)``, ``p_k = σ_k / ‖σ‖₁ + ε`` over the singular values
``σ`` of the embedding matrix Z [N, D] (not centred, as in the paper). It needs no labels,
so it can rank checkpoints or hyper-parameters of a self-supervised run; the paper shows it
correlates with downstream accuracy within a method's hyper-parameter family.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

from subspace_core.linalg import effective_rank

__all__ = ["rankme", "select_by_rankme", "spearman"]


def rankme(embeddings: torch.Tensor, *, eps: float = 1e-7) -> float:
    """RankMe of embeddings [N, D] (in ``[1, min(N, D)]``); core ``linalg.effective_rank``."""
    if not isinstance(embeddings, torch.Tensor) or embeddings.ndim != 2:
        raise ValueError(f"embeddings: expected a tensor [N, D], got "
                         f"{tuple(getattr(embeddings, 'shape', ())) or type(embeddings).__name__}")
    return float(effective_rank(embeddings.double(), eps=eps))


def select_by_rankme(candidates: Mapping[str, torch.Tensor]) -> tuple[str, dict[str, float]]:
    """The candidate (checkpoint, hyper-parameter setting) whose embeddings have the highest
    RankMe, and every candidate's score.

    Args:
        candidates: name → embeddings [N, D] of the same N inputs.
    """
    if not candidates:
        raise ValueError("candidates: expected at least one name → embeddings entry")
    scores = {name: rankme(z) for name, z in candidates.items()}
    return max(scores, key=scores.__getitem__), scores


def spearman(a: list[float] | torch.Tensor, b: list[float] | torch.Tensor) -> float:
    """Spearman rank correlation of two equal-length sequences (ties get average ranks)."""
    from scipy.stats import spearmanr

    a, b = list(map(float, a)), list(map(float, b))
    if len(a) != len(b) or len(a) < 2:
        raise ValueError(f"a/b: expected two sequences of equal length >= 2, got {len(a)} and "
                         f"{len(b)}")
    return float(spearmanr(a, b).statistic)
