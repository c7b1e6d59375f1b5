from importlib import resources

import pytest
import torch

from subspace_3dgs.cameras import orbit_cameras
from subspace_3dgs.gaussians import Gaussians
from subspace_3dgs.rasterize import rasterize
from subspace_3dgs.scenes import Scene, View
from subspace_3dgs.teacher import Teacher, teacher_maps
from subspace_3dgs.zoo_features import (
    BASE_MODEL_ID,
    SHIPPED_FEATURES,
    SplatFeatureField,
    feature_fidelity_metrics,
    ff16_small_bunny_mnv2,
    stored_state,
)
from subspace_core.backbones import load_backbone
from subspace_core.zoo import create_model, save_state_dict

MODEL_ID = "3dgs/ff16_small.bunny_mnv2"
STORED = {"gaussians.features", "background", "decoder.weight", "decoder.bias"}


def _gaussians(n: int = 40, seed: int = 0) -> Gaussians:
    g = torch.Generator().manual_seed(seed)
    return Gaussians.from_points(0.5 * torch.randn(n, 3, generator=g),
                                 torch.rand(n, 3, generator=g), initial_opacity=0.8)  # fmt: skip


def _scene(gaussians: Gaussians, size: int = 32, n: int = 4) -> Scene:
    # the object mask is data of the view; a centred disk leaves some cells outside it
    yy, xx = torch.meshgrid(torch.arange(size) + 0.5, torch.arange(size) + 0.5, indexing="ij")
    disk = (yy - size / 2).square() + (xx - size / 2).square() < (0.3 * size) ** 2
    views = []
    for cam in orbit_cameras(n, 3.0, width=size, height=size):
        with torch.no_grad():
            out = rasterize(gaussians, cam.viewmat, cam.K, size, size, background=torch.ones(3))
        views.append(View(cam, out.rgb.clamp(0, 1), None, disk))
    return Scene(tuple(views), test_indices=(1, 3), background=(1.0, 1.0, 1.0))


def _randomise(field: SplatFeatureField, seed: int = 1) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in field.parameters():
            p.copy_(torch.randn(p.shape, generator=g))


def test_state_dict_holds_exactly_the_stored_tensors():
    field = ff16_small_bunny_mnv2(base=_gaussians(), dim=4, out_dim=8, map_size=4)
    state = field.state_dict()
    assert set(state) == STORED
    assert set(stored_state(field)) == STORED
    assert state["gaussians.features"].shape == (40, 4)
    assert state["decoder.weight"].shape == (8, 4)
    # the geometry is still there (frozen buffers), just not persisted
    assert field.gaussians.means.shape == (40, 3)
    assert not any(p is field.gaussians.means for p in field.parameters())


def test_the_field_renders_with_the_base_scene_filter():
    base = _gaussians()
    base.eps2d = 0.1
    field = ff16_small_bunny_mnv2(base=base, dim=4, out_dim=8, map_size=4)
    assert field.gaussians.eps2d == 0.1


def test_stored_state_round_trips_through_a_fresh_module():
    base = _gaussians()
    trained = ff16_small_bunny_mnv2(base=base, dim=4, out_dim=8, map_size=4)
    _randomise(trained)
    fresh = ff16_small_bunny_mnv2(base=base, dim=4, out_dim=8, map_size=4)
    fresh.load_state_dict(stored_state(trained), strict=True)
    for name, tensor in trained.state_dict().items():
        torch.testing.assert_close(fresh.state_dict()[name], tensor, rtol=0, atol=0)


def test_factory_refuses_features_of_another_base():
    field = ff16_small_bunny_mnv2(base=_gaussians(40), dim=4, out_dim=8, map_size=4)
    other = ff16_small_bunny_mnv2(base=_gaussians(41), dim=4, out_dim=8, map_size=4)
    with pytest.raises(ValueError, match=r"gaussians\.features.*40 Gaussians.*\[41, 4\]"):
        field.load_state_dict(other.state_dict(), strict=True)


