"""Differentiable tile-based Gaussian-splatting rasterizer in pure PyTorch.

This is the CPU reference renderer of the package (gsplat is the CUDA backend). It renders
colour and any number of extra per-Gaussian feature channels in one pass, which is what
feature-field methods need and what gsplat's fused kernels cannot do for wide features.

Compositing follows 3DGS exactly except where noted:

* Gaussians are sorted by camera-space depth of their centres and composited front to back,
  ``C = sum_i c_i alpha_i T_i`` with ``T_i = prod_{j<i} (1 - alpha_j)``.
* ``alpha_i = min(0.99, opacity_i * exp(-0.5 d^T conic_i d))`` at pixel centres; contributions
  with ``alpha < 1/255`` are skipped (the 0.99 cap keeps ``1 - alpha`` away from zero so the
  transmittance stays invertible, which the 3DGS backward pass relies on).
* Early termination: a pixel stops before the Gaussian that would bring its transmittance
  below ``1e-4`` (``T_THRESHOLD``), as 3DGS does.
* Splats are truncated at ``sigma_cutoff`` (3) Mahalanobis units. 3DGS truncates only by
  tile coverage of the 3-sigma box, which makes its output depend on the tile size; cutting
  at the ellipse makes this renderer independent of the tile size (``rasterize_dense`` and
  any ``tile_size`` give the same image).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
import torch.utils.checkpoint

from .gaussians import EPS2D_3DGS, Gaussians, check_shape, quat_to_rotmat
from .gsplat_backend import gsplat_available, rasterize_gsplat
from .projection import ALPHA_THRESHOLD, Projected, project_gaussians, view_dependent_colors
from .sh import max_sh_degree

__all__ = [
    "BACKENDS",
    "MAX_ALPHA",
    "T_THRESHOLD",
    "RenderOutput",
    "rasterize",
    "rasterize_dense",
    "rasterize_gaussians",
    "resolve_backend",
]

BACKENDS = ("auto", "torch", "gsplat")

MAX_ALPHA = 0.99
T_THRESHOLD = 1e-4
# Gaussians composited per vectorised step along a tile's depth list (see _composite_chunk)
DEPTH_SEGMENT = 128


@dataclass
class RenderOutput:
    """Rendered images and per-Gaussian screen-space data.

    Attributes:
        rgb: ``[H, W, C]`` composited colour over the background.
        alpha: ``[H, W]`` accumulated opacity ``sum_i alpha_i T_i = 1 - T_final``.
        depth: ``[H, W]`` expected depth ``sum_i z_i alpha_i T_i / alpha`` (0 where alpha is 0).
        features: ``[H, W, F]`` composited features ``sum_i f_i alpha_i T_i`` (no background,
            i.e. a zero background), or None when no features were given.
        radii: ``[N]`` integer screen radius of each Gaussian, 0 when culled.
        means2d: ``[N, 2]`` projected centres in pixels (keeps its graph, so its ``.grad``
            after ``retain_grad()`` drives 3DGS densification).
        depths: ``[N]`` camera-space depth of the centres.
        visible: ``[N]`` bool, Gaussians that were not culled.
    """

    rgb: torch.Tensor
    alpha: torch.Tensor
    depth: torch.Tensor
    features: torch.Tensor | None
    radii: torch.Tensor
    means2d: torch.Tensor
    depths: torch.Tensor
    visible: torch.Tensor


@dataclass
class _Prepared:
    proj: Projected
    opacities: torch.Tensor  # [N]
    log_opacities: torch.Tensor  # [N], log sigmoid of the logits (finite where opacity is 0)
    values: torch.Tensor  # [N, C + 1 + F + 1]: colour, depth, features, constant 1
    num_colors: int
    num_features: int
    background: torch.Tensor | None


def rasterize(
    gaussians: Gaussians,
    viewmat: torch.Tensor,
    K: torch.Tensor,
    width: int,
    height: int,
    *,
    background: torch.Tensor | None = None,
    render_features: bool = True,
    tile_size: int = 16,
    sh_degree: int | None = None,
    backend: str = "auto",
    eps2d: float | None = None,
    **kwargs,
) -> RenderOutput:
    """Render a :class:`Gaussians` module (see :func:`rasterize_gaussians` for the arguments,
    ``backend`` included).

    ``render_features=False`` skips the module's extra features even if it has them.
    ``eps2d=None`` renders with the module's own low-pass filter ``gaussians.eps2d``, the one
    it was trained with.
    """
    if not isinstance(gaussians, Gaussians):
        raise TypeError(f"gaussians: expected a Gaussians module, got {type(gaussians).__name__}")
    return rasterize_gaussians(
        gaussians.means,
        gaussians.quats,
        gaussians.log_scales,
        gaussians.opacity_logits,
        gaussians.sh,
        viewmat,
        K,
        width,
        height,
        features=gaussians.features if render_features else None,
        background=background,
        tile_size=tile_size,
        sh_degree=sh_degree,
        backend=backend,
        eps2d=gaussians.eps2d if eps2d is None else eps2d,
        **kwargs,
    )


def rasterize_gaussians(
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
    sigma_cutoff: float = 3.0,
    max_chunk_elements: int = 1 << 22,
    checkpoint: bool = True,
    backend: str = "auto",
    packed: bool = True,
) -> RenderOutput:
    """Render raw Gaussian parameters, tile by tile; differentiable w.r.t. every tensor input.

    Args:
        means: ``[N, 3]`` world centres.
        quats: ``[N, 4]`` (w, x, y, z) rotations, normalised here.
        log_scales: ``[N, 3]`` log standard deviations.
        opacity_logits: ``[N]`` pre-sigmoid opacities.
        sh: ``[N, K, C]`` SH coefficients, ``K`` in (1, 4, 9, 16).
        viewmat: ``[4, 4]`` world-to-camera (OpenCV axes).
        K: ``[3, 3]`` pinhole intrinsics in pixels.
        width, height: image size in pixels.
        features: ``[N, F]`` extra features composited in the same pass, or None.
        background: ``[C]`` colour behind the splats; None means black.
        tile_size: side of the square screen tiles Gaussians are binned into.
        sh_degree: SH degree to evaluate (``<=`` the degree ``sh`` holds); None uses all of it.
        near, far, eps2d, sigma_cutoff: see :func:`~subspace_3dgs.projection.project_gaussians`.
        max_chunk_elements: tiles are composited in chunks of at most about this many
            (pixel, Gaussian) pairs, which bounds memory (a single tile that alone exceeds it
            is still processed whole).
        checkpoint: recompute each chunk's per-pixel intermediates during backward instead of
            storing them (gradient checkpointing), so memory under autograd is bounded by one
            chunk rather than the whole image; costs roughly one extra forward pass.
        backend: ``"torch"`` (this module), ``"gsplat"`` (CUDA kernels, see
            :mod:`~subspace_3dgs.gsplat_backend`) or ``"auto"``: gsplat when ``means`` is on a
            CUDA device and gsplat imports, torch otherwise. Under gsplat, ``sigma_cutoff``,
            ``max_chunk_elements`` and ``checkpoint`` do not apply (gsplat cuts splats at
            ``alpha < 1/255``, like ``sigma_cutoff >= 3.33`` here, and has its own memory
            layout).
        packed: gsplat only: its sparse (packed) layout of the projected Gaussians, which
            saves memory when a view sees few of them; images are the same either way.

    Returns:
        :class:`RenderOutput`.
    """
    device = means.device if isinstance(means, torch.Tensor) else torch.device("cpu")
    if resolve_backend(backend, device) == "gsplat":
        return rasterize_gsplat(
            means, quats, log_scales, opacity_logits, sh, viewmat, K, width, height,
            features=features, background=background, tile_size=tile_size,
            sh_degree=sh_degree, near=near, far=far, eps2d=eps2d, packed=packed,
        )  # fmt: skip
    if not isinstance(tile_size, int) or tile_size < 1:
        raise ValueError(f"tile_size: expected a positive int, got {tile_size!r}")
    prep = _prepare(
        means, quats, log_scales, opacity_logits, sh, viewmat, K, width, height,
        features, background, sh_degree, near, far, eps2d, sigma_cutoff,
    )  # fmt: skip
    pix = _composite_tiles(
        prep, width, height, tile_size, sigma_cutoff, max_chunk_elements, checkpoint
    )
    return _finish(prep, pix)


def resolve_backend(backend: str, device: torch.device) -> str:
    """The backend (``"torch"`` or ``"gsplat"``) that ``backend`` means for tensors on ``device``.

    ``"auto"`` picks gsplat only on CUDA and only when it imports, so CPU users never need it.
    An explicit ``"gsplat"`` off CUDA raises a ValueError rather than falling back silently.
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend: expected one of {BACKENDS}, got {backend!r}")
    on_cuda = torch.device(device).type == "cuda"
    if backend == "gsplat" and not on_cuda:
        raise ValueError(
            f"backend: 'gsplat' needs CUDA tensors (gsplat has no CPU kernels), got tensors "
            f"on {device}; use backend='torch' or 'auto'"
        )
    if backend == "auto":
        return "gsplat" if on_cuda and gsplat_available() else "torch"
    return backend


