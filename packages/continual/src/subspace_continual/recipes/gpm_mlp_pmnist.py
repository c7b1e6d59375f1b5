"""Recipe of ``continual/gpm_mlp.pmnist``: GPM on Permuted-MNIST, 10 tasks, from mnist_10k.

Network: MLP 784-100-100-10 without biases (GPM's). Data: :func:`~subspace_continual.data.
permuted_mnist` with ``seed=0`` (9,000 training / 1,000 test digits per task). Training: plain
SGD, lr 0.03, batch 32, 5 epochs per task (1,410 steps per task), ``seed=0``. GPM: energy
thresholds 0.95 / 0.99 / 0.99 for the inputs of ``body.0`` / ``body.2`` / ``heads.0``, bases
built from 300 random training examples per task, gradients projected on the complement.

Budget: 14,100 SGD steps in all: 98-164 s on one core of a busy 2-core machine
(``OMP_NUM_THREADS=1 subzoo train continual/gpm_mlp.pmnist``).
The run state is saved after every task in ``out_dir`` and a re-run resumes from it
(:func:`~subspace_continual.harness.run_sequence` with ``state_dir``); the result is the same.
``quick`` trains 1 epoch on 100 digits per class (a smoke test of the path, not a
reproduction).

The checkpoint is a :class:`~subspace_continual.models.ContinualMLP`: the final weights, the
final bases (``bases.body_0`` [784, k0], ``bases.body_2`` [100, k1], ``bases.heads_0`` [100, k2])
and the accuracy matrix measured after every task (``accuracy_matrix`` [10, 10]) plus the
random-init accuracies (``init_accuracy`` [10]).
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import torch

from subspace_continual.data import permuted_mnist
from subspace_continual.gpm import GPM, PMNIST_THRESHOLDS
from subspace_continual.harness import TrainConfig, run_sequence
from subspace_continual.models import ContinualMLP
from subspace_core.zoo import save_state_dict

__all__ = ["CONFIG", "MODEL_ID", "train"]

MODEL_ID = "continual/gpm_mlp.pmnist"
FILE = "gpm_mlp.pmnist.safetensors"
#: The shipped checkpoint's training configuration.
CONFIG = TrainConfig(epochs=5, batch_size=32, lr=0.03, seed=0)


def train(out_dir: str | Path, *, quick: bool = False, progress: bool = True) -> Path:
    """Train GPM over the 10 Permuted-MNIST tasks; returns ``out_dir/gpm_mlp.pmnist.safetensors``
    (written atomically, with a ``.sha256`` sidecar)."""
    out_dir = Path(out_dir)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # bit-reproducible across machines with the same torch build
    try:
        scenario = permuted_mnist(10, seed=0, train_per_class=100 if quick else None)
        cfg = TrainConfig(**{**asdict(CONFIG), "epochs": 1}) if quick else CONFIG
        strategy = GPM(threshold=PMNIST_THRESHOLDS, num_samples=300)
        result = run_sequence(strategy, scenario, cfg,
                              log=(lambda line: print(line, flush=True)) if progress else None,
                              state_dir=out_dir / "state")
    finally:
        torch.set_num_threads(threads)
    model = ContinualMLP(784, cfg.hidden, (10,), bias=cfg.bias, num_tasks=10)
    missing, unexpected = model.load_state_dict(strategy.model.state_dict(), strict=False)
    if unexpected or {k for k in missing if not k.startswith(("bases.", "accuracy_matrix",
                                                               "init_accuracy"))}:
        raise RuntimeError(f"checkpoint: MLP keys differ (missing {missing}, unexpected "
                           f"{unexpected})")
    model.store_run(strategy.memory.bases, result.R, result.b)
    m = result.metrics
    path = out_dir / FILE
    save_state_dict(model.state_dict(), path, metadata={
        "model_id": MODEL_ID, "quick": quick, "scenario": scenario.description,
        "train_config": asdict(cfg), "thresholds": list(PMNIST_THRESHOLDS),
        "basis_sizes": strategy.memory.basis_sizes(),
        "measured_at_training": {"acc": m.acc, "bwt": m.bwt, "forgetting": m.forgetting,
                                 "la": m.la},
        "torch": torch.__version__})
    return path
