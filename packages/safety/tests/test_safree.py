"""SAFREE maths on token tensors, checked against the formulas, plus the HF encoder adapter."""

from __future__ import annotations

import math
import statistics

import pytest
import torch

from subspace_safety.concept import ConceptSubspace
from subspace_safety.safree import (
    REFERENCE_SVF_MIDPOINT,
    REFERENCE_SVF_SLOPE,
    HFTextEncoder,
    adaptive_threshold,
    concept_subspace_from_prompts,
    embedding_dissimilarity,
    fourier_reattention,
    leave_one_out_mean_pool,
    low_frequency_band,
    project_in_input_space,
    safree_filter_prompts,
    safree_filter_tokens,
    self_validating_steps,
    token_distances,
)

D = 16


def _concept() -> ConceptSubspace:
    """Concept = span(e0, e1) built from two embeddings."""
    X = torch.zeros(2, D, dtype=torch.float64)
    X[0, 0], X[1, 1], X[1, 0] = 2.0, 1.0, 1.0
    return ConceptSubspace.from_embeddings(X)


def _prompt(seed: int = 0, toxic_at: int | None = 2):
    """[1, 6, D] tokens: BOS, 4 content tokens, EOS; benign tokens are unit vectors ⟂ concept."""
    g = torch.Generator().manual_seed(seed)
    E = torch.randn(1, 6, D, generator=g, dtype=torch.float64)
    E[..., :2] = 0
    E = E / E.norm(dim=-1, keepdim=True)
    if toxic_at is not None:
        E[0, toxic_at, 0] = 5.0
    mask = torch.tensor([[False, True, True, True, True, False]])
    return E, mask


def test_only_the_toxic_token_is_flagged_and_projected_orthogonally():
    E, mask = _prompt()
    c = _concept()
    res = safree_filter_tokens(E, mask, c)
    assert res.flagged.tolist() == [[False, False, True, False, False, False]]
    # The flagged token has no component left along the concept.
    assert float((res.filtered[0, 2] @ c.basis).abs().max()) < 1e-12
    # Every other token, content or special, is bit-identical.
    keep = ~res.flagged[0]
    assert torch.equal(res.filtered[0, keep], E[0, keep])


def test_far_tokens_leave_embedding_unchanged_exactly():
    E, mask = _prompt(seed=3, toxic_at=None)
    res = safree_filter_tokens(E, mask, _concept())
    assert not bool(res.flagged.any())
    assert torch.equal(res.filtered, E)


def test_projection_matches_reference_formula():
    """(I − P_c) P_m e with P_m = M (MᵀM)⁺ Mᵀ over the leave-one-out embeddings (columns)."""
    E, mask = _prompt(seed=1)
    c = _concept()
    loo = leave_one_out_mean_pool(E, mask)
    out = project_in_input_space(E, c, loo, mask)
    M = loo[0, mask[0]].T                                          # [d, n]
    P_m = M @ torch.linalg.pinv(M.T @ M) @ M.T
    P_c = c.basis @ c.basis.T
    expected = ((torch.eye(D, dtype=E.dtype) - P_c) @ P_m @ E[0].T).T
    torch.testing.assert_close(out[0], expected, atol=1e-10, rtol=0)


def test_leave_one_out_mean_pool_and_distances():
    E, mask = _prompt(seed=2)
    loo = leave_one_out_mean_pool(E, mask)
    content = [1, 2, 3, 4]
    for i in content:
        others = [j for j in content if j != i]
        torch.testing.assert_close(loo[0, i], E[0, others].mean(0))
    assert torch.equal(loo[0, 0], torch.zeros(D, dtype=E.dtype))
    c = _concept()
    d = token_distances(loo, mask, c)
    for i in content:
        v = loo[0, i]
        resid = v - c.basis @ (c.basis.T @ v)
        assert math.isclose(float(d[0, i]), float(resid.norm() / v.norm()), rel_tol=1e-10)
    assert float(d[0, 0]) == 0.0


