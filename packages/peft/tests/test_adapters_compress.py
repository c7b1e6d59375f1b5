"""Simulated compression (``subspace_peft.adapters.compress``): RTN grids and error bounds,
exact per-row / N:M sparsity, Wanda's score, and in-place compression of a tiny LLaMA."""

import pytest
import torch
from torch import nn

from subspace_peft.adapters.base import collect_input_covariance
from subspace_peft.adapters.compress import (
    LLAMA_LINEARS,
    CompressionConfig,
    compress_model,
    compress_weight,
    input_norms_from_covariance,
    llama_linears,
    pruning_mask,
    restore_weights,
    rtn_quantize,
    snapshot_weights,
)


def _weight(out=12, n=300, seed=0):
    g = torch.Generator().manual_seed(seed)
    # columns of very different scales, so that groups differ
    return torch.randn(out, n, generator=g) * torch.logspace(-2, 0, n)[torch.randperm(n, generator=g)]


# --------------------------------------------------------------------------- RTN
@pytest.mark.parametrize("bits", [2, 3, 4, 8])
@pytest.mark.parametrize("zero_point", ["integer", "float"])
def test_rtn_values_on_per_group_grid_within_half_step(bits, zero_point):
    w = _weight()
    res = rtn_quantize(w, bits, 128, zero_point=zero_point)  # 300 = 128 + 128 + 44 (ragged)
    qmax = 2**bits - 1
    assert res.group_bounds() == [(0, 128), (128, 256), (256, 300)]
    assert res.scales.shape == res.zeros.shape == (12, 3)
    assert int(res.codes.min()) >= 0 and int(res.codes.max()) <= qmax
    w64, deq = w.double(), res.weight.double()
    for g, (a, b) in enumerate(res.group_bounds()):
        s, z = res.scales[:, g:g + 1], res.zeros[:, g:g + 1]
        # every value is s * (k - z) for an integer code k in [0, qmax] ...
        k = deq[:, a:b] / s + z
        torch.testing.assert_close(k, res.codes[:, a:b].double(), atol=1e-4, rtol=0)
        # ... so a group has at most 2**bits distinct values ...
        for row in range(w.shape[0]):
            assert torch.unique(deq[row, a:b]).numel() <= 2**bits
        # ... and round-to-nearest is off by at most half a step
        assert bool(((w64[:, a:b] - deq[:, a:b]).abs() <= s / 2 * (1 + 1e-5) + 1e-7).all())
        if zero_point == "integer":
            torch.testing.assert_close(z, z.round(), atol=0, rtol=0)
            lo = w64[:, a:b].amin(1, keepdim=True).clamp(max=0)
            hi = w64[:, a:b].amax(1, keepdim=True).clamp(min=0)
        else:
            lo = w64[:, a:b].amin(1, keepdim=True)
            hi = w64[:, a:b].amax(1, keepdim=True)
            # min-max: the group's minimum is a grid point and is reproduced exactly
            torch.testing.assert_close(deq[:, a:b].amin(1, keepdim=True), lo, atol=1e-6, rtol=0)
        torch.testing.assert_close(s, (hi - lo) / qmax, atol=1e-12, rtol=1e-9)
    assert res.weight.dtype == w.dtype


def test_rtn_integer_zero_point_keeps_exact_zeros_and_more_bits_means_less_error():
    w = _weight()
    w[:, ::7] = 0.0
    errs = []
    for bits in (2, 3, 4, 8):
        deq = rtn_quantize(w, bits, 64).weight
        assert bool((deq[:, ::7] == 0).all())  # 0 is on every integer-zero-point grid
        errs.append(float((deq - w).norm()))
    assert errs == sorted(errs, reverse=True) and errs[-1] < 0.05 * errs[0]


