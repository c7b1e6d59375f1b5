"""gsplat backend: argument translation and dispatch on CPU; parity with gsplat on CUDA.

On CPU, ``gsplat.rasterization`` is replaced by ``_fake_rasterization``, a torch implementation
of its documented contract (activated scales/opacities, ``[C, ...]`` batched cameras,
``sh_degree=None`` N-channel colours, ``"RGB+ED"`` depth channel, packed or dense ``meta``)
built from this package's projection and compositing, with splats cut only at alpha < 1/255
as gsplat does. That checks every conversion in both directions and that gradients flow
through the wrapping; the real kernels are compared in the ``gpu`` test at the end.
"""

import importlib
import sys
import types

import pytest
import torch

from subspace_3dgs.gaussians import Gaussians
from subspace_3dgs.gsplat_backend import (
    gsplat_rasterization_args,
    rasterize_gsplat,
    render_with,
)
from subspace_3dgs.projection import view_dependent_colors
from subspace_3dgs.rasterize import rasterize, rasterize_dense, rasterize_gaussians
from subspace_3dgs.sh import eval_sh

rasterize_module = importlib.import_module("subspace_3dgs.rasterize")

# gsplat's bounding radius sqrt(2 ln(255 opacity)) <= 3.33 sigma: cut only by alpha >= 1/255
GSPLAT_CUTOFF = 3.4
W, H = 20, 16


def _K(f: float = 18.0, dtype=torch.float32) -> torch.Tensor:
    return torch.tensor([[f, 0.0, W / 2], [0.0, f, H / 2], [0.0, 0.0, 1.0]], dtype=dtype)


def _view(dtype=torch.float32) -> torch.Tensor:
    """A rotated, translated world-to-camera matrix (so R and t conventions matter)."""
    a = 0.3
    c, s = torch.cos(torch.tensor(a)), torch.sin(torch.tensor(a))
    v = torch.eye(4)
    v[:3, :3] = torch.tensor([[c, 0, s], [0, 1, 0], [-s, 0, c]])
    v[:3, 3] = torch.tensor([0.1, -0.2, 0.5])
    return v.to(dtype)


def _scene(n: int = 12, feature_dim: int = 4, seed: int = 0, dtype=torch.float32) -> dict:
    """Random Gaussians whose centres project inside the image, opacities <= 0.95."""
    g = torch.Generator().manual_seed(seed)
    view = _view(torch.float64)
    cam = torch.cat(
        [
            # |x/z|, |y/z| <= 0.4: centres land inside the 20 x 16 image (f = 18)
            (torch.rand(n, 2, generator=g, dtype=torch.float64) - 0.5) * 0.8,
            torch.rand(n, 1, generator=g, dtype=torch.float64) * 2 + 3,
        ],
        1,
    )
    cam[:, :2] *= cam[:, 2:]
    means = (cam - view[:3, 3]) @ view[:3, :3]  # camera -> world
    return dict(
        means=means.to(dtype),
        quats=torch.randn(n, 4, generator=g, dtype=dtype),
        log_scales=torch.randn(n, 3, generator=g, dtype=dtype) * 0.3 - 2.0,
        opacity_logits=torch.empty(n, dtype=dtype).uniform_(-2.0, 2.9, generator=g),
        sh=torch.randn(n, 9, 3, generator=g, dtype=dtype) * 0.3,
        features=torch.randn(n, feature_dim, generator=g, dtype=dtype) if feature_dim else None,
    )


def _params(scene):
    return [scene[k] for k in ("means", "quats", "log_scales", "opacity_logits", "sh")]


