"""LiTClip: pooling, zero-shot weights, projection-only checkpoints, InfoNCE, toy training.

Tiny random towers stand in for MobileNetV2 / MiniLM (the real ones load in ~15 s)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from subspace_core.io import ChecksumError
from subspace_safety.lit_clip import LiTClip, info_nce_loss, pool_tokens

IMAGE_DIM, TEXT_DIM, EMBED = 12, 10, 6


def assert_close(actual: torch.Tensor, expected: torch.Tensor) -> None:
    # not torch.testing.assert_close: its first call imports torch.distributed (seconds)
    assert actual.shape == expected.shape, (actual.shape, expected.shape)
    assert torch.allclose(actual, expected, rtol=1e-5, atol=1e-6), (actual - expected).abs().max()


class TinyImageTower(nn.Module):
    """``[B, 1|3, H, W]`` -> ``[B, IMAGE_DIM]``: 4x4 average pool, grey, random linear map."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(16, IMAGE_DIM)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = images.float().mean(1, keepdim=True)
        return self.fc(F.adaptive_avg_pool2d(x, 4).flatten(1))


class TinyTextTower(nn.Module):
    """Whitespace words -> a random embedding per word; padded to the longest text."""

    def __init__(self) -> None:
        super().__init__()
        self.vocab: dict[str, int] = {}
        self.embedding = nn.Embedding(64, TEXT_DIM)

    def forward(self, texts):
        ids = [[self.vocab.setdefault(w, len(self.vocab)) for w in t.split()] for t in texts]
        length = max(len(i) for i in ids)
        padded = torch.tensor([i + [0] * (length - len(i)) for i in ids])
        mask = torch.tensor([[True] * len(i) + [False] * (length - len(i)) for i in ids])
        # padding positions get a large junk value: pooling must ignore them
        hidden = self.embedding(padded).masked_fill(~mask[..., None], 1e3)
        return hidden, mask


def tiny_clip(seed: int = 0) -> LiTClip:
    torch.manual_seed(seed)
    return LiTClip(TinyImageTower(), TinyTextTower(), image_dim=IMAGE_DIM, text_dim=TEXT_DIM,
                   embed_dim=EMBED)


def test_text_embedding_is_pooling_of_token_embeddings():
    model = tiny_clip()
    texts = ["a photo of a dress", "boot", "the digit three written by hand"]
    tokens, mask = model.encode_text_tokens(texts)
    assert tokens.shape == (3, 6, EMBED) and mask.shape == (3, 6)
    assert mask.sum(1).tolist() == [5, 1, 6]
    expected = torch.stack([F.normalize(tokens[i, mask[i]].mean(0), dim=0) for i in range(3)])
    emb = model.encode_text(texts)
    assert_close(emb, expected)
    assert_close(pool_tokens(tokens, mask), emb)
    # dropping a token (what SAFREE's filter does to the mask) changes the embedding
    keep = mask.clone()
    keep[0, 1] = False
    assert not torch.allclose(pool_tokens(tokens, keep)[0], emb[0])
    # text_proj is affine, so pooling then projecting (training on cached features) agrees
    hidden, hmask = model.text_tower(texts)
    pooled = (hidden * hmask[..., None]).sum(1) / hmask.sum(1, keepdim=True)
    assert_close(model.embed_text_features(pooled), emb)


def test_zero_shot_classifier_is_normalised_mean_of_template_embeddings():
    model = tiny_clip()
    classes, templates = ["coat", "sandal", "bag"], ["a {} .", "a photo of a {}", "{}"]
    weights = model.zero_shot_classifier(classes, templates)
    for c, name in enumerate(classes):
        emb = model.encode_text([t.format(name) for t in templates])
        assert_close(weights[c], F.normalize(emb.mean(0), dim=0))
    assert_close(weights.norm(dim=1), torch.ones(3))
    with pytest.raises(ValueError, match="templates"):
        model.zero_shot_classifier(classes, ["no placeholder"])