def rasterize_dense(
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
    sh_degree: int | None = None,
    near: float = 0.01,
    far: float = 1e10,
    eps2d: float = EPS2D_3DGS,
    sigma_cutoff: float = 3.0,
) -> RenderOutput:
    """Reference renderer for tiny scenes: every Gaussian at every pixel, in a sequential loop.

    Same arguments and result as :func:`rasterize_gaussians` (no tiling). It walks the
    depth-sorted Gaussians one at a time like the 3DGS CUDA kernel does per pixel, so it is an
    independent check of the vectorised tile path; cost is O(N * H * W) with N Python steps.
    """
    prep = _prepare(
        means, quats, log_scales, opacity_logits, sh, viewmat, K, width, height,
        features, background, sh_degree, near, far, eps2d, sigma_cutoff,
    )  # fmt: skip
    proj = prep.proj
    dtype = prep.values.dtype
    ys, xs = torch.meshgrid(
        torch.arange(height, dtype=dtype) + 0.5, torch.arange(width, dtype=dtype) + 0.5,
        indexing="ij",
    )  # fmt: skip
    pixels = torch.stack([xs, ys], dim=-1).reshape(-1, 2)
    acc = pixels.new_zeros(pixels.shape[0], prep.values.shape[1])
    T = pixels.new_ones(pixels.shape[0])
    done = torch.zeros(pixels.shape[0], dtype=torch.bool)
    order = torch.argsort(proj.depths.detach(), stable=True)
    for i in order[proj.visible[order]].tolist():
        alpha = _alpha(pixels, proj.means2d[i], proj.conics[i], prep.opacities[i], sigma_cutoff)
        next_T = T * (1.0 - alpha)
        take = (~done) & (alpha > 0) & (next_T >= T_THRESHOLD)
        done = done | ((~done) & (alpha > 0) & (next_T < T_THRESHOLD))
        w = torch.where(take, alpha * T, torch.zeros_like(T))
        acc = acc + w[:, None] * prep.values[i]
        T = torch.where(take, next_T, T)
    return _finish(prep, acc.reshape(height, width, -1))


