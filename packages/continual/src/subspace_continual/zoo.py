"""The continual zoo: the ``pmnist_cl`` protocol and the shipped ``continual/gpm_mlp.pmnist``.

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

Metrics are percent; definitions in :mod:`subspace_continual.metrics`.
"""

from __future__ import annotations

from functools import lru_cache

import torch
from torch import nn

from subspace_continual.data import permuted_mnist
from subspace_continual.metrics import summarize
from subspace_continual.models import ContinualMLP
from subspace_core.eval import Protocol, register_protocol
from subspace_core.zoo import PretrainedCfg, register_model

__all__ = ["PMNIST_CL", "SHIPPED", "gpm_mlp_pmnist", "pmnist_continual_metrics"]


@lru_cache(maxsize=2)
def _pmnist_tests(num_tasks: int) -> tuple[tuple[torch.Tensor, torch.Tensor], ...]:
    # The test split does not depend on train_per_class; 1 digit per class keeps it light.
    scenario = permuted_mnist(num_tasks, seed=0, train_per_class=1)
    return tuple((t.x_test, t.y_test) for t in scenario.tasks)


@torch.no_grad()
def pmnist_continual_metrics(model: nn.Module, device: torch.device | str = "cpu"
                             ) -> dict[str, float]:
    """The ``pmnist_cl`` metrics of a :class:`ContinualMLP` trained on Permuted-MNIST
    (see module doc): ``acc``, ``bwt``, ``forgetting``, ``la``, ``final_row_drift``."""
    if not isinstance(model, ContinualMLP):
        raise TypeError(f"model: expected a ContinualMLP (it carries the accuracy record), got "
                        f"{type(model).__name__}")
    record = model.accuracy_matrix.detach().to("cpu", torch.float64)
    T = record.shape[0]
    if T < 2 or not bool(torch.isfinite(torch.tril(record)).all()):
        raise ValueError("model.accuracy_matrix: expected the lower triangle measured during "
                         "training (T >= 2); this model carries no complete record")
    device = torch.device(device)
    model.eval()
    final = []
    for x, y in _pmnist_tests(T):
        logits = model(x.to(device))
        final.append(100.0 * float((logits.argmax(1).cpu() == y).sum()) / len(y))
    final_t = torch.tensor(final, dtype=torch.float64)
    R = record.clone()
    R[T - 1] = final_t
    m = summarize(R)
    return {"acc": m.acc, "bwt": float(m.bwt), "forgetting": float(m.forgetting), "la": m.la,
            "final_row_drift": float((final_t - record[T - 1]).abs().max())}


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
        description=(__doc__ or "").split("**Protocol ``pmnist_cl``**")[1].split("\n\n")[0]
        .strip(),
    )
)

#: model id -> (sha256, bytes, num_params incl. bases and record, claimed pmnist_cl metrics)
SHIPPED: dict[str, tuple[str, int, int, dict[str, float]]] = {
    "continual/gpm_mlp.pmnist": (
        "985da072e05618bc8ec3c9232cd1348463092e85644b6b7bb66d83e4d41fd8d5", 2_127_296, 531_354,
        {"acc": 90.05, "bwt": -2.7, "forgetting": 2.766667, "la": 92.48, "final_row_drift": 0.0},
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
