"""Feature 3DGS (Zhou et al., CVPR 2024): distilled feature fields on trained Gaussians.

Every Gaussian carries an ``F``-dimensional feature (the subspace, ``F = 16`` by default)
that the rasterizer composites in the same pass as RGB; a 1x1 convolution (Feature 3DGS's
"speed-up" decoder) maps the composited ``F``-d map to the teacher's width ``C``, and the
decoded map is fit to the teacher's maps with an L1 loss. ``dim=None`` is the full-width
variant: ``F = C`` and an identity decoder.

Rendering: the feature map is rendered at ``render_scale`` times the teacher map's side
(the camera's intrinsics scaled accordingly), area-averaged down to the teacher's grid and
then decoded -- Feature 3DGS renders at image resolution and resizes to the teacher's grid;
with coarse teachers (a 16x16 map here) rendering at image resolution buys nothing but cost.
Pooling before decoding is exact because both are linear. Pixels no Gaussian covers get a
learned background feature, composited like 3DGS's background colour
(``f = sum_i w_i f_i + (1 - alpha) f_bg``): the decoded map is then an affine function of
weights that sum to one, so the affine decoder commutes with compositing.

Initialisation (``init="project"``, this package's addition for short CPU runs): each
Gaussian's centre is projected into the training views, the teacher maps are sampled where
the centre is visible (in front of the view's depth map, inside its mask), and averaged;
the subspace decoder starts as the top-``F`` principal directions of those features (bias
= their mean) and the Gaussians' features as their coordinates. Training then refines
features and decoder (and, with ``train_geometry``, the Gaussians themselves under the RGB
loss as well).
"""

from __future__ import annotations

import copy
import time
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .cameras import Camera
from .gaussians import Gaussians
from .metrics import photometric_loss
from .rasterize import rasterize_gaussians
from .scenes import Scene
from .teacher import Teacher, teacher_maps

__all__ = [
    "FeatureDecoder",
    "FeatureField",
    "FeatureFieldConfig",
    "cosine_fidelity",
    "feature_fidelity",
    "query_at",
    "render_feature_map",
    "segment_by_query",
    "segment_gaussians",
    "train_feature_field",
]

INIT_METHODS = ("project", "random")
REGIONS = ("object", "all")


