"""EoRA (``subspace_peft.adapters.eora``): the eigenspace fit against its identities
(Eckart-Young in the activation-weighted norm, orthogonal residual, plain SVD when the
covariance is isotropic, exact at full rank), the layer, and the whole-model path on a tiny
``LlamaForCausalLM`` compressed by RTN and by Wanda."""

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from subspace_peft.adapters.base import InputCovariance, collect_input_covariance, load_adapter
from subspace_peft.adapters.compress import (
    LLAMA_LINEARS,
    CompressionConfig,
    compress_model,
    input_norms_from_covariance,
    snapshot_weights,
)
from subspace_peft.adapters.eora import (
    EoRAConfig,
    EoRALinear,
    EoRAModel,
    activation_weighted_error,
    eigen_scaling,
    eora_fit,
    svd_fit,
    weighted_residuals,
)

F64 = torch.float64


def _problem(out=48, n=32, tokens=400, seed=0, decades=3.0):
    """ΔW [out, n] and anisotropic inputs X [tokens, n] (eigenvalues over ``2*decades``
    decades, in a random basis); returns (ΔW, X, X^T X)."""
    g = torch.Generator().manual_seed(seed)
    rot = torch.linalg.qr(torch.randn(n, n, generator=g, dtype=F64))[0]
    x = torch.randn(tokens, n, generator=g, dtype=F64) * torch.logspace(0, -decades, n,
                                                                        dtype=F64) @ rot.T
    delta = torch.randn(out, n, generator=g, dtype=F64)
    return delta, x, x.T @ x


def _reference_eora(delta, cov, r):
    """EoRA written out literally from the paper: Q' = Q Λ^{1/2}, SVD of ΔW Q',
    B = U_r Σ_r, A = V_rᵀ Q'^{-1}."""
    lam, q = torch.linalg.eigh(cov)
    qp = q * lam.sqrt()
    U, S, Vh = torch.linalg.svd(delta @ qp, full_matrices=False)
    B = U[:, :r] * S[:r]
    A = Vh[:r] @ torch.linalg.inv(qp)
    return B, A, U, S, qp


# --------------------------------------------------------------------------- identities
@pytest.mark.parametrize("r", [1, 5, 12])
def test_eora_residual_is_orthogonal_to_what_it_claims(r):
    delta, _x, cov = _problem()
    fit = eora_fit(delta, cov, r)
    B, A = fit.factors()
    B_ref, A_ref, U, S, qp = _reference_eora(delta, cov, r)
    # the fit equals the paper's formula (the product: factors are unique up to signs)
    torch.testing.assert_close(B @ A, B_ref @ A_ref, atol=1e-9 * float(delta.norm()), rtol=0)
    resid_w = (delta - B @ A) @ qp  # (ΔW - BA) Q'
    scale = float((delta @ qp).norm())
    # the residual has no component along the top-r left singular directions of ΔW Q' ...
    assert float((U[:, :r].T @ resid_w).norm()) < 1e-10 * scale
    # ... it is exactly the Eckart-Young tail: singular values σ_{r+1}, σ_{r+2}, ...
    tail = torch.linalg.svdvals(resid_w)[: S.numel() - r]
    torch.testing.assert_close(tail, S[r:], atol=1e-9 * scale, rtol=0)
    # ... and it is orthogonal to the approximation in the activation-weighted inner product
    inner = torch.trace((delta - B @ A) @ cov @ (B @ A).T)
    assert abs(float(inner)) < 1e-10 * scale**2
    # the reported basis spans the same subspace as U_r
    torch.testing.assert_close(fit.basis @ fit.basis.T, U[:, :r] @ U[:, :r].T, atol=1e-9,
                               rtol=0)
    torch.testing.assert_close(fit.singular_values, S[:r], atol=1e-9 * scale, rtol=0)


def test_eora_is_never_worse_than_svd_in_the_activation_weighted_error():
    delta, x, cov = _problem(out=40, n=24, seed=1)
    S = torch.linalg.svdvals(delta @ eigen_scaling(cov).matrix)
    for r in range(1, 25):
        e_eora = activation_weighted_error(delta, *eora_fit(delta, cov, r).factors(), cov)
        e_svd = activation_weighted_error(delta, *svd_fit(delta, r).factors(), cov)
        # the output error on the calibration tokens, computed directly from X
        e_direct = float(((delta - eora_fit(delta, cov, r).delta()) @ x.T).norm())
        assert e_eora == pytest.approx(e_direct, rel=1e-9, abs=1e-9)
        assert e_eora == pytest.approx(float(S[r:].norm()), rel=1e-8, abs=1e-9)  # optimum
        assert e_eora <= e_svd * (1 + 1e-9) + 1e-9
        if r <= 12:  # anisotropic X: strictly and clearly better at low rank
            assert e_eora < 0.9 * e_svd


