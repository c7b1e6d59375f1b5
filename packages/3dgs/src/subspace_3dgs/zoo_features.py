"""The 3dgs feature-field zoo: protocol ``bunny_feature_fidelity`` and the shipped
``3dgs/ff16_small.bunny_mnv2`` (a Feature 3DGS field on ``3dgs/gs_small.bunny_rgb``).

**Protocol ``bunny_feature_fidelity``**: the bunny scene of ``bunny_heldout``
(:func:`subspace_3dgs.zoo.bunny_scene`: 64 views at 128 x 128, views 0, 8, ..., 56 held
out). Teacher: frozen ImageNet MobileNetV2, stage 5 (1,280 channels), on each held-out view
resized to 512 x 512, a 16 x 16 map. The model's feature map of each held-out view is
rendered at 32 x 32, area-averaged to 16 x 16 and decoded to 1,280 channels
(:func:`~subspace_3dgs.feature_field.render_feature_map`); per cell, the cosine similarity
of the decoded and the teacher feature is taken (a zero vector counts as 0).
``fidelity_object``: the mean over the cells at least half covered by the view's object
mask, pooled over the 8 views (every selected cell weighs the same, not every view);
``fidelity_all``: the mean over all 8 x 256 cells. Both are in [-1, 1], higher is better,
1 for a field that reproduces the teacher's directions exactly.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

from subspace_core.eval import Protocol, protocol_doc, register_protocol
from subspace_core.zoo import PretrainedCfg, register_model

from .feature_field import FeatureDecoder, FeatureField, feature_fidelity
from .gaussians import Gaussians
from .scenes import Scene
from .teacher import Teacher
from .zoo import BUNNY_SCENE, bunny_scene

__all__ = [
    "BASE_MODEL_ID",
    "BUNNY_FEATURE_FIDELITY",
    "BUNNY_TEACHER",
    "FROZEN_PARAMS",
    "SHIPPED_FEATURES",
    "FrozenGeometry",
    "SplatFeatureField",
    "bunny_feature_fidelity_metrics",
    "feature_fidelity_metrics",
    "ff16_small_bunny_mnv2",
    "stored_state",
]

#: The RGB scene the shipped feature field lives on (its geometry is not stored again).
BASE_MODEL_ID = "3dgs/gs_small.bunny_rgb"
#: ``Teacher`` arguments of the protocol (MobileNetV2 stage 5 at 512 px: ``[1280, 16, 16]``).
BUNNY_TEACHER = {"backbone": "mobilenet_v2", "stage": 5, "input_size": 512}
#: Gaussian tensors taken from the base scene and never stored with the feature field.
FROZEN_PARAMS = ("means", "quats", "log_scales", "opacity_logits", "sh")


class FrozenGeometry(Gaussians):
    """:class:`Gaussians` whose geometry and colour are non-persistent buffers.

    Only ``features [N, F]`` stays a parameter, so ``state_dict()`` holds ``features`` alone:
    the geometry belongs to another checkpoint (the base scene) and is frozen. Loading a
    ``features`` tensor whose ``N`` differs from the geometry's raises ``ValueError``.
    """

    def __init__(self, base: Gaussians, features: torch.Tensor) -> None:
        tensors = [getattr(base, n).detach() for n in FROZEN_PARAMS]
        super().__init__(*tensors, features=features, eps2d=base.eps2d)
        for name in FROZEN_PARAMS:
            value = getattr(self, name).detach()
            delattr(self, name)
            self.register_buffer(name, value, persistent=False)

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys,
                              unexpected_keys, error_msgs):  # fmt: skip
        incoming = state_dict.get(prefix + "features")
        if incoming is not None and incoming.shape != self.features.shape:
            # a size mismatch here means the field was trained on another base scene: say so
            # instead of PyTorch's generic "size mismatch" message
            raise ValueError(
                f"{prefix}features: expected [N, F] = {list(self.features.shape)} (N = the "
                f"{self.num_gaussians} Gaussians of the base scene), got {list(incoming.shape)}; "
                "the feature checkpoint was trained on a different base scene"
            )
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys,
                                      unexpected_keys, error_msgs)  # fmt: skip


class SplatFeatureField(FeatureField):
    """A :class:`FeatureField` on frozen base geometry whose ``state_dict`` holds only what
    the field adds: ``gaussians.features [N, F]``, ``background [F]``,
    ``decoder.weight [C, F]`` and ``decoder.bias [C]``.

    Args:
        base: the trained RGB :class:`Gaussians` (``N`` of them; copied, frozen).
        dim: feature width ``F``.
        out_dim: teacher width ``C``.
        map_size: side of the teacher grid the field renders to.
    """

    def __init__(self, base: Gaussians, dim: int, out_dim: int, map_size: int) -> None:
        if not isinstance(base, Gaussians):
            raise TypeError(f"base: expected a Gaussians module, got {type(base).__name__}")
        gaussians = FrozenGeometry(base, torch.zeros(base.num_gaussians, dim))
        super().__init__(gaussians, torch.zeros(dim), FeatureDecoder(dim, out_dim), map_size)


def stored_state(field: FeatureField) -> dict[str, torch.Tensor]:
    """The tensors a shipped feature field stores (float32, detached): ``gaussians.features
    [N, F]``, ``background [F]``, ``decoder.weight [C, F]``, ``decoder.bias [C]``."""
    if not isinstance(field, FeatureField):
        raise TypeError(f"field: expected a FeatureField, got {type(field).__name__}")
    if field.decoder.identity:
        raise ValueError("field: expected a subspace field with a 1x1 decoder, got the "
                         "full-width (identity decoder) variant")  # fmt: skip
    return {
        "gaussians.features": field.gaussians.features.detach().float(),
        "background": field.background.detach().float(),
        "decoder.weight": field.decoder.weight.detach().float(),
        "decoder.bias": field.decoder.bias.detach().float(),
    }


# ---------------------------------------------------------------- metrics


@torch.no_grad()
def feature_fidelity_metrics(
    field: FeatureField, scene: Scene, teacher: Teacher | torch.Tensor, *, render_scale: int = 2
) -> dict[str, float]:
    """``fidelity_object`` and ``fidelity_all`` (module doc) of ``field`` on
    ``scene.test_indices``.

    Args:
        field: the :class:`FeatureField`.
        scene: views with object masks (for ``fidelity_object``).
        teacher: a :class:`Teacher` (run on the held-out views only) or precomputed maps
            ``[V, C, h, h]``, one per view of ``scene.views``.
        render_scale: render side as a multiple of the teacher grid's.
    """
    if not isinstance(field, FeatureField):
        raise TypeError(f"field: expected a FeatureField, got {type(field).__name__}")
    maps = _heldout_maps(scene, teacher) if isinstance(teacher, Teacher) else teacher
    regions = {"fidelity_object": "object", "fidelity_all": "all"}
    return {metric: feature_fidelity(field, scene, maps, region=region, render_scale=render_scale)
            for metric, region in regions.items()}  # fmt: skip


def _heldout_maps(scene: Scene, teacher: Teacher) -> torch.Tensor:
    """Teacher maps ``[V, C, h, h]`` with only the held-out rows filled: the protocol reads
    no other view, and the teacher at 512 px costs seconds per view on one core."""
    ids = list(scene.test_indices)
    held = teacher(torch.stack([scene.views[i].rgb for i in ids]))
    maps = held.new_zeros(len(scene.views), *held.shape[1:])
    maps[ids] = held
    return maps


def bunny_feature_fidelity_metrics(
    model: nn.Module, device: torch.device | str = "cpu"
) -> dict[str, float]:
    """The ``bunny_feature_fidelity`` protocol (module doc) on a :class:`FeatureField`."""
    if not isinstance(model, FeatureField):
        raise TypeError(f"model: expected a FeatureField, got {type(model).__name__}")
    teacher = Teacher(**BUNNY_TEACHER)
    if model.out_dim != teacher.width or model.map_size != teacher.map_size:
        raise ValueError(f"model: expected a field decoding to [{teacher.width}, "
                         f"{teacher.map_size}, {teacher.map_size}] (MobileNetV2 stage 5), got "
                         f"[{model.out_dim}, {model.map_size}, {model.map_size}]")  # fmt: skip
    # the rasterizer and the teacher run on the CPU tensors of the scene's cameras
    return feature_fidelity_metrics(model.to(device), bunny_scene(), teacher)



BUNNY_FEATURE_FIDELITY = register_protocol(
    Protocol(
        name="bunny_feature_fidelity",
        dataset="mesh_bunny_npm",
        split="held-out views 0, 8, ..., 56 of 64",
        preprocessing="make_scene('bunny', 64, 128, 128, seed=0); teacher: ImageNet "
        "MobileNetV2 stage 5 on the view resized to 512 x 512 (16 x 16 x 1280); field rendered "
        "at 32 x 32, area-averaged to 16 x 16, decoded",
        metrics=("fidelity_object", "fidelity_all"),
        higher_is_better=(True, True),
        run=bunny_feature_fidelity_metrics,
        description=protocol_doc(__doc__, "bunny_feature_fidelity"),
    )
)

# ---------------------------------------------------------------- shipped checkpoints

#: Width ``F`` of the shipped field's features.
BUNNY_FEATURE_DIM = 16

#: Shipped feature fields: id -> (sha256, bytes, num_params, metrics of bunny_feature_fidelity).
SHIPPED_FEATURES: dict[str, tuple[str, int, int, Mapping[str, float]]] = {
    "3dgs/ff16_small.bunny_mnv2": (
        "fa58d8f1adc31af830af0ad1e8e0148f89a609e3fa6f4f61c9b0290e1b9b3c42", 1_047_472, 261_744,
        {"fidelity_object": 0.7567018866539001, "fidelity_all": 0.764143168926239},
    ),
}
_SHA, _BYTES, _PARAMS, _METRICS = SHIPPED_FEATURES["3dgs/ff16_small.bunny_mnv2"]


@register_model(
    "3dgs/ff16_small.bunny_mnv2",
    pretrained_cfg=PretrainedCfg(
        file="ff16_small.bunny_mnv2.safetensors",
        sha256=_SHA,
        num_bytes=_BYTES,
        num_params=_PARAMS,
        license="Apache-2.0 (weights); teacher: torchvision MobileNetV2 ImageNet weights "
        "(BSD-3-Clause); mesh: Stanford bunny via npm bunny@1.0.1 (public domain)",
        paper="Zhou et al. 2024, Feature 3DGS: Supercharging 3D Gaussian Splatting to Enable "
        "Distilled Feature Fields, CVPR 2024, arXiv:2312.03203",
        recipe="subspace_3dgs.recipes.bunny_features:train",
        metrics={"bunny_feature_fidelity": _METRICS},
        data={"dataset": "mesh_bunny_npm", "scene": dict(BUNNY_SCENE), "base": BASE_MODEL_ID,
              "teacher": dict(BUNNY_TEACHER),
              "split": "56 training views, 8 held-out views (every 8th)"},
        train_budget="60 steps (the step count of the 3dgs/feature_field benchmark), geometry "
        "frozen: 9 s of distillation + 11 s of teacher maps on one "
        "core of the shared 2-core machine (OMP_NUM_THREADS=1); bit-identical on re-run",
        package="subspace_3dgs.weights",
        notes="Stores only what the field adds to 3dgs/gs_small.bunny_rgb (loaded by the "
        "factory): float32 gaussians.features [N, 16], background [16], decoder.weight "
        "[1280, 16], decoder.bias [1280]; the factory refuses a checkpoint whose N differs "
        "from the base scene's.",
    ),
    protocols=("bunny_feature_fidelity",),
    description="Feature 3DGS field (16-d features + 1x1 decoder to MobileNetV2 stage 5) on "
    "the shipped bunny splats.",
)
def ff16_small_bunny_mnv2(*, base: Gaussians | None = None, dim: int = BUNNY_FEATURE_DIM,
                          out_dim: int = 1280, map_size: int = 16) -> SplatFeatureField:  # fmt: skip
    """A :class:`SplatFeatureField` on the base scene (``base``, default the pretrained
    ``3dgs/gs_small.bunny_rgb``), features zero until a checkpoint is loaded."""
    if base is None:
        from subspace_core.zoo import create_model

        base = create_model(BASE_MODEL_ID, pretrained=True, progress=False)
    return SplatFeatureField(base, dim, out_dim, map_size)
