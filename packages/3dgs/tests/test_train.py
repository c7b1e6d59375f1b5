import math

import pytest
import torch

from subspace_3dgs import train as train_module
from subspace_3dgs.densify import DensifyConfig
from subspace_3dgs.gaussians import Gaussians
from subspace_3dgs.rasterize import rasterize
from subspace_3dgs.scenes import View, make_scene
from subspace_3dgs.train import (
    CHECKPOINT_NAME,
    TrainConfig,
    _coarse_view,
    evaluate,
    initial_points,
    load_checkpoint,
    scene_extent,
    train_gaussians,
)


@pytest.fixture(scope="module")
def scene():
    return make_scene("icosphere", 4, 32, 32, seed=0)


def _config(steps: int, **kw) -> TrainConfig:
    sched = DensifyConfig(densify_from=10, densify_until=35, densify_every=10, reset_every=20)
    return TrainConfig(steps=steps, num_init_points=150, densify=sched, **kw)


def test_depth_init_lies_on_the_mesh(scene):
    xyz, rgb = initial_points(scene, "depth", 200, torch.Generator().manual_seed(0))
    assert xyz.shape == (200, 3) and rgb.shape == (200, 3)
    # make_scene normalises the mesh to the unit sphere; an icosphere's surface is at radius ~1
    r = xyz.norm(dim=-1)
    assert (r > 0.9).all() and (r < 1.02).all()
    assert scene_extent([v.camera for v in scene.views]) > 0


def test_short_training_improves_train_psnr(scene):
    # the cheap default-CI version of the slow test below (no opacity reset in 30 steps)
    sched = DensifyConfig(densify_from=10, densify_until=25, densify_every=10, reset_every=1000)
    cfg = TrainConfig(steps=30, sh_degree=0, densify=sched)
    xyz, rgb = initial_points(scene, "depth", 150, torch.Generator().manual_seed(0))
    init = Gaussians.from_points(xyz, rgb, sh_degree=0)
    before = evaluate(init, scene.train_views, background=scene.background)
    g, _ = train_gaussians(scene, cfg, init=init, log_every=10)
    after = evaluate(g, scene.train_views, background=scene.background)
    # 30 steps mostly raise the 0.1 initial opacities: +1.5 dB measured
    assert after["psnr"] > before["psnr"] + 1.0
    assert g.num_gaussians > 150


@pytest.mark.slow
def test_training_improves_train_psnr(scene):
    torch.manual_seed(0)
    cfg = TrainConfig(
        steps=100, num_init_points=300,
        densify=DensifyConfig(densify_from=30, densify_until=90, densify_every=30,
                              reset_every=1000),
    )  # fmt: skip
    xyz, rgb = initial_points(scene, "depth", 300, torch.Generator().manual_seed(0))
    init = Gaussians.from_points(xyz, rgb, sh_degree=1)
    before = evaluate(init, scene.train_views, background=scene.background)
    g, history = train_gaussians(scene, cfg, init=init, log_every=25)
    after = evaluate(g, scene.train_views, background=scene.background)
    assert after["psnr"] > before["psnr"] + 4.0
    assert after["ssim"] > before["ssim"]
    assert history[-1]["psnr"] > history[0]["psnr"] + 2.0
    assert g.num_gaussians > 300  # densification added Gaussians
    assert init.num_gaussians == 300  # the init passed in is not modified


def test_resume_equals_uninterrupted(scene, tmp_path):
    cfg = _config(40, checkpoint_every=20)
    full, hist_full = train_gaussians(scene, cfg, init="random", log_every=10)
    _, hist_a = train_gaussians(
        scene, cfg, init="random", log_every=10, checkpoint_dir=tmp_path, stop_at=20
    )
    assert load_checkpoint(tmp_path / CHECKPOINT_NAME)["step"] == 20
    resumed, hist_b = train_gaussians(scene, cfg, init="random", log_every=10,
                                      checkpoint_dir=tmp_path)  # fmt: skip
    assert [h["step"] for h in hist_b] == [10, 20, 30, 40]
    assert hist_a[-1]["num_gaussians"] != hist_b[-1]["num_gaussians"]  # densified after 20
    for a, b in zip(hist_full, hist_b, strict=True):
        assert (a["loss"], a["num_gaussians"]) == (b["loss"], b["num_gaussians"])
    for name, p in full.named_parameters():
        assert torch.equal(p, getattr(resumed, name)), name
    state = load_checkpoint(tmp_path / CHECKPOINT_NAME)
    assert state["step"] == 40
    assert set(state["adam"]) == {"means", "quats", "log_scales", "opacity_logits", "sh"}
    assert state["adam"]["means"]["exp_avg"].shape == resumed.means.shape
    assert not list(tmp_path.glob("*.part"))