def test_isotropic_covariance_gives_plain_svd_and_damping_interpolates():
    delta, _, cov = _problem(out=30, n=20, seed=2)
    for r in (1, 3, 10):
        iso = eora_fit(delta, 3.7 * torch.eye(20, dtype=F64), r)
        torch.testing.assert_close(iso.delta(), svd_fit(delta, r).delta(), atol=1e-10, rtol=0)
        torch.testing.assert_close(iso.singular_values ** 2 / 3.7,
                                   svd_fit(delta, r).singular_values ** 2, atol=1e-9, rtol=0)
    # a huge ridge makes the covariance effectively isotropic: back to plain SVD
    big = eora_fit(delta, cov, 3, damp=1e9)
    torch.testing.assert_close(big.delta(), svd_fit(delta, 3).delta(), atol=1e-6, rtol=0)
    e = [activation_weighted_error(delta, *eora_fit(delta, cov, 3, damp=d).factors(), cov)
         for d in (0.0, 0.1, 10.0)]
    assert e[0] < e[1] < e[2]


@pytest.mark.parametrize("shape", [(48, 32), (32, 48)])
@pytest.mark.parametrize("tokens", [400, 10])  # 10 < in: a rank-deficient covariance
@pytest.mark.parametrize("solver", ["projection", "inverse"])
def test_full_rank_eora_recovers_delta_exactly(shape, tokens, solver):
    out, n = shape
    delta, _, cov = _problem(out, n, tokens=tokens, seed=3)
    for r in (min(shape), min(shape) + 7):  # a larger rank is capped at min(out, in)
        fit = eora_fit(delta, cov, r, solver=solver)
        assert fit.rank == min(shape)
        torch.testing.assert_close(fit.delta(), delta, atol=1e-8 * float(delta.norm()), rtol=0)
    torch.testing.assert_close(svd_fit(delta, min(shape)).delta(), delta, atol=1e-10, rtol=0)


def test_solvers_agree_scale_invariance_and_input_forms():
    delta, _x, cov = _problem(seed=4)
    proj = eora_fit(delta, cov, 6)
    inv = eora_fit(delta, cov, 6, solver="inverse")
    torch.testing.assert_close(proj.delta(), inv.delta(), atol=1e-9, rtol=0)
    # sum or mean of x x^T: same factors
    torch.testing.assert_close(eora_fit(delta, cov / 400, 6).delta(), proj.delta(), atol=1e-9,
                               rtol=0)
    stats = InputCovariance(cov.clone(), calls=1, rows=400)
    torch.testing.assert_close(eora_fit(delta, stats, 6).delta(), proj.delta(), atol=0, rtol=0)
    torch.testing.assert_close(eora_fit(delta, eigen_scaling(cov), 6).delta(), proj.delta(),
                               atol=0, rtol=0)
    # A = V_r^T Q'^{-1} maps the weighted right singular vectors back: A Q' = V_r^T
    _B, A = inv.factors()
    _, _, Vh = torch.linalg.svd(delta @ eigen_scaling(cov).matrix, full_matrices=False)
    torch.testing.assert_close((A @ eigen_scaling(cov).matrix).abs(), Vh[:6].abs(), atol=1e-8,
                               rtol=0)


def test_truncations_are_nested_and_weighted_residuals_match_direct_errors():
    delta, _x, cov = _problem(seed=5)
    scaling = eigen_scaling(cov)
    m = scaling.weigh(delta)
    for fit_of in (lambda r: eora_fit(delta, scaling, r), lambda r: svd_fit(delta, r)):
        big = fit_of(20)
        ranks = [1, 4, 9, 20]
        rel = weighted_residuals(big, m, ranks)
        for r, value in zip(ranks, rel, strict=True):
            torch.testing.assert_close(big.delta(r), fit_of(r).delta(), atol=1e-9, rtol=0)
            direct = activation_weighted_error(delta, *big.factors(r), cov) / float(m.norm())
            assert value == pytest.approx(direct, rel=1e-7, abs=1e-9)
        assert rel == sorted(rel, reverse=True)
        with pytest.raises(ValueError, match="fitted rank"):
            big.factors(21)


