"""Recipe of ``3dgs/ff16_small.bunny_mnv2``: a 16-d Feature 3DGS field on the shipped bunny.

Geometry: the pretrained ``3dgs/gs_small.bunny_rgb`` splats, frozen (only features,
background feature and decoder train). Teacher: ImageNet MobileNetV2 stage 5 on the
protocol scene's views resized to 512 px (``[1280, 16, 16]`` per view), the 56 training
views only. Training: :func:`~subspace_3dgs.feature_field.train_feature_field` with
``dim=16``, projection initialisation (PCA decoder), :data:`STEPS` steps of one random
training view each, feature L1 on the 16 x 16 grid (rendered at 32 x 32). Seeded, one torch
thread: bit-reproducible on one machine / torch build.

Budget: 60 steps (the step count of the ``3dgs/feature_field`` benchmark's full run), about
20 s of distillation plus 20 s of teacher maps on one core. Longer runs fit the training views
better but not the held-out ones (measured on the earlier, 0.3-filter base scene:
``fidelity_object`` 0.749 at 60 steps, 0.747 at 150, 0.727 at 500; ``fidelity_all`` 0.772,
0.774, 0.771), so they buy nothing. On the current base: 0.757 / 0.764 at 60 steps.
"""

from __future__ import annotations

import time
from pathlib import Path

import torch

from subspace_core.zoo import create_model, save_state_dict

from ..feature_field import FeatureFieldConfig, train_feature_field
from ..teacher import Teacher, teacher_maps

__all__ = ["FILE", "MODEL_ID", "STEPS", "recipe_config", "train"]

MODEL_ID = "3dgs/ff16_small.bunny_mnv2"
FILE = "ff16_small.bunny_mnv2.safetensors"
STEPS = 60


def recipe_config(quick: bool = False) -> FeatureFieldConfig:
    """The :class:`~subspace_3dgs.feature_field.FeatureFieldConfig` of the recipe (``quick``:
    20 steps, a smoke test)."""
    return FeatureFieldConfig(dim=16, steps=20 if quick else STEPS, init="project",
                              train_geometry=False, seed=0)  # fmt: skip


def train(out_dir: str | Path, *, quick: bool = False, progress: bool = True) -> Path:
    """Distil the feature field; returns ``out_dir/ff16_small.bunny_mnv2.safetensors``
    (written atomically, with a ``.sha256`` sidecar). ``quick``: 20 steps (a smoke test)."""
    from ..zoo import bunny_scene
    from ..zoo_features import BASE_MODEL_ID, BUNNY_TEACHER, stored_state

    out_dir = Path(out_dir)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        torch.manual_seed(0)
        tic = time.perf_counter()
        base = create_model(BASE_MODEL_ID, pretrained=True, progress=False)
        scene = bunny_scene()
        maps = teacher_maps(scene, Teacher(**BUNNY_TEACHER))
        teacher_s = time.perf_counter() - tic
        config = recipe_config(quick)
        field, history = train_feature_field(base, scene, maps, config, log_every=50)
        if progress:
            print(f"teacher maps: {teacher_s:.0f} s", flush=True)
            for h in history:
                print(f"step {h['step']}: feature L1 {h['feature_l1']:.4f}, "
                      f"{h['seconds']:.0f} s", flush=True)  # fmt: skip
        path = out_dir / FILE
        save_state_dict(stored_state(field), path, metadata={
            "model_id": MODEL_ID, "base": BASE_MODEL_ID, "steps": config.steps, "quick": quick,
            "num_gaussians": field.gaussians.num_gaussians, "dim": field.dim,
        })  # fmt: skip  (no timings: the same run gives the same bytes and sha256)
        return path
    finally:
        torch.set_num_threads(threads)
