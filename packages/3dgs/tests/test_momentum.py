"""Momentum-GS on plain 3DGS: EMA teacher, consistency loss, block weights, a tiny run."""

import math

import pytest
import torch

from subspace_3dgs.blocks import block_index, partition_points
from subspace_3dgs.densify import DensifyConfig, DensityController
from subspace_3dgs.gaussians import Gaussians
from subspace_3dgs.momentum import (
    MomentumConfig,
    align_teacher,
    block_weights,
    consistency_loss,
    ema_update,
    make_teacher,
    merge_blocks,
    train_momentum_gs,
)
from subspace_3dgs.rasterize import rasterize
from subspace_3dgs.train import TrainConfig


def _gaussians(n=20, seed=0):
    g = torch.Generator().manual_seed(seed)
    xyz = torch.randn(n, 3, generator=g)
    return Gaussians.from_points(xyz, torch.rand(n, 3, generator=g), sh_degree=1)


def test_ema_update_is_the_formula_and_teacher_has_no_gradient():
    student, teacher = _gaussians(seed=0), make_teacher(_gaussians(seed=1))
    before = {n: getattr(teacher, n).clone() for n in ("means", "sh", "opacity_logits")}
    ema_update(teacher, student, 0.9)
    for name, old in before.items():
        want = 0.9 * old + 0.1 * getattr(student, name).detach()
        torch.testing.assert_close(getattr(teacher, name), want)
    assert not any(p.requires_grad for p in teacher.parameters())
    # a loss on a render of student + teacher sends gradient only to the student
    view = torch.eye(4)
    view[2, 3] = 6.0
    K = torch.tensor([[20.0, 0, 8], [0, 20.0, 8], [0, 0, 1]])
    loss = (
        rasterize(student, view, K, 16, 16).rgb.sum()
        + rasterize(teacher, view, K, 16, 16).rgb.sum()
    )
    loss.backward()
    assert student.means.grad is not None and student.means.grad.abs().sum() > 0
    assert all(p.grad is None for p in teacher.parameters())


def test_ema_with_momentum_zero_copies_and_one_keeps():
    student, teacher = _gaussians(seed=0), make_teacher(_gaussians(seed=1))
    kept = teacher.means.clone()
    ema_update(teacher, student, 1.0)
    torch.testing.assert_close(teacher.means, kept)
    ema_update(teacher, student, 0.0)
    torch.testing.assert_close(teacher.means, student.means.detach())
    with pytest.raises(ValueError, match=r"teacher\.means"):
        ema_update(make_teacher(_gaussians(5)), student, 0.5)


def test_consistency_loss_is_zero_for_equal_renders_and_mse_otherwise():
    a = torch.rand(8, 8, 3, requires_grad=True)
    assert consistency_loss(a, a.detach().clone()).item() == 0.0
    b = torch.rand(8, 8, 3, requires_grad=True)
    loss = consistency_loss(a, b)
    torch.testing.assert_close(loss, ((a - b) ** 2).mean())
    loss.backward()
    assert b.grad is None  # the teacher's render is a fixed target
    with pytest.raises(ValueError, match="teacher_rgb"):
        consistency_loss(a, torch.rand(8, 7, 3))


def test_block_weights_follow_the_momentum_gs_rule():
    psnr = torch.tensor([30.0, 25.0, 28.0])
    ssim = torch.tensor([0.95, 0.90, 0.80])
    w = block_weights(psnr, ssim, sigma=10.0)
    for b in range(3):
        gap = (30.0 - psnr[b].item()) ** 2 + (10 * (0.95 - ssim[b].item())) ** 2
        assert w[b].item() == pytest.approx(2.0 - math.exp(-gap / 200.0))
    assert w[0].item() == pytest.approx(1.0)  # the best block
    assert (w >= 1.0).all() and (w < 2.0).all()
    # worse reconstruction, more weight
    assert (
        block_weights(torch.tensor([30.0, 20.0]), torch.tensor([0.9, 0.9]))[1]
        > block_weights(torch.tensor([30.0, 25.0]), torch.tensor([0.9, 0.9]))[1]
    )
    with pytest.raises(ValueError, match="psnrs, ssims"):
        block_weights(torch.ones(3), torch.ones(2))