def test_rtn_group_none_is_one_group_per_row_and_constant_groups_are_exact():
    w = _weight(4, 40)
    whole = rtn_quantize(w, 4, None)
    assert whole.scales.shape == (4, 1)
    same = rtn_quantize(w, 4, 40)
    torch.testing.assert_close(whole.weight, same.weight, atol=0, rtol=0)
    const = torch.full((3, 16), 0.37)
    for zp in ("integer", "float"):
        torch.testing.assert_close(rtn_quantize(const, 4, 8, zero_point=zp).weight, const,
                                   atol=0.37 / 15 / 2 + 1e-7, rtol=0)
    torch.testing.assert_close(rtn_quantize(const, 4, 8, zero_point="float").weight, const,
                               atol=1e-7, rtol=0)
    assert bool((rtn_quantize(torch.zeros(2, 8), 4, 4).weight == 0).all())


def test_rtn_rejects_bad_arguments():
    w = _weight(2, 16)
    with pytest.raises(ValueError, match="bits"):
        rtn_quantize(w, 1)
    with pytest.raises(ValueError, match="group_size"):
        rtn_quantize(w, 4, 0)
    with pytest.raises(ValueError, match="zero_point"):
        rtn_quantize(w, 4, 8, zero_point="sym")
    with pytest.raises(ValueError, match="matrix"):
        rtn_quantize(torch.randn(3, 4, 5))
    with pytest.raises(ValueError, match="NaN"):
        rtn_quantize(torch.full((2, 2), float("nan")))


