"""Benchmark ``ssl/linear_probe``: the Barlow Twins table with its baselines, one readout.

Every row is scored by the same readout on the same images in the same run: the encoder's
**global-average-pooled embedding** (raw pixels: the 784 normalised pixels), standardised,
then a multinomial logistic regression (``linear_top1``), the cosine kNN classifier
(k = 200, T = 0.1; ``knn_top1``) and RankMe of the test embeddings (``rankme``) —
:func:`subspace_ssl.protocols.encoder_readouts`. Rows:

* ``Barlow Twins`` / ``Mixed Barlow Twins``: the shipped encoders
  (``ssl/barlow_tiny.fmnist``, ``ssl/mixed_barlow_tiny.fmnist``; same architecture, same
  epochs) — a row is present only once its encoder ships;
* ``random init``: the same architecture with random weights, the **mean over seeds 0 and 1**
  (each seed is also reported as its own case);
* ``raw pixels``.

``quick``: the first 10,000 training and 2,000 test images; full: 60,000 / 10,000 (the
``fmnist_probe`` protocol's numbers). The readout matters: a richer spatial readout lifts even
a random network a lot, so this table compares GAP embeddings only.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from subspace_core.bench import BenchContext, Benchmark, Measurement, register_benchmark
from subspace_ssl.data import load_images
from subspace_ssl.encoders import build_encoder
from subspace_ssl.pretrained import SHIPPED
from subspace_ssl.probes import embed, pixel_features
from subspace_ssl.protocols import encoder_readouts

__all__ = ["ALL_ENCODERS", "ENCODERS", "READOUT_BENCH", "ReadoutConfig", "run_readout"]

METHOD = "Barlow Twins"
RANDOM = "random init"
PIXELS = "raw pixels"
#: trained rows: label → model id of the encoder; rows whose encoder is not shipped yet are
#: left out (the table never stands in an untrained or quick-trained model for them)
ALL_ENCODERS: dict[str, str] = {METHOD: "ssl/barlow_tiny.fmnist",
                                "Mixed Barlow Twins": "ssl/mixed_barlow_tiny.fmnist"}
ENCODERS: dict[str, str] = {label: model_id for label, model_id in ALL_ENCODERS.items()
                            if model_id in SHIPPED}
BASELINES = (*(label for label in ENCODERS if label != METHOD), RANDOM, PIXELS)


@dataclass(frozen=True)
class ReadoutConfig:
    train_n: int | None  # None: all 60,000
    test_n: int | None  # None: all 10,000
    random_seeds: tuple[int, ...] = (0, 1)


QUICK = ReadoutConfig(train_n=10_000, test_n=2_000)
FULL = ReadoutConfig(train_n=None, test_n=None)


def _shipped_encoder(model_id: str, device: torch.device) -> nn.Module:
    from subspace_core.zoo import load

    return load(model_id, device=device)


def run_readout(ctx: BenchContext, cfg: ReadoutConfig | None = None,
                encoders: Callable[[str, torch.device], nn.Module] = _shipped_encoder
                ) -> list[Measurement]:
    """Measure every row (see module doc); ``encoders(model_id, device)`` gives the trained
    encoders (the shipped ones by default)."""
    cfg = cfg or (QUICK if ctx.quick else FULL)
    train_images, train_y = load_images("fmnist", "train")
    test_images, test_y = load_images("fmnist", "test")
    train_images, train_y = train_images[: cfg.train_n], train_y[: cfg.train_n]
    test_images, test_y = test_images[: cfg.test_n], test_y[: cfg.test_n]
    case = f"Fashion-MNIST GAP readout, {len(train_y)} train / {len(test_y)} test"
    rows: list[Measurement] = []

    def score(label: str, model: nn.Module | None, row_case: str = case) -> dict[str, float]:
        if model is None:
            train_x, test_x = pixel_features(train_images), pixel_features(test_images)
        else:
            model = model.to(ctx.device)
            train_x = embed(model, train_images, device=ctx.device)
            test_x = embed(model, test_images, device=ctx.device)
        got = encoder_readouts(train_x, train_y, test_x, test_y)
        rows.extend(Measurement(row_case, label, metric, value, "" if metric == "rankme" else "%")
                    for metric, value in got.items())
        return got

    for label, model_id in ENCODERS.items():
        score(label, encoders(model_id, ctx.device))
    per_seed = [score(RANDOM, build_encoder("tiny", seed=seed),
                      f"{case}, random init seed {seed}") for seed in cfg.random_seeds]
    for metric in per_seed[0]:
        mean = sum(s[metric] for s in per_seed) / len(per_seed)
        rows.append(Measurement(case, RANDOM, metric, mean, "" if metric == "rankme" else "%"))
    score(PIXELS, None)
    return rows


READOUT_BENCH = register_benchmark(
    Benchmark(
        name="ssl/linear_probe",
        method=METHOD,
        baselines=BASELINES,
        run=run_readout,
        description="Barlow Twins vs Mixed Barlow Twins, a random network of the same "
        "architecture (mean of 2 seeds) and raw pixels, all through the same GAP readout: "
        "linear probe, kNN (k=200, T=0.1) and RankMe on Fashion-MNIST.",
    )
)
