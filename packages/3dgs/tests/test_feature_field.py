import pytest
import torch

from subspace_3dgs.feature_field import (
    FeatureDecoder,
    FeatureField,
    FeatureFieldConfig,
    cosine_fidelity,
    feature_fidelity,
    query_at,
    render_feature_map,
    segment_by_query,
    segment_gaussians,
    train_feature_field,
)
from subspace_3dgs.gaussians import Gaussians
from subspace_3dgs.scenes import make_scene
from subspace_3dgs.train import initial_points


@pytest.fixture(scope="module")
def scene():
    return make_scene("icosphere", 8, 32, 32, seed=0)


@pytest.fixture(scope="module")
def gaussians(scene):
    xyz, rgb = initial_points(scene, "depth", 200, torch.Generator().manual_seed(0))
    return Gaussians.from_points(xyz, rgb, sh_degree=0, initial_opacity=0.6)


def _random_field(gaussians, dim, out_dim, map_size=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    feats = torch.randn(gaussians.num_gaussians, dim, generator=g)
    with_features = Gaussians(gaussians.means, gaussians.quats, gaussians.log_scales,
                              gaussians.opacity_logits, gaussians.sh, features=feats)
    decoder = FeatureDecoder(dim, out_dim)
    with torch.no_grad():
        decoder.weight.copy_(torch.randn(out_dim, dim, generator=g))
        decoder.bias.copy_(torch.randn(out_dim, generator=g))
    return FeatureField(with_features, torch.randn(dim, generator=g), decoder, map_size)


@torch.no_grad()
def test_decoding_commutes_with_compositing(scene, gaussians):
    # the rendered weights plus the background's (1 - alpha) sum to one, so decoding the
    # composited map equals compositing the decoded per-Gaussian features (affine decoder)
    small = _random_field(gaussians, 4, 12)
    dec = small.decoder
    full = FeatureField(
        Gaussians(gaussians.means, gaussians.quats, gaussians.log_scales,
                  gaussians.opacity_logits, gaussians.sh,
                  features=dec(small.gaussians.features)),
        dec(small.background), FeatureDecoder(12, 12, identity=True), small.map_size,
    )
    for view in scene.views[:3]:
        a = render_feature_map(small, view.camera, render_scale=2)
        b = render_feature_map(full, view.camera, render_scale=2)
        assert a.shape == (12, 8, 8)
        assert torch.allclose(a, b, atol=1e-4, rtol=1e-4)
        # and the scene really is covered only partly (the background term matters)
        low = render_feature_map(small, view.camera, render_scale=1, decode=False)
        assert not torch.allclose(low, small.background[:, None, None].expand_as(low))


@torch.no_grad()
def _teacher_from(field, scene):
    return torch.stack([render_feature_map(field, v.camera) for v in scene.views])


def test_perfect_field_has_fidelity_one(scene, gaussians):
    field = _random_field(gaussians, 4, 12)
    maps = _teacher_from(field, scene)
    assert feature_fidelity(field, scene, maps, region="all") == pytest.approx(1.0, abs=1e-5)
    assert feature_fidelity(field, scene, maps, region="object") == pytest.approx(1.0, abs=1e-5)
    other = _teacher_from(_random_field(gaussians, 4, 12, seed=1), scene)
    assert feature_fidelity(field, scene, other, region="all") < 0.9


def test_cosine_fidelity_formula():
    torch.manual_seed(0)
    pred = torch.randn(2, 5, 3, 3)
    assert cosine_fidelity(3.0 * pred, pred) == pytest.approx(1.0, abs=1e-6)
    assert cosine_fidelity(-pred, pred) == pytest.approx(-1.0, abs=1e-6)
    e0, e1 = torch.zeros(5, 1, 2), torch.zeros(5, 1, 2)
    e0[0], e1[1, 0, 0], e1[0, 0, 1] = 1.0, 1.0, 1.0
    # pixel 0: orthogonal (0), pixel 1: identical (1)
    assert cosine_fidelity(e0, e1) == pytest.approx(0.5)
    assert cosine_fidelity(e0, e1, torch.tensor([[False, True]])) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="mask"):
        cosine_fidelity(e0, e1, torch.zeros(1, 2, dtype=torch.bool))