@pytest.mark.parametrize("rule", ["loo_mean", "mean_std"])
def test_adaptive_threshold_matches_formula(rule):
    g = torch.Generator().manual_seed(5)
    dist = torch.rand(3, 7, generator=g, dtype=torch.float64)
    mask = torch.rand(3, 7, generator=g) > 0.3
    mask[2] = False
    mask[2, 4] = True                                              # a single content token
    alpha = 0.3
    tau = adaptive_threshold(dist, mask, alpha=alpha, rule=rule)
    for b in range(3):
        idx = [t for t in range(7) if mask[b, t]]
        vals = [float(dist[b, t]) for t in idx]
        for t in range(7):
            if not mask[b, t]:
                assert tau[b, t] == math.inf
                continue
            if rule == "loo_mean":
                others = [float(dist[b, j]) for j in idx if j != t]
                want = (1 + alpha) * statistics.fmean(others) if others else math.inf
            else:
                want = statistics.fmean(vals) + alpha * statistics.pstdev(vals)
            if math.isinf(want):
                assert tau[b, t] == math.inf
            else:
                assert math.isclose(float(tau[b, t]), want, rel_tol=1e-12)


def test_flags_follow_threshold_rule():
    E, mask = _prompt(seed=4)
    res = safree_filter_tokens(E, mask, _concept(), threshold="mean_std", alpha=0.5)
    assert torch.equal(res.flagged, mask & (res.distances > res.thresholds))
    assert bool(res.flagged[0, 2])


def test_self_validating_steps_formula():
    E, mask = _prompt(seed=6)
    res = safree_filter_tokens(E, mask, _concept())
    cos = torch.nn.functional.cosine_similarity(E[0, 1:5], res.projected[0, 1:5], dim=-1)
    beta = 1 - float(cos.mean())
    assert math.isclose(float(embedding_dissimilarity(E, res.projected, mask)[0]), beta,
                        rel_tol=1e-10)
    for gamma, slope, mid in [(10.0, 1.0, 0.0), (50.0, 3.0, 0.2),
                              (10.0, REFERENCE_SVF_SLOPE, REFERENCE_SVF_MIDPOINT)]:
        got = int(self_validating_steps(E, res.projected, mask, gamma=gamma, slope=slope,
                                        midpoint=mid)[0])
        assert got == round(gamma / (1 + math.exp(-slope * (beta - mid))))
    # Unchanged embeddings: β = 0; the reference schedule then filters no step.
    assert int(self_validating_steps(E, E, mask, slope=REFERENCE_SVF_SLOPE,
                                     midpoint=REFERENCE_SVF_MIDPOINT)[0]) == 0
    assert int(self_validating_steps(E, E, mask, gamma=10.0)[0]) == 5  # round(10·σ(0))


def test_low_frequency_band_shape_and_symmetry():
    band = low_frequency_band(8, 6, 1)
    assert int(band.sum()) == 9
    assert bool(band[0, 0]) and bool(band[-1, -1]) and bool(band[1, 5]) and not bool(band[2, 0])
    assert int(low_frequency_band(8, 8, 0).sum()) == 1


def test_fourier_reattention_scales_only_amplified_low_frequencies():
    g = torch.Generator().manual_seed(7)
    orig = torch.randn(2, 4, 8, 8, generator=g, dtype=torch.float64)
    filt = orig + 0.5 * torch.randn(2, 4, 8, 8, generator=g, dtype=torch.float64)
    s, r = 0.6, 1
    out = fourier_reattention(filt, orig, radius=r, scale=s)
    assert out.dtype == filt.dtype and out.shape == filt.shape
    Ff, Fo, Fout = (torch.fft.fft2(x) for x in (filt, orig, out))
    band = low_frequency_band(8, 8, r)
    # High frequencies untouched.
    torch.testing.assert_close(Fout[..., ~band], Ff[..., ~band])
    # Low band: s·F where |F| > |O|, F elsewhere.
    amplified = Ff.abs() > Fo.abs()
    expected = torch.where(amplified, s * Ff, Ff)
    torch.testing.assert_close(Fout[..., band], expected[..., band])
    assert bool(amplified[..., band].any()) and bool((~amplified[..., band]).any())