def _fake_rasterization(calls: list):
    """A CPU stand-in for ``gsplat.rasterization`` that records its keyword arguments."""

    def rasterization(*, means, quats, scales, opacities, colors, viewmats, Ks, width, height,
                      near_plane, far_plane, eps2d, sh_degree, packed, tile_size, backgrounds,
                      render_mode, rasterize_mode):  # fmt: skip
        calls.append(dict(locals()))
        assert sh_degree is None and render_mode == "RGB+ED" and rasterize_mode == "classic"
        n, d = colors.shape
        prep = rasterize_module._prepare(
            means, quats, scales.log(), torch.logit(opacities), colors.new_zeros(n, 1, 1),
            viewmats[0], Ks[0], width, height, None, None, None, near_plane, far_plane, eps2d,
            GSPLAT_CUTOFF,
        )  # fmt: skip
        proj = prep.proj
        ids = torch.nonzero(proj.visible).squeeze(1)
        # the loss must depend on the means2d tensor handed out in meta, as in gsplat
        if packed:
            means2d = proj.means2d[ids]
            proj.means2d = proj.means2d.detach().index_put((ids,), means2d)
        else:
            means2d = proj.means2d[None]
            proj.means2d = means2d[0]
        prep.values = torch.cat([colors, proj.depths[:, None], torch.ones_like(colors[:, :1])], 1)
        prep.num_colors, prep.num_features = d, 0
        prep.background = None if backgrounds is None else backgrounds[0]
        pix = rasterize_module._composite_tiles(
            prep, width, height, tile_size, GSPLAT_CUTOFF, 1 << 22, False
        )
        out = rasterize_module._finish(prep, pix)
        radii = torch.stack([proj.radii, proj.radii], -1).to(torch.int32)
        if packed:
            meta = dict(radii=radii[ids], means2d=means2d, gaussian_ids=ids.to(torch.int32))
        else:
            meta = dict(radii=radii[None], means2d=means2d)
        colors_out = torch.cat([out.rgb, out.depth[..., None]], -1)[None]
        return colors_out, out.alpha[None, ..., None], meta

    return rasterization


# --- argument translation ------------------------------------------------------------------


def test_arguments_are_activated_and_batched():
    s = _scene(feature_dim=5, dtype=torch.float64)
    bg = torch.tensor([0.2, 0.5, 0.9], dtype=torch.float64)
    view, K = _view(torch.float64), _K(dtype=torch.float64)
    args = gsplat_rasterization_args(
        *_params(s), view, K, W, H, features=s["features"], background=bg, sh_degree=1,
        near=0.2, far=50.0, eps2d=0.25, packed=False, tile_size=8,
    )  # fmt: skip
    f32 = torch.float32
    assert all(t.dtype == f32 for t in args.values() if isinstance(t, torch.Tensor))
    torch.testing.assert_close(args["means"], s["means"].float())
    torch.testing.assert_close(args["quats"], s["quats"].float())  # w first, unnormalised
    torch.testing.assert_close(args["scales"], s["log_scales"].exp().float())
    torch.testing.assert_close(args["opacities"], torch.sigmoid(s["opacity_logits"]).float())
    torch.testing.assert_close(args["viewmats"], view.float()[None])
    torch.testing.assert_close(args["Ks"], K.float()[None])
    # colour: degree-1 SH towards the camera centre -R^T t, +0.5, clamped; then the features
    centre = -view[:3, :3].T @ view[:3, 3]
    rgb = (eval_sh(1, s["sh"], s["means"] - centre) + 0.5).clamp_min(0.0)
    assert args["colors"].shape == (12, 3 + 5)
    torch.testing.assert_close(args["colors"][:, :3], rgb.float(), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(args["colors"][:, 3:], s["features"].float())
    torch.testing.assert_close(args["backgrounds"], torch.cat([bg, torch.zeros(5)]).float()[None])
    assert (args["sh_degree"], args["render_mode"], args["packed"]) == (None, "RGB+ED", False)
    assert (args["near_plane"], args["far_plane"], args["eps2d"]) == (0.2, 50.0, 0.25)
    assert (args["width"], args["height"], args["tile_size"]) == (W, H, 8)


def test_arguments_keep_gradients():
    s = _scene(feature_dim=2)
    for t in s.values():
        t.requires_grad_(True)
    args = gsplat_rasterization_args(*_params(s), _view(), _K(), W, H, features=s["features"])
    loss = sum(args[k].square().sum() for k in ("means", "quats", "scales", "opacities", "colors"))
    loss.backward()
    for name, t in s.items():
        assert t.grad is not None and t.grad.abs().sum() > 0, name


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (dict(sh_degree=3), "sh_degree"),
        (dict(background=torch.zeros(4)), "background"),
        (dict(features=torch.zeros(5, 2)), "features"),
        (dict(tile_size=0), "tile_size"),
    ],
)
def test_arguments_bad_input(kwargs, match):
    s = _scene(feature_dim=0)
    with pytest.raises(ValueError, match=match):
        gsplat_rasterization_args(*_params(s), _view(), _K(), W, H, **kwargs)


