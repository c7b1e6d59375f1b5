"""SAFREE concept erasure on a LiT CLIP: adapter, filters and metrics on constructed cases.

A tiny text tower maps each word to a fixed vector of a 6-d basis and the projections are the
identity, so every embedding below is known in closed form:

* class words: alpha -> e0, beta -> e1, gamma -> 3 e2 (the concept, on e2);
* template words: a -> e3, photo -> e4, of -> (e3 + e4)/√2, image / ray -> e5.
"""

from __future__ import annotations

import math
from typing import ClassVar

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from subspace_safety.concept import ConceptSubspace
from subspace_safety.erasure import (
    LiTTokenEncoder,
    cosine_distance,
    evaluate_erasure,
    filter_prompts,
    per_class_recall,
    templated,
)
from subspace_safety.lit_clip import LiTClip

D = 6
E = torch.eye(D)
VOCAB = {"alpha": E[0], "beta": E[1], "gamma": 3 * E[2], "a": E[3], "photo": E[4],
         "of": (E[3] + E[4]) / math.sqrt(2), "image": E[5], "ray": E[5]}
CLASSES = ("alpha", "beta", "gamma")
TEMPLATES = ("a photo of {}", "{} image")


class WordTower(nn.Module):
    """Whitespace words -> fixed vectors (VOCAB), padded with junk the mask must hide."""

    def forward(self, texts):
        words = [t.split() for t in texts]
        length = max(len(w) for w in words)
        hidden = torch.full((len(texts), length, D), 1e3)
        mask = torch.zeros(len(texts), length, dtype=torch.bool)
        for b, ws in enumerate(words):
            for i, w in enumerate(ws):
                hidden[b, i], mask[b, i] = VOCAB[w], True
        return hidden, mask


class FakeTokenizer:
    """BERT-like: [CLS]=0 words... [SEP]=1, pad=2, mask=3; word ids 4.. by VOCAB order."""

    mask_token_id = 3
    ids: ClassVar[dict[str, int]] = {w: i + 4 for i, w in enumerate(VOCAB)}

    def __call__(self, texts, padding=True, truncation=True, max_length=64, return_tensors="pt"):
        rows = [[0, *[self.ids[w] for w in t.split()], 1] for t in texts]
        length = max(map(len, rows))
        ids = torch.tensor([r + [2] * (length - len(r)) for r in rows])
        att = torch.tensor([[1] * len(r) + [0] * (length - len(r)) for r in rows])
        return {"input_ids": ids, "attention_mask": att}


class TableEncoder(nn.Module):
    """Non-contextual 'encoder': a fixed table (CLS -> e5/2, SEP -> e3/2, MASK -> e4/4)."""

    def __init__(self) -> None:
        super().__init__()
        table = torch.zeros(4 + len(VOCAB), D)
        table[0], table[1], table[3] = E[5] / 2, E[3] / 2, E[4] / 4
        for w, i in FakeTokenizer.ids.items():
            table[i] = VOCAB[w]
        self.table = nn.Embedding.from_pretrained(table)

    def forward(self, input_ids, attention_mask=None):
        return type("Out", (), {"last_hidden_state": self.table(input_ids)})()


class BertLikeTower(nn.Module):
    max_length = 64

    def __init__(self) -> None:
        super().__init__()
        self.tokenizer = FakeTokenizer()
        self.encoder = TableEncoder()

    def forward(self, texts):
        batch = self.tokenizer(list(texts))
        return self.encoder(batch["input_ids"]).last_hidden_state, batch["attention_mask"].bool()


def identity_clip(tower: nn.Module | None = None) -> LiTClip:
    model = LiTClip(nn.Identity(), tower or WordTower(), image_dim=D, text_dim=D, embed_dim=D)
    with torch.no_grad():
        for proj in (model.image_proj, model.text_proj):
            proj.weight.copy_(torch.eye(D))
            proj.bias.zero_()
    return model.eval()


def gamma_concept() -> ConceptSubspace:
    return ConceptSubspace(E[:, 2:3].clone(), torch.ones(1))


def test_per_class_recall_closed_form() -> None:
    classifier = torch.eye(3)
    image_emb = torch.tensor([[1.0, 0, 0], [0, 1, 0], [0.2, 0.9, 0], [0, 0, 1], [1, 0, 0.5]])
    labels = torch.tensor([0, 0, 1, 2, 2])
    # class 0: 1 of 2 right; class 1: 1 of 1; class 2: image 3 right, image 4 -> class 0
    assert per_class_recall(image_emb, labels, classifier).tolist() == [0.5, 1.0, 0.5]
    with pytest.raises(ValueError, match="labels"):
        per_class_recall(image_emb, torch.tensor([0, 0, 1, 1, 1]), classifier)


def test_cosine_distance() -> None:
    a = torch.tensor([[1.0, 0], [1, 1], [2, 0]])
    b = torch.tensor([[0.0, 3], [1, 1], [-1, 0]])
    assert torch.allclose(cosine_distance(a, b), torch.tensor([1.0, 0.0, 2.0]))
    with pytest.raises(ValueError, match="a, b"):
        cosine_distance(a, b[:2])