def test_eigen_scaling_floors_tiny_and_negative_eigenvalues():
    _, x, _ = _problem(n=16, tokens=5, seed=6)  # rank-5 covariance of a 16-dim input
    cov = x.T @ x
    cov[0, 0] -= 1e-12 * float(cov.abs().max())  # rounding noise: slightly negative λ
    s = eigen_scaling(cov, eig_floor=1e-6)
    assert s.num_floored == 11
    assert float(s.eigenvalues.min()) == pytest.approx(1e-6 * float(s.eigenvalues.max()))
    torch.testing.assert_close(s.matrix @ s.inverse, torch.eye(16, dtype=F64), atol=1e-8, rtol=0)
    # Q' Q'^T reproduces the covariance in its range
    top = s.eigenvectors[:, -5:]
    torch.testing.assert_close(top.T @ (s.matrix @ s.matrix.T) @ top, top.T @ cov @ top,
                               atol=1e-8 * float(cov.norm()), rtol=0)
    with pytest.raises(ValueError, match="no positive eigenvalue"):
        eigen_scaling(torch.zeros(4, 4))
    with pytest.raises(ValueError, match="square"):
        eigen_scaling(torch.zeros(4, 5))
    with pytest.raises(ValueError, match="in_features"):
        eora_fit(torch.randn(3, 5), torch.eye(4), 2)
    with pytest.raises(ValueError, match="rank"):
        eora_fit(torch.randn(3, 4), torch.eye(4), 0)
    with pytest.raises(ValueError, match="solver"):
        eora_fit(torch.randn(3, 4), torch.eye(4), 1, solver="lstsq")
    with pytest.raises(ValueError, match="eig_floor"):
        EoRAConfig(eig_floor=0.0)
    with pytest.raises(ValueError, match="compensation"):
        EoRAConfig(compensation="qr")


def test_zero_delta_gives_zero_factors():
    fit = eora_fit(torch.zeros(6, 4), torch.eye(4), 3)
    assert float(fit.lora_A.abs().max()) == 0.0 and float(fit.lora_B.abs().max()) == 0.0


# --------------------------------------------------------------------------- layer
def test_eora_linear_forward_and_lora_form():
    torch.manual_seed(0)
    base = nn.Linear(10, 7)
    B, A = torch.randn(7, 3), torch.randn(3, 10)
    layer = EoRALinear(base, B, A)
    x = torch.randn(2, 5, 10)
    torch.testing.assert_close(layer(x), base(x) + (x @ A.T) @ B.T)
    b, a = layer.lora_factors()
    assert b.shape == (7, 3) and a.shape == (3, 10) and layer.rank == 3
    torch.testing.assert_close(layer.merged_weight(), base.weight + B @ A)
    torch.testing.assert_close(layer.merge()(x), layer(x), atol=1e-5, rtol=1e-5)
    layer.set_factors(torch.zeros(7, 1), torch.zeros(1, 10))
    torch.testing.assert_close(layer(x), base(x))
    with pytest.raises(ValueError, match="lora_B"):
        layer.set_factors(torch.zeros(6, 1), torch.zeros(1, 10))
    with pytest.raises(ValueError, match="lora_A"):
        layer.set_factors(torch.zeros(7, 1), torch.zeros(1, 9))


# --------------------------------------------------------------------------- model
def _tiny_llama(seed=0):
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(seed)
    cfg = transformers.LlamaConfig(vocab_size=128, hidden_size=64, intermediate_size=128,
                                   num_hidden_layers=2, num_attention_heads=4,
                                   num_key_value_heads=2, max_position_embeddings=64,
                                   initializer_range=0.1, tie_word_embeddings=True)
    return transformers.LlamaForCausalLM(cfg).eval()


def _gap(model, reference_logits, tokens):
    """Mean KL(p_original || p_model) per token: the loss gap to the original model when
    training it to match the original's predictions (distillation loss minus its floor)."""
    with torch.no_grad():
        logits = model(tokens).logits
    return float(F.kl_div(logits.log_softmax(-1).flatten(0, 1),
                          reference_logits.log_softmax(-1).flatten(0, 1),
                          log_target=True, reduction="batchmean"))


