"""Q-GaLore INT8 weights: unbiased stochastic rounding, tiny updates that survive SR and
stall with round-to-nearest, int8 code ranges, determinism, QuantizedLinear autograd,
safetensors round trip, loud failure with INT8-unaware optimizers, memory, clear errors."""

from __future__ import annotations

import copy

import pytest
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from subspace_peft.optim.qweights import (
    Int8Weight,
    QuantizedLinear,
    apply_update_int8,
    convert_linear_to_int8,
    int8_inplace_update,
    int8_weight_of,
    rounding_generator,
)


@pytest.fixture(autouse=True)
def _one_thread():
    # The test machine's cores are shared: one thread avoids oversubscription stalls.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# ------------------------------------------------------------------- rounding
@pytest.mark.parametrize("symmetric", [True, False])
def test_stochastic_rounding_is_unbiased_and_nearest_is_biased(symmetric):
    """Values 0.3 of a step above a grid point: SR's mean is the value, nearest is off."""
    draws, group = 4000, 64
    # One group per row; every row is the same: 4000 independent roundings of each value.
    s = 1.0 / 127
    k = torch.arange(group, dtype=torch.float32) - 32  # grid indices -32 .. 31
    row = (k + 0.3) * s
    row[0], row[-1] = -1.0, 1.0  # fix the group's range, so the grid is known exactly
    w = row.expand(draws, group).contiguous()
    q = Int8Weight.from_float(w, group_size=group, symmetric=symmetric,
                              generator=rounding_generator(0, 0), stochastic=True)
    step = float(q.scales[0])
    deq = q.dequantize()
    err = (deq - w) / step  # in quantisation steps
    inner = slice(1, group - 1)
    # every single draw is one of the two neighbouring grid points
    assert float(err[:, inner].abs().max()) < 1.0 + 1e-4
    # unbiased: mean error per value ~ N(0, sqrt(0.21 / 4000)) ≈ 0.007 steps
    mean_err = err[:, inner].mean(dim=0)
    assert float(mean_err.abs().max()) < 0.04, mean_err
    # both neighbours occur with probability ~ the distance to the other one
    up = (err[:, inner] > 0).float().mean()
    if symmetric:  # grid = s·k: values at k + 0.3 round up w.p. 0.3
        assert abs(float(up) - 0.3) < 0.02
    nearest = Int8Weight.from_float(w[:1], group_size=group, symmetric=symmetric)
    near_err = ((nearest.dequantize() - w[:1]) / float(nearest.scales[0]))[:, inner]
    if symmetric:
        torch.testing.assert_close(near_err, torch.full_like(near_err, -0.3), atol=1e-3,
                                   rtol=0)
    # nearest rounding is deterministic: its error does not average out
    assert float(near_err.abs().mean()) > 0.1


def test_stochastic_rounding_is_deterministic_given_the_seed():
    w = torch.randn(32, 64)
    a = Int8Weight.from_float(w, generator=rounding_generator(3, 5), stochastic=True)
    b = Int8Weight.from_float(w, generator=rounding_generator(3, 5), stochastic=True)
    c = Int8Weight.from_float(w, generator=rounding_generator(3, 6), stochastic=True)
    d = Int8Weight.from_float(w, generator=rounding_generator(3, 5, stream=1), stochastic=True)
    assert torch.equal(a.codes, b.codes) and torch.equal(a.scales, b.scales)
    assert not torch.equal(a.codes, c.codes)
    assert not torch.equal(a.codes, d.codes)


@pytest.mark.parametrize(("symmetric", "low", "high"), [(True, -127, 127), (False, -128, 127)])
def test_codes_stay_int8_in_range_and_reconstruction_is_within_a_step(symmetric, low, high):
    torch.manual_seed(0)
    w = torch.randn(16, 128) * 3 + 0.5
    q = Int8Weight.from_float(w, group_size=128, symmetric=symmetric)
    for t in range(20):
        apply_update_int8(q, torch.randn(16, 128) * 0.05, rounding_generator(0, t))
        assert q.codes.dtype == torch.int8 and q.codes.shape == (16, 128)
        assert int(q.codes.min()) >= low and int(q.codes.max()) <= high
    # the full code range is used (each group's extremes map to the end codes)
    assert int(q.codes.min()) == low and int(q.codes.max()) == high
    w2 = q.dequantize()
    nearest = Int8Weight.from_float(w2, group_size=128, symmetric=symmetric)
    step = nearest.scales.repeat_interleave(128).reshape(16, 128)
    assert float(((nearest.dequantize() - w2).abs() / step).max()) <= 0.5 + 1e-3