# --- output translation against the dense reference ----------------------------------------


@pytest.mark.parametrize("packed", [True, False])
@pytest.mark.parametrize("feature_dim", [0, 3])
def test_outputs_match_dense_reference(packed, feature_dim):
    s = _scene(feature_dim=feature_dim, dtype=torch.float64)
    bg = torch.tensor([0.3, 0.6, 0.1], dtype=torch.float64)
    view, K = _view(torch.float64), _K(dtype=torch.float64)
    calls = []
    out = render_with(
        _fake_rasterization(calls), *_params(s), view, K, W, H, features=s["features"],
        background=bg, packed=packed,
    )  # fmt: skip
    ref = rasterize_dense(
        *_params(s), view, K, W, H, features=s["features"], background=bg,
        sigma_cutoff=GSPLAT_CUTOFF,
    )  # fmt: skip
    assert len(calls) == 1 and calls[0]["packed"] is packed
    assert out.rgb.shape == (H, W, 3) and out.rgb.dtype == torch.float64
    assert ref.alpha.max() > 0.5  # the scene is actually drawn
    tol = dict(rtol=1e-4, atol=1e-5)  # the fake runs in float32
    torch.testing.assert_close(out.rgb, ref.rgb, **tol)
    torch.testing.assert_close(out.alpha, ref.alpha, **tol)
    torch.testing.assert_close(out.depth, ref.depth, rtol=1e-4, atol=1e-4)
    if feature_dim:
        torch.testing.assert_close(out.features, ref.features, **tol)
    else:
        assert out.features is None
    assert torch.equal(out.visible, ref.visible)
    assert torch.equal(out.radii > 0, ref.radii > 0)
    torch.testing.assert_close(out.means2d, ref.means2d, rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(out.depths, ref.depths)


@pytest.mark.parametrize("packed", [True, False])
def test_gradients_and_means2d_grad_match_torch_path(packed):
    s = _scene(feature_dim=2, dtype=torch.float32)
    bg = torch.tensor([0.3, 0.6, 0.1])
    target = torch.rand(H, W, 3, generator=torch.Generator().manual_seed(5))
    grads = []
    for use_fake in (True, False):
        leaves = {k: v.clone().requires_grad_(True) for k, v in s.items()}
        kw = dict(features=leaves["features"], background=bg)
        if use_fake:
            out = render_with(
                _fake_rasterization([]), *_params(leaves), _view(), _K(), W, H, packed=packed, **kw
            )
        else:
            out = rasterize_gaussians(
                *_params(leaves), _view(), _K(), W, H, sigma_cutoff=GSPLAT_CUTOFF, backend="torch",
                **kw,
            )  # fmt: skip
        out.means2d.retain_grad()
        loss = (out.rgb - target).square().sum() + out.features.sin().sum() + out.depth.sum()
        loss.backward()
        grads.append({**{k: v.grad for k, v in leaves.items()}, "means2d": out.means2d.grad})
    fake, ref = grads
    for name in ref:
        assert ref[name].abs().sum() > 0, name
        torch.testing.assert_close(fake[name], ref[name], rtol=2e-3, atol=2e-4, msg=name)


def test_means2d_grad_accumulates_over_backward_calls():
    s = _scene(feature_dim=0)
    leaves = {k: v.requires_grad_(True) for k, v in s.items() if v is not None}
    out = render_with(_fake_rasterization([]), *_params(leaves), _view(), _K(), W, H)
    out.rgb.sum().backward(retain_graph=True)
    first = out.means2d.grad.clone()
    out.rgb.sum().backward()
    torch.testing.assert_close(out.means2d.grad, 2 * first)


def test_no_grad_render_has_plain_means2d():
    s = _scene(feature_dim=0)
    with torch.no_grad():
        out = render_with(_fake_rasterization([]), *_params(s), _view(), _K(), W, H)
    assert not out.means2d.requires_grad


# --- dispatch ------------------------------------------------------------------------------


def test_resolve_backend_rules(monkeypatch):
    resolve = rasterize_module.resolve_backend
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    monkeypatch.setattr(rasterize_module, "gsplat_available", lambda: True)
    assert resolve("auto", cpu) == "torch"
    assert resolve("auto", cuda) == "gsplat"
    assert resolve("torch", cuda) == "torch"
    assert resolve("gsplat", cuda) == "gsplat"
    monkeypatch.setattr(rasterize_module, "gsplat_available", lambda: False)
    assert resolve("auto", cuda) == "torch"
    with pytest.raises(ValueError, match=r"backend: expected one of .*'cuda'"):
        resolve("cuda", cpu)


def test_explicit_gsplat_on_cpu_raises_clear_error():
    s = _scene(feature_dim=0)
    with pytest.raises(ValueError, match=r"'gsplat' needs CUDA tensors.*cpu"):
        rasterize_gaussians(*_params(s), _view(), _K(), W, H, backend="gsplat")
    g = Gaussians(**s)
    with pytest.raises(ValueError, match="needs CUDA"):
        rasterize(g, _view(), _K(), W, H, backend="gsplat")
    with pytest.raises(ValueError, match="needs CUDA"):
        rasterize_gsplat(*_params(s), _view(), _K(), W, H)


def test_missing_gsplat_raises_import_error_with_hint(monkeypatch):
    gsplat_backend = importlib.import_module("subspace_3dgs.gsplat_backend")
    monkeypatch.setitem(sys.modules, "gsplat", None)  # makes `import gsplat` fail
    assert not gsplat_backend.gsplat_available()
    with pytest.raises(ImportError, match=r"subspace-3dgs\[cuda\]"):
        gsplat_backend._import_gsplat()


def test_auto_on_cpu_uses_torch_path(monkeypatch):
    calls = []
    monkeypatch.setitem(
        sys.modules, "gsplat", types.SimpleNamespace(rasterization=_fake_rasterization(calls))
    )
    s = _scene(feature_dim=2)
    out = rasterize_gaussians(*_params(s), _view(), _K(), W, H, features=s["features"])
    ref = rasterize_gaussians(
        *_params(s), _view(), _K(), W, H, features=s["features"], backend="torch"
    )
    assert calls == []
    assert torch.equal(out.rgb, ref.rgb) and torch.equal(out.features, ref.features)


def test_gsplat_dispatch_forwards_options(monkeypatch):
    """``rasterize`` on a module routes to gsplat with its features and the shared options,
    and drops the torch-only ones (``checkpoint`` as the trainer passes it)."""
    seen = {}

    def fake_rasterize_gsplat(*args, **kwargs):
        seen["args"], seen["kwargs"] = args, kwargs
        return "rendered"

    monkeypatch.setattr(rasterize_module, "resolve_backend", lambda backend, device: "gsplat")
    monkeypatch.setattr(rasterize_module, "rasterize_gsplat", fake_rasterize_gsplat)
    s = _scene(feature_dim=3)
    g = Gaussians(**s)
    bg = torch.ones(3)
    result = rasterize(
        g, _view(), _K(), W, H, background=bg, sh_degree=1, checkpoint=False, near=0.3,
        packed=False, eps2d=0.2,
    )  # fmt: skip
    assert result == "rendered"
    assert seen["args"][0] is g.means and seen["args"][4] is g.sh
    kw = seen["kwargs"]
    assert kw["features"] is g.features and kw["background"] is bg
    assert (kw["sh_degree"], kw["near"], kw["packed"], kw["eps2d"]) == (1, 0.3, False, 0.2)
    assert "checkpoint" not in kw and "sigma_cutoff" not in kw


def test_view_dependent_colors_are_what_gsplat_gets():
    """The colour handed to gsplat is the torch path's colour (one SH code path)."""
    s = _scene(feature_dim=0, dtype=torch.float64)
    args = gsplat_rasterization_args(*_params(s), _view(torch.float64), _K(), W, H)
    ref = view_dependent_colors(s["sh"], s["means"], _view(torch.float64), 2)
    torch.testing.assert_close(args["colors"], ref.float())


# --- CUDA parity (runs only where CUDA and gsplat's kernels work) ---------------------------


def _gsplat_kernels_or_skip():
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA device")
    try:
        gsplat = importlib.import_module("gsplat")
    except ImportError:
        pytest.skip("needs gsplat (pip install 'subspace-3dgs[cuda]')")
    try:  # gsplat's first op JIT-builds its extension; a failed build means no kernels
        dev = torch.device("cuda")
        gsplat.rasterization(
            torch.zeros(1, 3, device=dev) + torch.tensor([0.0, 0.0, 2.0], device=dev),
            torch.tensor([[1.0, 0, 0, 0]], device=dev), torch.full((1, 3), 0.1, device=dev),
            torch.full((1,), 0.5, device=dev), torch.ones(1, 3, device=dev),
            torch.eye(4, device=dev)[None], _K().to(dev)[None], W, H,
        )  # fmt: skip
    except Exception as exc:
        pytest.skip(f"gsplat's CUDA kernels are unavailable: {type(exc).__name__}: {exc}")
    return gsplat


@pytest.mark.gpu
@pytest.mark.parametrize("packed", [True, False])
def test_gpu_parity_with_torch_path(packed):
    """Forward and gradients of gsplat vs the torch path on CUDA, float32.

    The scene keeps opacities <= 0.95 (gsplat caps alpha at 0.999, ours at 0.99) and the
    torch path cuts at 3.4 sigma like gsplat's alpha-only cut (its centres stay inside the
    image; the projection, including the Jacobian clamp outside it, is checked against
    gsplat's CPU reference in test_gsplat_reference). What remains is
    float32 rounding and gsplat's fast-math ``exp``, plus pixels where a splat sits right at the
    alpha >= 1/255 or the T >= 1e-4 threshold and one side keeps it: each such flip moves a
    pixel by up to about 1/255. Tolerances: images max |diff| <= 5e-3 and mean |diff| <= 1e-4
    (alpha, colour, features; depth relative); gradients relative L2 error <= 1e-2.
    """
    gsplat = _gsplat_kernels_or_skip()
    dev = torch.device("cuda")
    s = {k: v.to(dev) for k, v in _scene(n=64, feature_dim=5, seed=3).items()}
    bg = torch.tensor([0.3, 0.6, 0.1], device=dev)
    view, K = _view().to(dev), _K().to(dev)
    target = torch.rand(H, W, 3, generator=torch.Generator().manual_seed(5)).to(dev)
    weights = torch.randn(H, W, 5, generator=torch.Generator().manual_seed(6)).to(dev)
    outs, grads = [], []
    for backend in ("gsplat", "torch"):
        leaves = {k: v.clone().requires_grad_(True) for k, v in s.items()}
        out = rasterize_gaussians(
            *_params(leaves), view, K, W, H, features=leaves["features"], background=bg,
            sigma_cutoff=GSPLAT_CUTOFF, backend=backend, packed=packed,
        )  # fmt: skip
        out.means2d.retain_grad()
        loss = (
            (out.rgb - target).square().sum()
            + (out.features * weights).sum()
            + 0.1 * out.depth.sum()
            + out.alpha.sum()
        )
        loss.backward()
        outs.append(out)
        grads.append({**{k: v.grad for k, v in leaves.items()}, "means2d": out.means2d.grad})
    gs, ref = outs
    assert ref.alpha.max() > 0.5
    for name in ("rgb", "alpha", "features"):
        diff = (getattr(gs, name) - getattr(ref, name)).abs()
        assert diff.max() <= 5e-3 and diff.mean() <= 1e-4, (name, diff.max(), diff.mean())
    rel_depth = (gs.depth - ref.depth).abs() / ref.depth.abs().clamp_min(1.0)
    assert rel_depth.max() <= 5e-3 and rel_depth.mean() <= 1e-4
    assert torch.equal(gs.visible, ref.visible)
    for name, g_ref in grads[1].items():
        g_gs = grads[0][name]
        rel = (g_gs - g_ref).norm() / g_ref.norm()
        assert rel <= 1e-2, (name, float(rel))
    # our SH basis is gsplat's (sign and order convention)
    dirs = torch.randn(50, 3, device=dev)
    coeffs = torch.randn(50, 16, 3, device=dev)
    torch.testing.assert_close(
        gsplat.spherical_harmonics(3, dirs, coeffs), eval_sh(3, coeffs, dirs), rtol=1e-4,
        atol=1e-5,
    )  # fmt: skip
