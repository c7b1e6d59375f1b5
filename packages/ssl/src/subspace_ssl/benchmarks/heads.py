"""Benchmark ``ssl/gcr``: Grassmann class heads vs a softmax head, side by side.

The two shipped classifiers (``ssl/gcr_tiny.fmnist``, ``ssl/softmax_tiny.fmnist``) share the
encoder architecture, data, augmentation, optimizer and epochs (:mod:`subspace_ssl.recipes.
gcr`); only the head differs. Measured in one run: Fashion-MNIST test ``top1`` and ``nll``
(:func:`~subspace_ssl.recipes.gcr.classify`) and the linear transfer of the frozen encoder
to MNIST (``mnist_linear_top1``, :func:`~subspace_ssl.recipes.gcr.linear_transfer`; 1,000
test digits, one standard error ≈ 0.8 points). The same in quick and full mode (about a
minute on one CPU thread).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from subspace_core.bench import BenchContext, Benchmark, Measurement, register_benchmark
from subspace_ssl.recipes.gcr import classify, linear_transfer

__all__ = ["HEADS", "HEADS_BENCH", "run_heads"]

METHOD = "GCR head"
#: row label → model id of the shipped classifier
HEADS: dict[str, str] = {METHOD: "ssl/gcr_tiny.fmnist", "softmax head": "ssl/softmax_tiny.fmnist"}


def _shipped(model_id: str, device: torch.device) -> nn.Module:
    from subspace_core.zoo import load

    return load(model_id, device=device)


def run_heads(ctx: BenchContext,
              models: Callable[[str, torch.device], nn.Module] = _shipped) -> list[Measurement]:
    """Measure both heads (``models(model_id, device)`` gives the classifiers)."""
    case = "Fashion-MNIST test (10,000) / linear transfer to MNIST (9,000 / 1,000)"
    rows: list[Measurement] = []
    for label, model_id in HEADS.items():
        model = models(model_id, ctx.device)
        scores = classify(model, ctx.device)
        rows.append(Measurement(case, label, "top1", scores["top1"], "%"))
        rows.append(Measurement(case, label, "nll", scores["nll"], "", False))
        rows.append(Measurement(case, label, "mnist_linear_top1",
                                linear_transfer(model, ctx.device), "%"))
    return rows


HEADS_BENCH = register_benchmark(
    Benchmark(
        name="ssl/gcr",
        method=METHOD,
        baselines=("softmax head",),
        run=run_heads,
        description="Grassmann class representation head vs softmax head on the same encoder "
        "and recipe: Fashion-MNIST accuracy and NLL, linear transfer to MNIST.",
    )
)