def test_save_load_round_trips_only_the_projections(tmp_path):
    model = tiny_clip(seed=0)
    images = torch.rand(5, 1, 28, 28)
    texts = ["a coat", "an ankle boot"]
    assert set(model.state_dict()) == {"image_proj.weight", "image_proj.bias",
                                       "text_proj.weight", "text_proj.bias", "logit_scale"}
    with torch.no_grad():
        model.logit_scale.fill_(2.5)
    digest = model.save_projections(tmp_path / "p.safetensors")
    from safetensors.torch import load_file

    stored = load_file(str(tmp_path / "p.safetensors"))
    assert set(stored) == set(model.state_dict())
    # same towers, other heads: after loading, every output matches the saved model
    other = LiTClip(model.image_tower, model.text_tower, image_dim=IMAGE_DIM,
                    text_dim=TEXT_DIM, embed_dim=EMBED)
    assert not torch.allclose(other.encode_image(images), model.encode_image(images))
    other.load_projections(tmp_path / "p.safetensors", sha256=digest)
    assert_close(other.encode_image(images), model.encode_image(images))
    assert_close(other.encode_text(texts), model.encode_text(texts))
    assert other.logit_scale.item() == 2.5
    with pytest.raises(ChecksumError):
        other.load_projections(tmp_path / "p.safetensors", sha256="0" * 64)


def test_towers_are_frozen_and_outside_parameters():
    model = tiny_clip()
    names = {n for n, _ in model.named_parameters()}
    assert names == {"image_proj.weight", "image_proj.bias", "text_proj.weight",
                     "text_proj.bias", "logit_scale"}
    assert not any(p.requires_grad for p in model.image_tower.parameters())
    assert not model.text_tower.training
    model.to(torch.float64)
    assert model.image_tower.fc.weight.dtype == torch.float64  # towers follow .to()


def test_info_nce_matches_formula_on_2x2():
    img = F.normalize(torch.tensor([[1.0, 0.2], [0.3, 1.0]]), dim=1)
    txt = F.normalize(torch.tensor([[0.9, -0.1], [0.5, 0.8]]), dim=1)
    scale = torch.tensor(math.log(10.0))
    s = 10.0 * (img @ txt.T)
    a, b, c, d = s[0, 0].item(), s[0, 1].item(), s[1, 0].item(), s[1, 1].item()
    i2t = -(a - math.log(math.exp(a) + math.exp(b))) - (d - math.log(math.exp(c) + math.exp(d)))
    t2i = -(a - math.log(math.exp(a) + math.exp(c))) - (d - math.log(math.exp(b) + math.exp(d)))
    expected = (i2t / 2 + t2i / 2) / 2
    assert info_nce_loss(img, txt, scale).item() == pytest.approx(expected, rel=1e-5)
    # one shared label: both columns are positives with weight 1/2 each
    def lse(u: float, v: float) -> float:
        return math.log(math.exp(u) + math.exp(v))

    half = 0.5 * (a + b + c + d)
    shared = (-half + lse(a, b) + lse(c, d)) / 2
    shared_t = (-half + lse(a, c) + lse(b, d)) / 2
    got = info_nce_loss(img, txt, scale, labels=torch.tensor([3, 3])).item()
    assert got == pytest.approx((shared + shared_t) / 2, rel=1e-5)
    # distinct labels reduce to plain InfoNCE
    got = info_nce_loss(img, txt, scale, labels=torch.tensor([0, 1])).item()
    assert got == pytest.approx(expected, rel=1e-5)


def test_few_steps_on_separable_toy_data_raise_retrieval_accuracy():
    torch.manual_seed(1)
    model = tiny_clip(seed=1)
    names = ["red", "green", "blue", "black"]
    centers = torch.randn(4, IMAGE_DIM) * 3
    labels = torch.arange(4).repeat(32)
    feats = centers[labels] + 0.3 * torch.randn(len(labels), IMAGE_DIM)
    texts = [f"a {n} thing" for n in names]

    def retrieval() -> float:
        with torch.no_grad():
            sims = model.embed_image_features(feats) @ model.encode_text(texts).T
        return float((sims.argmax(1) == labels).float().mean())

    before = retrieval()
    # plain gradient descent on the projections (torch.optim's first step costs seconds of
    # lazy imports; an unclipped GD step on the logit scale overshoots)
    model.logit_scale.requires_grad_(False)
    for _ in range(40):
        tokens, mask = model.encode_text_tokens([texts[i] for i in labels])
        loss = info_nce_loss(model.embed_image_features(feats), pool_tokens(tokens, mask),
                             model.logit_scale, labels=labels)
        model.zero_grad()
        loss.backward()
        with torch.no_grad():
            for p in (model.image_proj.weight, model.image_proj.bias,
                      model.text_proj.weight, model.text_proj.bias):
                p -= 0.1 * p.grad
    after = retrieval()
    assert before < 0.6 and after == 1.0, (before, after)
    assert loss.item() < 3.6  # the floor is log(32): 32 positives per row


