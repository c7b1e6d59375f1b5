"""CTR metrics: ROC AUC (tie-aware), log loss, and AUC over a sliding window of events."""

from __future__ import annotations

from collections import deque

import torch

from subspace_core.eval import roc_auc

__all__ = ["SlidingWindowAUC", "auc", "logloss"]


def _check_pair(scores: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    scores = torch.as_tensor(scores).detach().reshape(-1).double()
    labels = torch.as_tensor(labels).detach().reshape(-1).double()
    if scores.shape != labels.shape:
        raise ValueError(
            f"scores/labels: expected the same number of elements, got {scores.numel()} "
            f"and {labels.numel()}"
        )
    if labels.numel() and not bool(((labels == 0) | (labels == 1)).all()):
        raise ValueError("labels: expected only 0/1 values")
    return scores, labels


def auc(scores: torch.Tensor, labels: torch.Tensor) -> float:
    """ROC AUC of ``scores [N]`` against binary ``labels [N]``.

    The Mann-Whitney statistic with average ranks for ties, so equal scores count one
    half (as ``sklearn.metrics.roc_auc_score``). NaN when one class is absent.
    """
    scores, labels = _check_pair(scores, labels)
    return roc_auc(scores, labels == 1)


def logloss(logits: torch.Tensor, labels: torch.Tensor) -> float:
    """Mean binary cross-entropy of ``logits [N]`` (pre-sigmoid) against ``labels [N]``."""
    logits, labels = _check_pair(logits, labels)
    if logits.numel() == 0:
        return float("nan")
    return float(torch.nn.functional.binary_cross_entropy_with_logits(logits, labels))


class SlidingWindowAUC:
    """AUC and log loss over the most recent ``window`` events (a progressive-validation
    metric: feed each batch's predictions *before* training on it).

    ``update(logits [B], labels [B])`` appends; older events fall out of the window.
    """

    def __init__(self, window: int = 10_000) -> None:
        if isinstance(window, bool) or not isinstance(window, int) or window < 1:
            raise ValueError(f"window: expected a positive int, got {window!r}")
        self.window = window
        self._logits: deque[torch.Tensor] = deque()
        self._labels: deque[torch.Tensor] = deque()
        self._count = 0

    def update(self, logits: torch.Tensor, labels: torch.Tensor) -> None:
        logits, labels = _check_pair(logits, labels)
        self._logits.append(logits)
        self._labels.append(labels)
        self._count += logits.numel()
        while self._count - self._logits[0].numel() >= self.window:
            self._count -= self._logits.popleft().numel()
            self._labels.popleft()

    def _window(self) -> tuple[torch.Tensor, torch.Tensor]:
        if not self._logits:
            return torch.zeros(0, dtype=torch.float64), torch.zeros(0, dtype=torch.float64)
        logits = torch.cat(list(self._logits))[-self.window :]
        labels = torch.cat(list(self._labels))[-self.window :]
        return logits, labels

    def __len__(self) -> int:
        return min(self._count, self.window)

    def auc(self) -> float:
        """AUC of the events in the window (NaN if one class is absent)."""
        return auc(*self._window())

    def logloss(self) -> float:
        """Log loss of the events in the window (NaN if empty)."""
        return logloss(*self._window())
