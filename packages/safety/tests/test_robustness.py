import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from subspace_safety.eigenshield import PCAProjection
from subspace_safety.robustness import (
    EigenShieldEvalConfig,
    attack_success_rate,
    clean_accuracy,
    fit_defenses,
    zero_shot_logits,
    zero_shot_model_fn,
)


def _onehot_logits(pred, c=3):
    return F.one_hot(torch.as_tensor(pred), c).float()


def test_clean_accuracy_counts_top1():
    labels = torch.tensor([0, 1, 2, 2])
    assert clean_accuracy(_onehot_logits([0, 1, 0, 2]), labels) == pytest.approx(0.75)
    with pytest.raises(ValueError, match="logits, labels"):
        clean_accuracy(_onehot_logits([0, 1]), labels)


def test_asr_counts_only_clean_correct_examples():
    labels = torch.tensor([0, 1, 2, 0, 1])
    clean = _onehot_logits([0, 1, 2, 1, 1])  # example 3 is wrong clean: excluded
    adv = _onehot_logits([1, 1, 0, 0, 2])  # flips 0, 2, 4; example 3 "recovers" -> ignored
    asr, n_correct = attack_success_rate(clean, adv, labels)
    assert n_correct == 4
    assert asr == pytest.approx(3 / 4)
    asr, n_correct = attack_success_rate(_onehot_logits([1, 0, 0, 1, 0]), adv, labels)
    assert n_correct == 0 and math.isnan(asr)
    with pytest.raises(ValueError, match="adv_logits"):
        attack_success_rate(clean, adv[:2], labels)


def test_zero_shot_logits_cosine_and_defense():
    gen = torch.Generator().manual_seed(0)
    emb = torch.randn(6, 8, generator=gen)
    classes = F.normalize(torch.randn(3, 8, generator=gen), dim=-1)
    logits = zero_shot_logits(emb, classes, 10.0)
    torch.testing.assert_close(logits, 10 * F.cosine_similarity(emb[:, None], classes[None],
                                                                dim=-1))
    # a projection onto the span of the class weights leaves the cosine's numerator alone
    # and shrinks the norm, so logits only grow in magnitude and the argmax is unchanged
    pca = PCAProjection().fit(classes, rank=3, center=False)
    defended = zero_shot_logits(emb, classes, 10.0, pca)
    assert torch.equal(defended.argmax(1), logits.argmax(1))
    assert bool((defended.abs() >= logits.abs() - 1e-5).all())
    with pytest.raises(ValueError, match="embeddings, classifier"):
        zero_shot_logits(emb[:, :4], classes, 1.0)


class _ToyClip(nn.Module):
    """A tiny differentiable stand-in: tower = linear map of the pixels to 6 features,
    embedding = normalize(linear(features))."""

    def __init__(self, side=4, dim=6, seed=0):
        super().__init__()
        gen = torch.Generator().manual_seed(seed)
        self.tower = nn.Parameter(torch.randn(side * side, dim, generator=gen))
        self.proj = nn.Parameter(torch.randn(dim, dim, generator=gen))
        self.logit_scale = nn.Parameter(torch.tensor(math.log(10.0)))

    def image_tower(self, images):
        return images.flatten(1) @ self.tower

    def embed_image_features(self, features):
        return F.normalize(features @ self.proj, dim=-1)

    def encode_image(self, images):
        return self.embed_image_features(self.image_tower(images))


def test_model_fn_is_differentiable_through_the_defense():
    model = _ToyClip()
    classes = F.normalize(torch.randn(3, 6, generator=torch.Generator().manual_seed(1)), dim=-1)
    images = torch.rand(5, 1, 4, 4, generator=torch.Generator().manual_seed(2))
    pca = PCAProjection().fit(model.encode_image(images).detach(), rank=2)
    x = images.clone().requires_grad_(True)
    out = zero_shot_model_fn(model, classes, pca)(x)
    assert out.shape == (5, 3)
    expected = 10.0 * F.normalize(pca(model.encode_image(images)), dim=-1) @ classes.T
    torch.testing.assert_close(out, expected)
    out.sum().backward()
    assert x.grad is not None and bool(x.grad.abs().sum() > 0)
    # in feature space the filter acts before the projection
    feats = model.image_tower(images).detach()
    pca_f = PCAProjection().fit(feats, rank=2)
    out_f = zero_shot_model_fn(model, classes, pca_f, space="features")(images)
    torch.testing.assert_close(out_f, 10.0 * model.embed_image_features(pca_f(feats)) @ classes.T)
    with pytest.raises(ValueError, match="space"):
        zero_shot_model_fn(model, classes, pca_f, space="pixels")


def test_fit_defenses_gives_eigenshield_and_equal_rank_pca():
    torch.manual_seed(0)
    model = _ToyClip(side=4, dim=6)
    # embeddings with 2 strong directions over isotropic noise: both clear the MP edge
    gen = torch.Generator().manual_seed(3)
    basis = torch.linalg.qr(torch.randn(6, 2, generator=gen)).Q
    fit = torch.randn(400, 2, generator=gen) * 3 @ basis.T + 0.1 * torch.randn(400, 6,
                                                                               generator=gen)
    classes = F.normalize(torch.randn(3, 6, generator=gen), dim=-1)
    images = torch.rand(8, 1, 4, 4, generator=gen)
    labels = torch.randint(0, 3, (8,), generator=gen)
    config = EigenShieldEvalConfig(n_cal=8, steps=2, calibration="noise", quantile=1.0)
    shield, pca, info = fit_defenses(model, classes, config, fit_vectors=fit,
                                     cal_images=images, cal_labels=labels)
    assert info["candidates"] == 2 and shield.rank == pca.rank == info["rank"] == 2
    # both keep the planted plane (projectors agree)
    planted = basis @ basis.T
    torch.testing.assert_close(shield.projector(), planted, atol=1e-2, rtol=0)
    torch.testing.assert_close(pca.projector(), planted, atol=1e-2, rtol=0)


def test_config_validation():
    with pytest.raises(ValueError, match="calibration"):
        EigenShieldEvalConfig(calibration="adversarial")
    with pytest.raises(ValueError, match="threat_models"):
        EigenShieldEvalConfig(threat_models=("blackbox",))
    with pytest.raises(ValueError, match="n_attack"):
        EigenShieldEvalConfig(n_attack=0)
    with pytest.raises(ValueError, match="eps"):
        EigenShieldEvalConfig(eps=(0.0,))