def test_encode_image_is_differentiable_in_the_pixels():
    model = tiny_clip()
    images = torch.rand(2, 1, 28, 28, requires_grad=True)
    model.encode_image(images).sum().backward()
    assert images.grad is not None and images.grad.abs().sum() > 0


def test_bad_inputs_raise_naming_the_argument():
    model = tiny_clip()
    with pytest.raises(TypeError, match="texts"):
        model.encode_text("a single string")
    with pytest.raises(ValueError, match="images"):
        model.encode_image(torch.rand(2, 2, 28, 28))
    with pytest.raises(ValueError, match="features"):
        model.embed_image_features(torch.rand(2, IMAGE_DIM + 1))
    with pytest.raises(ValueError, match="mask"):
        pool_tokens(torch.rand(1, 3, 2), torch.zeros(1, 3, dtype=torch.bool))
    with pytest.raises(ValueError, match="labels"):
        info_nce_loss(torch.rand(3, 2), torch.rand(3, 2), torch.tensor(0.0), torch.tensor([1]))
    with pytest.raises(ValueError, match="embed_dim"):
        LiTClip(embed_dim=0)


def test_zoo_entry_builds_the_heads_and_zero_shot_uses_own_classes():
    from subspace_core.zoo import create_model
    from subspace_safety.zoo import zero_shot_accuracy

    model = create_model("safety/lit_clip_mnv2_minilm.fmnist_mnist", image_tower=TinyImageTower(),
                         text_tower=TinyTextTower(), image_dim=IMAGE_DIM, text_dim=TEXT_DIM,
                         embed_dim=EMBED)
    assert isinstance(model, LiTClip)
    # images placed exactly at the class-weight directions are classified correctly
    classes, templates = ["cat", "dog", "cow"], ["a {}", "the {} here"]
    weights = model.zero_shot_classifier(classes, templates)
    feats = torch.linalg.lstsq(model.image_proj.weight.detach(),
                               (weights - model.image_proj.bias.detach()).T).solution.T
    acc = zero_shot_accuracy(model, "unused", classes, templates, features=feats,
                             labels=torch.arange(3))
    assert acc == 1.0


def test_feature_cache_is_written_once_and_keyed(tmp_path, monkeypatch):
    from subspace_safety import embeddings_cache

    monkeypatch.setattr(embeddings_cache, "cache_dir", lambda: tmp_path)

    class KeyedTower(TinyImageTower):
        calls = 0
        size = 28

        def forward(self, images):
            KeyedTower.calls += 1
            return super().forward(images)

        def cache_key(self):
            return {"tower": "tiny", "size": self.size}

    torch.manual_seed(0)
    tower = KeyedTower()
    feats, labels = embeddings_cache.image_features(tower, "fashion_mnist", "test", limit=40,
                                                    batch_size=16)
    assert feats.shape == (40, IMAGE_DIM) and labels.shape == (40,)
    assert KeyedTower.calls == 3 and len(list(tmp_path.iterdir())) == 1
    again, labels_again = embeddings_cache.image_features(tower, "fashion_mnist", "test",
                                                          limit=40)
    assert KeyedTower.calls == 3  # read from the cache, tower not run
    assert torch.equal(again, feats) and torch.equal(labels_again, labels)
    tower.size = 32  # another key: recomputed into a second file
    embeddings_cache.image_features(tower, "fashion_mnist", "test", limit=40)
    assert KeyedTower.calls == 4 and len(list(tmp_path.iterdir())) == 2
    # towers without a key (random weights) are never cached
    embeddings_cache.image_features(TinyImageTower(), "fashion_mnist", "test", limit=8)
    assert len(list(tmp_path.iterdir())) == 2