# --------------------------------------------------------------------------- pruning
@pytest.mark.parametrize("n", [300, 301])
def test_magnitude_pruning_removes_exactly_half_of_every_row_smallest_first(n):
    w = _weight(10, n)
    mask = pruning_mask(w, 0.5)
    assert bool((mask.sum(1) == n - n // 2).all())
    for row in range(10):
        kept, pruned = w[row][mask[row]].abs(), w[row][~mask[row]].abs()
        assert float(kept.min()) >= float(pruned.max())


def test_pruning_is_exact_under_ties():
    w = torch.ones(3, 10)
    mask = pruning_mask(w, 0.5)
    assert bool((mask.sum(1) == 5).all())


def test_wanda_prunes_by_weight_times_input_norm():
    w = _weight(8, 64, seed=1)
    norms = torch.rand(64, generator=torch.Generator().manual_seed(2)) * 10
    mask = pruning_mask(w, 0.5, method="wanda", input_norms=norms)
    score = w.abs() * norms
    assert bool((mask.sum(1) == 32).all())
    for row in range(8):
        assert float(score[row][mask[row]].min()) >= float(score[row][~mask[row]].max())
    # a non-uniform norm changes the choice; a uniform one gives magnitude pruning
    assert not torch.equal(mask, pruning_mask(w, 0.5))
    assert torch.equal(pruning_mask(w, 0.5, method="wanda", input_norms=torch.full((64,), 3.0)),
                       pruning_mask(w, 0.5))


@pytest.mark.parametrize("method", ["magnitude", "wanda"])
def test_two_four_pattern(method):
    w = _weight(6, 64, seed=3)
    norms = torch.rand(64, generator=torch.Generator().manual_seed(4)) + 0.1
    mask = pruning_mask(w, method=method, input_norms=norms, n_m=(2, 4))
    groups = mask.reshape(6, 16, 4)
    assert bool((groups.sum(-1) == 2).all())
    score = (w.abs() * (norms if method == "wanda" else 1.0)).reshape(6, 16, 4)
    kept_min = torch.where(groups, score, torch.inf).amin(-1)
    pruned_max = torch.where(~groups, score, -torch.inf).amax(-1)
    assert bool((kept_min >= pruned_max).all())
    cfg = CompressionConfig("magnitude", n_m=(2, 4), target_modules="x")
    assert cfg.label == "2:4 magnitude"


def test_pruning_rejects_bad_arguments():
    w = _weight(2, 10)
    with pytest.raises(ValueError, match="input_norms"):
        pruning_mask(w, method="wanda")
    with pytest.raises(ValueError, match="input_norms"):
        pruning_mask(w, method="wanda", input_norms=torch.ones(9))
    with pytest.raises(ValueError, match="sparsity"):
        pruning_mask(w, 1.0)
    with pytest.raises(ValueError, match="M = 4 must divide"):
        pruning_mask(w, n_m=(2, 4))
    with pytest.raises(ValueError, match="method"):
        pruning_mask(w, method="random")
    with pytest.raises(ValueError, match="n_m"):
        CompressionConfig("rtn", n_m=(2, 4))


# --------------------------------------------------------------------------- model level
def _tiny_llama(seed=0):
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(seed)
    cfg = transformers.LlamaConfig(vocab_size=128, hidden_size=64, intermediate_size=128,
                                   num_hidden_layers=2, num_attention_heads=4,
                                   num_key_value_heads=2, max_position_embeddings=64,
                                   tie_word_embeddings=True)
    return transformers.LlamaForCausalLM(cfg).eval()


def test_compress_model_in_place_on_decoder_linears_only():
    model = _tiny_llama()
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    originals = snapshot_weights(model)
    assert len(originals) == 14  # 2 layers x (q, k, v, o, gate, up, down)
    errors = compress_model(model, CompressionConfig("rtn", bits=3, group_size=32))
    assert list(errors) == list(originals)
    for name, p in model.named_parameters():
        module = name.rsplit(".", 1)[0]
        if module in originals:
            expected = compress_weight(originals[module], CompressionConfig("rtn", bits=3,
                                                                             group_size=32))
            torch.testing.assert_close(p, expected, atol=0, rtol=0)
            e = errors[module]
            diff = (originals[module] - p.detach()).double()
            assert e.relative_error == pytest.approx(float(diff.norm() / originals[module]
                                                           .double().norm()))
            assert e.max_abs_error == pytest.approx(float(diff.abs().max()))
            assert 0 < e.relative_error < 0.2
        else:  # embeddings (tied with lm_head) and norms untouched
            assert torch.equal(p, before[name]), name
    restore_weights(model, originals)
    for name, p in model.named_parameters():
        assert torch.equal(p, before[name])


def test_compress_model_wanda_uses_calibration_norms_and_reports_sparsity():
    model = _tiny_llama(1)
    tokens = torch.randint(0, 128, (4, 16), generator=torch.Generator().manual_seed(0))
    target = llama_linears([1])
    stats = collect_input_covariance(model, target, lambda: model(tokens))
    norms = input_norms_from_covariance(stats)
    # ||X_j||_2 from the diagonal of X^T X equals the norm over the hooked inputs
    name = "model.layers.1.mlp.down_proj"
    seen = []
    h = model.get_submodule(name).register_forward_hook(lambda m, a, o: seen.append(a[0]))
    with torch.no_grad():
        model(tokens)
    h.remove()
    x = seen[0].reshape(-1, 128).double()
    torch.testing.assert_close(norms[name], x.norm(dim=0), rtol=1e-9, atol=1e-12)
    with pytest.raises(ValueError, match="input_norms"):
        compress_model(model, CompressionConfig("wanda", target_modules=target))
    w = model.get_submodule(name).weight.detach().clone()
    errors = compress_model(model, CompressionConfig("wanda", target_modules=target),
                            input_norms=norms)
    assert set(errors) == {n for n in norms}
    assert all(e.sparsity == pytest.approx(0.5) for e in errors.values())
    expected = w * pruning_mask(w, 0.5, method="wanda", input_norms=norms[name])
    torch.testing.assert_close(model.get_submodule(name).weight, expected, atol=0, rtol=0)
    # layer 0 was not selected
    assert float((model.model.layers[0].mlp.down_proj.weight == 0).double().mean()) < 0.01


def test_compress_model_refuses_tied_weights_and_bad_config():
    model = nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 4))
    model[1].weight = model[0].weight
    with pytest.raises(ValueError, match="tied"):
        compress_model(model, CompressionConfig("rtn", target_modules="0"))
    with pytest.raises(ValueError, match="method"):
        CompressionConfig("gptq")
    with pytest.raises(TypeError, match="CompressionConfig"):
        compress_model(model, {"method": "rtn"})
    assert LLAMA_LINEARS in llama_linears() and "(0|3)" in llama_linears([3, 0])
