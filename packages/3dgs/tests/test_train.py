import pytest
import torch

from subspace_3dgs.densify import DensifyConfig
from subspace_3dgs.gaussians import Gaussians
from subspace_3dgs.scenes import make_scene
from subspace_3dgs.train import (
    CHECKPOINT_NAME,
    TrainConfig,
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