@dataclass
class FeatureFieldConfig:
    """Hyper-parameters of :func:`train_feature_field`.

    ``dim``: subspace width ``F`` (None: the teacher's width with an identity decoder, the
    "full" variant). ``steps``: optimisation steps, one random training view each.
    ``lr_features`` (per-Gaussian and background features), ``lr_decoder``: Adam rates
    (Feature 3DGS uses 1e-3 and 1e-4 over 30k steps; CPU runs are ~100x shorter).
    ``render_scale``: features are rendered at this multiple of the teacher map's side.
    ``init``: ``"project"`` or ``"random"`` (small N(0, 0.01) features, default decoder).
    ``train_geometry``: also train the Gaussians under the 3DGS RGB loss (features then
    come from one full-resolution pass together with RGB, pooled to the teacher grid);
    False keeps the RGB geometry frozen. ``feature_weight``: weight of the feature L1 next
    to the RGB loss when training jointly (1.0 as in Feature 3DGS).
    """

    dim: int | None = 16
    steps: int = 300
    lr_features: float = 1e-2
    lr_decoder: float = 1e-3
    render_scale: int = 2
    init: str = "project"
    train_geometry: bool = False
    feature_weight: float = 1.0
    seed: int = 0

    def __post_init__(self) -> None:
        if self.dim is not None and (
            isinstance(self.dim, bool) or not isinstance(self.dim, int) or self.dim <= 0
        ):
            raise ValueError(f"dim: expected a positive int or None, got {self.dim!r}")
        for name in ("steps", "render_scale"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v <= 0:
                raise ValueError(f"{name}: expected a positive int, got {v!r}")
        if self.init not in INIT_METHODS:
            raise ValueError(f"init: expected one of {INIT_METHODS}, got {self.init!r}")
        for name in ("lr_features", "lr_decoder", "feature_weight"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name}: expected a positive number, got {getattr(self, name)!r}")


class FeatureDecoder(nn.Module):
    """The 1x1 convolution from the ``in_dim``-d subspace to the teacher's ``out_dim``.

    ``identity=True`` (requires ``in_dim == out_dim``) is the full-width variant: no
    parameters, the rendered features are the prediction. Applies to the last axis:
    ``[..., in_dim] -> [..., out_dim]``; :meth:`decode_map` to channel-first maps.
    """

    def __init__(self, in_dim: int, out_dim: int, *, identity: bool = False) -> None:
        super().__init__()
        if identity and in_dim != out_dim:
            raise ValueError(f"in_dim: identity decoder needs in_dim == out_dim = {out_dim}, "
                             f"got {in_dim}")  # fmt: skip
        self.in_dim, self.out_dim, self.identity = in_dim, out_dim, identity
        if identity:
            self.weight = self.bias = None
        else:
            conv = nn.Conv2d(in_dim, out_dim, 1)  # PyTorch's conv initialisation
            self.weight = nn.Parameter(conv.weight.detach()[:, :, 0, 0].clone())  # [out, in]
            self.bias = nn.Parameter(conv.bias.detach().clone())  # [out]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] != self.in_dim:
            raise ValueError(f"x: expected last dim {self.in_dim}, got shape {list(x.shape)}")
        return x if self.identity else F.linear(x, self.weight, self.bias)

    def decode_map(self, x: torch.Tensor) -> torch.Tensor:
        """``[in_dim, h, w] -> [out_dim, h, w]``."""
        return self(x.movedim(0, -1)).movedim(-1, 0)


class FeatureField(nn.Module):
    """Gaussians with per-Gaussian features, a background feature and a decoder.

    Attributes:
        gaussians: :class:`Gaussians` whose ``features`` is ``[N, F]``.
        background: ``[F]`` feature of pixels no Gaussian covers.
        decoder: :class:`FeatureDecoder` ``F -> C``.
        map_size: side ``h = w`` of the teacher grid the field was trained on.
    """

    def __init__(
        self, gaussians: Gaussians, background: torch.Tensor, decoder: FeatureDecoder,
        map_size: int,
    ) -> None:  # fmt: skip
        super().__init__()
        if gaussians.features is None or gaussians.features.shape[1] != decoder.in_dim:
            got = None if gaussians.features is None else list(gaussians.features.shape)
            raise ValueError(f"gaussians: expected features [N, {decoder.in_dim}], got {got}")
        if background.shape != (decoder.in_dim,):
            raise ValueError(f"background: expected shape [{decoder.in_dim}], "
                             f"got {list(background.shape)}")  # fmt: skip
        self.gaussians = gaussians
        self.background = nn.Parameter(background.detach().clone())
        self.decoder = decoder
        self.map_size = map_size

    @property
    def dim(self) -> int:
        """Width ``F`` of the rendered features."""
        return self.decoder.in_dim

    @property
    def out_dim(self) -> int:
        """Teacher width ``C`` of the decoded features."""
        return self.decoder.out_dim


def _scaled_camera(camera: Camera, width: int, height: int) -> torch.Tensor:
    """Intrinsics of ``camera`` for a ``width x height`` image of the same field of view
    (pixel edges scale with the image, so the +0.5 pixel-centre convention is preserved)."""
    K = camera.K.clone()
    K[0] *= width / camera.width
    K[1] *= height / camera.height
    return K


def _render(
    field: FeatureField, camera: Camera, width: int, height: int, *,
    background: torch.Tensor | None = None, geometry_grad: bool = False,
):  # fmt: skip
    """One pass of RGB + features at ``width x height``; returns (RenderOutput, features
    ``[F, height, width]`` with the background feature composited)."""
    g = field.gaussians
    geo = [g.means, g.quats, g.log_scales, g.opacity_logits, g.sh]
    if not geometry_grad:
        # frozen geometry: no autograd work on the splats' shapes, only on the features
        geo = [t.detach() for t in geo]
    K = _scaled_camera(camera, width, height)
    out = rasterize_gaussians(*geo, camera.viewmat, K, width, height, features=g.features,
                              background=background, eps2d=g.eps2d, checkpoint=False)  # fmt: skip
    feats = out.features + (1.0 - out.alpha)[..., None] * field.background
    return out, feats.movedim(-1, 0)


def render_feature_map(
    field: FeatureField, camera: Camera, *, render_scale: int = 2, decode: bool = True
) -> torch.Tensor:
    """The field's feature map of ``camera`` on the teacher grid.

    Rendered at ``render_scale * field.map_size`` pixels square (RGB in the same pass),
    area-averaged to ``map_size x map_size`` and, if ``decode``, decoded.

    Returns:
        ``[C, h, w]`` decoded (``[F, h, w]`` with ``decode=False``), ``h = w = map_size``.
    """
    if not isinstance(field, FeatureField):
        raise TypeError(f"field: expected a FeatureField, got {type(field).__name__}")
    if isinstance(render_scale, bool) or not isinstance(render_scale, int) or render_scale < 1:
        raise ValueError(f"render_scale: expected a positive int, got {render_scale!r}")
    size = field.map_size * render_scale
    _, feats = _render(field, camera, size, size)
    low = F.avg_pool2d(feats[None], render_scale)[0] if render_scale > 1 else feats
    return field.decoder.decode_map(low) if decode else low


def _resolve_maps(scene: Scene, teacher: Teacher | torch.Tensor) -> torch.Tensor:
    if isinstance(teacher, Teacher):
        return teacher_maps(scene, teacher)
    if not isinstance(teacher, torch.Tensor):
        raise TypeError(f"teacher: expected a Teacher or a tensor, got {type(teacher).__name__}")
    if teacher.ndim != 4 or teacher.shape[0] != len(scene.views) or \
            teacher.shape[2] != teacher.shape[3]:  # fmt: skip
        raise ValueError(f"teacher: expected maps [{len(scene.views)}, C, h, h] (one per view), "
                         f"got {list(teacher.shape)}")  # fmt: skip
    return teacher.float()


def _object_coverage(scene: Scene, index: int, size: int) -> torch.Tensor | None:
    """Fraction ``[size, size]`` of each teacher cell covered by the view's object mask."""
    mask = scene.views[index].mask
    if mask is None:
        return None
    return F.adaptive_avg_pool2d(mask.float()[None, None], size)[0, 0]


@torch.no_grad()
def _project_init(
    gaussians: Gaussians, scene: Scene, maps: torch.Tensor, train_ids: Sequence[int]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-Gaussian teacher features ``[N, C]`` averaged over the training views that see the
    centre, and the mean background feature ``[C]``."""
    means = gaussians.means.detach()
    n, c = means.shape[0], maps.shape[1]
    total, count = means.new_zeros(n, c), means.new_zeros(n)
    bg_total, bg_count = maps.new_zeros(c), 0.0
    for i in train_ids:
        view = scene.views[i]
        cam = view.camera
        pix, z = cam.project(means)
        inside = (z > 0) & (pix[:, 0] >= 0) & (pix[:, 0] < cam.width) & \
            (pix[:, 1] >= 0) & (pix[:, 1] < cam.height)  # fmt: skip
        col = pix[:, 0].long().clamp(0, cam.width - 1)
        row = pix[:, 1].long().clamp(0, cam.height - 1)
        if view.depth is not None:
            # visible = not behind the surface the view's depth map saw (2 % slack)
            surface = view.depth[row, col]
            inside &= (surface > 0) & (z <= surface * 1.02)
        if view.mask is not None:
            inside &= view.mask[row, col]
        grid = torch.stack([pix[:, 0] / cam.width, pix[:, 1] / cam.height], -1) * 2 - 1
        sampled = F.grid_sample(maps[i][None], grid[None, None].to(maps.dtype),
                                mode="bilinear", align_corners=False)[0, :, 0].T  # [N, C]
        total += sampled * inside[:, None]
        count += inside
        cover = _object_coverage(scene, i, maps.shape[-1])
        if cover is not None:
            bg = cover < 0.5
            bg_total += maps[i][:, bg].sum(1)
            bg_count += float(bg.sum())
    seen = count > 0
    mean_seen = total[seen].sum(0) / count[seen].sum() if seen.any() else maps.mean((0, 2, 3))
    feats = torch.where(seen[:, None], total / count.clamp_min(1)[:, None], mean_seen)
    background = bg_total / bg_count if bg_count else maps.new_zeros(c)
    return feats, background


def _init_field(
    gaussians: Gaussians, scene: Scene, maps: torch.Tensor, train_ids: Sequence[int],
    config: FeatureFieldConfig, generator: torch.Generator,
) -> FeatureField:  # fmt: skip
    n, c = gaussians.num_gaussians, maps.shape[1]
    dim = c if config.dim is None else config.dim
    decoder = FeatureDecoder(dim, c, identity=config.dim is None)
    if config.init == "project":
        feats, background = _project_init(gaussians, scene, maps, train_ids)
        if not decoder.identity:
            mean = feats.mean(0)
            # principal directions of the per-Gaussian features: the best rank-F affine
            # decoder for them in the least-squares sense
            _, _, vh = torch.linalg.svd(feats - mean, full_matrices=False)
            basis = vh[:dim].T  # [C, F] (fewer if N or C < F: pad with zeros)
            basis = torch.cat([basis, basis.new_zeros(c, dim - basis.shape[1])], 1)
            with torch.no_grad():
                decoder.weight.copy_(basis)
                decoder.bias.copy_(mean)
            feats, background = (feats - mean) @ basis, (background - mean) @ basis
    else:
        feats = torch.randn(n, dim, generator=generator) * 0.01
        background = torch.zeros(dim)
    g = copy.deepcopy(gaussians)
    with_features = Gaussians(g.means, g.quats, g.log_scales, g.opacity_logits, g.sh,
                              features=feats.to(g.means.dtype), eps2d=g.eps2d)  # fmt: skip
    return FeatureField(with_features, background, decoder, maps.shape[-1])


def train_feature_field(
    gaussians: Gaussians,
    scene: Scene,
    teacher: Teacher | torch.Tensor,
    config: FeatureFieldConfig | None = None,
    *,
    log_every: int = 50,
) -> tuple[FeatureField, list[dict]]:
    """Distil ``teacher``'s maps of ``scene.train_views`` into a feature field on ``gaussians``.

    Args:
        gaussians: trained Gaussians (copied; their own ``features`` are ignored).
        scene: the views (and, for ``init="project"``, their depth / masks).
        teacher: a :class:`~subspace_3dgs.teacher.Teacher` (maps computed and cached per
            scene) or precomputed maps ``[V, C, h, h]``, one per view of ``scene.views``.
        config: :class:`FeatureFieldConfig` (defaults: 16-d subspace, frozen geometry).
        log_every: a history entry every this many steps.

    Returns:
        ``(field, history)``; entries ``{"step", "feature_l1", "seconds"}`` with the feature
        L1 averaged over the steps since the previous entry.
    """
    config = config or FeatureFieldConfig()
    if not isinstance(gaussians, Gaussians):
        raise TypeError(f"gaussians: expected a Gaussians module, got {type(gaussians).__name__}")
    if log_every <= 0:
        raise ValueError(f"log_every: expected a positive int, got {log_every!r}")
    maps = _resolve_maps(scene, teacher)
    held = set(scene.test_indices)
    train_ids = [i for i in range(len(scene.views)) if i not in held]
    if not train_ids:
        raise ValueError("scene: expected at least one training view")
    generator = torch.Generator().manual_seed(config.seed)
    field = _init_field(gaussians, scene, maps, train_ids, config, generator)
    g = field.gaussians
    groups = [{"params": [g.features, field.background], "lr": config.lr_features}]
    if not field.decoder.identity:
        groups.append({"params": list(field.decoder.parameters()), "lr": config.lr_decoder})
    if config.train_geometry:
        groups += [{"params": [g.means], "lr": 1.6e-5}, {"params": [g.sh], "lr": 2.5e-3},
                   {"params": [g.opacity_logits], "lr": 5e-2},
                   {"params": [g.log_scales], "lr": 5e-3}, {"params": [g.quats], "lr": 1e-3}]
    optimizer = torch.optim.Adam(groups, eps=1e-15)
    bg_rgb = torch.tensor(scene.background, dtype=torch.float32)
    history, window, tic = [], [], time.perf_counter()
    for step in range(1, config.steps + 1):
        i = train_ids[int(torch.randint(len(train_ids), (1,), generator=generator))]
        view = scene.views[i]
        if config.train_geometry:
            # one pass at image resolution gives the RGB loss and the features together
            cam = view.camera
            out, feats = _render(field, cam, cam.width, cam.height, background=bg_rgb,
                                 geometry_grad=True)  # fmt: skip
            low = F.adaptive_avg_pool2d(feats[None], field.map_size)[0]
            rgb_loss = photometric_loss(out.rgb, view.rgb)
        else:
            low = render_feature_map(field, view.camera, render_scale=config.render_scale,
                                     decode=False)  # fmt: skip
            rgb_loss = None
        feature_l1 = (field.decoder.decode_map(low) - maps[i]).abs().mean()
        loss = feature_l1 if rgb_loss is None else rgb_loss + config.feature_weight * feature_l1
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        window.append(float(feature_l1.detach()))
        if step % log_every == 0 or step == config.steps:
            history.append({"step": step, "feature_l1": sum(window) / len(window),
                            "seconds": time.perf_counter() - tic})  # fmt: skip
            window = []
    return field, history


def cosine_fidelity(
    predicted: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None = None
) -> float:
    """Mean per-pixel cosine similarity of feature maps.

    Args:
        predicted, target: ``[..., C, h, w]`` maps of the same shape.
        mask: bool ``[..., h, w]`` pixels to average over (None: all).

    Returns:
        the mean over (masked) pixels of ``cos(predicted[:, y, x], target[:, y, x])``; a
        pixel where either vector is zero counts as 0 (``eps = 1e-8`` in the norms).
    """
    if predicted.shape != target.shape or predicted.ndim < 3:
        raise ValueError(f"predicted: expected the shape of target {list(target.shape)} "
                         f"([..., C, h, w]), got {list(predicted.shape)}")  # fmt: skip
    cos = F.cosine_similarity(predicted.float(), target.float(), dim=-3, eps=1e-8)
    if mask is None:
        return float(cos.mean())
    if mask.shape != cos.shape:
        raise ValueError(f"mask: expected shape {list(cos.shape)}, got {list(mask.shape)}")
    if not mask.any():
        raise ValueError("mask: expected at least one selected pixel, got none")
    return float(cos[mask].mean())


@torch.no_grad()
def feature_fidelity(
    field: FeatureField,
    scene: Scene,
    teacher: Teacher | torch.Tensor,
    *,
    views: Sequence[int] | None = None,
    region: str = "object",
    render_scale: int = 2,
) -> float:
    """Held-out feature-field fidelity: mean per-pixel cosine similarity to the teacher.

    Protocol: for each view of ``views`` (default ``scene.test_indices``), the decoded map
    of :func:`render_feature_map` (rendered at ``render_scale * map_size``, area-averaged to
    the teacher grid) is compared with the teacher map on the teacher's grid
    (``map_size x map_size``, e.g. 16x16 for MobileNetV2 stage 5 at 512 px). ``region``:
    ``"object"`` averages over the cells at least half covered by the view's object mask
    (the background is a constant colour the teacher encodes arbitrarily), ``"all"`` over
    every cell. The mean is over all selected cells of all views pooled (not per view).
    """
    maps = _resolve_maps(scene, teacher)
    if region not in REGIONS:
        raise ValueError(f"region: expected one of {REGIONS}, got {region!r}")
    ids = list(scene.test_indices if views is None else views)
    if not ids:
        raise ValueError("views: expected at least one view index, got none")
    if maps.shape[1] != field.out_dim or maps.shape[-1] != field.map_size:
        raise ValueError(f"teacher: expected maps [V, {field.out_dim}, {field.map_size}, "
                         f"{field.map_size}] (the field's), got {list(maps.shape)}")  # fmt: skip
    predicted = torch.stack([render_feature_map(field, scene.views[i].camera,
                                                render_scale=render_scale) for i in ids])
    mask = None
    if region == "object":
        covers = [_object_coverage(scene, i, field.map_size) for i in ids]
        if any(c is None for c in covers):
            raise ValueError("region: 'object' needs view masks; the scene lacks some, use 'all'")
        mask = torch.stack(covers) >= 0.5
    return cosine_fidelity(predicted, maps[ids], mask)


def query_at(feature_map: torch.Tensor, x: int, y: int) -> torch.Tensor:
    """The feature ``[C]`` at pixel column ``x``, row ``y`` of a ``[C, h, w]`` map (a click)."""
    if feature_map.ndim != 3:
        raise ValueError(f"feature_map: expected [C, h, w], got {list(feature_map.shape)}")
    h, w = feature_map.shape[1:]
    if not (0 <= x < w and 0 <= y < h):
        raise ValueError(f"x, y: expected a pixel inside {w}x{h}, got ({x}, {y})")
    return feature_map[:, y, x]


def segment_by_query(
    feature_map: torch.Tensor, query: torch.Tensor, threshold: float = 0.5
) -> torch.Tensor:
    """Mask of the pixels whose feature resembles ``query``.

    Args:
        feature_map: ``[C, h, w]`` (e.g. :func:`render_feature_map`).
        query: ``[C]`` (e.g. :func:`query_at` on a clicked pixel, or a mean over a region).
        threshold: cosine similarity at or above which a pixel is selected, in [-1, 1].

    Returns:
        bool ``[h, w]``.
    """
    if feature_map.ndim != 3:
        raise ValueError(f"feature_map: expected [C, h, w], got {list(feature_map.shape)}")
    if query.shape != feature_map.shape[:1]:
        raise ValueError(f"query: expected shape [{feature_map.shape[0]}], got "
                         f"{list(query.shape)}")  # fmt: skip
    if not -1.0 <= threshold <= 1.0:
        raise ValueError(f"threshold: expected a value in [-1, 1], got {threshold!r}")
    sim = F.cosine_similarity(feature_map, query[:, None, None].to(feature_map), dim=0, eps=1e-8)
    return sim >= threshold


@torch.no_grad()
def segment_gaussians(field: FeatureField, query: torch.Tensor,
                      threshold: float = 0.5) -> torch.Tensor:  # fmt: skip
    """Bool ``[N]``: Gaussians whose decoded feature has cosine >= ``threshold`` with
    ``query [C]`` (3-D selection, e.g. to extract or delete a part)."""
    if query.shape != (field.out_dim,):
        raise ValueError(f"query: expected shape [{field.out_dim}], got {list(query.shape)}")
    decoded = field.decoder(field.gaussians.features)
    sim = F.cosine_similarity(decoded, query[None].to(decoded), dim=1, eps=1e-8)
    return sim >= threshold