# -------------------------------------------------------------------- training
def regression(stochastic: bool, steps: int = 300):
    """Train a QuantizedLinear on y = X w*ᵀ with updates below half a quantisation step."""
    g = torch.Generator().manual_seed(0)
    X = torch.randn(256, 64, generator=g)
    w_star = torch.rand(4, 64, generator=g) * 2 - 1
    Y = X @ w_star.T
    lin = nn.Linear(64, 4, bias=False)
    with torch.no_grad():
        lin.weight.copy_(torch.rand(4, 64, generator=g) * 2 - 1)
    layer = QuantizedLinear.from_linear(lin, group_size=64)
    codes0 = layer.weight_codes.clone()
    with torch.no_grad():
        loss0 = float(nn.functional.mse_loss(layer(X), Y))
    for t in range(steps):
        layer.zero_grad(set_to_none=True)
        nn.functional.mse_loss(layer(X), Y).backward()
        grad = layer.weight.grad
        half_step = float(layer.weight_scales.min()) / 2
        update = -0.8 * half_step * grad / grad.abs().max()  # |update| <= 0.8 half steps
        assert float(update.abs().max()) < half_step
        apply_update_int8(int8_weight_of(layer.weight), update, rounding_generator(0, t),
                          stochastic=stochastic)
    with torch.no_grad():
        loss = float(nn.functional.mse_loss(layer(X), Y))
    changed = float((layer.weight_codes != codes0).float().mean())
    return loss0, loss, changed


def test_tiny_updates_train_with_stochastic_rounding_and_stall_with_nearest():
    loss0, loss_sr, changed_sr = regression(stochastic=True)
    loss0_n, loss_near, changed_near = regression(stochastic=False)
    assert loss0 == loss0_n
    assert loss_sr < 0.45 * loss0, (loss0, loss_sr)
    # nearest rounding only moves each group's extreme (exactly representable) element and
    # with it the group's scale: almost every code is frozen and the loss barely moves
    assert changed_near < 0.05 < 0.5 < changed_sr, (changed_near, changed_sr)
    assert loss_near > 0.7 * loss0, (loss0, loss_near)
    assert loss_sr < 0.5 * loss_near


# ------------------------------------------------------------- QuantizedLinear
def test_quantized_linear_matches_linear_on_the_dequantised_weight():
    torch.manual_seed(0)
    lin = nn.Linear(32, 12)
    q = QuantizedLinear.from_linear(lin, group_size=64, symmetric=False)
    ref = nn.Linear(32, 12)
    with torch.no_grad():
        ref.weight.copy_(q.dequantized_weight())
        ref.bias.copy_(lin.bias)
    # the quantised weight is close to the original one
    assert float((q.dequantized_weight() - lin.weight.detach()).abs().max()) < float(
        q.weight_scales.max())
    x = torch.randn(3, 5, 32)
    x1, x2 = x.clone().requires_grad_(), x.clone().requires_grad_()
    y1, y2 = q(x1), ref(x2)
    torch.testing.assert_close(y1, y2)
    (y1.square().sum()).backward()
    (y2.square().sum()).backward()
    torch.testing.assert_close(q.weight.grad, ref.weight.grad)
    torch.testing.assert_close(q.bias.grad, ref.bias.grad)
    torch.testing.assert_close(x1.grad, x2.grad)
    assert q.weight.grad.shape == (12, 32) and q.weight.grad.is_contiguous()


def test_weight_handle_costs_no_memory_and_unaware_optimizers_fail_loudly():
    q = QuantizedLinear.from_linear(nn.Linear(256, 64), group_size=256)
    assert q.weight.shape == (64, 256)
    assert q.weight.untyped_storage().nbytes() == 4
    assert torch.isnan(q.weight).all()  # reading the handle as a weight is visibly wrong
    weight_bytes = int8_weight_of(q.weight).nbytes
    assert weight_bytes == 64 * 256 + 4 * 64  # codes + one fp32 scale per 256 elements
    assert weight_bytes < 0.26 * 4 * 64 * 256
    q(torch.randn(2, 256)).sum().backward()
    opt = torch.optim.AdamW(q.parameters(), lr=1e-3, foreach=False)
    with pytest.raises(RuntimeError, match="single memory location"):
        opt.step()


def test_int8_weight_of_and_inplace_update_write_the_module_buffers():
    lin = nn.Linear(16, 8, bias=False)
    q = QuantizedLinear.from_linear(lin, group_size=16)
    assert int8_weight_of(lin.weight) is None
    qw = int8_weight_of(q.weight)
    before = q.dequantized_weight()
    int8_inplace_update(qw, lambda W: W.mul_(-1.0), rounding_generator(0, 0))
    torch.testing.assert_close(q.dequantized_weight(), -before)
    assert qw.codes is q.weight_codes