def test_fourier_reattention_identity_and_dc_case():
    x = torch.randn(1, 2, 6, 6, dtype=torch.float64)
    torch.testing.assert_close(fourier_reattention(x, x, radius=2, scale=0.1), x)
    # DC only: filtered = original + 3 raises the mean, which is scaled by s; detail is kept.
    out = fourier_reattention(x + 3.0, x, radius=0, scale=0.5)
    torch.testing.assert_close(out.mean(dim=(-2, -1)), 0.5 * (x + 3.0).mean(dim=(-2, -1)))
    torch.testing.assert_close(out - out.mean(dim=(-2, -1), keepdim=True),
                               x - x.mean(dim=(-2, -1), keepdim=True))


def test_bare_callable_encoder_and_concept_from_prompts():
    E, mask = _prompt(seed=8)
    table = {"toxic": E, "benign": _prompt(seed=9, toxic_at=None)[0]}

    def encode_tokens(prompts):
        return torch.cat([table[p] for p in prompts]), mask.expand(len(prompts), -1)

    concept = concept_subspace_from_prompts(encode_tokens, ["toxic"])
    assert concept.rank == 1 and concept.metadata["prompts"] == "toxic"
    res = safree_filter_prompts(encode_tokens, ["toxic", "benign"], _concept())
    assert res.flagged[0].tolist() == [False, False, True, False, False, False]
    assert not bool(res.flagged[1].any())


def test_errors_name_the_argument():
    E, mask = _prompt()
    c = _concept()
    with pytest.raises(ValueError, match=r"mask: expected shape \(1, 6\)"):
        safree_filter_tokens(E, mask[:, :5], c)
    with pytest.raises(ValueError, match="concept: ambient dimension"):
        safree_filter_tokens(E[..., :8], mask, c)
    with pytest.raises(ValueError, match="rule"):
        adaptive_threshold(torch.rand(1, 6), mask, rule="median")
    with pytest.raises(ValueError, match="alpha"):
        safree_filter_tokens(E, mask, c, alpha=-1.0)
    with pytest.raises(ValueError, match="token_embeddings: expected \\[B, T, d\\]"):
        safree_filter_tokens(E[0], mask, c)
    with pytest.raises(ValueError, match="scale"):
        fourier_reattention(E, E, scale=1.5)
    with pytest.raises(ValueError, match="original"):
        fourier_reattention(E, E[..., :3])


def _tiny_bert(tmp_path):
    transformers = pytest.importorskip("transformers")
    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "a", "photo", "of", "cat", "naked"]
    vocab = tmp_path / "vocab.txt"
    vocab.write_text("\n".join(words) + "\n")
    tok = transformers.BertTokenizer(str(vocab), model_max_length=8)
    torch.manual_seed(0)
    cfg = transformers.BertConfig(vocab_size=len(words), hidden_size=16, num_hidden_layers=1,
                                  num_attention_heads=2, intermediate_size=32,
                                  max_position_embeddings=16)
    return tok, transformers.BertModel(cfg).eval()


def test_hf_adapter_on_a_bert_encoder(tmp_path):
    tok, model = _tiny_bert(tmp_path)
    enc = HFTextEncoder(tok, model)
    assert enc.pooling == "mean" and enc.pass_attention_mask and enc.mask_token_id == 4
    E, mask = enc.encode_tokens(["a naked cat", "photo"])
    assert E.shape == (2, 8, 16)
    # [CLS] a naked cat [SEP] [PAD]...: content = the three words only.
    assert mask[0].tolist() == [False, True, True, True, False, False, False, False]
    assert mask[1].tolist() == [False, True] + [False] * 6
    loo = enc.encode_leave_one_out(["a naked cat"])
    ids, att = enc.tokenize(["a naked cat"])
    ids[0, 2] = tok.mask_token_id
    with torch.no_grad():
        hidden = model(ids, attention_mask=att).last_hidden_state
    w = att[0].double().unsqueeze(-1)
    want = (hidden[0].double() * w).sum(0) / w.sum()
    torch.testing.assert_close(loo[0, 2].double(), want, atol=1e-6, rtol=0)
    assert torch.equal(loo[0, 0], torch.zeros(16))
    concept = concept_subspace_from_prompts(enc, ["naked", "a naked cat"])
    assert concept.dim == 16 and concept.rank == 2
    res = safree_filter_prompts(enc, ["a naked cat"], concept)
    assert res.filtered.shape == (1, 8, 16)
    assert torch.equal(res.filtered[~res.flagged], E[:1][~res.flagged])
