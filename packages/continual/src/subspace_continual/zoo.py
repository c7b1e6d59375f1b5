"""The continual zoo: protocols ``pmnist_cl`` and ``split_fmnist_cl``, and the shipped
``continual/gpm_mlp.pmnist`` and ``continual/fot_mlp.split_fmnist``.

**Protocol ``pmnist_cl``** (what ``subzoo eval`` can and cannot recompute). A continual
model's score depends on its whole training history, but a checkpoint is only the final
state. The protocol therefore

* **recomputes** from the weights the final row of the accuracy matrix, ``R[T-1, j]`` = test
  accuracy on task ``j`` for every task (Permuted-MNIST test sets: the 1,000 test digits of
  ``mnist_10k`` under each task's permutation, :func:`~subspace_continual.data.permuted_mnist`
  with ``seed=0``), hence **ACC** (mean of that row);
* **reads** the rows measured during training, stored in the checkpoint as the buffer
  ``accuracy_matrix`` (:class:`~subspace_continual.models.ContinualMLP`): the diagonal
  ``R[j, j]`` (accuracy right after learning task ``j``) and the earlier rows cannot be
  measured from the final weights, so **BWT** = mean over ``j < T-1`` of (recomputed
  ``R[T-1, j]`` − stored ``R[j, j]``), **forgetting** (Chaudhry) uses the stored rows
  ``0..T-2`` and the recomputed last row, and **LA** is the stored diagonal's mean;
* reports ``final_row_drift`` = max over tasks of |recomputed − stored ``R[T-1, j]``| (0 when
  the weights are the ones the record was measured on; a non-zero value flags a record that
  does not belong to these weights).

**Protocol ``split_fmnist_cl``** (task-incremental Split-Fashion-MNIST, FOT's setting). The
same split between recomputed and stored numbers as ``pmnist_cl``, on the real Fashion-MNIST
test split: task ``t`` = classes ``(2t, 2t+1)`` (:func:`~subspace_continual.data.
split_fashion_mnist` ``("task", seed=0)``), all 1,000 test images of each class (2,000 per
task), labels remapped to 0/1 and scored with head ``t`` (the task id is given). The model
must be a :class:`~subspace_continual.models.ContinualMLP` with 5 heads and a complete
``accuracy_matrix`` [5, 5].

Metrics are percent; definitions in :mod:`subspace_continual.metrics`.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache

import torch
from torch import nn

from subspace_continual.data import permuted_mnist, split_fashion_mnist
from subspace_continual.metrics import summarize
from subspace_continual.models import ContinualMLP
from subspace_core.eval import Protocol, protocol_doc, register_protocol
from subspace_core.zoo import PretrainedCfg, register_model

__all__ = ["PMNIST_CL", "SHIPPED", "SPLIT_FMNIST_CL", "continual_metrics", "fot_mlp_split_fmnist",
           "gpm_mlp_pmnist", "pmnist_continual_metrics", "split_fmnist_continual_metrics"]


@lru_cache(maxsize=2)
def _pmnist_tests(num_tasks: int) -> tuple[tuple[torch.Tensor, torch.Tensor], ...]:
    # The test split does not depend on train_per_class; 1 digit per class keeps it light.
    scenario = permuted_mnist(num_tasks, seed=0, train_per_class=1)
    return tuple((t.x_test, t.y_test) for t in scenario.tasks)


@lru_cache(maxsize=1)
def _split_fmnist_tests() -> tuple[tuple[torch.Tensor, torch.Tensor], ...]:
    # The test split does not depend on train_per_class (complete: 1,000 images per class).
    scenario = split_fashion_mnist("task", seed=0, train_per_class=1)
    return tuple((t.x_test, t.y_test) for t in scenario.tasks)


def _record(model: nn.Module) -> torch.Tensor:
    if not isinstance(model, ContinualMLP):
        raise TypeError(f"model: expected a ContinualMLP (it carries the accuracy record), got "
                        f"{type(model).__name__}")
    record = model.accuracy_matrix.detach().to("cpu", torch.float64)
    if record.shape[0] < 2 or not bool(torch.isfinite(torch.tril(record)).all()):
        raise ValueError("model.accuracy_matrix: expected the lower triangle measured during "
                         "training (T >= 2); this model carries no complete record")
    return record


@torch.no_grad()
def continual_metrics(model: nn.Module, tests: Sequence[tuple[torch.Tensor, torch.Tensor]],
                      heads: Sequence[int | None], device: torch.device | str = "cpu"
                      ) -> dict[str, float]:
    """The metrics of a :class:`ContinualMLP` from its stored record and the final row
    recomputed on ``tests`` (``(x [N, D], y [N])`` per task, scored with ``heads[t]``; each
    test set in one batch, as the harness evaluates it): ``acc``, ``bwt``, ``forgetting``,
    ``la``, ``final_row_drift`` (see module doc)."""
    record = _record(model)
    T = record.shape[0]
    if len(tests) != T or len(heads) != T:
        raise ValueError(f"tests, heads: expected {T} tasks (the record's), got {len(tests)} "
                         f"and {len(heads)}")
    device = torch.device(device)
    model.eval()
    final = []
    for (x, y), head in zip(tests, heads, strict=True):
        logits = model(x.to(device), head)
        final.append(100.0 * float((logits.argmax(1).cpu() == y).sum()) / len(y))
    final_t = torch.tensor(final, dtype=torch.float64)
    R = record.clone()
    R[T - 1] = final_t
    m = summarize(R)
    return {"acc": m.acc, "bwt": float(m.bwt), "forgetting": float(m.forgetting), "la": m.la,
            "final_row_drift": float((final_t - record[T - 1]).abs().max())}


def pmnist_continual_metrics(model: nn.Module, device: torch.device | str = "cpu"
                             ) -> dict[str, float]:
    """The ``pmnist_cl`` metrics of a :class:`ContinualMLP` trained on Permuted-MNIST
    (see module doc): ``acc``, ``bwt``, ``forgetting``, ``la``, ``final_row_drift``."""
    T = _record(model).shape[0]
    return continual_metrics(model, _pmnist_tests(T), [None] * T, device)


def split_fmnist_continual_metrics(model: nn.Module, device: torch.device | str = "cpu"
                                   ) -> dict[str, float]:
    """The ``split_fmnist_cl`` metrics of a 5-head :class:`ContinualMLP` trained on
    task-incremental Split-Fashion-MNIST (see module doc)."""
    T = _record(model).shape[0]
    if T != 5 or len(model.heads) != 5:
        raise ValueError(f"model: expected 5 tasks and 5 heads (Split-Fashion-MNIST, "
                         f"task-incremental), got {T} recorded tasks and {len(model.heads)} "
                         "heads")
    return continual_metrics(model, _split_fmnist_tests(), list(range(5)), device)



PMNIST_CL = register_protocol(
    Protocol(
        name="pmnist_cl",
        dataset="mnist_10k",
        split="test",
        preprocessing="pixels /255, normalised (0.1307, 0.3081), flattened to 784, then task t's "
        "permutation torch.randperm(784) seeded t (t = 0..T-1); 1,000 test digits per task",
        metrics=("acc", "bwt", "forgetting", "la", "final_row_drift"),
        higher_is_better=(True, True, False, True, False),
        run=pmnist_continual_metrics,
        description=protocol_doc(__doc__, "pmnist_cl"),
    )
)

SPLIT_FMNIST_CL = register_protocol(
    Protocol(
        name="split_fmnist_cl",
        dataset="fashion_mnist",
        split="test",
        preprocessing="pixels /255, normalised (0.2860, 0.3530), flattened to 784; task t = "
        "classes (2t, 2t+1), labels remapped to 0/1, scored with head t (task id given); all "
        "1,000 test images per class (2,000 per task)",
        metrics=("acc", "bwt", "forgetting", "la", "final_row_drift"),
        higher_is_better=(True, True, False, True, False),
        run=split_fmnist_continual_metrics,
        description=protocol_doc(__doc__, "split_fmnist_cl"),
    )
)

#: model id -> (sha256, bytes, num_params incl. bases and record, claimed metrics of its
#: protocol: ``pmnist_cl`` / ``split_fmnist_cl``)
SHIPPED: dict[str, tuple[str, int, int, dict[str, float]]] = {
    "continual/gpm_mlp.pmnist": (
        "985da072e05618bc8ec3c9232cd1348463092e85644b6b7bb66d83e4d41fd8d5", 2_127_296, 531_354,
        {"acc": 90.05, "bwt": -2.7, "forgetting": 2.766667, "la": 92.48, "final_row_drift": 0.0},
    ),
    "continual/fot_mlp.split_fmnist": (
        "a865aba4a5ade6fa53c3d30cda5227fe5c74a5bf7e6152444d2a29029e3187b0", 1_168_512, 291_666,
        {"acc": 97.84, "bwt": -0.1375, "forgetting": 0.15, "la": 97.95, "final_row_drift": 0.0},
    ),
}

_GPM_SHA, _GPM_BYTES, _GPM_PARAMS, _GPM_METRICS = SHIPPED["continual/gpm_mlp.pmnist"]


@register_model(
    "continual/gpm_mlp.pmnist",
    pretrained_cfg=PretrainedCfg(
        file="gpm_mlp.pmnist.safetensors",
        sha256=_GPM_SHA,
        num_bytes=_GPM_BYTES,
        num_params=_GPM_PARAMS,
        license="Apache-2.0",
        paper="Saha, Garg & Roy 2021, Gradient Projection Memory for Continual Learning, "
        "ICLR 2021, arXiv:2103.09762",
        recipe="subspace_continual.recipes.gpm_mlp_pmnist:train",
        metrics={"pmnist_cl": _GPM_METRICS},
        data={"dataset": "mnist_10k", "scenario": "Permuted-MNIST, 10 tasks, seed 0 (task t: "
              "torch.randperm(784) seeded t)", "input": "float32 [N, 784]",
              "normalisation": "pixel/255, mean 0.1307, std 0.3081, before permuting",
              "train_per_task": 9000, "test_per_task": 1000},
        train_budget="10 tasks x 5 epochs x 282 steps (batch 32, 14,100 SGD steps): 98-164 s on "
        "one CPU core of a busy 2-core machine (subzoo train, OMP_NUM_THREADS=1)",
        package="subspace_continual.weights",
        notes="Final model after 10 tasks plus its GPM bases (bases.body_0 [784, 541], "
        "bases.body_2 [100, 99], bases.heads_0 [100, 78]) and the accuracy matrix measured "
        "during training (accuracy_matrix [10, 10], init_accuracy [10]); num_params counts "
        "them. Eval recomputes ACC from the weights; BWT and forgetting combine the "
        "recomputed final row with the stored rows (see the pmnist_cl protocol).",
    ),
    protocols=("pmnist_cl",),
    description="GPM MLP 784-100-100-10 (no biases) after 10 Permuted-MNIST tasks, with its "
    "stored bases and accuracy record.",
)
def gpm_mlp_pmnist(**overrides) -> nn.Module:
    """GPM's Permuted-MNIST MLP as a :class:`ContinualMLP` (bases and record as buffers)."""
    kwargs = {"input_dim": 784, "hidden": (100, 100), "head_sizes": (10,), "bias": False,
              "num_tasks": 10} | overrides
    return ContinualMLP(**kwargs)