def test_training_lowers_the_feature_loss(scene, gaussians):
    maps = _teacher_from(_random_field(gaussians, 3, 12, seed=2), scene)
    cfg = FeatureFieldConfig(dim=3, steps=40, lr_features=0.2, lr_decoder=0.05, init="random")
    field, hist = train_feature_field(gaussians, scene, maps, cfg, log_every=10)
    assert field.gaussians.features.shape == (200, 3) and field.out_dim == 12
    assert hist[-1]["feature_l1"] < 0.5 * hist[0]["feature_l1"]
    # the RGB geometry stayed frozen
    assert torch.equal(field.gaussians.means, gaussians.means)
    # projecting the teacher onto the Gaussians starts closer than random features
    proj, _ = train_feature_field(gaussians, scene, maps,
                                  FeatureFieldConfig(dim=3, steps=1, lr_features=1e-9,
                                                     lr_decoder=1e-9))
    rand, _ = train_feature_field(gaussians, scene, maps,
                                  FeatureFieldConfig(dim=3, steps=1, init="random",
                                                     lr_features=1e-9, lr_decoder=1e-9))
    assert feature_fidelity(proj, scene, maps) > feature_fidelity(rand, scene, maps) + 0.2


def test_full_variant_and_joint_training(scene, gaussians):
    maps = _teacher_from(_random_field(gaussians, 3, 6, seed=3), scene)
    full, _ = train_feature_field(gaussians, scene, maps, FeatureFieldConfig(dim=None, steps=2))
    assert full.dim == 6 and full.decoder.identity and not list(full.decoder.parameters())
    joint, hist = train_feature_field(
        gaussians, scene, maps, FeatureFieldConfig(dim=2, steps=2, train_geometry=True))
    assert not torch.equal(joint.gaussians.means, gaussians.means)
    assert len(hist) == 1


def test_query_segmentation_separates_two_clusters():
    torch.manual_seed(0)
    a, b = torch.zeros(8), torch.zeros(8)
    a[0], b[1] = 1.0, 1.0
    fmap = torch.empty(8, 6, 10)
    left = torch.zeros(6, 10, dtype=torch.bool)
    left[:, :4] = True
    fmap[:, left] = a[:, None] + 0.05 * torch.randn(8, int(left.sum()))
    fmap[:, ~left] = b[:, None] + 0.05 * torch.randn(8, int((~left).sum()))
    mask = segment_by_query(fmap, query_at(fmap, x=1, y=3))
    assert torch.equal(mask, left)
    assert torch.equal(segment_by_query(fmap, query_at(fmap, x=8, y=0)), ~left)
    with pytest.raises(ValueError, match="x, y"):
        query_at(fmap, x=10, y=0)


def test_segment_gaussians_by_decoded_feature(gaussians):
    field = _random_field(gaussians, 2, 4)
    side = gaussians.means[:, 0] > 0
    with torch.no_grad():
        field.decoder.weight.copy_(torch.eye(4, 2))
        field.decoder.bias.zero_()
        field.gaussians.features.copy_(torch.where(side[:, None], torch.tensor([1.0, 0.1]),
                                                   torch.tensor([0.1, 1.0])))
    assert torch.equal(segment_gaussians(field, torch.tensor([1.0, 0.0, 0.0, 0.0])), side)


def test_bad_arguments(scene, gaussians):
    with pytest.raises(ValueError, match="dim"):
        FeatureFieldConfig(dim=0)
    with pytest.raises(ValueError, match="init"):
        FeatureFieldConfig(init="pca")
    with pytest.raises(ValueError, match="teacher"):
        train_feature_field(gaussians, scene, torch.zeros(3, 4, 8, 8))
    with pytest.raises(ValueError, match="in_dim"):
        FeatureDecoder(4, 8, identity=True)