def test_align_teacher_follows_densification():
    student = _gaussians(40)
    teacher = make_teacher(student)
    with torch.no_grad():
        teacher.sh.add_(1.0)  # the teacher lags: different values, same rows
    old_means = student.means.detach().clone()
    old_teacher_sh = teacher.sh.clone()
    with torch.no_grad():
        student.log_scales.fill_(math.log(5.0))  # big: high-gradient Gaussians are split
    ctrl = DensityController(DensifyConfig(densify_from=0, grad_threshold=0.0), 1.0)
    ctrl.grad_accum, ctrl.count = torch.ones(40), torch.ones(40)
    with torch.no_grad():
        student.opacity_logits[:5] = -20.0  # pruned
    done = ctrl.densify_and_prune(student, None, 1)
    assert done["split"] > 0 and done["pruned"] > 0
    align_teacher(teacher, old_means, student)
    assert teacher.num_gaussians == student.num_gaussians
    assert not any(p.requires_grad for p in teacher.parameters())
    d = torch.cdist(student.means.detach(), old_means)
    dist, src = d.min(1)
    kept = dist == 0
    torch.testing.assert_close(teacher.sh[kept], old_teacher_sh[src[kept]])
    torch.testing.assert_close(teacher.sh[~kept], student.sh.detach()[~kept])


def test_merge_keeps_each_block_owned_gaussians_once():
    g = _gaussians(60)
    part = partition_points(g.means.detach(), (2, 1, 1), overlap=0.5)
    merged = merge_blocks([g, g], part)  # both blocks hold everything (full overlap)
    assert merged.num_gaussians == 60
    owner = block_index(part, merged.means)
    assert owner[: int((owner == 0).sum())].eq(0).all()
    sharp = _gaussians(60)
    sharp.eps2d = 0.1
    assert merge_blocks([sharp, sharp], part).eps2d == 0.1
    with pytest.raises(ValueError, match="eps2d"):
        merge_blocks([g, sharp], part)


def _tiny_scene():
    from subspace_3dgs.momentum_bench import make_row_scene

    return make_row_scene(("icosphere", "icosphere"), views_per_object=5, size=16, spacing=2.2)


def test_tiny_run_improves_the_fit_and_covers_the_blocks():
    from subspace_3dgs.train import evaluate

    scene = _tiny_scene()
    densify = DensifyConfig(densify_from=10, densify_until=25, densify_every=10, reset_every=10**6)

    def run(steps):
        train = TrainConfig(steps=steps, sh_degree=0, num_init_points=300, densify=densify)
        cfg = MomentumConfig(train=train, dims=(2, 1, 1), split="uniform", block_interval=5,
                             weight_warmup=10, eval_views=1)  # fmt: skip
        return train_momentum_gs(scene, cfg, log_every=10)

    start, _, _ = run(2)
    gaussians, history, info = run(60)
    before = evaluate(start, scene.train_views, background=scene.background)["psnr"]
    after = evaluate(gaussians, scene.train_views, background=scene.background)["psnr"]
    assert after > before + 0.3
    assert sum(info["block_steps"]) == 60
    assert all(s > 0 for s in info["block_steps"])
    assert sum(info["block_views"]) >= len(scene.train_views)
    assert history[-1]["consistency"] > 0.0  # the teacher lags, so the loss is active
    assert len(info["weights"]) == 2 and min(info["weights"]) == pytest.approx(1.0)


def test_independent_baseline_has_no_teacher_terms():
    cfg = MomentumConfig().independent()
    assert cfg.consistency_weight == 0.0 and not cfg.context and not cfg.weighting


def test_config_validation():
    with pytest.raises(ValueError, match="momentum"):
        MomentumConfig(momentum=1.0)
    with pytest.raises(ValueError, match="block_interval"):
        MomentumConfig(block_interval=0)
    with pytest.raises(TypeError, match="train"):
        MomentumConfig(train={"steps": 3})
