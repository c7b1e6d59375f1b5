"""gsplat (CUDA) backend of the rasterizer: our parameters in, :class:`RenderOutput` out.

gsplat's ``rasterization`` takes activated parameters (``scales = exp(log_scales)``,
``opacities = sigmoid(logits)``, quaternions w-first and unnormalised like ours) and a batch of
OpenCV world-to-camera ``viewmats`` with pinhole ``Ks``, the same camera convention as this
package. Two translations matter:

* **Colour and features in one pass.** With ``sh_degree`` set, gsplat evaluates SH itself but
  then renders exactly 3 channels. We evaluate the SH colour here instead (the same
  ``max(SH + 0.5, 0)`` as gsplat and 3DGS) and hand gsplat ``[colour | features]`` as
  post-activation colours with ``sh_degree=None``, so any feature width is composited with the
  RGB in the same tile pass. ``render_mode="RGB+ED"`` appends the expected depth as a last
  channel; the background gets zeros for the feature (and, inside gsplat, depth) channels so
  features composite over a zero background as on the torch path.
* **Densification gradient.** gsplat's projected centres (``meta["means2d"]``, ``[1, N, 2]``
  or packed ``[nnz, 2]``) are what the loss depends on; a view or scatter of them into ``[N, 2]``
  would receive no gradient. The returned ``means2d`` is therefore a detached ``[N, 2]`` leaf
  whose ``.grad`` a hook on gsplat's tensor fills (scattered to all N rows) during backward, so
  ``out.means2d.grad`` means the same on both backends.

Known differences from the torch reference (:mod:`subspace_3dgs.rasterize`), all inherited
from gsplat's kernels: alpha is capped at 0.999 (ours 0.99, as original 3DGS); splats are cut
only where ``alpha < 1/255`` (gsplat's bounding radius ``sqrt(2 ln(255 opacity))`` never
exceeds 3.33 sigma), i.e. the torch path with ``sigma_cutoff >= 3.33``; the projection
Jacobian is clamped to the frustum widened by 0.15 (not 0.3) of the image size, which only
matters for centres outside the image; everything runs in float32 (outputs are cast back to
the input dtype).
"""

from __future__ import annotations

import importlib
from typing import Any

import torch

from .gaussians import EPS2D_3DGS, check_shape
from .projection import view_dependent_colors
from .sh import max_sh_degree

__all__ = ["gsplat_available", "gsplat_rasterization_args", "rasterize_gsplat"]


def gsplat_available() -> bool:
    """Whether ``import gsplat`` works (it does on CPU too; its kernels still need CUDA)."""
    try:
        importlib.import_module("gsplat")
    except ImportError:
        return False
    return True


def _import_gsplat() -> Any:
    try:
        return importlib.import_module("gsplat")
    except ImportError as exc:
        raise ImportError(
            "backend='gsplat' needs the gsplat package: pip install 'subspace-3dgs[cuda]'"
        ) from exc


