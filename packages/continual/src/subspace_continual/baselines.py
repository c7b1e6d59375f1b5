"""Baselines in the same harness: EWC, experience replay, A-GEM (naive fine-tuning is the
base :class:`~subspace_continual.harness.Strategy`).

* **EWC** (Kirkpatrick et al. 2017): after task ``t``, the diagonal empirical Fisher
  ``F_t = E[(∂ log p(y|x) / ∂θ)²]`` (per-example gradients at the true labels, computed with
  ``torch.func``) and the weights ``θ_t*`` are stored; later tasks minimise
  ``L + (λ/2) Σ_t Σ_i F_t,i (θ_i − θ*_t,i)²``. Only ``A = Σ_t F_t`` and ``B = Σ_t F_t θ_t*`` are
  kept for training: the penalty equals ``(λ/2) Σ_i (A_i θ_i² − 2 B_i θ_i)`` up to a constant.
  One penalty per distinct task: when a task recurs (a schedule with recurrences,
  :func:`~subspace_continual.harness.run_schedule`) its own penalty is left out while it trains
  again, and its Fisher and anchor are replaced afterwards (summing them per session instead
  made ``A`` grow with every revisit until SGD on the penalty diverged: non-finite weights after
  20 sessions of 5 Permuted-MNIST tasks at lr 0.03, λ = 10).
* **Experience replay**: ``per_task`` random examples of every finished task are stored
  (once per task: a recurring task is not stored again);
  each step adds a replay mini-batch (same size as the current one) drawn uniformly from the
  buffer; the loss is the mean over the concatenated batch.
* **A-GEM** (Chaudhry et al., ICLR 2019): with ``g`` the current gradient and ``g_ref`` the
  gradient on a random ``ref_batch`` of the episodic memory, if ``gᵀ g_ref < 0`` then
  ``g ← g − (gᵀ g_ref / g_refᵀ g_ref) g_ref`` (over all trainable parameters).
* **NMC on frozen features** (:class:`NMCBaseline`, the sanity row of class-incremental
  tables): a nearest-class-mean classifier on the features of a frozen pretrained network
  (default: ImageNet MobileNetV2, :func:`subspace_core.backbones.pretrained_features`). No
  gradient step: after each task the class means of its training features are added, so
  nothing is forgotten and every row of ``R`` is the accuracy of the means known so far.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, grad, vmap

from subspace_continual.data import Scenario, Task
from subspace_continual.harness import ContinualResult, Strategy
from subspace_continual.metrics import summarize

__all__ = ["AGEM", "EWC", "EpisodicMemory", "ExperienceReplay", "NMCBaseline"]


class EpisodicMemory:
    """``per_task`` examples of every finished task: ``x`` [M, D], ``y`` [M], ``task`` [M].
    :meth:`add` stores a task once; adding a task already stored (a recurrence) does nothing."""

    def __init__(self, per_task: int, seed: int = 0):
        if isinstance(per_task, bool) or not isinstance(per_task, int) or per_task < 1:
            raise ValueError(f"per_task: expected a positive int, got {per_task!r}")
        self.per_task, self.seed = per_task, seed
        self.x: torch.Tensor | None = None
        self.y = torch.zeros(0, dtype=torch.int64)
        self.task = torch.zeros(0, dtype=torch.int64)
        self._g = torch.Generator().manual_seed(seed)

    def __len__(self) -> int:
        return len(self.y)

    def add(self, task: Task) -> None:
        if bool((self.task == task.task_id).any()):
            return
        g = torch.Generator().manual_seed(self.seed * 1000 + 700 + task.task_id)
        idx = torch.randperm(len(task.y_train), generator=g)[: self.per_task]
        x, y = task.x_train[idx], task.y_train[idx]
        self.x = x if self.x is None else torch.cat([self.x, x])
        self.y = torch.cat([self.y, y])
        self.task = torch.cat([self.task, torch.full_like(y, task.task_id)])

    def state_dict(self) -> dict[str, torch.Tensor]:
        """The stored examples and the sampling generator's state."""
        if self.x is None:
            return {"rng": self._g.get_state()}
        return {"x": self.x, "y": self.y, "task": self.task, "rng": self._g.get_state()}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.x = state.get("x")
        self.y = state.get("y", torch.zeros(0, dtype=torch.int64))
        self.task = state.get("task", torch.zeros(0, dtype=torch.int64))
        self._g.set_state(state["rng"])

    def sample(self, n: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``n`` examples drawn uniformly without replacement (all of them if fewer)."""
        if self.x is None:
            raise RuntimeError("sample: the episodic memory is empty")
        idx = torch.randperm(len(self.y), generator=self._g)[:n]
        return self.x[idx], self.y[idx], self.task[idx]


def _loss_by_task(strategy: Strategy, model: nn.Module, x: torch.Tensor, y: torch.Tensor,
                  tasks: torch.Tensor) -> torch.Tensor:
    """Summed cross-entropy of examples from several tasks (each through its own head)."""
    if strategy.scenario.setting != "task":
        return F.cross_entropy(model(x), y, reduction="sum")
    total = x.new_zeros(())
    for t in torch.unique(tasks).tolist():
        m = tasks == t
        total = total + F.cross_entropy(model(x[m], t), y[m], reduction="sum")
    return total


class EWC(Strategy):
    """Elastic Weight Consolidation with a diagonal empirical Fisher (see module doc).

    Args:
        lam: penalty strength ``λ``. Plain SGD on the penalty is stable only while
            ``lr · λ · max F < 2``: with lr 0.03 on Permuted-MNIST, ``λ = 100`` diverged
            (ACC 10 %), hence the default 10 (not yet swept).
        fisher_samples: training examples per task used to estimate the Fisher.
    """

    name = "ewc"

    def __init__(self, lam: float = 10.0, fisher_samples: int = 500):
        if not lam >= 0:
            raise ValueError(f"lam: expected a float >= 0, got {lam!r}")
        self.lam, self.fisher_samples = float(lam), int(fisher_samples)
        self.A: dict[str, torch.Tensor] = {}
        self.B: dict[str, torch.Tensor] = {}
        self.fisher: dict[int, dict[str, torch.Tensor]] = {}
        self.anchor: dict[int, dict[str, torch.Tensor]] = {}

    def setup(self, model, scenario, cfg) -> None:
        super().setup(model, scenario, cfg)
        self.A, self.B, self.fisher, self.anchor = {}, {}, {}, {}

    def _sum_penalties(self, skip: int | None = None) -> None:
        """``A = Σ_t F_t``, ``B = Σ_t F_t θ_t*`` over the stored tasks (in id order) but
        ``skip``."""
        self.A, self.B = {}, {}
        for t in sorted(self.fisher):
            if t == skip:
                continue
            for n, f in self.fisher[t].items():
                self.A[n] = self.A.get(n, torch.zeros_like(f)) + f
                self.B[n] = self.B.get(n, torch.zeros_like(f)) + f * self.anchor[t][n]

    def before_task(self, task: Task, optimizer: torch.optim.Optimizer) -> None:
        if task.task_id in self.fisher:  # a recurrence: train without the task's own penalty
            self._sum_penalties(skip=task.task_id)

    def training_loss(self, model, x, y, task_id):
        loss = super().training_loss(model, x, y, task_id)
        if not self.A:
            return loss
        penalty = x.new_zeros(())
        for name, p in model.named_parameters():
            if name in self.A:
                penalty = penalty + (self.A[name] * p * p - 2 * self.B[name] * p).sum()
        return loss + 0.5 * self.lam * penalty

    def after_task(self, model: nn.Module, task: Task) -> None:
        params = {n: p.detach() for n, p in model.named_parameters() if p.requires_grad}
        head = self.head(task.task_id)

        def log_lik(p: dict[str, torch.Tensor], x: torch.Tensor, y: torch.Tensor):
            logits = functional_call(model, p, (x[None], head))
            return -F.cross_entropy(logits, y[None])

        g = torch.Generator().manual_seed(self.cfg.seed * 1000 + 900 + task.task_id)
        idx = torch.randperm(len(task.y_train), generator=g)[: self.fisher_samples]
        fisher = {n: torch.zeros_like(p) for n, p in params.items()}
        for chunk in idx.split(100):
            grads = vmap(grad(log_lik), in_dims=(None, 0, 0))(params, task.x_train[chunk],
                                                               task.y_train[chunk])
            for n in fisher:
                fisher[n] += grads[n].square().sum(0)
        for f in fisher.values():
            f /= len(idx)
        self.fisher[task.task_id] = fisher
        self.anchor[task.task_id] = {n: p.clone() for n, p in params.items()}
        self._sum_penalties()

    def info(self) -> dict[str, Any]:
        return {"lambda": self.lam, "fisher_samples": self.fisher_samples}

    def state_dict(self) -> dict[str, Any]:
        """``fisher.<task>.<param>`` and ``anchor.<task>.<param>`` (θ*) per stored task."""
        return {**{f"fisher.{t}.{n}": f for t, d in self.fisher.items() for n, f in d.items()},
                **{f"anchor.{t}.{n}": a for t, d in self.anchor.items() for n, a in d.items()}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        stores: dict[str, dict[int, dict[str, torch.Tensor]]] = {"fisher": {}, "anchor": {}}
        for key, value in state.items():
            kind, t, n = key.split(".", 2)
            if kind not in stores:
                raise ValueError(f"state: unexpected EWC key {key!r} (expected fisher.<task>."
                                 "<param> or anchor.<task>.<param>)")
            stores[kind].setdefault(int(t), {})[n] = value
        self.fisher, self.anchor = stores["fisher"], stores["anchor"]
        self._sum_penalties()


class ExperienceReplay(Strategy):
    """Experience replay with a per-task episodic memory (see module doc)."""

    name = "er"

    def __init__(self, per_task: int = 100):
        self.per_task = per_task

    def setup(self, model, scenario, cfg) -> None:
        super().setup(model, scenario, cfg)
        self.memory = EpisodicMemory(self.per_task, cfg.seed)

    def training_loss(self, model, x, y, task_id):
        if not len(self.memory):
            return super().training_loss(model, x, y, task_id)
        xr, yr, tr = self.memory.sample(len(y))
        cur = F.cross_entropy(model(x, self.head(task_id)), y, reduction="sum")
        rep = _loss_by_task(self, model, xr, yr, tr)
        return (cur + rep) / (len(y) + len(yr))

    def after_task(self, model, task) -> None:
        self.memory.add(task)

    def info(self) -> dict[str, Any]:
        return {"per_task": self.per_task, "buffer": len(self.memory)}

    def state_dict(self) -> dict[str, Any]:
        return {f"memory.{k}": v for k, v in self.memory.state_dict().items()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.memory.load_state_dict({k[7:]: v for k, v in state.items()
                                     if k.startswith("memory.")})


class AGEM(Strategy):
    """Averaged Gradient Episodic Memory (see module doc).

    Args:
        per_task: examples stored per finished task.
        ref_batch: memory examples per reference gradient.
    """

    name = "agem"

    def __init__(self, per_task: int = 250, ref_batch: int = 256):
        self.per_task, self.ref_batch = per_task, ref_batch
        self.projections = 0

    def setup(self, model, scenario, cfg) -> None:
        super().setup(model, scenario, cfg)
        self.memory = EpisodicMemory(self.per_task, cfg.seed)
        self.projections = 0

    def before_step(self, model: nn.Module, task_id: int) -> None:
        if not len(self.memory):
            return
        params = [p for p in model.parameters() if p.requires_grad]
        x, y, t = self.memory.sample(self.ref_batch)
        with torch.enable_grad():
            ref_loss = _loss_by_task(self, model, x, y, t) / len(y)
            ref = torch.autograd.grad(ref_loss, params, allow_unused=True)
        ref = [torch.zeros_like(p) if r is None else r for p, r in zip(params, ref, strict=True)]
        cur = [torch.zeros_like(p) if p.grad is None else p.grad for p in params]
        dot = sum(float((c * r).sum()) for c, r in zip(cur, ref, strict=True))
        if dot >= 0:
            return
        ref_sq = sum(float((r * r).sum()) for r in ref)
        if ref_sq == 0:
            return
        self.projections += 1
        for p, c, r in zip(params, cur, ref, strict=True):
            p.grad = c - (dot / ref_sq) * r

    def after_task(self, model, task) -> None:
        self.memory.add(task)

    def info(self) -> dict[str, Any]:
        return {"per_task": self.per_task, "ref_batch": self.ref_batch,
                "projected_steps": self.projections}

    def state_dict(self) -> dict[str, Any]:
        return {**{f"memory.{k}": v for k, v in self.memory.state_dict().items()},
                "projections": self.projections}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.memory.load_state_dict({k[7:]: v for k, v in state.items()
                                     if k.startswith("memory.")})
        self.projections = int(state.get("projections", 0))


class NMCBaseline:
    """Nearest class mean on frozen pretrained features (iCaRL's NMC rule without training).

    For each task in order, the training examples go through ``features`` and their per-class
    sums and counts are added to the running class statistics (incremental means: a class that
    appears in several tasks, e.g. Permuted-MNIST's digits, keeps one mean over all of them).
    After task ``i`` every task ``j``'s test examples are assigned the label of the nearest
    known class mean (Euclidean distance; with ``normalize`` features and means are
    L2-normalised first, i.e. cosine similarity), which fills ``R[i, j]`` (%):

    * class-incremental / domain-incremental (one head): the candidates are every class seen
      in tasks ``0..i``, so a task not seen yet scores 0 (class-IL) or what the shared means
      give (domain-IL);
    * task-incremental: only task ``j``'s own classes compete (the task id is given); a task
      not seen yet has no means and its entry stays NaN.

    ``b`` (random-init accuracies) is NaN: there is no untrained state, hence no FWT.

    Args:
        features: ``features(inputs) -> float [N, F]``, applied to a scenario's images
            (:meth:`~subspace_continual.data.Scenario.images`, uint8 [N, H, W]) or, for a
            scenario that has no images, to its inputs [N, D]. ``None`` = the frozen
            ImageNet ``backbone`` of :mod:`subspace_core.backbones` (imported when the
            baseline runs), at ``size`` px in batches of ``batch_size``.
        backbone, size, batch_size: the default feature extractor's network name
            (``"mobilenet_v2"`` or ``"efficientnet_lite0"``), input side and batch.
        normalize: L2-normalise features and class means (default True, as iCaRL).
    """

    name = "nmc"

    def __init__(self, features: Callable[[torch.Tensor], torch.Tensor] | None = None, *,
                 backbone: str = "mobilenet_v2", size: int = 96, batch_size: int = 256,
                 normalize: bool = True):
        if features is not None and not callable(features):
            raise TypeError(f"features: expected a callable inputs -> [N, F] or None, got "
                            f"{type(features).__name__}")
        self.features, self.backbone, self.size, self.batch_size = (features, backbone, size,
                                                                     batch_size)
        self.normalize = bool(normalize)

    @property
    def label(self) -> str:
        """How the features are made, for reports (``"mobilenet_v2 features"``, ...)."""
        if self.features is None:
            return f"{self.backbone} features"
        return f"{getattr(self.features, '__name__', type(self.features).__name__)} features"

    def _extractor(self) -> Callable[[torch.Tensor], torch.Tensor]:
        if self.features is not None:
            return self.features
        from subspace_core.backbones import pretrained_features

        def extract(images: torch.Tensor) -> torch.Tensor:
            return pretrained_features(self.backbone, images, size=self.size,
                                       batch_size=self.batch_size)

        return extract

    def _embed(self, extract: Callable[[torch.Tensor], torch.Tensor], scenario: Scenario,
               x: torch.Tensor) -> torch.Tensor:
        inputs = scenario.images(x) if scenario.image_shape is not None else x
        with torch.no_grad():
            z = extract(inputs)
        if not isinstance(z, torch.Tensor) or z.ndim != 2 or z.shape[0] != x.shape[0]:
            shape = list(z.shape) if isinstance(z, torch.Tensor) else type(z).__name__
            raise ValueError(f"features: expected a tensor [{x.shape[0]}, F] (one row per "
                             f"input), got {shape}")
        z = z.detach().to("cpu", torch.float64)
        if not bool(torch.isfinite(z).all()):
            raise FloatingPointError("features: the feature function returned non-finite "
                                     "values")
        return F.normalize(z, dim=1) if self.normalize else z

    def run(self, scenario: Scenario, *, log: Callable[[str], None] | None = None
            ) -> ContinualResult:
        """The accuracy matrix of NMC over ``scenario``'s tasks (see class doc)."""
        start = time.perf_counter()
        extract = self._extractor()
        T = scenario.num_tasks
        multi = scenario.setting == "task"
        tests = [self._embed(extract, scenario, t.x_test) for t in scenario.tasks]
        sums: dict[tuple[int, int], torch.Tensor] = {}  # (head, label) -> feature sum
        counts: dict[tuple[int, int], int] = {}
        R = torch.full((T, T), float("nan"), dtype=torch.float64)
        dim = tests[0].shape[1] if T else 0
        for task in scenario.tasks:
            z = self._embed(extract, scenario, task.x_train)
            head = task.task_id if multi else 0
            for c in torch.unique(task.y_train).tolist():
                rows = z[task.y_train == c]
                key = (head, int(c))
                sums[key] = sums.get(key, torch.zeros(z.shape[1], dtype=torch.float64)) + \
                    rows.sum(0)
                counts[key] = counts.get(key, 0) + len(rows)
            for j, other in enumerate(scenario.tasks):
                keys = sorted(k for k in sums if k[0] == (j if multi else 0))
                if not keys:
                    continue  # task-IL, task j not seen: no class of its head has a mean
                means = torch.stack([sums[k] / counts[k] for k in keys])
                if self.normalize:
                    means = F.normalize(means, dim=1)
                labels = torch.tensor([k[1] for k in keys])
                pred = labels[torch.cdist(tests[j], means).argmin(1)]
                R[task.task_id, j] = 100.0 * float((pred == other.y_test).sum()) / len(pred)
            if log is not None:
                row = " ".join(f"{v:5.1f}" for v in R[task.task_id].tolist())
                log(f"[nmc] after task {task.task_id}: {row}")
        b = torch.full((T,), float("nan"), dtype=torch.float64)
        return ContinualResult(self.name, scenario.name, R, b, summarize(R),
                               time.perf_counter() - start, None,
                               {"features": self.label, "feature_dim": int(dim),
                                "normalize": self.normalize,
                                "classes": len(sums)})
