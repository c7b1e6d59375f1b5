import importlib
import math

import pytest
import torch

from subspace_3dgs.gaussians import Gaussians
from subspace_3dgs.rasterize import T_THRESHOLD, rasterize, rasterize_dense, rasterize_gaussians
from subspace_3dgs.sh import SH_C0, rgb_to_sh

# the module, not the function the package exports under the same name
rasterize_module = importlib.import_module("subspace_3dgs.rasterize")

F64 = torch.float64
EYE4 = torch.eye(4, dtype=F64)


def _K(f: float, w: int, h: int, shift: float = 0.0) -> torch.Tensor:
    """Pinhole intrinsics; ``shift=0.5`` puts the principal point on a pixel centre."""
    cx, cy = w / 2 + shift, h / 2 + shift
    return torch.tensor([[f, 0.0, cx], [0.0, f, cy], [0.0, 0.0, 1.0]], dtype=F64)


def _scene(n: int, seed: int, feature_dim: int = 0, sh_k: int = 16) -> dict:
    g = torch.Generator().manual_seed(seed)
    xy = torch.rand(n, 2, generator=g, dtype=F64) * 2 - 1
    z = torch.rand(n, 1, generator=g, dtype=F64) * 3 + 3
    return dict(
        means=torch.cat([xy, z], 1),
        quats=torch.randn(n, 4, generator=g, dtype=F64),
        log_scales=torch.randn(n, 3, generator=g, dtype=F64) * 0.3 - 2.3,
        opacity_logits=torch.randn(n, generator=g, dtype=F64),
        sh=torch.randn(n, sh_k, 3, generator=g, dtype=F64) * 0.3,
        features=torch.randn(n, feature_dim, generator=g, dtype=F64) if feature_dim else None,
    )


def _isotropic(means, sigmas, opacities, rgb, features=None) -> dict:
    n = len(means)
    means = torch.as_tensor(means, dtype=F64)
    return dict(
        means=means,
        quats=torch.tensor([[1.0, 0.0, 0.0, 0.0]] * n, dtype=F64),
        log_scales=torch.log(torch.as_tensor(sigmas, dtype=F64))[:, None].expand(n, 3),
        opacity_logits=torch.logit(torch.as_tensor(opacities, dtype=F64)),
        sh=rgb_to_sh(torch.as_tensor(rgb, dtype=F64))[:, None, :],
        features=features,
    )


def _render(scene, width, height, K, view=EYE4, dense=False, **kw):
    args = [scene[k] for k in ("means", "quats", "log_scales", "opacity_logits", "sh")]
    fn = rasterize_dense if dense else rasterize_gaussians
    return fn(*args, view, K, width, height, features=scene["features"], **kw)


def test_single_isotropic_gaussian_closed_form():
    w, h, f, z, sigma, op = 24, 20, 30.0, 4.0, 0.3, 0.8
    colour, bg = torch.tensor([0.9, 0.4, 0.1], dtype=F64), torch.tensor([0.1, 0.2, 0.7], dtype=F64)
    scene = _isotropic([[0.0, 0.0, z]], [sigma], [op], colour[None])
    out = _render(scene, w, h, _K(f, w, h), background=bg, tile_size=8)
    var = (f * sigma / z) ** 2 + 0.3  # projected variance plus the low-pass dilation
    ys, xs = torch.meshgrid(
        torch.arange(h, dtype=F64) + 0.5, torch.arange(w, dtype=F64) + 0.5, indexing="ij"
    )
    maha = ((xs - w / 2) ** 2 + (ys - h / 2) ** 2) / var
    alpha = op * torch.exp(-0.5 * maha)
    alpha = torch.where((alpha >= 1 / 255) & (maha <= 9), alpha, 0.0)
    torch.testing.assert_close(out.alpha, alpha)
    torch.testing.assert_close(out.rgb, alpha[..., None] * colour + (1 - alpha[..., None]) * bg)
    torch.testing.assert_close(out.depth, torch.where(alpha > 0, z, 0.0).to(F64))
    assert out.features is None and (alpha > 0).sum() > 50  # the splat covers many pixels


@pytest.mark.parametrize("tile_size", [4, 16])
def test_tile_path_equals_dense_reference(tile_size, monkeypatch):
    # short depth segments make the transmittance carry between segments matter
    monkeypatch.setattr(rasterize_module, "DEPTH_SEGMENT", 3)
    scene = _scene(25, seed=3, feature_dim=5)
    w, h = 37, 29  # not multiples of the tile size
    K, bg = _K(35.0, w, h), torch.tensor([0.3, 0.1, 0.6], dtype=F64)
    ref = _render(scene, w, h, K, dense=True, background=bg, sh_degree=2)
    # a tiny chunk budget forces many chunks, exercising the padding/merging
    out = _render(scene, w, h, K, background=bg, sh_degree=2, tile_size=tile_size,
                  max_chunk_elements=500)  # fmt: skip
    for name in ("rgb", "alpha", "depth", "features"):
        torch.testing.assert_close(getattr(out, name), getattr(ref, name), msg=name)
    assert (ref.alpha > 0.5).any() and out.visible.sum() > 10


