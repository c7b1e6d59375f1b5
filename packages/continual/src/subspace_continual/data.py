"""Continual-learning scenarios: Permuted-MNIST, Split-Fashion-MNIST, power-law recurrence.

Every scenario is a :class:`Scenario` of :class:`Task` objects holding float32 inputs
flattened to [N, 784] and int64 labels, built deterministically from the core datasets
(:func:`subspace_core.data.load_dataset`).

* **Permuted-MNIST** (:func:`permuted_mnist`): from ``mnist_10k`` (10,000 real MNIST digits,
  core split: test = the last 100 digits of each class file, 1,000; train = the other 9,000).
  Task ``t`` applies the fixed pixel permutation ``torch.randperm(784)`` drawn from a
  ``torch.Generator`` seeded with ``seed + t`` to every image of both splits (task 0 is
  permuted too, as in GPM). Pixels are scaled to ``[0, 1]`` and normalised with MNIST's
  mean/std (0.1307, 0.3081) *before* permuting. Domain-incremental: one 10-way head.
* **Split-Fashion-MNIST** (:func:`split_fashion_mnist`): ``fashion_mnist`` (60k/10k) split into
  5 tasks of two consecutive classes ((0, 1), (2, 3), ...) or a given class order.
  ``setting="task"``: task-incremental, labels remapped to ``{0, 1}`` per task, one head per
  task (the task id is known at test time). ``setting="class"``: class-incremental, original
  labels, one 10-way head, no task id at test time.
* **Power-law recurrence** (:func:`power_law_schedule`): a sequence of task ids in which a
  seen task recurs with probability proportional to ``Δ^(−α)``, ``Δ`` = steps since it was
  last seen (Anderson & Schooler's environment statistics).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from subspace_core.data import load_dataset

__all__ = [
    "MNIST_MEAN",
    "MNIST_STD",
    "SETTINGS",
    "Scenario",
    "Task",
    "permuted_mnist",
    "power_law_schedule",
    "split_fashion_mnist",
    "synthetic_subspaces",
]

MNIST_MEAN, MNIST_STD = 0.1307, 0.3081
FMNIST_MEAN, FMNIST_STD = 0.2860, 0.3530
#: ``domain``: one head, task id unused; ``task``: one head per task, task id given;
#: ``class``: one head over all classes, task id not given at test time.
SETTINGS = ("domain", "task", "class")


@dataclass(frozen=True)
class Task:
    """One task of a scenario.

    Attributes:
        task_id: position in the sequence (0-based).
        x_train, x_test: float32 [N, D] inputs.
        y_train, y_test: int64 [N] labels (head-local in the task-incremental setting).
        classes: the original dataset classes of the task.
        num_outputs: output size of the head this task is scored on.
    """

    task_id: int
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    classes: tuple[int, ...]
    num_outputs: int


@dataclass(frozen=True)
class Scenario:
    """A sequence of tasks: ``name``, ``setting`` (one of :data:`SETTINGS`), ``input_dim``,
    ``tasks`` and ``description`` (the exact construction, for cards and reports).

    Image scenarios also say how their inputs were made from uint8 pixels, so the pixels can
    be recovered (:meth:`images`, e.g. for a frozen pretrained feature extractor):
    ``image_shape`` ``(H, W)`` and ``pixel_norm`` ``(mean, std)`` with
    ``x = (pixel / 255 − mean) / std`` flattened row-major (Permuted-MNIST: then permuted, so
    its "images" are the permuted grids).
    """

    name: str
    setting: str
    input_dim: int
    tasks: tuple[Task, ...]
    description: str
    image_shape: tuple[int, int] | None = None
    pixel_norm: tuple[float, float] | None = None

    @property
    def num_tasks(self) -> int:
        return len(self.tasks)

    def images(self, x: torch.Tensor) -> torch.Tensor:
        """The uint8 images ``[N, H, W]`` behind inputs ``x`` [N, D] of this scenario (exact
        inverse of the normalisation, rounded to the nearest pixel value)."""
        if self.image_shape is None or self.pixel_norm is None:
            raise ValueError(f"scenario {self.name!r}: its inputs are not images (no image_shape "
                             "/ pixel_norm)")
        H, W = self.image_shape
        if x.ndim != 2 or x.shape[1] != H * W:
            raise ValueError(f"x: expected inputs [N, {H * W}] of scenario {self.name!r}, got "
                             f"{list(x.shape)}")
        mean, std = self.pixel_norm
        pixels = ((x.to(torch.float64) * std + mean) * 255.0).round().clamp(0, 255)
        return pixels.to(torch.uint8).reshape(-1, H, W)

    @property
    def head_sizes(self) -> tuple[int, ...]:
        """Output sizes of the heads: one per task (``task``) or a single one."""
        if self.setting == "task":
            return tuple(t.num_outputs for t in self.tasks)
        return (self.tasks[0].num_outputs,)


def _check_int(name: str, value: object, low: int, high: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < low or (
            high is not None and value > high):
        bound = f"[{low}, {high}]" if high is not None else f">= {low}"
        raise ValueError(f"{name}: expected an int {bound}, got {value!r}")
    return value


def _normalise(x: torch.Tensor, mean: float, std: float) -> torch.Tensor:
    return (x.reshape(x.shape[0], -1).to(torch.float32) / 255.0 - mean) / std


def _per_class_subset(y: torch.Tensor, per_class: int | None, seed: int) -> torch.Tensor:
    """Indices of the first ``per_class`` examples of each class after a seeded shuffle."""
    g = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(y), generator=g)
    if per_class is None:
        return order
    keep = [order[y[order] == c][:per_class] for c in torch.unique(y).tolist()]
    return torch.cat(keep)[torch.randperm(sum(len(k) for k in keep), generator=g)]


def permuted_mnist(num_tasks: int = 10, *, seed: int = 0, train_per_class: int | None = None
                   ) -> Scenario:
    """Permuted-MNIST from the 10k real MNIST digits (see module doc for the exact recipe).

    Args:
        num_tasks: number of permutations (tasks), ``>= 1``.
        seed: task ``t`` uses the permutation seeded with ``seed + t``; the training order of
            examples is shuffled with ``seed``.
        train_per_class: keep this many training digits per class (None = all ~900).

    Returns:
        a domain-incremental :class:`Scenario`: ``x`` float32 [N, 784], ``y`` in 0..9; train
        9,000 (or ``10 · train_per_class``) and test 1,000 digits per task.
    """
    _check_int("num_tasks", num_tasks, 1)
    if train_per_class is not None:
        _check_int("train_per_class", train_per_class, 1)
    train, test = load_dataset("mnist_10k", "train"), load_dataset("mnist_10k", "test")
    idx = _per_class_subset(train.y, train_per_class, seed)
    xtr, ytr = _normalise(train.x[idx], MNIST_MEAN, MNIST_STD), train.y[idx].clone()
    xte, yte = _normalise(test.x, MNIST_MEAN, MNIST_STD), test.y.clone()
    tasks = []
    for t in range(num_tasks):
        perm = torch.randperm(784, generator=torch.Generator().manual_seed(seed + t))
        tasks.append(Task(t, xtr[:, perm].contiguous(), ytr, xte[:, perm].contiguous(), yte,
                          tuple(range(10)), 10))
    return Scenario(
        name=f"permuted_mnist{num_tasks}", setting="domain", input_dim=784, tasks=tuple(tasks),
        description=(f"Permuted-MNIST, {num_tasks} tasks from mnist_10k (train {len(ytr)} / "
                     f"test {len(yte)} digits per task; core split: test = last 100 digits of "
                     f"each class); task t permutes pixels with torch.randperm(784) seeded "
                     f"{seed}+t; pixels /255, normalised (0.1307, 0.3081)."),
        image_shape=(28, 28), pixel_norm=(MNIST_MEAN, MNIST_STD))


def split_fashion_mnist(setting: str = "task", *, num_tasks: int = 5,
                        class_order: Sequence[int] | None = None, seed: int = 0,
                        train_per_class: int | None = None,
                        test_per_class: int | None = None) -> Scenario:
    """Split-Fashion-MNIST: ``num_tasks`` tasks of ``10 / num_tasks`` classes each.

    Args:
        setting: ``"task"`` (multi-head, labels remapped to 0..c-1 per task) or ``"class"``
            (single 10-way head, original labels).
        num_tasks: 2, 5 or 10 (must divide the 10 classes).
        class_order: permutation of 0..9 assigning classes to tasks (default natural order).
        seed: shuffles the examples (and picks subsets when ``*_per_class`` is given).
        train_per_class, test_per_class: subsample (None = all 6,000 / 1,000 per class).

    Returns:
        :class:`Scenario` with float32 [N, 784] inputs normalised by FMNIST's (0.2860, 0.3530).
    """
    if setting not in ("task", "class"):
        raise ValueError(f"setting: expected 'task' or 'class', got {setting!r}")
    if num_tasks not in (2, 5, 10):
        raise ValueError(f"num_tasks: expected 2, 5 or 10 (dividing the 10 classes), got "
                         f"{num_tasks!r}")
    order = list(range(10)) if class_order is None else [int(c) for c in class_order]
    if sorted(order) != list(range(10)):
        raise ValueError(f"class_order: expected a permutation of 0..9, got {class_order!r}")
    for name, v in (("train_per_class", train_per_class), ("test_per_class", test_per_class)):
        if v is not None:
            _check_int(name, v, 1)
    train, test = load_dataset("fashion_mnist", "train"), load_dataset("fashion_mnist", "test")
    itr = _per_class_subset(train.y, train_per_class, seed)
    ite = _per_class_subset(test.y, test_per_class, seed + 1)
    xtr, ytr = _normalise(train.x[itr], FMNIST_MEAN, FMNIST_STD), train.y[itr]
    xte, yte = _normalise(test.x[ite], FMNIST_MEAN, FMNIST_STD), test.y[ite]
    per = 10 // num_tasks
    tasks = []
    for t in range(num_tasks):
        classes = tuple(order[t * per:(t + 1) * per])
        cls = torch.tensor(classes)
        mtr, mte = torch.isin(ytr, cls), torch.isin(yte, cls)
        a, b = ytr[mtr], yte[mte]
        if setting == "task":
            local = torch.full((10,), -1, dtype=torch.int64)
            local[cls] = torch.arange(per)
            a, b = local[a], local[b]
        tasks.append(Task(t, xtr[mtr].contiguous(), a.clone(), xte[mte].contiguous(), b.clone(),
                          classes, per if setting == "task" else 10))
    return Scenario(
        name=f"split_fmnist{num_tasks}_{setting}", setting=setting, input_dim=784,
        tasks=tuple(tasks),
        description=(f"Split-Fashion-MNIST, {num_tasks} tasks of classes "
                     f"{[t.classes for t in tasks]}, {setting}-incremental; pixels /255, "
                     "normalised (0.2860, 0.3530)."),
        image_shape=(28, 28), pixel_norm=(FMNIST_MEAN, FMNIST_STD))


def power_law_schedule(num_tasks: int, length: int, *, alpha: float = 1.0,
                       new_task_prob: float = 0.2, seed: int = 0) -> list[int]:
    """A task sequence in which tasks recur with probability decaying as a power law.

    Step 0 shows task 0. At every later step ``s``, while unseen tasks remain, the next
    unseen task (in id order) is introduced with probability ``new_task_prob``; otherwise a
    seen task ``k`` is drawn with probability ``∝ (s − last_k)^(−alpha)``, where ``last_k``
    is the step it was last shown (so the task just shown has weight 1, the largest).
    ``alpha = 0`` is uniform over seen tasks; larger ``alpha`` favours recent tasks.

    Args:
        num_tasks: number of distinct tasks, ``>= 1``.
        length: number of steps, ``>= 1``.
        alpha: power-law exponent, ``>= 0``.
        new_task_prob: probability of introducing a new task at a step, in ``[0, 1]``.
        seed: the schedule is a deterministic function of the arguments.

    Returns:
        ``length`` task ids in ``[0, num_tasks)``.
    """
    _check_int("num_tasks", num_tasks, 1)
    _check_int("length", length, 1)
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not alpha >= 0:
        raise ValueError(f"alpha: expected a float >= 0, got {alpha!r}")
    if isinstance(new_task_prob, bool) or not isinstance(new_task_prob, (int, float)) or \
            not 0 <= new_task_prob <= 1:
        raise ValueError(f"new_task_prob: expected a float in [0, 1], got {new_task_prob!r}")
    g = torch.Generator().manual_seed(seed)
    last = {0: 0}
    schedule = [0]
    for step in range(1, length):
        if len(last) < num_tasks and float(torch.rand((), generator=g)) < new_task_prob:
            task = len(last)
        else:
            seen = sorted(last)
            gaps = torch.tensor([step - last[k] for k in seen], dtype=torch.float64)
            weights = gaps ** (-float(alpha))
            task = seen[int(torch.multinomial(weights, 1, generator=g))]
        last[task] = step
        schedule.append(task)
    return schedule


def synthetic_subspaces(setting: str = "task", num_tasks: int = 3, dim: int = 40, rank: int = 5,
                        n: int = 120, seed: int = 0) -> Scenario:
    """Tiny dataset-free scenario for tests and smoke runs: two-class tasks, task ``t``'s
    inputs ``x = B_t z`` live in a random ``rank``-dim subspace ``B_t`` of ``R^dim`` (``z``
    standard normal) and ``y = [w_tᵀ z > 0]``; ``n`` train and ``n`` test examples per task.
    ``setting``: ``"task"`` (one 2-way head per task) or ``"domain"`` (one 2-way head)."""
    if setting not in ("task", "domain"):
        raise ValueError(f"setting: expected 'task' or 'domain', got {setting!r}")
    g = torch.Generator().manual_seed(seed)
    tasks = []
    for t in range(num_tasks):
        basis = torch.linalg.qr(torch.randn(dim, rank, generator=g)).Q
        w = torch.randn(rank, generator=g)
        z = torch.randn(2 * n, rank, generator=g)
        x, y = (z @ basis.T).contiguous(), (z @ w > 0).long()
        tasks.append(Task(t, x[:n], y[:n], x[n:], y[n:], (2 * t, 2 * t + 1), 2))
    return Scenario("synthetic_subspaces", setting, dim, tuple(tasks),
                    f"{num_tasks} random rank-{rank} two-class tasks in R^{dim}")
