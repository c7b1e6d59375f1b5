"""Benchmark ``ssm/ptd_robustness``: S4D-PTD vs S4D-LegS, S5-LegS and S5-PTD (and, in the
full run, S4, Mamba and MHS) trained at an equal budget, then scored clean and under
Fourier-mode input noise.

Every model is a :class:`~subspace_ssm.classifier.SSMClassifier` of the same size (or an
:class:`~subspace_ssm.mhs.MHSClassifier` of similar width), initialised from the same seed
and trained on the same batches for the same number of AdamW steps (lr 1e-2, SSM
parameters 1e-3 without weight decay, cosine schedule) on sequential Fashion-MNIST
(:func:`~subspace_ssm.data.sfmnist.load_sfmnist`). Measured per model:

* ``top1``: test accuracy (%) on a fixed test subset, clean;
* ``robust_top1``: mean accuracy under Fourier-mode noise (``low`` and ``high`` bands,
  :func:`~subspace_ssm.data.noise.mode_band`) of each amplitude, plus each condition as
  ``top1_<band>_<amplitude>`` (see :func:`subspace_ssm.protocols.noise_robustness`);
* ``ms_per_step``: mean wall time of a training step.

``quick`` (the CI setting, about a minute on 2 busy cores): images averaged to 14×14
(L = 196), 3,000 training images, 120 steps of batch 32, d_model 16, 2 layers, d_state 16,
a 500-image test subset, amplitudes 0.5 and 1.0 in 8-mode bands; the four S4D/S5 variants
only. The full run: 28×28 (L = 784), 20,000 images, 1,000 steps of batch 32, d_model 32,
4 layers, d_state 32, 2,000 test images, amplitudes 0.25/0.5/1.0 in 16-mode bands, and
S4, Mamba and MHS as further baselines. The small budgets rank inits at a fixed cost; they
are not the accuracies of long training runs.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from subspace_core.bench import BenchContext, Benchmark, Measurement, register_benchmark
from subspace_ssm.benchmarks.common import TrainBudget, build_family, train_steps
from subspace_ssm.data.sfmnist import load_sfmnist
from subspace_ssm.protocols import noise_robustness

__all__ = ["MODELS", "PTD_ROBUSTNESS_BENCH", "BenchConfig", "run_ptd_robustness"]

METHOD = "S4D-PTD"
BASELINES = ("S4D-LegS", "S5-LegS", "S5-PTD")
FULL_ONLY = ("S4", "Mamba", "MHS")
#: label → (kind, layer kwargs); "mhs" is the MHS image classifier.
#: the families this benchmark trains (keys of :data:`~subspace_ssm.benchmarks.common.FAMILIES`).
MODELS = ("S4D-PTD", "S4D-LegS", "S5-LegS", "S5-PTD", "S4", "Mamba", "MHS")


@dataclass(frozen=True, kw_only=True)
class BenchConfig(TrainBudget):
    """:class:`~subspace_ssm.benchmarks.common.TrainBudget` plus the noise conditions."""

    amplitudes: tuple[float, ...]
    width: int
    models: tuple[str, ...]


QUICK = BenchConfig(size=14, train_n=3000, test_n=500, steps=120, batch=32, d_model=16,
                    n_layers=2, d_state=16, amplitudes=(0.5, 1.0), width=8,
                    models=(METHOD, *BASELINES))
FULL = BenchConfig(size=28, train_n=20_000, test_n=2000, steps=1000, batch=32, d_model=32,
                   n_layers=4, d_state=32, amplitudes=(0.25, 0.5, 1.0), width=16,
                   models=(METHOD, *BASELINES, *FULL_ONLY))


def run_ptd_robustness(ctx: BenchContext, cfg: BenchConfig | None = None) -> list[Measurement]:
    cfg = cfg or (QUICK if ctx.quick else FULL)
    train = load_sfmnist("train", n=cfg.train_n, seed=cfg.seed, size=cfg.size)
    test = load_sfmnist("test", n=cfg.test_n, seed=cfg.seed, size=cfg.size)
    case = (f"sFMNIST {cfg.size}x{cfg.size} (L={cfg.size ** 2}), {cfg.steps} steps x "
            f"{cfg.batch}, d_model={cfg.d_model}, {cfg.n_layers} layers")
    rows: list[Measurement] = []
    for label in cfg.models:
        torch.manual_seed(cfg.seed)
        model = build_family(label, cfg).to(ctx.device)
        sec = train_steps(model, train.x, train.y, cfg, ctx.device)
        res = noise_robustness(model, test, amplitudes=cfg.amplitudes, bands=("low", "high"),
                               width=cfg.width, seed=cfg.seed, device=ctx.device)
        rows.append(Measurement(case, label, "top1", res.pop("top1_clean"), "%"))
        rows.append(Measurement(case, label, "robust_top1", res.pop("robust_top1"), "%"))
        rows += [Measurement(case, label, key, value, "%") for key, value in res.items()]
        rows.append(Measurement(case, label, "ms_per_step", 1e3 * sec, "ms", False))
    return rows


PTD_ROBUSTNESS_BENCH = register_benchmark(
    Benchmark(
        name="ssm/ptd_robustness",
        method=METHOD,
        baselines=BASELINES,
        run=run_ptd_robustness,
        description="S4D-PTD vs S4D-LegS / S5-LegS / S5-PTD (full run: also S4, Mamba, MHS) "
        "at an equal training budget on sequential Fashion-MNIST: clean accuracy, accuracy "
        "under Fourier-mode input noise, time per training step.",
    )
)