def test_adapter_matches_lit_clip() -> None:
    model = identity_clip()
    enc = LiTTokenEncoder(model)
    prompts = ["a photo of alpha", "gamma image"]
    tokens, content = enc.encode_tokens(prompts)
    ref_tokens, ref_mask = model.encode_text_tokens(prompts)
    assert torch.equal(tokens, ref_tokens) and torch.equal(content, ref_mask)  # no [CLS]/[SEP]
    assert torch.allclose(enc.encode_pooled(prompts), model.encode_text(prompts))
    assert torch.allclose(enc.embed(tokens, ref_mask), model.encode_text(prompts))
    loo = enc.encode_leave_one_out(prompts)  # "drop": pool the other tokens
    assert enc.leave_one_out == "drop"
    expected = F.normalize(VOCAB["a"] + VOCAB["photo"] + VOCAB["alpha"], dim=0)
    assert torch.allclose(loo[0, 2], expected)  # prompt 0 without "of"
    assert torch.allclose(loo[1, 0], F.normalize(VOCAB["image"], dim=0))
    assert torch.equal(loo[1, 2:], torch.zeros(2, D))  # padding rows


def test_adapter_masked_reencoding_and_edge_tokens() -> None:
    model = identity_clip(BertLikeTower())
    enc = LiTTokenEncoder(model)
    assert enc.leave_one_out == "mask" and enc.skip_edge_tokens
    _, content = enc.encode_tokens(["gamma image", "a photo of beta"])
    # [CLS] and [SEP] pool but are not content
    assert content.tolist() == [[False, True, True, False, False, False],
                                [False, True, True, True, True, False]]
    loo = enc.encode_leave_one_out(["gamma image", "a photo of beta"])
    cls, sep, mask = E[5] / 2, E[3] / 2, E[4] / 4
    assert torch.allclose(loo[0, 1], F.normalize(cls + mask + VOCAB["image"] + sep, dim=0))
    assert torch.allclose(loo[1, 4], F.normalize(
        cls + VOCAB["a"] + VOCAB["photo"] + VOCAB["of"] + mask + sep, dim=0))
    assert torch.equal(loo[0, 0], torch.zeros(D))
    with pytest.raises(ValueError, match="leave_one_out"):
        LiTTokenEncoder(identity_clip(), leave_one_out="mask")


def test_concept_prompt_flagged_benign_unchanged() -> None:
    enc = LiTTokenEncoder(identity_clip())
    prompts = ["a photo of gamma", "gamma image", "a photo of alpha", "beta image", "a photo"]
    concept = gamma_concept()
    out = filter_prompts(enc, prompts, concept, method="safree", alpha=0.1)
    assert out.flagged.tolist() == [True, True, False, False, False]
    # benign prompts: not a bit changed
    assert torch.equal(out.filtered[2:], out.original[2:])
    gated = filter_prompts(enc, prompts, concept, method="safree_prompt", alpha=0.1)
    assert torch.equal(gated.filtered[2:], gated.original[2:])
    # gated: every token of a flagged prompt projected out -> no concept component left
    assert gated.filtered[:2, 2].abs().max() < 1e-6
    expected = F.normalize(VOCAB["a"] + VOCAB["photo"] + VOCAB["of"], dim=0)
    assert torch.allclose(gated.filtered[0], expected, atol=1e-6)
    # the baseline changes everything it touches, and flags all prompts
    base = filter_prompts(enc, prompts, concept, method="project_all")
    assert base.flagged.all() and base.filtered[:, 2].abs().max() < 1e-6
    with pytest.raises(ValueError, match="method"):
        filter_prompts(enc, prompts, concept, method="nope")


def test_evaluate_erasure_closed_form() -> None:
    model = identity_clip()
    # gamma images lean towards beta: once the gamma row loses e2 they go to beta
    features = torch.stack([E[0], E[0], E[1], E[1], E[2] + 0.5 * E[1], E[2] + 0.5 * E[1]])
    labels = torch.tensor([0, 0, 1, 1, 2, 2])
    res = evaluate_erasure(model, gamma_concept(), features, labels, method="safree_prompt",
                           erased_class=2, class_names=CLASSES, templates=TEMPLATES,
                           benign_captions=("a photo of alpha beta", "a photo"),
                           paraphrases=("gamma ray", "ray image"), alpha=0.1)
    m = res.metrics()
    assert res.recall_before.tolist() == [1.0, 1.0, 1.0]
    assert res.recall_after.tolist() == [1.0, 1.0, 0.0]
    assert m["erased_recall_after"] == 0.0 and m["others_max_drop"] == 0.0
    assert m["benign_cos_dist_max"] == 0.0 and m["benign_flag_rate"] == 0.0
    assert m["concept_flag_rate"] == 1.0
    # "gamma ray" prompts carry the concept, "ray image" ones do not
    assert m["paraphrase_flag_rate"] == 0.5
    assert templated(["x"], ["{} y", "z {}"]) == ["x y", "z x"]


def test_shipped_concept_file_and_module() -> None:
    import hashlib
    from importlib.resources import files

    from safetensors.torch import load_file

    from subspace_safety.zoo_concepts import SHIPPED_CONCEPTS, ConceptModule

    sha, num_bytes, rank, _ = SHIPPED_CONCEPTS["safety/concept_sneaker.lit_clip"]
    path = files("subspace_safety.weights") / "concept_sneaker.lit_clip.safetensors"
    data = path.read_bytes()
    assert (len(data), hashlib.sha256(data).hexdigest()) == (num_bytes, sha)
    concept = ConceptSubspace.load(str(path))
    assert (concept.dim, concept.rank) == (256, rank)
    module = ConceptModule(256, rank)
    module.load_state_dict(load_file(str(path)), strict=True)  # what the zoo loader does
    x = torch.randn(3, 256)
    assert torch.allclose(module(x), concept.project_out(x))
    assert (module(x) @ concept.basis).abs().max() < 1e-5
    with pytest.raises(ValueError, match="rank"):
        ConceptModule(4, 5)
