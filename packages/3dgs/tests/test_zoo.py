import math

import pytest
import torch

from subspace_3dgs.cameras import orbit_cameras
from subspace_3dgs.gaussians import Gaussians
from subspace_3dgs.rasterize import rasterize
from subspace_3dgs.scenes import View
from subspace_3dgs.zoo import (
    BUNNY_EPS2D,
    BUNNY_SCENE,
    FEATURE_STAGES,
    SplatScene,
    feature_distance,
    gs_small_bunny_rgb,
    heldout_metrics,
)
from subspace_core.backbones import load_backbone, preprocess
from subspace_core.io import ChecksumError
from subspace_core.zoo import create_model, save_state_dict

MODEL_ID = "3dgs/gs_small.bunny_rgb"


def _gaussians(n: int = 40, sh_degree: int = 0, seed: int = 0) -> Gaussians:
    g = torch.Generator().manual_seed(seed)
    xyz = 0.6 * torch.randn(n, 3, generator=g)
    return Gaussians.from_points(xyz, torch.rand(n, 3, generator=g), sh_degree=sh_degree,
                                 initial_opacity=0.7)  # fmt: skip


def _views(gaussians, size=32, n=2, offset=0.0):
    views = []
    for cam in orbit_cameras(n, 3.0, width=size, height=size):
        with torch.no_grad():
            rgb = rasterize(gaussians, cam.viewmat, cam.K, size, size,
                            background=torch.ones(3)).rgb.clamp(0, 1)  # fmt: skip
        views.append(View(cam, rgb + offset, None, None))
    return views


@pytest.fixture(scope="module")
def untrained():
    torch.manual_seed(0)
    return load_backbone("mobilenet_v2", pretrained=False)


def test_perfect_render_scores_inf_one_zero(untrained):
    g = _gaussians()
    m = heldout_metrics(g, _views(g), backbone=untrained)
    assert m["psnr"] == math.inf and m["ssim"] == pytest.approx(1.0, abs=1e-6)
    assert m["mnv2_dist"] == pytest.approx(0.0, abs=1e-6)


def test_constant_offset_matches_closed_form():
    # A Gaussian far behind the cameras renders nothing: the image is the background b.
    # Against targets b + c, MSE = c^2 and, with zero variances, SSIM = (2 b (b + c) + C1)
    # / (b^2 + (b + c)^2 + C1) at every window.
    g = _gaussians(2)
    with torch.no_grad():
        g.opacity_logits.fill_(-30.0)
    b, c = 0.5, 0.1
    views = [View(v.camera, torch.full_like(v.rgb, b + c), None, None) for v in _views(g, n=3)]
    m = heldout_metrics(g, views, background=(b, b, b), backbone=None)
    assert set(m) == {"psnr", "ssim"}
    assert m["psnr"] == pytest.approx(-10 * math.log10(c * c), rel=1e-4)
    c1 = 0.01**2
    # float32 E[x^2] - E[x]^2 leaves ~1e-7 of variance against C2 = 9e-4: rel 5e-4
    expected = (2 * b * (b + c) + c1) / (b * b + (b + c) ** 2 + c1)
    assert m["ssim"] == pytest.approx(expected, rel=5e-4)


def test_metrics_are_means_over_views():
    g = _gaussians(2)
    with torch.no_grad():
        g.opacity_logits.fill_(-30.0)
    v1, v2 = _views(g, n=2)
    views = [View(v1.camera, torch.full_like(v1.rgb, 0.9), None, None),
             View(v2.camera, torch.full_like(v2.rgb, 0.99), None, None)]  # fmt: skip
    m = heldout_metrics(g, views, background=(1.0, 1.0, 1.0), backbone=None)
    assert m["psnr"] == pytest.approx((20.0 + 40.0) / 2, rel=1e-4)


def test_feature_distance_is_the_documented_formula(untrained):
    g = torch.Generator().manual_seed(1)
    x, y = torch.rand(2, 32, 32, 3, generator=g), torch.rand(2, 32, 32, 3, generator=g)
    d = feature_distance(x, y, untrained)
    assert d.shape == (2,)
    expected = torch.zeros(2)
    for stage in FEATURE_STAGES:
        fx = untrained.feature_map(preprocess(x.permute(0, 3, 1, 2), size=32), stage)
        fy = untrained.feature_map(preprocess(y.permute(0, 3, 1, 2), size=32), stage)
        fx, fy = fx / fx.norm(dim=1, keepdim=True), fy / fy.norm(dim=1, keepdim=True)
        expected += (fx - fy).square().sum(1).mean((1, 2))
    torch.testing.assert_close(d, expected, rtol=1e-4, atol=1e-6)
    assert (d > 0).all() and (d <= 4 * len(FEATURE_STAGES)).all()
    torch.testing.assert_close(feature_distance(y, x, untrained), d, rtol=1e-5, atol=1e-7)
    assert float(feature_distance(x[0], x[0], untrained)) == pytest.approx(0.0, abs=1e-7)
    with pytest.raises(ValueError, match="target"):
        feature_distance(x, y[:1], untrained)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_factory_loads_checkpoint_round_trip(tmp_path, dtype):
    g = _gaussians(37)
    g.eps2d = BUNNY_EPS2D  # the card's render setting, which the file does not hold
    state = {n: getattr(g, n).detach().to(dtype) for n in
             ("means", "quats", "log_scales", "opacity_logits", "sh")}  # fmt: skip
    path = tmp_path / "splats.safetensors"
    digest = save_state_dict(state, path)
    model = create_model(MODEL_ID, checkpoint_path=path, sha256=digest)
    assert isinstance(model, SplatScene) and model.num_gaussians == 37
    assert model.eps2d == BUNNY_EPS2D
    for name, t in state.items():
        p = getattr(model, name)
        assert p.dtype == torch.float32 and isinstance(p, torch.nn.Parameter)
        torch.testing.assert_close(p.detach(), t.float(), rtol=0, atol=0)
    cam = orbit_cameras(1, 3.0, width=32, height=32)[0]
    ref = g if dtype == torch.float32 else model
    torch.testing.assert_close(
        rasterize(model, cam.viewmat, cam.K, 32, 32).rgb, rasterize(ref, cam.viewmat, cam.K, 32, 32).rgb
    )
    with pytest.raises(ChecksumError):
        create_model(MODEL_ID, checkpoint_path=path, sha256="0" * 64)


def test_inconsistent_checkpoint_is_refused():
    model = gs_small_bunny_rgb()
    assert model.num_gaussians == 0 and model.sh_degree == 0
    state = {n: getattr(_gaussians(5), n).detach() for n in
             ("means", "quats", "log_scales", "opacity_logits", "sh")}  # fmt: skip
    state["means"] = torch.zeros(6, 3)
    with pytest.raises(RuntimeError, match="Gaussian count"):
        model.load_state_dict(state)
    assert BUNNY_SCENE["width"] == BUNNY_SCENE["height"] == 128


def test_recipe_trains_with_the_filter_the_card_renders_with():
    from subspace_3dgs.recipes import bunny_rgb

    assert bunny_rgb.recipe_config().eps2d == bunny_rgb.recipe_config(quick=True).eps2d
    assert bunny_rgb.recipe_config().eps2d == gs_small_bunny_rgb().eps2d == BUNNY_EPS2D
    assert create_model(MODEL_ID, pretrained=True).eps2d == BUNNY_EPS2D