def test_registry_refuses_a_checkpoint_whose_n_differs_from_the_shipped_base(tmp_path):
    n = create_model(BASE_MODEL_ID, pretrained=True, progress=False).num_gaussians
    bad = {"gaussians.features": torch.zeros(n + 1, 16), "background": torch.zeros(16),
           "decoder.weight": torch.zeros(1280, 16), "decoder.bias": torch.zeros(1280)}
    path = tmp_path / "ff.safetensors"
    save_state_dict(bad, path)
    with pytest.raises(ValueError, match="different base scene"):
        create_model(MODEL_ID, checkpoint_path=path)


def test_shipped_checkpoint_matches_the_shipped_base():
    _, num_bytes, num_params, _ = SHIPPED_FEATURES[MODEL_ID]
    shipped = resources.files("subspace_3dgs.weights") / "ff16_small.bunny_mnv2.safetensors"
    assert shipped.stat().st_size == num_bytes <= 5_000_000
    field = create_model(MODEL_ID, pretrained=True, progress=False)
    base = create_model(BASE_MODEL_ID, pretrained=True, progress=False)
    assert field.gaussians.num_gaussians == base.num_gaussians
    assert sum(t.numel() for t in field.state_dict().values()) == num_params
    torch.testing.assert_close(field.gaussians.means, base.means.detach(), rtol=0, atol=0)


def _expected_fidelity(decoded: torch.Tensor, maps: torch.Tensor, scene: Scene, size: int):
    """Pooled mean cosine of a constant decoded feature against the teacher cells, over the
    object cells (block coverage >= 0.5) and over all cells, written out by hand."""
    cos_obj, cos_all = [], []
    for i in scene.test_indices:
        target = maps[i]  # [C, h, h]
        h = target.shape[-1]
        block = size // h
        cover = scene.views[i].mask.float().reshape(h, block, h, block).mean((1, 3))
        for y in range(h):
            for x in range(h):
                t = target[:, y, x]
                c = float(decoded @ t) / max(float(decoded.norm() * t.norm()), 1e-8)
                cos_all.append(c)
                if cover[y, x] >= 0.5:
                    cos_obj.append(c)
    return sum(cos_obj) / len(cos_obj), sum(cos_all) / len(cos_all)


def test_protocol_fidelity_equals_the_formula():
    base, size, h, c = _gaussians(), 32, 4, 8
    scene = _scene(base, size)
    field = ff16_small_bunny_mnv2(base=base, dim=3, out_dim=c, map_size=h)
    _randomise(field)
    # one feature everywhere (Gaussians and background): the rendered map is that feature
    # in every cell, whatever the weights, so the decoded map is known in closed form
    f = torch.tensor([0.3, -1.2, 0.7])
    with torch.no_grad():
        field.gaussians.features.copy_(f.expand_as(field.gaussians.features))
        field.background.copy_(f)
    decoded = (field.decoder.weight @ f + field.decoder.bias).detach()
    maps = torch.randn(len(scene.views), c, h, h, generator=torch.Generator().manual_seed(2))
    maps[:, :, 0, 0] += 3 * decoded  # some cells well aligned, so the mean is not ~0
    want_obj, want_all = _expected_fidelity(decoded, maps, scene, size)
    got = feature_fidelity_metrics(field, scene, maps)
    assert set(got) == {"fidelity_object", "fidelity_all"}
    assert got["fidelity_object"] == pytest.approx(want_obj, abs=1e-5)
    assert got["fidelity_all"] == pytest.approx(want_all, abs=1e-5)
    assert want_obj != pytest.approx(want_all, abs=1e-3)  # the two regions differ here


def test_teacher_runs_on_heldout_views_only_with_the_same_result():
    base = _gaussians()
    scene = _scene(base, size=32)
    teacher = Teacher(load_backbone("mobilenet_v2", pretrained=False), stage=3, input_size=32)
    field = ff16_small_bunny_mnv2(base=base, dim=3, out_dim=teacher.width, map_size=4)
    _randomise(field)
    full = feature_fidelity_metrics(field, scene, teacher_maps(scene, teacher, cache=False))
    assert feature_fidelity_metrics(field, scene, teacher) == pytest.approx(full, abs=1e-6)


def test_rejects_a_non_field():
    with pytest.raises(TypeError, match="field"):
        feature_fidelity_metrics(torch.nn.Linear(2, 2), None, torch.zeros(1))
    with pytest.raises(TypeError, match="base"):
        SplatFeatureField(torch.nn.Linear(2, 2), 4, 8, 4)
