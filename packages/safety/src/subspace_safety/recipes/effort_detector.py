"""Recipe of ``safety/effort_mnv2_b14.fmnist_dcgan``: the Effort row of the full
``safety/effort_detection`` benchmark, saved.

Data (:data:`subspace_safety.bench_effort.FULL`): 5,000 real Fashion-MNIST training images
the generators never saw vs the first half (320) of the DCGAN's 640 fakes; the generators
are trained and sampled on the first run (about 9 min on one thread) and cached.
Training (:func:`subspace_safety.bench_effort.train_mode`): ImageNet MobileNetV2 cut after
``features[13]`` at 32 px, Effort on every pointwise convolution (4 trained singular
components each), Adam lr 1e-3, 300 steps of balanced batches of 32, seed 0, one thread
(bit-reproducible on one machine and torch build). ``quick`` trains 20 steps (a smoke test
of the pipeline; the fakes are the same).
"""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path

import torch

__all__ = ["FILE", "MODEL_ID", "train"]

MODEL_ID = "safety/effort_mnv2_b14.fmnist_dcgan"
FILE = "effort_mnv2_b14.fmnist_dcgan.safetensors"


def train(out_dir: str | Path, *, quick: bool = False, progress: bool = True) -> Path:
    """Train the detector; returns ``out_dir/effort_mnv2_b14.fmnist_dcgan.safetensors`` (the
    :class:`~subspace_safety.detector.EffortFakeDetector` delta, written atomically with
    a ``.sha256`` sidecar)."""
    from subspace_core.zoo import save_state_dict
    from subspace_safety.bench_effort import FULL, detector_data, train_mode

    config = replace(FULL, det_steps=20) if quick else FULL
    log = print if progress else (lambda *_: None)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        real_train, _, fakes = detector_data(config, log)
        start = time.perf_counter()
        model = train_mode(config, "effort", real_train, fakes[config.train_on][0])
        seconds = time.perf_counter() - start
    finally:
        torch.set_num_threads(threads)
    path = Path(out_dir) / FILE
    save_state_dict(model.state_dict(), path, metadata={
        "model_id": MODEL_ID, "quick": str(quick), "train_on": config.train_on,
        "steps": str(config.det_steps), "residual_rank": str(config.residual_rank)})
    log(f"trained {config.det_steps} steps in {seconds:.1f} s; wrote {path}")
    return path