_FOT_SHA, _FOT_BYTES, _FOT_PARAMS, _FOT_METRICS = SHIPPED["continual/fot_mlp.split_fmnist"]


@register_model(
    "continual/fot_mlp.split_fmnist",
    pretrained_cfg=PretrainedCfg(
        file="fot_mlp.split_fmnist.safetensors",
        sha256=_FOT_SHA,
        num_bytes=_FOT_BYTES,
        num_params=_FOT_PARAMS,
        license="Apache-2.0",
        paper="Bakman, Yaldiz, Ezzeldin & Avestimehr 2024, Federated Orthogonal Training: "
        "Mitigating Global Catastrophic Forgetting in Continual Federated Learning, ICLR 2024, "
        "arXiv:2309.01289",
        recipe="subspace_continual.recipes.fot_mlp_split_fmnist:train",
        metrics={"split_fmnist_cl": _FOT_METRICS},
        data={"dataset": "fashion_mnist", "scenario": "Split-Fashion-MNIST, 5 tasks of classes "
              "(0, 1), (2, 3), (4, 5), (6, 7), (8, 9), task-incremental (labels 0/1 per task, "
              "head t for task t), seed 0", "input": "float32 [N, 784]",
              "normalisation": "pixel/255, mean 0.2860, std 0.3530",
              "federated": "10 clients, each a tenth of every task's training set",
              "train_per_task": 12000, "test_per_task": 2000},
        train_budget="5 tasks x 25 rounds x 10 clients x 8 local SGD steps (batch 32, 10,000 "
        "steps): 37 s for the recipe, 50 s for the whole `subzoo train` command (with its "
        "eval) on a busy 2-core machine (OMP_NUM_THREADS=1); retrains bit-identically",
        package="subspace_continual.weights",
        notes="Final global model after 5 federated tasks plus the server's FOT bases "
        "(bases.body_0 [784, 254], bases.body_2 [100, 31]) and the accuracy matrix of the "
        "global model measured during training (accuracy_matrix [5, 5], init_accuracy [5]); "
        "num_params counts them. Eval recomputes ACC from the weights; BWT and forgetting "
        "combine the recomputed final row with the stored rows (see the split_fmnist_cl "
        "protocol). Continue with model.subspace_memory() (the stored bases).",
    ),
    protocols=("split_fmnist_cl",),
    description="FOT MLP 784-100-100 + five 2-way heads (no biases) after 5 federated "
    "Split-Fashion-MNIST tasks (10 clients), with the server's stored bases and accuracy "
    "record.",
)
def fot_mlp_split_fmnist(**overrides) -> nn.Module:
    """FOT's federated Split-Fashion-MNIST MLP as a 5-head :class:`ContinualMLP` (bases and
    record as buffers)."""
    kwargs = {"input_dim": 784, "hidden": (100, 100), "head_sizes": (2,) * 5, "bias": False,
              "num_tasks": 5} | overrides
    return ContinualMLP(**kwargs)