def test_gradients_match_finite_differences():
    scene = _isotropic([[0.1, -0.1, 3.0], [-0.2, 0.15, 3.5], [0.05, 0.1, 4.2]],
                       [0.25, 0.3, 0.35], [0.6, 0.7, 0.5],
                       [[0.6, 0.5, 0.4], [0.3, 0.7, 0.5], [0.5, 0.4, 0.8]])  # fmt: skip
    g = torch.Generator().manual_seed(0)
    scene["quats"] = scene["quats"] + 0.3 * torch.randn(3, 4, generator=g, dtype=F64)
    scene["log_scales"] = scene["log_scales"] + 0.2 * torch.randn(3, 3, generator=g, dtype=F64)
    sh1 = torch.zeros(3, 4, 3, dtype=F64)
    sh1[:, 0], sh1[:, 1:] = scene["sh"][:, 0], 0.2 * torch.randn(3, 3, 3, generator=g, dtype=F64)
    scene["sh"] = sh1
    scene["features"] = torch.randn(3, 2, generator=g, dtype=F64)
    names = ("means", "quats", "log_scales", "opacity_logits", "sh", "features")
    K, bg = _K(12.0, 8, 8), torch.tensor([0.2, 0.3, 0.1], dtype=F64)

    def render(*params):
        out = _render(dict(zip(names, params, strict=True)), 8, 8, K, background=bg, tile_size=4)
        return out.rgb, out.alpha, out.depth, out.features

    inputs = tuple(scene[n].clone().requires_grad_(True) for n in names)
    assert render(*inputs)[1].min() < 0.05 < render(*inputs)[1].max()  # image is not trivial
    assert torch.autograd.gradcheck(render, inputs, eps=1e-6, atol=1e-6, rtol=1e-4)


def test_near_opaque_gaussian_hides_far_one():
    red, blue = [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]
    w, K = 16, _K(20.0, 16, 16, shift=0.5)
    for order in ([0, 1], [1, 0]):  # input order must not matter, only depth
        means, rgb = [[0.0, 0.0, 2.0], [0.0, 0.0, 5.0]], [red, blue]
        scene = _isotropic(
            [means[i] for i in order], [0.2, 0.6], [0.99, 0.99], [rgb[i] for i in order]
        )
        out = _render(scene, w, w, K)
        centre = out.rgb[8, 8]
        # front alpha 0.99 (capped): 1% of the far blue shows through
        torch.testing.assert_close(
            centre, torch.tensor([0.99, 0.0, 0.0099], dtype=F64), atol=1e-3, rtol=0
        )
        assert out.depth[8, 8] < 2.1


def test_camera_behind_is_culled():
    scene = _isotropic([[0.0, 0.0, 3.0]], [0.3], [0.9], [[0.8, 0.2, 0.2]])
    flip = torch.diag(torch.tensor([1.0, -1.0, -1.0, 1.0], dtype=F64))  # camera turned around
    bg = torch.tensor([0.1, 0.2, 0.3], dtype=F64)
    out = _render(scene, 12, 10, _K(10.0, 12, 10), view=flip, background=bg)
    assert out.radii.tolist() == [0] and not out.visible.any()
    assert (out.alpha == 0).all() and (out.depth == 0).all()
    torch.testing.assert_close(out.rgb, bg.expand(10, 12, 3))


def test_sh_degree_zero_gives_constant_colour():
    scene = _scene(12, seed=5)
    scene["log_scales"] = scene["log_scales"] + 1.0
    w, K = 20, _K(25.0, 20, 20)
    c = torch.tensor([0.4, -0.7, 1.1], dtype=F64)
    scene["sh"][:, 0] = c  # same DC everywhere; higher orders must be ignored at degree 0
    out = _render(scene, w, w, K, sh_degree=0)
    expected = (SH_C0 * c + 0.5).clamp_min(0)
    torch.testing.assert_close(out.rgb, out.alpha[..., None] * expected)
    assert (out.alpha > 0.3).any()
    assert not torch.allclose(_render(scene, w, w, K).rgb, out.rgb)  # degree 3 differs


