"""Shipped fake-image detector: protocol ``fake_detection`` and
``safety/effort_mnv2_b14.fmnist_dcgan``.

**Protocol ``fake_detection``**: real Fashion-MNIST test images vs the held-out fakes of the
three generators of the full ``safety/effort_detection`` benchmark
(:data:`subspace_safety.bench_effort.FULL`: a VAE, a DCGAN and a DDPM trained here on
Fashion-MNIST training images, 320 held-out fakes each, 320 real test images). The
generators are trained and sampled deterministically on the first run (about 9 min on one
CPU thread) and cached (:mod:`subspace_safety.fakes`); later runs take seconds. Metrics:
ROC AUC of the detector's fake logit per generator (``<gen>_auc``), accuracy at logit 0
(``<gen>_acc``), and the mean AUC over the generators the detector did *not* see in
training (``mean_unseen_auc``; the shipped detector saw the DCGAN only).

The checkpoint is a :class:`~subspace_safety.detector.EffortFakeDetector` delta: only the trained residual factors
(``U_res``, ``S_res``, ``V_res`` of every pointwise convolution) and the linear head. The
frozen principal parts are recomputed from torchvision's ImageNet MobileNetV2 by the same
SVD when the model is built, so the file is a few hundred kB.
"""

from __future__ import annotations

import torch
from torch import nn

from subspace_core.eval import Protocol, protocol_doc, register_protocol
from subspace_core.zoo import PretrainedCfg, register_model
from subspace_safety.bench_effort import FULL, held_out_data, score_detector
from subspace_safety.detector import EffortFakeDetector

__all__ = [
    "FAKE_DETECTION",
    "SHIPPED_DETECTORS",
    "effort_mnv2_b14_fmnist_dcgan",
    "fake_detection_metrics",
]

#: The generator the shipped detector is trained on (the others are "unseen"), and all three.
TRAIN_ON = FULL.train_on
_GENERATORS = tuple(name for name, _ in FULL.gen_steps)


def fake_detection_metrics(model: nn.Module, device: torch.device | str = "cpu"
                           ) -> dict[str, float]:
    """The ``fake_detection`` protocol (see the module doc) for a detector trained on
    :data:`TRAIN_ON`'s fakes."""
    real_test, fakes = held_out_data(FULL, log=lambda *_: None)
    model = model.to(device).eval()
    row = score_detector(model, real_test, fakes, TRAIN_ON)
    out = {"mean_unseen_auc": row["mean unseen auc"]}
    for name in _GENERATORS:
        auc, acc = row["seen" if name == TRAIN_ON else f"unseen: {name}"]
        out[f"{name}_auc"], out[f"{name}_acc"] = auc, acc
    return out


FAKE_DETECTION = register_protocol(
    Protocol(
        name="fake_detection",
        dataset="fashion_mnist+generated",
        split="test",
        preprocessing="28x28 grey uint8 -> [0, 1], resized to the detector's input (32 px), "
        "grey -> RGB, ImageNet mean/std; fakes: 320 held-out samples each of the VAE, DCGAN "
        "and DDPM of safety/effort_detection's full config; reals: the first 320 test images",
        metrics=("mean_unseen_auc", "vae_auc", "ddpm_auc", "dcgan_auc", "vae_acc", "ddpm_acc",
                 "dcgan_acc"),
        higher_is_better=(True,) * 7,
        run=fake_detection_metrics,
        description=protocol_doc(__doc__, "fake_detection"),
        slow=True,
    )
)

#: Shipped detectors: id -> (sha256, bytes, num_params, metrics of fake_detection).
SHIPPED_DETECTORS: dict[str, tuple[str, int, int, dict[str, float]]] = {
    "safety/effort_mnv2_b14.fmnist_dcgan": (
        "dece2582c14d3f7fa7976b63272c3393a81590ab8761fdf2d400e08eafd931c6", 145_868, 34_757,
        {"mean_unseen_auc": 0.9651171875, "vae_auc": 0.999033203125, "ddpm_auc": 0.931201171875,
         "dcgan_auc": 1.0, "vae_acc": 0.9734375, "ddpm_acc": 0.65, "dcgan_acc": 1.0},
    ),
}
_SHA, _BYTES, _PARAMS, _METRICS = SHIPPED_DETECTORS["safety/effort_mnv2_b14.fmnist_dcgan"]


@register_model(
    "safety/effort_mnv2_b14.fmnist_dcgan",
    pretrained_cfg=PretrainedCfg(
        file="effort_mnv2_b14.fmnist_dcgan.safetensors",
        sha256=_SHA,
        num_bytes=_BYTES,
        num_params=_PARAMS,
        license="Apache-2.0 (residual factors and head); tower: MobileNetV2 BSD-3-Clause "
        "(torchvision); data: Fashion-MNIST MIT",
        paper="Yan et al. 2025, Orthogonal Subspace Decomposition for Generalizable "
        "AI-Generated Image Detection (Effort), ICML 2025, arXiv:2411.15633",
        recipe="subspace_safety.recipes.effort_detector:train",
        metrics={"fake_detection": _METRICS},
        data={"images": "uint8 or [0, 1] float [N, 28, 28] / [N, 1, H, W], grey",
              "train": "5,000 real Fashion-MNIST training images (indices 10,000-14,999, "
              "unseen by the generators) vs the first 320 DCGAN fakes",
              "output": "fake logit [N] (> 0: fake)"},
        train_budget="one CPU thread: the three generators ~9 min once (cached), then 300 "
        "detector steps at batch 32 in about a minute",
        package="subspace_safety.weights",
        notes="Effort on MobileNetV2 features[:14] at 32 px: every pointwise convolution keeps "
        "its top singular components frozen and trains the 4 smallest (U_res, S_res, V_res) "
        "with the orthogonality and singular-value losses; the head trains. Stores only "
        "those tensors. On this benchmark full fine-tuning generalises better (see "
        "zoo/results/bench/safety_full_cpu.csv): the generators are small and under-trained, "
        "so real-vs-fake is one large shared shift.",
    ),
    protocols=("fake_detection",),
    description="Effort fake-image detector (MobileNetV2 through stage 4, rank-4 residuals), "
    "trained on DCGAN fakes of Fashion-MNIST, tested on unseen VAE and DDPM fakes.",
)
def effort_mnv2_b14_fmnist_dcgan(**overrides) -> nn.Module:
    """:class:`EffortFakeDetector` with the shipped settings (``overrides``: its kwargs)."""
    return EffortFakeDetector(**{"residual_rank": 4, "blocks": 14, "size": 32, **overrides})
