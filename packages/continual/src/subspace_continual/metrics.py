"""Continual-learning metrics on the accuracy matrix, with written definitions.

Notation. ``T`` tasks are learnt in order ``0, 1, ..., T-1``. The **accuracy matrix**
``R`` [T, T] holds ``R[i, j]`` = test accuracy on task ``j`` after training on task ``i``
(row = "after training task i", column = "evaluated on task j"). Entries above the
diagonal (``j > i``, tasks not trained yet) are only needed for forward transfer and may be
NaN otherwise. ``b`` [T] holds the accuracy of the randomly initialised model on each
task (the FWT baseline). The unit of ``R`` (fraction in ``[0, 1]`` or percent) carries
through every metric; this package reports percent, Avalanche reports fractions
(:func:`to_avalanche` converts).

Definitions (``T >= 2`` wherever a difference over tasks is taken):

* **ACC** (average accuracy, Lopez-Paz & Ranzato 2017, GEM; also GPM):
  ``ACC = (1/T) Σ_{j=0}^{T-1} R[T-1, j]``.
* **BWT** (backward transfer, GEM; GPM uses the same formula):
  ``BWT = (1/(T-1)) Σ_{j=0}^{T-2} (R[T-1, j] − R[j, j])``. Negative = forgetting.
* **Forgetting** (Chaudhry et al., "Riemannian Walk", ECCV 2018): after training task
  ``k``, the forgetting of an earlier task ``j < k`` is the drop from the best accuracy it
  ever had before ``k``: ``f_j^k = max_{l ∈ {0..k-1}} R[l, j] − R[k, j]``; the average
  forgetting at ``k`` is ``F_k = (1/k) Σ_{j<k} f_j^k``; **forgetting** = ``F_{T-1}``.
  (The max runs over ``l >= j`` in practice because ``R[l, j]`` for ``l < j`` is the
  accuracy of an untrained task; we follow the paper and take the max over ``l ∈ [j, k-1]``.)
  Always ``forgetting >= -BWT``, with equality when no task ever improves after it is learnt.
* **FWT** (forward transfer, GEM): ``FWT = (1/(T-1)) Σ_{j=1}^{T-1} (R[j-1, j] − b[j])``:
  how much training on tasks ``0..j-1`` helps task ``j`` before it is trained, relative to
  the random initialisation.
* **LA** (learning accuracy, Riemer et al. 2019): ``LA = (1/T) Σ_j R[j, j]``, the plasticity
  side; ``ACC = LA + BWT · (T-1)/T``.

Avalanche (``avalanche.evaluation.metrics``) reports fractions, pools the stream accuracy
over test examples (not a mean over tasks), and reports *forgetting* as
``initial − last`` averaged over experiences seen before the last one, i.e.
``StreamForgetting = −BWT`` (GEM); its ``StreamBWT`` is ``−StreamForgetting``. See
:func:`to_avalanche` and :func:`from_avalanche_forgetting`.

**Schedules with recurrences** (:func:`~subspace_continual.harness.run_schedule`): ``L``
training sessions, session ``s`` trains task ``schedule[s]`` (a task may come back), and
``A`` [L, T] holds ``A[s, j]`` = accuracy on task ``j`` after session ``s``. ``first_j`` is the
first session of task ``j``.

* **Schedule forgetting** (:func:`schedule_forgetting`, Chaudhry's definition over sessions):
  for every task first seen before the last session, ``max_{first_j <= s <= L-2} A[s, j] −
  A[L-1, j]``, averaged over those tasks.
* **Recurrence gain** (:func:`recurrence_gain`): for every session ``s`` whose task ``t`` was
  seen before (a revisit), ``A[s, t] − A[s-1, t]``, averaged over revisits: what training
  a task again buys.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import torch

__all__ = [
    "AvalancheMetrics",
    "ContinualMetrics",
    "accuracy_matrix",
    "average_accuracy",
    "average_accuracy_curve",
    "backward_transfer",
    "forgetting",
    "forgetting_per_task",
    "forward_transfer",
    "from_avalanche_forgetting",
    "learning_accuracy",
    "recurrence_gain",
    "schedule_forgetting",
    "summarize",
    "to_avalanche",
]


def accuracy_matrix(R: object) -> torch.Tensor:
    """Validate and convert ``R`` (nested lists, ndarray or tensor) to a float64 [T, T] tensor.

    Raises ValueError unless ``R`` is square and 2-D with ``T >= 1``, and unless every entry
    on and below the diagonal is finite (those are always measured). Entries above the
    diagonal may be NaN.
    """
    t = torch.as_tensor(R, dtype=torch.float64).detach().cpu()
    if t.ndim != 2 or t.shape[0] != t.shape[1] or t.shape[0] == 0:
        raise ValueError(f"R: expected a square accuracy matrix [T, T] with T >= 1, got shape "
                         f"{tuple(t.shape)}")
    lower = torch.tril(torch.ones_like(t, dtype=torch.bool))
    bad = lower & ~torch.isfinite(t)
    if bool(bad.any()):
        i, j = (int(v) for v in bad.nonzero()[0])
        raise ValueError(f"R: expected finite entries on and below the diagonal (tasks already "
                         f"trained), got R[{i}, {j}] = {float(t[i, j])}")
    return t


def _need_two(R: torch.Tensor, what: str) -> int:
    T = R.shape[0]
    if T < 2:
        raise ValueError(f"R: {what} needs T >= 2 tasks, got T = {T}")
    return T


def average_accuracy(R: object) -> float:
    """ACC = mean of the last row: ``(1/T) Σ_j R[T-1, j]``."""
    R = accuracy_matrix(R)
    return float(R[-1].mean())


def average_accuracy_curve(R: object) -> list[float]:
    """``A_k = (1/(k+1)) Σ_{j<=k} R[k, j]`` for ``k = 0..T-1``: ACC over the tasks seen so far
    after each task (``A_{T-1}`` = ACC)."""
    R = accuracy_matrix(R)
    return [float(R[k, : k + 1].mean()) for k in range(R.shape[0])]


def learning_accuracy(R: object) -> float:
    """LA = mean of the diagonal: ``(1/T) Σ_j R[j, j]`` (accuracy right after learning)."""
    R = accuracy_matrix(R)
    return float(torch.diagonal(R).mean())


def backward_transfer(R: object) -> float:
    """BWT (GEM / GPM): ``(1/(T-1)) Σ_{j<T-1} (R[T-1, j] − R[j, j])``; needs ``T >= 2``."""
    R = accuracy_matrix(R)
    T = _need_two(R, "BWT")
    return float((R[-1, : T - 1] - torch.diagonal(R)[: T - 1]).mean())


def forgetting_per_task(R: object, k: int | None = None) -> list[float]:
    """Chaudhry et al. (2018) ``f_j^k = max_{j <= l < k} R[l, j] − R[k, j]`` for ``j < k``.

    Args:
        R: accuracy matrix [T, T].
        k: the task after which forgetting is measured, ``1 <= k <= T-1`` (default ``T-1``).

    Returns:
        ``[f_0^k, ..., f_{k-1}^k]`` (``k`` values).
    """
    R = accuracy_matrix(R)
    T = _need_two(R, "forgetting")
    k = T - 1 if k is None else k
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= T - 1:
        raise ValueError(f"k: expected an int in [1, {T - 1}], got {k!r}")
    return [float(R[j:k, j].max() - R[k, j]) for j in range(k)]


def forgetting(R: object, k: int | None = None) -> float:
    """Average forgetting ``F_k = (1/k) Σ_{j<k} f_j^k`` (Chaudhry et al. 2018); default
    ``k = T-1`` (the final forgetting). See :func:`forgetting_per_task`."""
    values = forgetting_per_task(R, k)
    return sum(values) / len(values)


def forward_transfer(R: object, b: object) -> float:
    """FWT (GEM): ``(1/(T-1)) Σ_{j=1}^{T-1} (R[j-1, j] − b[j])``.

    Args:
        R: accuracy matrix [T, T]; the super-diagonal ``R[j-1, j]`` must be finite (evaluate
            every task after each training task to get it).
        b: [T] accuracy of the randomly initialised model on each task (``b[0]`` unused).
    """
    R = accuracy_matrix(R)
    T = _need_two(R, "FWT")
    bt = torch.as_tensor(b, dtype=torch.float64).detach().cpu()
    if bt.shape != (T,):
        raise ValueError(f"b: expected the random-init accuracies, shape [{T}], got shape "
                         f"{tuple(bt.shape)}")
    above = torch.diagonal(R, offset=1)
    if not bool(torch.isfinite(above).all()) or not bool(torch.isfinite(bt[1:]).all()):
        raise ValueError("R, b: FWT needs finite R[j-1, j] and b[j] for j >= 1 (evaluate every "
                         "task after each training task)")
    return float((above - bt[1:]).mean())


def _schedule_matrix(A: object, schedule: Sequence[int]) -> tuple[torch.Tensor, list[int]]:
    t = torch.as_tensor(A, dtype=torch.float64).detach().cpu()
    sched = [int(v) for v in schedule]
    if t.ndim != 2 or t.shape[0] != len(sched) or t.shape[0] == 0:
        raise ValueError(f"A: expected [L, T] with L = len(schedule) = {len(sched)} >= 1, got "
                         f"shape {tuple(t.shape)}")
    if any(not 0 <= v < t.shape[1] for v in sched):
        raise ValueError(f"schedule: expected task ids in [0, {t.shape[1]}), got {sched[:20]}")
    if not bool(torch.isfinite(t).all()):
        raise ValueError("A: expected finite accuracies (every task evaluated after every "
                         "session)")
    return t, sched


def schedule_forgetting(A: object, schedule: Sequence[int]) -> float | None:
    """Forgetting over a schedule with recurrences (see module doc): the mean over tasks first
    seen before the last session of ``max_{first_j <= s <= L-2} A[s, j] − A[L-1, j]``.

    Args:
        A: [L, T] accuracies after each session.
        schedule: the ``L`` task ids trained.

    Returns:
        the average forgetting, or None when no task was seen before the last session.
    """
    A, sched = _schedule_matrix(A, schedule)
    L = len(sched)
    first: dict[int, int] = {}
    for s, t in enumerate(sched):
        first.setdefault(t, s)
    drops = [float(A[f:L - 1, j].max() - A[L - 1, j]) for j, f in sorted(first.items())
             if f < L - 1]
    return sum(drops) / len(drops) if drops else None


def recurrence_gain(A: object, schedule: Sequence[int]) -> float | None:
    """Mean of ``A[s, t] − A[s-1, t]`` over the sessions ``s`` that train a task ``t`` seen
    in an earlier session (see module doc); None without recurrences."""
    A, sched = _schedule_matrix(A, schedule)
    seen: set[int] = set()
    gains = []
    for s, t in enumerate(sched):
        if t in seen:
            gains.append(float(A[s, t] - A[s - 1, t]))
        seen.add(t)
    return sum(gains) / len(gains) if gains else None


@dataclass(frozen=True)
class ContinualMetrics:
    """The summary of one accuracy matrix (same unit as ``R``); ``bwt``/``forgetting``/``fwt``
    are None where undefined (``T = 1``, or no ``b`` / unmeasured super-diagonal for FWT)."""

    acc: float
    bwt: float | None
    forgetting: float | None
    fwt: float | None
    la: float
    num_tasks: int

    def to_dict(self) -> dict[str, float | int | None]:
        return asdict(self)


def summarize(R: object, b: object | None = None) -> ContinualMetrics:
    """ACC, BWT, forgetting, FWT (when ``b`` is given and measurable) and LA of ``R``."""
    R = accuracy_matrix(R)
    T = R.shape[0]
    fwt = None
    if b is not None and T >= 2 and bool(torch.isfinite(torch.diagonal(R, offset=1)).all()):
        fwt = forward_transfer(R, b)
    return ContinualMetrics(
        acc=average_accuracy(R),
        bwt=backward_transfer(R) if T >= 2 else None,
        forgetting=forgetting(R) if T >= 2 else None,
        fwt=fwt,
        la=learning_accuracy(R),
        num_tasks=T,
    )


@dataclass(frozen=True)
class AvalancheMetrics:
    """The numbers Avalanche's standard plugins would log at the end of the stream.

    Attributes (fractions in ``[0, 1]``, as Avalanche logs them):
        stream_accuracy: ``Top1_Acc_Stream`` — accuracy pooled over every test example of
            every task, ``Σ_j n_j R[T-1, j] / Σ_j n_j`` (equals ACC only for equal ``n_j``).
        experience_accuracy: ``Top1_Acc_Exp`` per experience, ``R[T-1, j]``.
        stream_forgetting: ``StreamForgetting`` = mean over ``j < T-1`` of
            ``R[j, j] − R[T-1, j]`` = ``−BWT`` (GEM), not Chaudhry's forgetting.
        experience_forgetting: ``ExperienceForgetting`` per ``j < T-1``.
        stream_bwt: ``StreamBWT`` = ``−stream_forgetting`` = BWT.
        stream_forward_transfer: ``StreamForwardTransfer`` = FWT (GEM), or None without ``b``.
    """

    stream_accuracy: float
    experience_accuracy: tuple[float, ...]
    stream_forgetting: float | None
    experience_forgetting: tuple[float, ...]
    stream_bwt: float | None
    stream_forward_transfer: float | None


def to_avalanche(R: object, b: object | None = None, *, percent: bool = True,
                 test_sizes: Sequence[int] | None = None) -> AvalancheMetrics:
    """Convert an accuracy matrix to Avalanche's conventions (see :class:`AvalancheMetrics`).

    Args:
        R: accuracy matrix [T, T].
        b: random-init accuracies [T] for forward transfer, or None.
        percent: whether ``R`` (and ``b``) are in percent (divided by 100) or fractions.
        test_sizes: number of test examples per task (``n_j``) for the pooled stream
            accuracy; None = equal sizes.
    """
    R = accuracy_matrix(R)
    scale = 100.0 if percent else 1.0
    R = R / scale
    T = R.shape[0]
    if test_sizes is None:
        n = torch.ones(T, dtype=torch.float64)
    else:
        n = torch.as_tensor(list(test_sizes), dtype=torch.float64)
        if n.shape != (T,) or bool((n <= 0).any()):
            raise ValueError(f"test_sizes: expected {T} positive counts, got {list(test_sizes)}")
    last = R[-1]
    exp_forgetting = tuple(float(R[j, j] - last[j]) for j in range(T - 1))
    stream_forgetting = sum(exp_forgetting) / len(exp_forgetting) if T >= 2 else None
    fwt = None
    if b is not None and T >= 2:
        fwt = forward_transfer(R, torch.as_tensor(b, dtype=torch.float64) / scale)
    return AvalancheMetrics(
        stream_accuracy=float((n * last).sum() / n.sum()),
        experience_accuracy=tuple(float(v) for v in last),
        stream_forgetting=stream_forgetting,
        experience_forgetting=exp_forgetting,
        stream_bwt=None if stream_forgetting is None else -stream_forgetting,
        stream_forward_transfer=fwt,
    )


def from_avalanche_forgetting(stream_forgetting: float, *, percent: bool = True) -> float:
    """GEM/GPM BWT from Avalanche's ``StreamForgetting`` (a fraction): ``BWT = −forgetting``,
    in percent when ``percent`` (the unit this package reports)."""
    return -float(stream_forgetting) * (100.0 if percent else 1.0)
