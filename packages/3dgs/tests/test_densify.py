import math

import pytest
import torch

from subspace_3dgs.densify import (
    DensifyConfig,
    DensityController,
    append_rows,
    reset_opacity,
    select_rows,
    within_budget,
)
from subspace_3dgs.gaussians import Gaussians
from subspace_3dgs.rasterize import RenderOutput

EXTENT = 2.0  # small threshold: 0.01 * 2 = 0.02; prune-big threshold 0.1 * 2 = 0.2
NAMES = ("means", "quats", "log_scales", "opacity_logits", "sh")


def _gaussians() -> Gaussians:
    """Rows: 0, 1 small + high grad (clone); 2, 3 large + high grad (split);
    4 low grad; 5 transparent (pruned); 6 huge (pruned only after the first reset)."""
    g = torch.Generator().manual_seed(0)
    n = 7
    scales = torch.tensor([0.01, 0.015, 0.05, 0.08, 0.01, 0.01, 0.5])
    log_scales = scales.log()[:, None].repeat(1, 3)
    log_scales[3, 1] = math.log(0.03)  # anisotropic: the largest axis decides
    opacity = torch.tensor([0.5, 0.5, 0.5, 0.5, 0.5, 0.001, 0.5])
    quats = torch.randn(n, 4, generator=g)
    return Gaussians(
        means=torch.randn(n, 3, generator=g),
        quats=quats / quats.norm(dim=-1, keepdim=True),
        log_scales=log_scales,
        opacity_logits=torch.logit(opacity),
        sh=torch.randn(n, 4, 3, generator=g),
    )


def _optimizer(gs: Gaussians) -> torch.optim.Adam:
    opt = torch.optim.Adam([{"params": [getattr(gs, n)], "name": n} for n in NAMES], lr=1e-3)
    # two steps of a loss touching every parameter: non-zero, row-distinct moments
    for k in range(2):
        loss = sum(((k + 1) * torch.arange(gs.num_gaussians)[:, None] * getattr(gs, n)
                    .reshape(gs.num_gaussians, -1)).sin().sum() for n in NAMES)  # fmt: skip
        opt.zero_grad()
        loss.backward()
        opt.step()
    return opt


def _state(opt, gs, name):
    return opt.state[getattr(gs, name)]


def _controller(cfg: DensifyConfig, n: int) -> DensityController:
    ctl = DensityController(cfg, EXTENT)
    ctl.reset_stats(n)
    ctl.grad_accum[:] = torch.tensor([3e-4, 5e-4, 4e-4, 9e-4, 1e-4, 1e-4, 1e-4]) * 2
    ctl.count[:] = 2
    return ctl


def test_clone_split_prune_counts_and_optimizer_alignment():
    gs = _gaussians()
    opt = _optimizer(gs)
    old = {n: getattr(gs, n).detach().clone() for n in NAMES}
    old_state = {n: {k: v.clone() for k, v in _state(opt, gs, n).items()} for n in NAMES}
    ctl = _controller(DensifyConfig(reset_every=1000), gs.num_gaussians)

    counts = ctl.densify_and_prune(gs, opt, step=500, generator=torch.Generator().manual_seed(1))

    assert counts == {"cloned": 2, "split": 2, "pruned": 1}
    # 7 + 2 clones + 2 * 2 samples - 2 split originals - 1 transparent
    assert gs.num_gaussians == 10
    survivors = torch.tensor([0, 1, 4, 6])  # in their original order, then the new rows
    clones = torch.tensor([0, 1])
    split_src = torch.tensor([2, 3, 2, 3])
    for n in NAMES:
        p = getattr(gs, n)
        assert any(p is q for grp in opt.param_groups for q in grp["params"])
        st = opt.state[p]
        assert int(st["step"]) == int(old_state[n]["step"]) == 2
        for key in ("exp_avg", "exp_avg_sq"):
            assert st[key].shape == p.shape
            torch.testing.assert_close(st[key][:4], old_state[n][key][survivors], rtol=0, atol=0)
            assert torch.count_nonzero(st[key][4:]) == 0
        torch.testing.assert_close(p[:4].detach(), old[n][survivors], rtol=0, atol=0)
        torch.testing.assert_close(p[4:6].detach(), old[n][clones], rtol=0, atol=0)
        if n not in ("means", "log_scales"):
            torch.testing.assert_close(p[6:].detach(), old[n][split_src], rtol=0, atol=0)
    torch.testing.assert_close(
        gs.log_scales[6:].detach(), old["log_scales"][split_src] - math.log(1.6)
    )
    # samples are drawn from the parent: within 5 sigma along its largest axis, not at its centre
    offset = (gs.means[6:].detach() - old["means"][split_src]).norm(dim=-1)
    parent_max = old["log_scales"][split_src].exp().max(-1).values
    assert (offset < 5 * parent_max).all() and (offset > 0).all()
    assert ctl.grad_accum.shape == (10,) and ctl.grad_accum.sum() == 0
    # the optimizer still works on the resized tensors
    sum(getattr(gs, n).sum() for n in NAMES).backward()
    opt.step()