def test_features_are_alpha_weighted_sums_in_one_pass():
    scene = _scene(15, seed=7)
    scene["log_scales"] = scene["log_scales"] + 0.7
    n, w = 15, 24
    scene["features"] = torch.eye(n, dtype=F64)  # one-hot: renders each Gaussian's weight
    K = _K(25.0, w, w)
    out = _render(scene, w, w, K, sh_degree=1, tile_size=8)
    weights = out.features  # [H, W, N]
    from subspace_3dgs.projection import view_dependent_colors

    colours = view_dependent_colors(scene["sh"], scene["means"], EYE4, 1)
    torch.testing.assert_close(weights.sum(-1), out.alpha)
    torch.testing.assert_close(out.rgb, weights @ colours)
    has = out.alpha > 0
    torch.testing.assert_close(
        out.depth[has], (weights @ scene["means"][:, 2])[has] / out.alpha[has]
    )
    assert (weights > 0).sum(-1).max() >= 3  # several Gaussians overlap somewhere
    const = torch.tensor([2.0, -1.0], dtype=F64)
    scene["features"] = const.expand(n, 2)
    torch.testing.assert_close(_render(scene, w, w, K).features, out.alpha[..., None] * const)


def test_early_termination_drops_gaussians_behind_saturation():
    # opacity 0.95: T = 0.05, 2.5e-3, 1.25e-4, 6.25e-6 < 1e-4 -> the 4th never contributes
    means = [[0.0, 0.0, 2.0 + i] for i in range(5)]
    scene = _isotropic(means, [0.2, 0.4, 0.6, 0.8, 1.0], [0.95] * 5, [[0.5] * 3] * 5,
                       features=torch.eye(5, dtype=F64))  # fmt: skip
    out = _render(scene, 16, 16, _K(20.0, 16, 16, shift=0.5))
    centre = out.features[8, 8]
    expected = torch.tensor([0.95, 0.05 * 0.95, 0.05**2 * 0.95, 0.0, 0.0], dtype=F64)
    torch.testing.assert_close(centre, expected, atol=2e-3, rtol=0)
    assert 1 - out.alpha[8, 8] >= T_THRESHOLD


def test_module_entry_point_and_gradients_reach_parameters():
    s = _scene(10, seed=11, feature_dim=3)
    gs = Gaussians(**{k: v.float() for k, v in s.items()})
    out = rasterize(gs, EYE4.float(), _K(30.0, 20, 16).float(), 20, 16)
    assert out.rgb.shape == (16, 20, 3) and out.features.shape == (16, 20, 3)
    (out.rgb.sum() + out.features.square().sum() + out.depth.sum()).backward()
    grads = {name: p.grad.clone() for name, p in gs.named_parameters()}
    for name, g in grads.items():
        assert g.abs().sum() > 0, name
    # without gradient checkpointing the same gradients come out
    gs.zero_grad()
    out = rasterize(gs, EYE4.float(), _K(30.0, 20, 16).float(), 20, 16, checkpoint=False)
    (out.rgb.sum() + out.features.square().sum() + out.depth.sum()).backward()
    for name, p in gs.named_parameters():
        torch.testing.assert_close(p.grad, grads[name], msg=name)
    assert rasterize(gs, EYE4.float(), _K(30.0, 20, 16).float(), 20, 16,
                     render_features=False).features is None  # fmt: skip


def test_bad_inputs_raise_clear_errors():
    s = _scene(4, seed=0)
    K = _K(10.0, 8, 8)
    base = [s[k] for k in ("means", "quats", "log_scales", "opacity_logits", "sh")]
    cases = {
        "means": (0, torch.zeros(4, 2, dtype=F64)),
        "quats": (1, torch.zeros(3, 4, dtype=F64)),
        "log_scales": (2, torch.zeros(4, 3, 1, dtype=F64)),
        "opacity_logits": (3, torch.zeros(4, 1, dtype=F64)),
        "num_bases": (4, torch.zeros(4, 5, 3, dtype=F64)),
    }
    for match, (i, bad) in cases.items():
        args = list(base)
        args[i] = bad
        with pytest.raises(ValueError, match=match):
            rasterize_gaussians(*args, EYE4, K, 8, 8)
    with pytest.raises(ValueError, match="viewmat"):
        rasterize_gaussians(*base, EYE4[:3], K, 8, 8)
    with pytest.raises(ValueError, match="K"):
        rasterize_gaussians(*base, EYE4, K[:2], 8, 8)
    with pytest.raises(ValueError, match="width"):
        rasterize_gaussians(*base, EYE4, K, 0, 8)
    with pytest.raises(ValueError, match="features"):
        rasterize_gaussians(*base, EYE4, K, 8, 8, features=torch.zeros(3, 2, dtype=F64))
    with pytest.raises(ValueError, match="background"):
        rasterize_gaussians(*base, EYE4, K, 8, 8, background=torch.zeros(4, dtype=F64))
    with pytest.raises(ValueError, match="sh_degree"):
        rasterize_gaussians(*base[:4], base[4][:, :4], EYE4, K, 8, 8, sh_degree=2)
    with pytest.raises(ValueError, match="tile_size"):
        rasterize_gaussians(*base, EYE4, K, 8, 8, tile_size=0)
    with pytest.raises(TypeError, match="gaussians"):
        rasterize(base, EYE4, K, 8, 8)
    assert math.isfinite(float(rasterize_gaussians(*base, EYE4, K, 8, 8).rgb.sum()))