def test_bad_config_is_named():
    with pytest.raises(ValueError, match="init"):
        TrainConfig(init="sfm")
    with pytest.raises(ValueError, match="steps"):
        TrainConfig(steps=0)


def test_coarse_view_is_aligned_with_the_full_view(scene):
    # a smooth render at 1/2 size with halved intrinsics ~ the 2x2 box average of the full one
    g = Gaussians.from_points(*initial_points(scene, "depth", 200, torch.Generator().manual_seed(0)),
                              sh_degree=0)  # fmt: skip
    with torch.no_grad():
        g.log_scales += math.log(2.0)  # wide splats: a smooth image that box-averages well
    view = scene.train_views[0]
    cam = view.camera
    with torch.no_grad():
        full = rasterize(g, cam.viewmat, cam.K, cam.width, cam.height, background=torch.ones(3)).rgb
        k, w, h, target = _coarse_view(View(cam, full, None, None), 2)
        small = rasterize(g, cam.viewmat, k, w, h, background=torch.ones(3)).rgb
    assert (w, h) == (cam.width // 2, cam.height // 2) and target.shape == (h, w, 3)
    torch.testing.assert_close(target[3, 5], full[6:8, 10:12].mean((0, 1)))
    err = (small - target).abs().mean()
    # the usual bug (cx / f without the pixel-centre care) is off by 1/4 coarse pixel
    for dx, dy in ((0.25, 0.0), (0.0, 0.25), (-0.25, -0.25)):
        shift = torch.tensor([[0, 0, dx], [0, 0, dy], [0, 0, 0]])
        shifted = rasterize(g, cam.viewmat, k + shift, w, h, background=torch.ones(3)).rgb
        assert err < (shifted.detach() - target).abs().mean()
    with pytest.raises(ValueError, match="coarse_factor"):
        _coarse_view(view, 3)


def test_coarse_to_fine_renders_small_then_full(scene, monkeypatch):
    sizes = []

    def spy(*args, **kwargs):
        sizes.append((args[3], args[4]))
        return rasterize(*args, **kwargs)

    monkeypatch.setattr(train_module, "rasterize", spy)
    cfg = _config(6, coarse_until=4, coarse_factor=2)
    train_gaussians(scene, cfg, init="random", log_every=3)
    assert sizes == [(16, 16)] * 4 + [(32, 32)] * 2
    with pytest.raises(ValueError, match="coarse_until"):
        TrainConfig(coarse_until=-1)
    with pytest.raises(ValueError, match="coarse_factor"):
        TrainConfig(coarse_factor=0)


def test_trained_gaussians_carry_the_training_filter(scene, tmp_path):
    cfg = _config(20, eps2d=0.1, checkpoint_every=10)
    g, _ = train_gaussians(scene, cfg, init="random", log_every=10, checkpoint_dir=tmp_path,
                           stop_at=10)  # fmt: skip
    assert g.eps2d == 0.1
    assert load_checkpoint(tmp_path / CHECKPOINT_NAME)["gaussians"].eps2d == 0.1
    resumed, _ = train_gaussians(scene, cfg, init="random", log_every=10, checkpoint_dir=tmp_path)
    assert resumed.eps2d == 0.1
    # a module passed as init trains (and is returned) with the config's filter, not its own
    started, _ = train_gaussians(scene, _config(2), init=resumed, log_every=1)
    assert started.eps2d == 0.3 and resumed.eps2d == 0.1
    with pytest.raises(ValueError, match="eps2d"):
        TrainConfig(eps2d=-1.0)


def test_training_renders_with_the_config_filter(scene, monkeypatch):
    seen = []

    def spy(*args, **kwargs):
        seen.append(args[0].eps2d if kwargs.get("eps2d") is None else kwargs["eps2d"])
        return rasterize(*args, **kwargs)

    monkeypatch.setattr(train_module, "rasterize", spy)
    train_gaussians(scene, _config(3, eps2d=0.07), init="random", log_every=1)
    assert seen == [0.07, 0.07, 0.07]