def gsplat_rasterization_args(
    means: torch.Tensor,
    quats: torch.Tensor,
    log_scales: torch.Tensor,
    opacity_logits: torch.Tensor,
    sh: torch.Tensor,
    viewmat: torch.Tensor,
    K: torch.Tensor,
    width: int,
    height: int,
    *,
    features: torch.Tensor | None = None,
    background: torch.Tensor | None = None,
    tile_size: int = 16,
    sh_degree: int | None = None,
    near: float = 0.01,
    far: float = 1e10,
    eps2d: float = EPS2D_3DGS,
    packed: bool = True,
) -> dict[str, Any]:
    """Keyword arguments for ``gsplat.rasterization`` rendering one camera (no gsplat needed).

    Inputs are those of :func:`~subspace_3dgs.rasterize.rasterize_gaussians`. The result holds
    float32 tensors on ``means.device``: ``means [N, 3]``, ``quats [N, 4]`` (w, x, y, z),
    ``scales [N, 3]`` (activated), ``opacities [N]`` (activated), ``colors [N, C + F]`` (SH
    colour then features), ``viewmats [1, 4, 4]``, ``Ks [1, 3, 3]``, ``backgrounds [1, C + F]``
    or None, and ``sh_degree=None``, ``render_mode="RGB+ED"``, ``rasterize_mode="classic"``,
    ``near_plane``, ``far_plane``, ``eps2d``, ``packed``, ``tile_size``, ``width``, ``height``.
    Every tensor keeps its autograd graph to the inputs.
    """
    n = check_shape("means", means, (None, 3))[0]
    check_shape("quats", quats, (n, 4))
    check_shape("log_scales", log_scales, (n, 3))
    check_shape("opacity_logits", opacity_logits, (n,))
    check_shape("sh", sh, (n, None, None))
    check_shape("viewmat", viewmat, (4, 4))
    check_shape("K", K, (3, 3))
    for name, v in (("width", width), ("height", height), ("tile_size", tile_size)):
        if not isinstance(v, int) or isinstance(v, bool) or v < 1:
            raise ValueError(f"{name}: expected a positive int, got {v!r}")
    stored_degree = max_sh_degree(sh.shape[1])
    degree = stored_degree if sh_degree is None else sh_degree
    if not isinstance(degree, int) or not 0 <= degree <= stored_degree:
        raise ValueError(f"sh_degree: expected an int in [0, {stored_degree}], got {sh_degree!r}")
    num_colors = sh.shape[2]
    if features is not None:
        check_shape("features", features, (n, None))
    if background is not None:
        check_shape("background", background, (num_colors,))

    device, f32 = means.device, torch.float32
    viewmat = viewmat.to(device=device, dtype=f32)
    colors = view_dependent_colors(sh.to(f32), means.to(f32), viewmat, degree)
    if features is not None:
        colors = torch.cat([colors, features.to(f32)], dim=-1)
    backgrounds = None
    if background is not None:
        pad = colors.new_zeros(colors.shape[1] - num_colors)
        backgrounds = torch.cat([background.to(device=device, dtype=f32), pad])[None]
    return dict(
        means=means.to(f32),
        quats=quats.to(f32),
        scales=log_scales.to(f32).exp(),
        opacities=torch.sigmoid(opacity_logits.to(f32)),
        colors=colors,
        viewmats=viewmat[None],
        Ks=K.to(device=device, dtype=f32)[None],
        width=width,
        height=height,
        near_plane=float(near),
        far_plane=float(far),
        eps2d=float(eps2d),
        sh_degree=None,
        packed=bool(packed),
        tile_size=tile_size,
        backgrounds=backgrounds,
        render_mode="RGB+ED",
        rasterize_mode="classic",
    )


def rasterize_gsplat(
    means: torch.Tensor,
    quats: torch.Tensor,
    log_scales: torch.Tensor,
    opacity_logits: torch.Tensor,
    sh: torch.Tensor,
    viewmat: torch.Tensor,
    K: torch.Tensor,
    width: int,
    height: int,
    *,
    features: torch.Tensor | None = None,
    background: torch.Tensor | None = None,
    tile_size: int = 16,
    sh_degree: int | None = None,
    near: float = 0.01,
    far: float = 1e10,
    eps2d: float = EPS2D_3DGS,
    packed: bool = True,
):
    """Render with ``gsplat.rasterization`` on CUDA; same inputs and result as the torch path.

    Args are those of :func:`~subspace_3dgs.rasterize.rasterize_gaussians` (all tensors on one
    CUDA device; ``viewmat``/``K`` may be on the CPU) plus ``packed``, gsplat's memory-saving
    sparse layout of the projected Gaussians (same images either way).

    Returns:
        :class:`~subspace_3dgs.rasterize.RenderOutput` in ``means.dtype``: ``rgb [H, W, C]``,
        ``alpha [H, W]``, ``depth [H, W]``, ``features [H, W, F]`` or None, ``radii [N]``
        (int64, the larger of gsplat's two axis radii), ``means2d [N, 2]`` (see the module
        docstring for its gradient), ``depths [N]``, ``visible [N]``.

    Raises:
        ValueError: when ``means`` is not on a CUDA device (gsplat has no CPU kernels).
        ImportError: when gsplat is not installed.
    """
    if not means.is_cuda:
        raise ValueError(
            f"means: backend='gsplat' needs CUDA tensors, got device {means.device}; "
            "use backend='torch' (or 'auto') on the CPU"
        )
    gsplat = _import_gsplat()
    return render_with(
        gsplat.rasterization, means, quats, log_scales, opacity_logits, sh, viewmat, K,
        width, height, features=features, background=background, tile_size=tile_size,
        sh_degree=sh_degree, near=near, far=far, eps2d=eps2d, packed=packed,
    )  # fmt: skip