def _alpha(
    pixels: torch.Tensor,
    mean2d: torch.Tensor,
    conic: torch.Tensor,
    opacity: torch.Tensor,
    sigma_cutoff: float,
) -> torch.Tensor:
    """Alpha of Gaussian(s) at pixel centres, with the 3DGS cap/threshold and the truncation.

    Broadcasts: ``pixels [..., 2]`` against ``mean2d [..., 2]``, ``conic [..., 3]``,
    ``opacity [...]``.
    """
    d = pixels - mean2d
    dx, dy = d[..., 0], d[..., 1]
    maha = conic[..., 0] * dx * dx + 2.0 * conic[..., 1] * dx * dy + conic[..., 2] * dy * dy
    alpha = (opacity * torch.exp(-0.5 * maha)).clamp_max(MAX_ALPHA)
    keep = (alpha >= ALPHA_THRESHOLD) & (maha <= sigma_cutoff * sigma_cutoff)
    return torch.where(keep, alpha, torch.zeros_like(alpha))


def _prepare(
    means, quats, log_scales, opacity_logits, sh, viewmat, K, width, height,
    features, background, sh_degree, near, far, eps2d, sigma_cutoff,
) -> _Prepared:  # fmt: skip
    """Validate inputs, project the Gaussians and stack the values to composite."""
    n = check_shape("means", means, (None, 3))[0]
    check_shape("quats", quats, (n, 4))
    check_shape("log_scales", log_scales, (n, 3))
    check_shape("opacity_logits", opacity_logits, (n,))
    check_shape("sh", sh, (n, None, None))
    check_shape("viewmat", viewmat, (4, 4))
    check_shape("K", K, (3, 3))
    for name, v in (("width", width), ("height", height)):
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

    rot = quat_to_rotmat(quats)
    rs = rot * log_scales.exp()[:, None, :]
    covs = rs @ rs.transpose(1, 2)
    opacities = torch.sigmoid(opacity_logits)
    log_opacities = F.logsigmoid(opacity_logits)
    proj = project_gaussians(
        means, covs, opacities, viewmat, K, width, height,
        near=near, far=far, eps2d=eps2d, sigma_cutoff=sigma_cutoff,
    )  # fmt: skip
    colors = view_dependent_colors(sh, means, viewmat, degree)
    parts = [colors, proj.depths[:, None].to(colors.dtype)]
    if features is not None:
        parts.append(features.to(colors.dtype))
    # a constant channel composites to the accumulated alpha in the same pass
    parts.append(torch.ones_like(colors[:, :1]))
    values = torch.cat(parts, dim=-1)
    return _Prepared(
        proj=proj,
        opacities=opacities,
        log_opacities=log_opacities,
        values=values,
        num_colors=num_colors,
        num_features=0 if features is None else features.shape[1],
        background=background,
    )