def test_large_gaussians_pruned_only_after_first_reset():
    for step, expected in ((900, 7 + 2 + 2 - 1), (1100, 7 + 2 + 2 - 2)):
        gs = _gaussians()
        opt = _optimizer(gs)
        ctl = _controller(DensifyConfig(reset_every=1000), gs.num_gaussians)
        ctl.densify_and_prune(gs, opt, step=step)
        assert gs.num_gaussians == expected
        assert (gs.scales().max(-1).values > 0.2).any() == (step < 1000)


def test_schedule_and_opacity_reset():
    cfg = DensifyConfig(densify_from=10, densify_until=40, densify_every=10, reset_every=20)
    gs = _gaussians()
    opt = _optimizer(gs)
    ctl = _controller(cfg, gs.num_gaussians)
    assert ctl.step(5, gs, opt) == {"cloned": 0, "split": 0, "pruned": 0, "reset": 0}
    assert gs.num_gaussians == 7
    out = ctl.step(20, gs, opt)
    assert out["cloned"] == 2 and out["reset"] == 1
    assert (gs.opacities() <= 0.01 + 1e-6).all()
    st = opt.state[gs.opacity_logits]
    assert torch.count_nonzero(st["exp_avg"]) == 0 and torch.count_nonzero(st["exp_avg_sq"]) == 0
    ctl.grad_accum[:] = 1.0
    ctl.count[:] = 1
    assert ctl.step(40, gs, opt)["cloned"] == 0  # past densify_until


def test_accumulate_scales_pixel_gradient_to_ndc():
    ctl = DensityController(DensifyConfig(), 1.0)
    means2d = torch.zeros(3, 2, requires_grad=True)
    (means2d * torch.tensor([[1.0, 0.0], [3.0, 4.0], [1.0, 1.0]])).sum().backward()
    render = RenderOutput(
        rgb=torch.zeros(1), alpha=torch.zeros(1), depth=torch.zeros(1), features=None,
        radii=torch.tensor([2, 3, 0]), means2d=means2d, depths=torch.ones(3),
        visible=torch.tensor([True, True, False]),
    )  # fmt: skip
    ctl.accumulate(render, width=40, height=20)
    ctl.accumulate(render, width=40, height=20)
    # d/dx_ndc = W/2 d/dx_pix, d/dy_ndc = H/2 d/dy_pix
    torch.testing.assert_close(ctl.grad_accum, torch.tensor([2 * 20.0, 2 * math.hypot(60, 40), 0]))
    torch.testing.assert_close(ctl.count, torch.tensor([2.0, 2.0, 0.0]))
    with pytest.raises(ValueError, match="retain_grad"):
        ctl.accumulate(RenderOutput(**{**render.__dict__, "means2d": torch.zeros(3, 2)}), 40, 20)


