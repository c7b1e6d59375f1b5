"""Benchmark ``ssm/accuracy``: one accuracy table for S4, S4D, S5, S5-PTD, Mamba and MHS
trained under the same protocol and budget on sequential Fashion-MNIST.

Every family is trained by the same loop as ``ssm/ptd_robustness``
(:func:`subspace_ssm.benchmarks.common.train_steps`): the same seed before building, the same
batches (one seeded generator), the same number of AdamW steps, lr 1e-2 with the SSM
parameters (:func:`~subspace_ssm.optim.ssm_param_groups`) at 1e-3 without weight decay,
linear warm-up then cosine decay, on the same training subset of
:func:`~subspace_ssm.data.sfmnist.load_sfmnist`; then scored on the same test subset
(:func:`subspace_ssm.protocols.classify`). S4, S4D, S5, S5-PTD and Mamba are
:class:`~subspace_ssm.classifier.SSMClassifier` stacks of ``n_layers`` layers of width
``d_model`` (Mamba with ``d_state`` capped at 16, its usual size); MHS is an
:class:`~subspace_ssm.mhs.MHSClassifier` on the image behind the sequence (``n_layers // 2``
layers, 3 heads, one token per pixel or per 2×2 patch), as in ``ssm/ptd_robustness``. The
parameter counts differ and are reported. Measured per family:

* ``top1``: test accuracy (%);
* ``ms_per_step``: mean wall time of one training step (forward, backward, AdamW);
* ``params``: number of trainable parameters.

The benchmark's ``method`` is S4D, the reference row every other family is set against, so
the printed ratio table lists all six families; its ratio is ``S4D / family`` (a top1 ratio
below 1 means the family beat S4D; ``family / S4D`` is its inverse).

``quick`` (the CI setting, 75 s measured on one busy CPU thread): images averaged to 7×7
(L = 49), 2,000 training images, 100 steps of batch 32, d_model 32, 2 layers, d_state 32,
a 500-image test subset. L is that short because Mamba and MHS go through the reference
selective scan on CPU (:func:`subspace_core.ops.selective_scan.selective_scan_ref`), a Python
loop over L whose backward costs O(L²) (about 0.27 s per Mamba step at L = 49 and 4 s at
L = 196 on one thread); the budget stays equal for every family instead of giving Mamba
fewer steps.

The full run on CPU: 14×14 (L = 196), 20,000 training images, 400 steps of batch 32, the same
model sizes, 2,000 test images: about 35 minutes on one busy thread (estimated from the
measured times per step; nearly all of it Mamba, ~4.4 s per step, and MHS, ~0.26 s per
step). The full-length task (28×28, L = 784) is run when the device is CUDA
(:data:`FULL_CUDA`: 1,000 steps), where the scans use the Triton kernels; on CPU one Mamba step at L = 784 takes tens of seconds with the current
reference scan. These small budgets compare the families at a fixed cost; they are not the
accuracies of long training runs.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from subspace_core.bench import BenchContext, Benchmark, Measurement, register_benchmark
from subspace_ssm.benchmarks.common import TrainBudget, build_family, train_steps
from subspace_ssm.data.sfmnist import load_sfmnist
from subspace_ssm.protocols import classify

__all__ = ["ACCURACY_BENCH", "AccuracyConfig", "run_accuracy"]

METHOD = "S4D"
BASELINES = ("S4", "S5", "S5-PTD", "Mamba", "MHS")


@dataclass(frozen=True, kw_only=True)
class AccuracyConfig(TrainBudget):
    """:class:`~subspace_ssm.benchmarks.common.TrainBudget` plus the families to train."""

    models: tuple[str, ...] = (METHOD, *BASELINES)


QUICK = AccuracyConfig(size=7, train_n=2000, test_n=500, steps=100, batch=32, d_model=32,
                       n_layers=2, d_state=32)
FULL = AccuracyConfig(size=14, train_n=20_000, test_n=2000, steps=400, batch=32, d_model=32,
                      n_layers=2, d_state=32)
FULL_CUDA = AccuracyConfig(size=28, train_n=20_000, test_n=2000, steps=1000, batch=32,
                           d_model=32, n_layers=2, d_state=32)


def run_accuracy(ctx: BenchContext, cfg: AccuracyConfig | None = None) -> list[Measurement]:
    if cfg is None:
        cfg = QUICK if ctx.quick else FULL_CUDA if ctx.device.type == "cuda" else FULL
    train = load_sfmnist("train", n=cfg.train_n, seed=cfg.seed, size=cfg.size)
    test = load_sfmnist("test", n=cfg.test_n, seed=cfg.seed, size=cfg.size)
    case = (f"sFMNIST {cfg.size}x{cfg.size} (L={cfg.size ** 2}), {len(train)} train / "
            f"{len(test)} test, {cfg.steps} steps x {cfg.batch}, d_model={cfg.d_model}, "
            f"{cfg.n_layers} layers")
    rows: list[Measurement] = []
    for label in cfg.models:
        torch.manual_seed(cfg.seed)
        model = build_family(label, cfg).to(ctx.device)
        params = sum(p.numel() for p in model.parameters() if p.requires_grad)
        sec = train_steps(model, train.x, train.y, cfg, ctx.device)  # type: ignore[arg-type]
        top1 = classify(model, test, ctx.device)["top1"]
        rows.append(Measurement(case, label, "top1", top1, "%"))
        rows.append(Measurement(case, label, "ms_per_step", 1e3 * sec, "ms", False))
        rows.append(Measurement(case, label, "params", float(params), "", False))
    return rows


ACCURACY_BENCH = register_benchmark(
    Benchmark(
        name="ssm/accuracy",
        method=METHOD,
        baselines=BASELINES,
        run=run_accuracy,
        description="S4 / S4D / S5 / S5-PTD / Mamba / MHS trained with the same steps, batches, "
        "optimizer recipe, data and seed on sequential Fashion-MNIST: test accuracy, time "
        "per training step, parameters (S4D is the reference row; ratio = S4D / family).",
    )
)
