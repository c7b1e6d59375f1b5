"""Evaluation protocols of the ssm package (registered with ``subspace_core.eval``).

==================  ==========================================================  ==================
protocol            data                                                        metrics
==================  ==========================================================  ==================
``sfmnist_test``    Fashion-MNIST official test split, all 10,000 images, as     top1 (%), nll
                    normalised pixel sequences ``[N, 784, 1]``
``listops_test``    2,000 generated ListOps expressions, LRA settings (depth     top1 (%), nll
                    10, <= 10 args, 500..2,000 tokens), seed 10,000, padded to
                    2,000 tokens with a mask
``ptd_robustness``  a fixed 2,000-image subset (seed 0) of the sFMNIST test      robust_top1,
                    split, clean and with Fourier-mode noise (16 low modes       top1_clean,
                    1..16 or 16 high modes 376..391) of RMS amplitude 0.25,      top1_<band>_<a>
                    0.5, 1.0 (× the unit data std), noise seed 0
==================  ==========================================================  ==================

``top1`` is accuracy in percent, ``nll`` the mean negative log-likelihood (nats).
``robust_top1`` is the mean top-1 over the six noisy conditions. Models receive
``model(x)`` or, for padded data, ``model(x, mask=mask)`` (the
:class:`~subspace_ssm.classifier.SSMClassifier` interface). The factories
(:func:`sfmnist_protocol`, :func:`listops_protocol`, :func:`ptd_robustness_protocol`) build
the same protocols at other sizes (benchmarks and tests use small ones; only the registered
names above are the standard ones).
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from subspace_core.eval import Protocol, register_protocol
from subspace_ssm.data.base import SequenceSplit
from subspace_ssm.data.listops import generate_listops
from subspace_ssm.data.noise import add_fourier_noise, mode_band
from subspace_ssm.data.sfmnist import load_sfmnist

__all__ = [
    "LISTOPS_TEST",
    "PTD_AMPLITUDES",
    "PTD_BANDS",
    "classify",
    "listops_protocol",
    "noise_robustness",
    "ptd_robustness_protocol",
    "sfmnist_protocol",
]

#: Generator settings of ``listops_test`` (LRA's, with a seed no recipe trains on).
LISTOPS_TEST: dict[str, Any] = {"n": 2000, "seed": 10_000, "max_depth": 10, "max_args": 10,
                                "min_length": 500, "max_length": 2000}
PTD_AMPLITUDES = (0.25, 0.5, 1.0)
PTD_BANDS = ("low", "high")
PTD_SUBSET = 2000
PTD_WIDTH = 16


@torch.no_grad()
def classify(model: nn.Module, data: SequenceSplit, device: torch.device | str = "cpu",
             batch_size: int = 250) -> dict[str, float]:
    """``{"top1": accuracy %, "nll": mean NLL}`` of ``model`` on ``data`` (eval mode)."""
    device = torch.device(device)
    was_training = model.training
    model.eval()
    correct, nll = 0, 0.0
    try:
        for x, y, mask in data.batches(batch_size):
            x, y = x.to(device), y.to(device)
            logits = (model(x) if mask is None else model(x, mask=mask.to(device))).float()
            if logits.shape != (len(y), data.n_classes):
                raise ValueError(f"model: expected logits of shape {(len(y), data.n_classes)}, "
                                 f"got {tuple(logits.shape)}")
            nll += F.cross_entropy(logits, y, reduction="sum").item()
            correct += int((logits.argmax(-1) == y).sum())
    finally:
        model.train(was_training)
    return {"top1": 100.0 * correct / len(data), "nll": nll / len(data)}


def noise_robustness(model: nn.Module, data: SequenceSplit, *,
                     amplitudes: Sequence[float] = PTD_AMPLITUDES,
                     bands: Sequence[str] = PTD_BANDS, width: int = PTD_WIDTH, seed: int = 0,
                     device: torch.device | str = "cpu", batch_size: int = 250
                     ) -> dict[str, float]:
    """Top-1 (%) of ``model`` on ``data`` (float ``[N, L, d]``) clean and under Fourier-mode
    noise of each amplitude in each band (:func:`subspace_ssm.data.noise.mode_band`).

    Returns ``robust_top1`` (mean over the noisy conditions), ``top1_clean`` and
    ``top1_<band>_<amplitude>`` per condition.
    """
    if data.x.dim() != 3 or not data.x.is_floating_point():
        raise ValueError(f"data.x: expected float sequences [N, L, d], got {data.x.dtype} "
                         f"{tuple(data.x.shape)}")
    if not amplitudes or not bands:
        raise ValueError("amplitudes, bands: expected at least one of each")
    out = {"top1_clean": classify(model, data, device, batch_size)["top1"]}
    noisy = []
    for band in bands:
        modes = mode_band(data.seq_len, band, width)
        for amp in amplitudes:
            x = add_fourier_noise(data.x, float(amp), modes, seed=seed)
            acc = classify(model, SequenceSplit(x, data.y, data.n_classes, data.mask), device,
                           batch_size)["top1"]
            out[f"top1_{band}_{amp:g}"] = acc
            noisy.append(acc)
    return {"robust_top1": sum(noisy) / len(noisy), **out}


def sfmnist_protocol(name: str = "sfmnist_test", n: int | None = None, seed: int = 0,
                     batch_size: int = 250, size: int = 28) -> Protocol:
    """Top-1 / NLL on the sFMNIST test split (all of it, or a fixed subset of ``n``), images
    ``size``×``size`` (28: the standard task; 14: 2×2-average-pooled, L = 196)."""
    @lru_cache(maxsize=1)
    def data() -> SequenceSplit:
        return load_sfmnist("test", n=n, seed=seed, size=size)

    def run(model: nn.Module, device: torch.device) -> dict[str, float]:
        return classify(model, data(), device, batch_size)

    subset = "all 10,000 images" if n is None else f"a fixed subset of {n} (seed {seed})"
    k = 28 // size
    pool = "" if size == 28 else f"{k}×{k} average pooling (rounded to uint8), "
    return Protocol(
        name=name, dataset="fashion_mnist", split="test",
        preprocessing=pool + "pixel/255, normalise mean=0.2860 std=0.3530, row-major pixel "
        f"sequence [N, {size * size}, 1]", metrics=("top1", "nll"),
        higher_is_better=(True, False), run=run,
        description=f"Sequential Fashion-MNIST{'' if size == 28 else f' at {size}×{size}'} "
        f"(one pixel per step, L = {size * size}), test split, {subset}; top-1 accuracy (%) "
        "and mean NLL.")


def listops_protocol(name: str = "listops_test", batch_size: int = 50,
                     **generator: Any) -> Protocol:
    """Top-1 / NLL on a generated ListOps set (``generator``: :func:`generate_listops`
    arguments, default :data:`LISTOPS_TEST`)."""
    cfg = {**LISTOPS_TEST, **generator}

    @lru_cache(maxsize=1)
    def data() -> SequenceSplit:
        kw = dict(cfg)
        return generate_listops(kw.pop("n"), **kw)

    def run(model: nn.Module, device: torch.device) -> dict[str, float]:
        return classify(model, data(), device, batch_size)

    return Protocol(
        name=name, dataset="listops (generated)", split="test",
        preprocessing=f"token ids (vocab 18, 0 = padding), padded to {cfg['max_length']} "
        "with a bool mask", metrics=("top1", "nll"), higher_is_better=(True, False), run=run,
        description=f"ListOps generated by subspace_ssm.data.listops with {cfg}; top-1 "
        "accuracy (%) of the expression's value (10 classes) and mean NLL.")


def ptd_robustness_protocol(name: str = "ptd_robustness", n: int | None = PTD_SUBSET,
                            amplitudes: Sequence[float] = PTD_AMPLITUDES,
                            bands: Sequence[str] = PTD_BANDS, width: int = PTD_WIDTH,
                            seed: int = 0, batch_size: int = 250) -> Protocol:
    """sFMNIST accuracy vs Fourier-mode noise amplitude (see :func:`noise_robustness`)."""
    amplitudes, bands = tuple(amplitudes), tuple(bands)

    @lru_cache(maxsize=1)
    def data() -> SequenceSplit:
        return load_sfmnist("test", n=n, seed=0)

    def run(model: nn.Module, device: torch.device) -> dict[str, float]:
        return noise_robustness(model, data(), amplitudes=amplitudes, bands=bands, width=width,
                                seed=seed, device=device, batch_size=batch_size)

    keys = tuple(f"top1_{b}_{a:g}" for b in bands for a in amplitudes)
    return Protocol(
        name=name, dataset="fashion_mnist", split="test",
        preprocessing="sFMNIST sequences [N, 784, 1] plus a sum of random-phase sinusoids in "
        f"{width} Fourier modes per band {bands}, RMS amplitude {amplitudes} (units of the "
        "normalised input)",
        metrics=("robust_top1", "top1_clean", *keys),
        higher_is_better=(True,) * (2 + len(keys)), run=run,
        description=f"PTD robustness (Yu et al., ICLR 2024): accuracy on "
        f"{'all' if n is None else n} sFMNIST test images, clean and under Fourier-mode input "
        f"noise (noise seed {seed}); robust_top1 = mean over the noisy conditions.")


SFMNIST_TEST = register_protocol(sfmnist_protocol())
SFMNIST14_TEST = register_protocol(sfmnist_protocol("sfmnist14_test", size=14))
LISTOPS_TEST_PROTOCOL = register_protocol(listops_protocol())
PTD_ROBUSTNESS = register_protocol(ptd_robustness_protocol())