def test_select_and_append_rows_validate():
    gs = _gaussians()
    opt = _optimizer(gs)
    with pytest.raises(ValueError, match="rows"):
        select_rows(gs, opt, torch.ones(3, dtype=torch.bool))
    with pytest.raises(ValueError, match="new"):
        append_rows(gs, opt, {"means": torch.zeros(1, 3)})
    with pytest.raises(ValueError, match="max_opacity"):
        reset_opacity(gs, opt, 1.0)
    with pytest.raises(ValueError, match="num_split"):
        DensifyConfig(num_split=1)


def test_within_budget_takes_highest_priority_that_fits():
    cand = torch.tensor([True, True, False, True, True, True])
    prio = torch.tensor([5.0, 9.0, 100.0, 7.0, 7.0, 1.0])
    growth = torch.tensor([1, 1, 1, 1, 1, 1])
    # order by priority: 1 (9), 3 and 4 (7, tie: lower index first), 0 (5), 5 (1); 2 not a candidate
    assert within_budget(cand, prio, growth, 2).tolist() == [False, True, False, True, False, False]
    assert within_budget(cand, prio, growth, 3).nonzero().flatten().tolist() == [1, 3, 4]
    assert within_budget(cand, prio, growth, 10).tolist() == cand.tolist()
    assert not within_budget(cand, prio, growth, 0).any()
    # a split adds num_split - 1 Gaussians: with room 2 a growth-2 leader leaves no room after it
    growth2 = torch.tensor([1, 2, 1, 1, 1, 1])
    assert within_budget(cand, prio, growth2, 2).nonzero().flatten().tolist() == [1]


def test_max_gaussians_caps_growth_by_gradient_rank():
    # uncapped: 7 + 2 clones + 2 split samples - 1 transparent = 10 (see the test above)
    gs = _gaussians()
    opt = _optimizer(gs)
    ctl = _controller(DensifyConfig(reset_every=1000, max_gaussians=9), gs.num_gaussians)
    counts = ctl.densify_and_prune(gs, opt, step=500, generator=torch.Generator().manual_seed(1))
    # room 2; mean grads: row 3 (9e-4, split, +1) > row 1 (5e-4, clone, +1) > row 2 > row 0
    assert counts == {"cloned": 1, "split": 1, "pruned": 1}
    assert gs.num_gaussians == 9 - 1  # the cap binds before pruning
    ctl = _controller(DensifyConfig(reset_every=1000, max_gaussians=7), 7)
    gs = _gaussians()
    assert ctl.densify_and_prune(gs, _optimizer(gs), step=500)["cloned"] == 0


def test_reference_size_scales_gradients_with_resolution():
    means2d = torch.zeros(1, 2, requires_grad=True)
    (means2d * torch.tensor([[3.0, 4.0]])).sum().backward()
    render = RenderOutput(
        rgb=torch.zeros(1), alpha=torch.zeros(1), depth=torch.zeros(1), features=None,
        radii=torch.tensor([2]), means2d=means2d, depths=torch.ones(1),
        visible=torch.tensor([True]),
    )  # fmt: skip
    plain = DensityController(DensifyConfig(), 1.0)
    plain.accumulate(render, 64, 64)
    scaled = DensityController(DensifyConfig(reference_size=256), 1.0)
    scaled.accumulate(render, 64, 64)
    # NDC norm 32 * 5 = 160; at 64 px of a 256 px reference the threshold is 4x as hard
    torch.testing.assert_close(plain.grad_accum, torch.tensor([160.0]))
    torch.testing.assert_close(scaled.grad_accum, torch.tensor([40.0]))
    with pytest.raises(ValueError, match="max_gaussians"):
        DensifyConfig(max_gaussians=0)
    with pytest.raises(ValueError, match="reference_size"):
        DensifyConfig(reference_size=-1)