def _finish(prep: _Prepared, pix: torch.Tensor) -> RenderOutput:
    """Split the composited channels ``[H, W, C + 2 + F]`` into a :class:`RenderOutput`.

    ``pix`` holds colour, depth, features and, last, the accumulated alpha.
    """
    c = prep.num_colors
    rgb, depth_sum = pix[..., :c], pix[..., c]
    features = pix[..., c + 1 : c + 1 + prep.num_features] if prep.num_features else None
    alpha = pix[..., -1]
    if prep.background is not None:
        rgb = rgb + (1.0 - alpha)[..., None] * prep.background.to(rgb.dtype)
    # where nothing was drawn the expected depth is undefined; report 0 without a NaN gradient
    has = alpha > 0
    depth = torch.where(has, depth_sum / torch.where(has, alpha, torch.ones_like(alpha)), 0.0)
    proj = prep.proj
    return RenderOutput(
        rgb=rgb,
        alpha=alpha,
        depth=depth,
        features=features,
        radii=proj.radii,
        means2d=proj.means2d,
        depths=proj.depths,
        visible=proj.visible,
    )


def _composite_tiles(
    prep: _Prepared,
    width: int,
    height: int,
    tile_size: int,
    sigma_cutoff: float,
    max_chunk_elements: int,
    checkpoint: bool,
) -> torch.Tensor:
    """Bin Gaussians to tiles and composite each tile's pixels; returns ``[H, W, D]``."""
    proj = prep.proj
    values = prep.values
    dtype, device = values.dtype, values.device
    tiles_x = (width + tile_size - 1) // tile_size
    tiles_y = (height + tile_size - 1) // tile_size
    num_tiles = tiles_x * tiles_y
    pix_per_tile = tile_size * tile_size

    with torch.no_grad():
        # front-to-back order first; the stable sort by tile below keeps it within each tile
        ids = torch.nonzero(proj.visible).squeeze(1)
        ids = ids[torch.argsort(proj.depths.detach()[ids], stable=True)]
        m = proj.means2d.detach()[ids]
        ex, ey = _splat_extents(proj.conics.detach()[ids], prep.log_opacities.detach()[ids],
                                sigma_cutoff)
        # tiles that can hold a pixel the splat reaches: [min, max) in tile units
        x0 = ((m[:, 0] - ex) / tile_size).floor().clamp(0, tiles_x).long()
        x1 = ((m[:, 0] + ex) / tile_size).floor().add(1).clamp(0, tiles_x).long()
        y0 = ((m[:, 1] - ey) / tile_size).floor().clamp(0, tiles_y).long()
        y1 = ((m[:, 1] + ey) / tile_size).floor().add(1).clamp(0, tiles_y).long()
        nx, ny = x1 - x0, y1 - y0
        counts = nx * ny
        owner = torch.repeat_interleave(torch.arange(ids.numel(), device=device), counts)
        # position of each (Gaussian, tile) pair inside its Gaussian's box
        local = torch.arange(owner.numel(), device=device) - torch.repeat_interleave(
            counts.cumsum(0) - counts, counts
        )
        tx = x0[owner] + local % nx[owner]
        ty = y0[owner] + local // nx[owner]
        tile_of_pair = ty * tiles_x + tx
        tile_of_pair, perm = torch.sort(tile_of_pair, stable=True)
        gauss_of_pair = ids[owner[perm]]
        per_tile = torch.bincount(tile_of_pair, minlength=num_tiles)
        starts = per_tile.cumsum(0) - per_tile
        busy = torch.nonzero(per_tile).squeeze(1)

    monomials = _pixel_monomials(tile_size, dtype, device)

    out_tiles = []
    tile_ids = busy.tolist()
    pos = 0
    while pos < len(tile_ids):
        # grow the chunk while its padded size stays within the memory budget
        end, longest = pos + 1, int(per_tile[tile_ids[pos]])
        while end < len(tile_ids):
            longest_next = max(longest, int(per_tile[tile_ids[end]]))
            if (end + 1 - pos) * pix_per_tile * longest_next > max_chunk_elements:
                break
            end, longest = end + 1, longest_next
        chunk = busy[pos:end]
        args = (chunk, starts, per_tile, gauss_of_pair, longest, tiles_x, tile_size, monomials)
        if checkpoint and torch.is_grad_enabled():
            # the per-pixel intermediates are recomputed in backward instead of being kept
            # for every chunk at once, so training memory stays bounded like inference
            out_tiles.append(
                torch.utils.checkpoint.checkpoint(
                    _composite_chunk, prep.proj.means2d, prep.proj.conics, prep.log_opacities,
                    prep.values, *args, sigma_cutoff, use_reentrant=False,
                )
            )  # fmt: skip
        else:
            out_tiles.append(
                _composite_chunk(
                    prep.proj.means2d, prep.proj.conics, prep.log_opacities, prep.values,
                    *args, sigma_cutoff,
                )
            )  # fmt: skip
        pos = end

    full = values.new_zeros(num_tiles, pix_per_tile, values.shape[1])
    if out_tiles:
        full = full.index_copy(0, busy, torch.cat(out_tiles))
    image = (
        full.reshape(tiles_y, tiles_x, tile_size, tile_size, -1)
        .permute(0, 2, 1, 3, 4)
        .reshape(tiles_y * tile_size, tiles_x * tile_size, -1)
    )
    return image[:height, :width]