def test_state_dict_safetensors_round_trip(tmp_path):
    torch.manual_seed(0)
    for symmetric in (True, False):
        q = QuantizedLinear.from_linear(nn.Linear(64, 16), group_size=128, symmetric=symmetric)
        apply_update_int8(q.qweight, torch.randn(16, 64) * 1e-3, rounding_generator(1, 0))
        sd = q.state_dict()
        expected = {"bias", "weight_codes", "weight_scales"} | (
            set() if symmetric else {"weight_zeros"})
        assert set(sd) == expected  # the gradient handle is not saved
        assert sd["weight_codes"].dtype == torch.int8
        path = tmp_path / f"q{symmetric}.safetensors"
        save_file(sd, str(path))
        loaded = load_file(str(path))
        r = QuantizedLinear(64, 16, group_size=128, symmetric=symmetric)
        result = r.load_state_dict(loaded)
        assert not result.missing_keys and not result.unexpected_keys
        for key in expected:
            assert torch.equal(getattr(r, key), sd[key])
        x = torch.randn(4, 64)
        assert torch.equal(r(x), q(x))
        # Int8Weight.tensors() is the raw form
        raw = tmp_path / f"raw{symmetric}.safetensors"
        save_file(q.qweight.tensors(), str(raw))
        t = load_file(str(raw))
        w = Int8Weight(t["codes"], t["scales"], t.get("zeros"), group_size=128)
        assert torch.equal(w.dequantize(), q.dequantized_weight())


def test_loads_float_linear_checkpoints_and_survives_copy_and_to():
    lin = nn.Linear(32, 8)
    q = QuantizedLinear(32, 8, group_size=32)
    result = q.load_state_dict(lin.state_dict())
    assert not result.missing_keys and not result.unexpected_keys
    assert torch.equal(q.weight_codes, QuantizedLinear.from_linear(lin, group_size=32).weight_codes)
    c = copy.deepcopy(q)
    assert c.weight.stride() == (0, 0) and int8_weight_of(c.weight).codes is c.weight_codes
    assert int8_weight_of(q.weight).codes is q.weight_codes
    d = copy.deepcopy(q).to(torch.float64)
    assert d.weight.dtype == torch.float64 and d.weight.stride() == (0, 0)
    assert d.weight_scales.dtype == torch.float32 and d.weight_codes.dtype == torch.int8
    x = torch.randn(2, 32, dtype=torch.float64)
    torch.testing.assert_close(d(x), q(x.float()).double(), atol=1e-5, rtol=1e-5)
    with pytest.raises(RuntimeError, match="weight"):
        q.load_state_dict({**lin.state_dict(), "weight_codes": q.weight_codes,
                           "weight_scales": q.weight_scales})


def test_convert_linear_to_int8():
    torch.manual_seed(0)
    model = nn.Sequential()
    model.add_module("attn", nn.Linear(16, 16))
    model.add_module("act", nn.ReLU())
    model.add_module("mlp", nn.Linear(16, 4))
    x = torch.randn(8, 16)
    with torch.no_grad():
        y = model(x)
    names = convert_linear_to_int8(model, ["attn"], group_size=16)
    assert names == ["attn"]
    assert isinstance(model.attn, QuantizedLinear) and type(model.mlp) is nn.Linear
    assert float((model(x).detach() - y).abs().max()) < 0.05
    with pytest.raises(ValueError, match=r"no nn\.Linear module matches"):
        convert_linear_to_int8(model, ["nothing"])
    tied = nn.Sequential(nn.Linear(8, 8), nn.Linear(8, 8))
    tied[1].weight = tied[0].weight
    with pytest.raises(ValueError, match="shared"):
        convert_linear_to_int8(tied, [r"^\d$"], group_size=8)
    mha = nn.MultiheadAttention(8, 2)
    with pytest.raises(ValueError, match="subclass"):
        convert_linear_to_int8(mha, ["out_proj"], group_size=8)


def test_clear_errors():
    w = torch.randn(4, 10)
    with pytest.raises(ValueError, match="group_size: expected a divisor of the 40"):
        Int8Weight.from_float(w, group_size=16)
    with pytest.raises(ValueError, match=r"generator: expected a torch\.Generator"):
        Int8Weight.from_float(w, group_size=10, stochastic=True)
    q = Int8Weight.from_float(w, group_size=None)
    assert q.scales.shape == (4,)
    with pytest.raises(ValueError, match=r"w: expected shape \(4, 10\)"):
        q.quantize(torch.randn(10, 4), rounding_generator(0, 0))
    bad = w.clone()
    bad[0, 0] = float("inf")
    with pytest.raises(ValueError, match="NaN or Inf"):
        q.quantize(bad, rounding_generator(0, 0))
    with pytest.raises(ValueError, match=r"update: expected a tensor of shape \(4, 10\)"):
        apply_update_int8(q, torch.randn(40), rounding_generator(0, 0))
    with pytest.raises(TypeError, match="codes: expected an int8 tensor"):
        Int8Weight(torch.zeros(4, 10), torch.ones(4), group_size=10)
    with pytest.raises(ValueError, match=r"scales: expected a float32 tensor of shape \(4,\)"):
        Int8Weight(torch.zeros(4, 10, dtype=torch.int8), torch.ones(5), group_size=10)
    with pytest.raises(ValueError, match="step: expected a non-negative int"):
        rounding_generator(0, -1)
    layer = QuantizedLinear(10, 4, group_size=10)
    with pytest.raises(ValueError, match="x: expected last dim 10"):
        layer(torch.randn(2, 9))