@pytest.mark.parametrize("compression", [
    CompressionConfig("rtn", bits=2, group_size=32),
    CompressionConfig("wanda", sparsity=0.5),
])
def test_compensation_reduces_the_gap_on_a_tiny_llama(compression, tmp_path):
    original = _tiny_llama()
    g = torch.Generator().manual_seed(0)
    calib = torch.randint(0, 128, (8, 32), generator=g)
    held_out = torch.randint(0, 128, (4, 32), generator=g)
    stats = collect_input_covariance(original, LLAMA_LINEARS, lambda: original(calib))
    with torch.no_grad():
        ref = original(held_out).logits
    originals = snapshot_weights(original)

    def compressed():
        m = copy.deepcopy(original)
        compress_model(m, compression, input_norms=input_norms_from_covariance(stats))
        return m

    base_gap = _gap(compressed(), ref, held_out)
    assert base_gap > 1e-3
    gaps, models = {}, {}
    for kind in ("svd", "eora"):
        cfg = EoRAConfig(rank=8, compensation=kind)
        models[kind] = EoRAModel(compressed(), cfg, original_weights=originals,
                                 covariances=stats)
        gaps[kind] = _gap(models[kind], ref, held_out)
        assert gaps[kind] < 0.9 * base_gap, (kind, gaps[kind], base_gap)
    # per layer, EoRA's error on the calibration inputs is never above plain SVD's
    for name, layer in models["eora"].adapter_layers().items():
        delta = originals[name].double() - layer.original_weight().double()
        e_eora = activation_weighted_error(delta, *layer.lora_factors(), stats[name])
        svd_layer = models["svd"].adapter_layers()[name]
        e_svd = activation_weighted_error(delta, *svd_layer.lora_factors(), stats[name])
        assert e_eora <= e_svd * (1 + 1e-5), name
    # on the calibration tokens themselves, EoRA closes more of the gap than SVD
    with torch.no_grad():
        ref_calib = original(calib).logits
    assert _gap(models["eora"], ref_calib, calib) < _gap(models["svd"], ref_calib, calib)

    # LoRA form: merged - compressed = B A, and merging reproduces the outputs
    eora = models["eora"]
    factors = eora.lora_factors()
    assert set(factors) == set(originals)
    for name, (B, A) in factors.items():
        layer = eora.adapter_layers()[name]
        assert B.shape == (layer.out_features, 8) and A.shape == (8, layer.in_features)
    with torch.no_grad():
        out = eora(held_out).logits

    # save, then rebuild on an identically compressed model
    eora.save_adapter(tmp_path / "eora.safetensors")
    loaded = load_adapter(compressed(), tmp_path / "eora.safetensors")
    assert isinstance(loaded, EoRAModel)
    with torch.no_grad():
        torch.testing.assert_close(loaded(held_out).logits, out, atol=1e-5, rtol=1e-5)

    # smaller ranks come from the same fits (nested truncations)
    eora.set_rank(2)
    assert set(eora.ranks().values()) == {2}
    name = next(iter(factors))
    B2, _A2 = eora.adapter_layers()[name].lora_factors()
    torch.testing.assert_close(B2, factors[name][0][:, :2])
    with pytest.raises(ValueError, match="fitted rank"):
        eora.set_rank(9)

    merged = eora.merge_and_unload()
    assert not any(isinstance(m, EoRALinear) for m in merged.modules())


def test_full_rank_compensation_restores_the_original_model():
    original = _tiny_llama(1)
    g = torch.Generator().manual_seed(1)
    calib = torch.randint(0, 128, (2, 8), generator=g)  # 16 tokens < 64, 128 inputs
    tokens = torch.randint(0, 128, (2, 16), generator=g)
    stats = collect_input_covariance(original, LLAMA_LINEARS, lambda: original(calib))
    originals = snapshot_weights(original)
    model = copy.deepcopy(original)
    compress_model(model, CompressionConfig("magnitude", n_m=(2, 4)))
    eora = EoRAModel(model, EoRAConfig(rank=1000), original_weights=originals,
                     covariances=stats)
    assert eora.ranks()["model.layers.0.self_attn.k_proj"] == 32  # capped at min(out, in)
    with torch.no_grad():
        torch.testing.assert_close(eora(tokens).logits, original(tokens).logits, atol=1e-4,
                                   rtol=1e-4)