def _splat_extents(
    conics: torch.Tensor, log_opacities: torch.Tensor, sigma_cutoff: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Half-widths ``(x, y)`` ``[N]`` of the box around the pixels a splat can draw on.

    A pixel gets alpha only where ``opacity · exp(-½ d) >= ALPHA_THRESHOLD`` and
    ``d <= sigma_cutoff²`` (``d`` the Mahalanobis distance), i.e. inside the ellipse
    ``d <= t`` with ``t = min(sigma_cutoff², 2 log(opacity / ALPHA_THRESHOLD))``, whose exact
    bounding box is ``±sqrt(t Σxx), ±sqrt(t Σyy)``. This is tighter than the circle of
    radius ``sigma_cutoff · sqrt(λmax)`` for faint or elongated splats, so fewer
    (tile, Gaussian) pairs are composited, and exact: the pairs it drops add zero.
    """
    a, b, c = conics.unbind(-1)
    det = (a * c - b * b).clamp_min(1e-30)
    t = (2.0 * (log_opacities - math.log(ALPHA_THRESHOLD))).clamp(0.0, sigma_cutoff**2)
    return (t * c / det).sqrt(), (t * a / det).sqrt()


def _pixel_monomials(tile_size: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """``[P, 6]`` monomials ``(x², xy, y², x, y, 1)`` of a tile's pixel centres in tile-local
    coordinates (``P = tile_size²``, row-major)."""
    offs = torch.arange(tile_size, dtype=dtype, device=device) + 0.5
    y, x = (t.reshape(-1) for t in torch.meshgrid(offs, offs, indexing="ij"))
    return torch.stack([x * x, x * y, y * y, x, y, torch.ones_like(x)], dim=-1)


def _log_alpha_weights(
    means2d: torch.Tensor, conics: torch.Tensor, log_opacities: torch.Tensor
) -> torch.Tensor:
    """Coefficients ``[..., 6]`` of ``log(opacity) - ½ (p - μ)ᵀ Σ⁻¹ (p - μ)`` as a linear form
    in :func:`_pixel_monomials` (``means2d`` relative to the tile origin).

    Expanding the quadratic turns the per-(pixel, Gaussian) Mahalanobis distance into one
    matrix product instead of a dozen elementwise passes; in tile-local coordinates the
    terms stay small, so float32 loses nothing noticeable to cancellation.
    """
    a, b, c = conics.unbind(-1)
    mx, my = means2d.unbind(-1)
    ax_by, bx_cy = a * mx + b * my, b * mx + c * my
    constant = log_opacities - 0.5 * (mx * ax_by + my * bx_cy)
    return torch.stack([-0.5 * a, -b, -0.5 * c, ax_by, bx_cy, constant], dim=-1)


def _composite_chunk(
    means2d: torch.Tensor,
    conics: torch.Tensor,
    log_opacities: torch.Tensor,
    values: torch.Tensor,
    chunk: torch.Tensor,
    starts: torch.Tensor,
    per_tile: torch.Tensor,
    gauss_of_pair: torch.Tensor,
    longest: int,
    tiles_x: int,
    tile_size: int,
    monomials: torch.Tensor,
    sigma_cutoff: float,
) -> torch.Tensor:
    """Composite the tiles ``chunk [B]``; returns ``[B, tile_size^2, D]``.

    Each tile's depth-sorted list is walked in segments of ``DEPTH_SEGMENT`` Gaussians,
    carrying the transmittance between segments, and the walk stops once every pixel of the
    chunk has terminated: the block-level early exit of the 3DGS kernel, which skips most of
    the list in opaque regions. Alpha is ``exp`` of a linear form in the pixel monomials
    (:func:`_log_alpha_weights`), kept where it reaches ``ALPHA_THRESHOLD`` and the pixel
    lies within ``sigma_cutoff`` standard deviations: the same rule as :func:`_alpha`.
    """
    origin = torch.stack([chunk % tiles_x, chunk // tiles_x], dim=-1).to(monomials.dtype)
    origin = origin[:, None, :] * tile_size  # [B, 1, 2] pixel coordinates of the tile corner
    counts, first = per_tile[chunk][:, None], starts[chunk][:, None]
    num_pix = monomials.shape[0]
    acc = values.new_zeros(chunk.numel(), num_pix, values.shape[1])
    T = values.new_ones(chunk.numel(), num_pix, 1)
    log_alpha_floor = math.log(ALPHA_THRESHOLD)
    for begin in range(0, longest, DEPTH_SEGMENT):
        slot = torch.arange(begin, min(begin + DEPTH_SEGMENT, longest), device=chunk.device)
        in_list = slot[None, :] < counts  # [B, S]
        pair = (first + slot[None, :]).clamp_max(gauss_of_pair.numel() - 1)
        g = torch.where(in_list, gauss_of_pair[pair], 0)  # [B, S] Gaussian ids, depth-sorted
        log_o = log_opacities[g]
        weights_6 = _log_alpha_weights(means2d[g] - origin, conics[g], log_o)  # [B, S, 6]
        log_alpha = monomials @ weights_6.transpose(1, 2)  # [B, P, S]
        # alpha >= ALPHA_THRESHOLD and Mahalanobis <= cutoff², as log-alpha thresholds
        floor = torch.maximum(log_o - 0.5 * sigma_cutoff * sigma_cutoff,
                              log_o.new_tensor(log_alpha_floor))
        floor = torch.where(in_list, floor, torch.inf)[:, None, :]
        alpha = torch.where(log_alpha >= floor, log_alpha.exp().clamp_max(MAX_ALPHA),
                            torch.zeros_like(log_alpha))
        T_after = T * torch.cumprod(1.0 - alpha, dim=-1)
        T_before = torch.cat([T, T_after[..., :-1]], dim=-1)
        # early termination: T only decreases, so this drops exactly the Gaussian that would
        # push T below the threshold and everything behind it, like the sequential 3DGS loop
        weights = torch.where(T_after >= T_THRESHOLD, alpha * T_before, torch.zeros_like(alpha))
        acc = acc + torch.einsum("bps,bsd->bpd", weights, values[g])
        T = T_after[..., -1:]
        if bool((T < T_THRESHOLD).all()):
            break
    return acc