def test_splat_extents_are_the_exact_box_of_the_drawn_ellipse():
    g = torch.Generator().manual_seed(0)
    n = 40
    root = torch.randn(n, 2, 2, generator=g, dtype=F64)
    cov = root @ root.mT + 0.1 * torch.eye(2, dtype=F64)
    inv = torch.linalg.inv(cov)
    conics = torch.stack([inv[:, 0, 0], inv[:, 0, 1], inv[:, 1, 1]], -1)
    opacity = torch.rand(n, generator=g, dtype=F64) * 0.2 + 1e-3  # faint: many clip below 3σ
    ex, ey = rasterize_module._splat_extents(conics, opacity.log(), 3.0)
    t = torch.clamp(2 * torch.log(opacity * 255), 0, 9)
    theta = torch.linspace(0, 2 * math.pi, 20001, dtype=F64)
    circle = torch.stack([theta.cos(), theta.sin()], 0)  # [2, M]
    edge = torch.linalg.cholesky(cov) @ circle * t.sqrt()[:, None, None]  # d^T Σ^-1 d = t
    torch.testing.assert_close(ex, edge[:, 0].abs().amax(1), rtol=1e-6, atol=1e-9)
    torch.testing.assert_close(ey, edge[:, 1].abs().amax(1), rtol=1e-6, atol=1e-9)
    # never wider than the 3-sigma circle of the largest axis, and zero for invisible splats
    assert (ex <= 3 * torch.linalg.eigvalsh(cov)[:, -1].sqrt() + 1e-12).all()
    assert (t[opacity < 1 / 255] == 0).all() and (ex[opacity < 1 / 255] == 0).all()


def test_faint_elongated_splats_on_small_tiles_equal_the_dense_reference():
    scene = _scene(30, seed=5, feature_dim=2)
    scene["opacity_logits"] = scene["opacity_logits"] - 3.0  # opacities ~0.01-0.2
    scene["log_scales"] = scene["log_scales"] + torch.tensor([0.8, -0.6, 0.0], dtype=F64)
    w, h = 33, 27
    K = _K(35.0, w, h)
    ref = _render(scene, w, h, K, dense=True)
    out = _render(scene, w, h, K, tile_size=2)
    for name in ("rgb", "alpha", "features"):
        torch.testing.assert_close(getattr(out, name), getattr(ref, name), msg=name)
    assert (ref.alpha > 0).float().mean() > 0.2


def test_a_module_renders_with_its_own_low_pass_filter():
    # the closed form of one isotropic splat, with the module's eps2d as the dilation
    w, h, f, z, sigma, op = 24, 20, 30.0, 4.0, 0.1, 0.8
    scene = _isotropic([[0.0, 0.0, z]], [sigma], [op], [[0.9, 0.4, 0.1]])
    for eps2d in (0.3, 0.05):
        g = Gaussians(**scene, eps2d=eps2d)
        out = rasterize(g, EYE4, _K(f, w, h), w, h, tile_size=8)
        var = (f * sigma / z) ** 2 + eps2d
        ys, xs = torch.meshgrid(
            torch.arange(h, dtype=F64) + 0.5, torch.arange(w, dtype=F64) + 0.5, indexing="ij"
        )
        maha = ((xs - w / 2) ** 2 + (ys - h / 2) ** 2) / var
        alpha = op * torch.exp(-0.5 * maha)
        torch.testing.assert_close(out.alpha, torch.where((alpha >= 1 / 255) & (maha <= 9), alpha, 0.0))
        # an explicit eps2d overrides the module's
        other = rasterize(g, EYE4, _K(f, w, h), w, h, tile_size=8, eps2d=0.3 if eps2d != 0.3 else 0.05)
        assert not torch.allclose(other.alpha, out.alpha)


@pytest.mark.parametrize("bad", [-0.1, float("nan"), float("inf"), True, "0.3"])
def test_bad_eps2d_is_named(bad):
    with pytest.raises(ValueError, match="eps2d"):
        Gaussians(**_scene(3, 0), eps2d=bad)