def test_eora_model_argument_errors():
    model = _tiny_llama()
    originals = snapshot_weights(model)
    with pytest.raises(ValueError, match="covariances"):
        EoRAModel(copy.deepcopy(model), EoRAConfig(), original_weights=originals)
    with pytest.raises(ValueError, match="original_weights"):
        EoRAModel(copy.deepcopy(model), EoRAConfig(compensation="svd"), original_weights={})
    bad = dict(originals)
    bad["model.layers.0.mlp.up_proj"] = torch.zeros(3, 3)
    with pytest.raises(ValueError, match="expected shape"):
        EoRAModel(copy.deepcopy(model), EoRAConfig(compensation="svd"), original_weights=bad)
    with pytest.raises(TypeError, match="EoRAConfig"):
        EoRAModel(model, CompressionConfig(), original_weights=originals)


# --------------------------------------------------------------------------- benchmark
class _ByteTokenizer:
    """Stand-in for SmolLM2's tokenizer: one token per byte, modulo the tiny vocabulary."""

    def __call__(self, texts, add_special_tokens=False):
        single = isinstance(texts, str)
        ids = [[b % 128 for b in t.encode()] for t in ([texts] if single else texts)]

        class _Out:
            input_ids = ids[0] if single else ids
        return _Out()


def test_benchmark_wiring_on_a_tiny_llama(monkeypatch, tmp_path):
    import json
    from types import SimpleNamespace

    import subspace_core.data.datasets.text as text_data
    import subspace_peft.smollm2 as smollm2
    from subspace_core.bench import BenchContext
    from subspace_peft.benchmarks.eora import EORA_BENCH, LABELS, EoRABenchConfig, run_eora

    model = _tiny_llama()
    # text sampled from the model itself (byte tokens < 128 are ASCII characters): the
    # original model fits it best, so compression opens a perplexity gap to close
    torch.manual_seed(0)
    with torch.no_grad():
        sampled = model.generate(torch.randint(0, 128, (40, 1)), do_sample=True,
                                 max_new_tokens=47, min_new_tokens=47, pad_token_id=0)
    docs = ["".join(chr(int(t)) for t in row) for row in sampled]
    monkeypatch.setattr(smollm2, "load_smollm2",
                        lambda with_tokenizer=False: (copy.deepcopy(model), _ByteTokenizer()))
    monkeypatch.setattr(text_data, "load_text", lambda name, split: SimpleNamespace(
        texts=docs[:20] if split == "train" else docs[20:]))
    cfg = EoRABenchConfig(seq_len=32, calib_sequences=8, eval_windows=4, ranks=(4, 64),
                          layers=(1,), calib_docs=20, eval_docs=20,
                          compressions=(CompressionConfig("rtn", bits=2, group_size=32),))
    ctx = BenchContext(quick=True, device=torch.device("cpu"), out_dir=tmp_path)
    rows = run_eora(ctx, cfg)
    by = {(r.case, r.method, r.metric): r.value for r in rows}
    assert {r.method for r in rows} >= {EORA_BENCH.method, *EORA_BENCH.baselines}
    case = "SmolLM2-135M 2-bit RTN g32, r=64"
    ppl_o = by[(case, LABELS["original"], "ppl")]
    ppl_c = by[(case, LABELS["compressed"], "ppl")]
    for kind in ("EoRA", "SVD"):
        expected = 100 * (ppl_c - by[(case, kind, "ppl")]) / (ppl_c - ppl_o)
        assert by[(case, kind, "gap_closed")] == pytest.approx(expected)
        # rank 64 >= min(out, in) of every layer: exact compensation, original perplexity
        assert by[(case, kind, "ppl")] == pytest.approx(ppl_o, rel=1e-4)
        assert by[(case, kind, "weighted_residual")] < 1e-6
        assert by[(case.replace("r=64", "r=4"), kind, "weighted_residual")] > 0.01
    low = case.replace("r=64", "r=4")
    assert by[(low, "EoRA", "weighted_residual")] <= by[(low, "SVD", "weighted_residual")]
    assert by[(case, "EoRA", "gap_closed_minus_svd")] == pytest.approx(
        by[(case, "EoRA", "gap_closed")] - by[(case, "SVD", "gap_closed")])
    summary = json.loads((tmp_path / "peft_eora.json").read_text())
    assert summary["layers_compensated"] == 7
    assert "target" in summary["compressions"]["2-bit RTN g32"]["ranks"]["64"]