def render_with(rasterization, means, quats, log_scales, opacity_logits, sh, viewmat, K,
                width, height, **options):  # fmt: skip
    """Call a ``gsplat.rasterization``-compatible function and convert its outputs.

    Split from :func:`rasterize_gsplat` so the translation can be tested with a stand-in for
    gsplat on machines without CUDA.
    """
    from .rasterize import RenderOutput  # rasterize imports this module for dispatch

    args = gsplat_rasterization_args(
        means, quats, log_scales, opacity_logits, sh, viewmat, K, width, height, **options
    )
    num_colors = sh.shape[2]
    features = options.get("features")
    num_features = 0 if features is None else features.shape[1]
    out_dtype = means.dtype
    n = means.shape[0]

    render, alphas, meta = rasterization(**args)
    render = render[0].to(out_dtype)  # [H, W, C + F + 1]
    rgb = render[..., :num_colors]
    feats = render[..., num_colors : num_colors + num_features] if num_features else None
    depth = render[..., -1]
    alpha = alphas[0, ..., 0].to(out_dtype)

    radii_g = meta["radii"]
    if radii_g.ndim > 1 and radii_g.shape[-1] == 2:  # gsplat >= 1.5: per-axis radii
        radii_g = radii_g.amax(dim=-1)
    radii = torch.zeros(n, dtype=torch.int64, device=means.device)
    if args["packed"]:
        ids = meta["gaussian_ids"].long()
        radii[ids] = radii_g.long()
    else:
        ids = None
        radii = radii_g.reshape(n).long()
    visible = radii > 0

    with torch.no_grad():
        # centres and depths of all N Gaussians (gsplat only reports visible ones when packed)
        vm = args["viewmats"][0]
        cam = args["means"] @ vm[:3, :3].T + vm[:3, 3]
        z = cam[:, 2]
        kk = args["Ks"][0]
        means2d = cam[:, :2] / z[:, None] * torch.stack([kk[0, 0], kk[1, 1]]) + kk[:2, 2]
    means2d = means2d.to(out_dtype)
    depths = (means @ viewmat[:3, :3].to(means).T + viewmat[:3, 3].to(means))[:, 2]
    gs_means2d = meta["means2d"]
    if gs_means2d.requires_grad:
        means2d.requires_grad_(True)
        gs_means2d.register_hook(_scatter_grad_hook(means2d, ids))
    return RenderOutput(
        rgb=rgb,
        alpha=alpha,
        depth=depth,
        features=feats,
        radii=radii,
        means2d=means2d,
        depths=depths,
        visible=visible,
    )


def _scatter_grad_hook(target: torch.Tensor, ids: torch.Tensor | None):
    """A hook on gsplat's ``means2d`` that accumulates its gradient into ``target.grad``."""

    def hook(grad: torch.Tensor) -> None:
        g = grad.detach().reshape(-1, 2).to(target.dtype)
        if ids is not None:
            g = target.new_zeros(target.shape).index_add_(0, ids, g)
        target.grad = g if target.grad is None else target.grad + g

    return hook
