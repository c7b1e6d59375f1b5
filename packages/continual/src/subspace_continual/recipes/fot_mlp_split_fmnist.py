"""Recipe of ``continual/fot_mlp.split_fmnist``: FOT, federated Split-Fashion-MNIST, 5 tasks.

Scenario: :func:`~subspace_continual.data.split_fashion_mnist` ``("task", seed=0)`` — all of
Fashion-MNIST (12,000 training / 2,000 test images per task), tasks = class pairs (0, 1),
(2, 3), ..., task-incremental (labels 0/1 per task, one 2-way head per task). Network: MLP
784-100-100 without biases + five 2-way heads. Federated training
(:func:`~subspace_continual.fot.run_federated`, in-process): 10 clients, each holding a tenth
of every task (:func:`~subspace_continual.fot.task_shards`); per task 25 rounds, each client
runs 8 plain-SGD steps (batch 32 drawn from its shard, lr 0.05) from the global weights, the
server averages the 10 updates (mean aggregator, no Byzantine client) and — FOT — projects
the aggregate of ``body.0`` and ``body.2`` on the complement of its global bases (server-side
projection, as in the paper; no client-side projection). After each task every client
summarises its 200 first shard examples' layer inputs (``U_c Σ_c`` at 0.99 energy) and the
server grows the global bases by GPM's rule at 0.97 energy. ``seed=0``.

Budget: 5 tasks x 25 rounds x 10 clients x 8 steps = 10,000 SGD steps of batch 32; measured
on a busy 2-core machine: 37 s for the recipe (data loading included) and 50 s for the whole
``OMP_NUM_THREADS=1 uv run subzoo train continual/fot_mlp.split_fmnist`` (start-up and the
final eval included); the retrained file is bit-identical to the shipped one. The run state is saved after every task in ``out_dir/state`` and a re-run resumes
from it (``run_federated(..., state_dir=)``); the result is the same. ``quick`` trains 2 rounds
per task on 100 training images per class (a smoke test of the path, not a reproduction; the
test split stays complete so the protocol applies).

The checkpoint is a :class:`~subspace_continual.models.ContinualMLP` (5 heads): the final
global weights, the server's final bases (``bases.body_0`` [784, k0], ``bases.body_2``
[100, k1]) and the accuracy matrix of the global model measured on the complete test split
after every task (``accuracy_matrix`` [5, 5]) plus the random-init accuracies
(``init_accuracy`` [5]).
"""

from __future__ import annotations

from dataclasses import asdict, replace
from pathlib import Path

import torch

from subspace_continual.data import split_fashion_mnist
from subspace_continual.fot import FedConfig, run_federated
from subspace_continual.models import ContinualMLP
from subspace_core.zoo import save_state_dict

__all__ = ["CONFIG", "MODEL_ID", "train"]

MODEL_ID = "continual/fot_mlp.split_fmnist"
FILE = "fot_mlp.split_fmnist.safetensors"
#: The shipped checkpoint's federated configuration.
CONFIG = FedConfig(method="fot", num_clients=10, rounds_per_task=25, local_steps=8,
                   batch_size=32, lr=0.05, hidden=(100, 100), threshold=0.97,
                   client_threshold=0.99, num_samples=200, aggregator="mean", seed=0)


def train(out_dir: str | Path, *, quick: bool = False, progress: bool = True) -> Path:
    """Train FOT over the 5 Split-Fashion-MNIST tasks; returns
    ``out_dir/fot_mlp.split_fmnist.safetensors`` (written atomically, with a ``.sha256``
    sidecar)."""
    out_dir = Path(out_dir)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # bit-reproducible across machines with the same torch build
    try:
        scenario = split_fashion_mnist("task", seed=0, train_per_class=100 if quick else None)
        cfg = replace(CONFIG, rounds_per_task=2) if quick else CONFIG
        result = run_federated(scenario, cfg, state_dir=out_dir / "state",
                               log=(lambda line: print(line, flush=True)) if progress else None)
    finally:
        torch.set_num_threads(threads)
    assert result.model is not None and result.bases is not None
    model = ContinualMLP(scenario.input_dim, cfg.hidden, scenario.head_sizes, bias=False,
                         num_tasks=scenario.num_tasks)
    missing, unexpected = model.load_state_dict(result.model.state_dict(), strict=False)
    if unexpected or {k for k in missing if not k.startswith(("bases.", "accuracy_matrix",
                                                               "init_accuracy"))}:
        raise RuntimeError(f"checkpoint: MLP keys differ (missing {missing}, unexpected "
                           f"{unexpected})")
    model.store_run(result.bases, result.R, result.b)
    m = result.metrics
    path = out_dir / FILE
    save_state_dict(model.state_dict(), path, metadata={
        "model_id": MODEL_ID, "quick": quick, "scenario": scenario.description,
        "fed_config": asdict(cfg) | {"hidden": list(cfg.hidden)},
        "basis_sizes": result.info["basis_sizes"],
        "measured_at_training": {"acc": m.acc, "bwt": m.bwt, "forgetting": m.forgetting,
                                 "la": m.la},
        "torch": torch.__version__})
    return path
