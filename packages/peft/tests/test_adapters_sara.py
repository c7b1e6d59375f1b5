"""SaRA: selection of the smallest weights, sparse update by scatter, gradients, nuclear-norm
penalty (value, gradient, effect on the rank), progressive re-selection, save / load."""

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from subspace_core.linalg import effective_rank
from subspace_peft.adapters.base import load_adapter
from subspace_peft.adapters.sara import (
    SaRAConfig,
    SaRALayer,
    SaRAModel,
    nuclear_norm,
    select_small_weights,
)

GEN = torch.Generator().manual_seed(0)


class Net(nn.Module):
    """Two linears and a conv, to cover both kinds of targets."""

    def __init__(self, seed: int = 0) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.conv = nn.Conv2d(3, 6, 3, padding=1)
        self.fc1 = nn.Linear(6, 16)
        self.fc2 = nn.Linear(16, 5)

    def forward(self, x):
        h = F.relu(self.conv(x)).mean((2, 3))
        return self.fc2(torch.tanh(self.fc1(h)))


X = torch.randn(4, 3, 8, 8, generator=GEN)


def randomize(adapted: SaRAModel, seed: int = 1, scale: float = 0.3) -> None:
    """Non-zero trainable values (the init is zero, which hides most mistakes)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for layer in adapted.adapter_layers().values():
            layer.values.copy_(torch.randn(layer.values.shape, generator=g) * scale)


# ------------------------------------------------------------------------------ init
def test_output_unchanged_at_init():
    net = Net()
    ref = net(X)
    adapted = SaRAModel(net, SaRAConfig(target_modules=("conv", "fc1", "fc2"), fraction=0.2))
    assert all(isinstance(m, SaRALayer) for m in adapted.adapter_layers().values())
    torch.testing.assert_close(adapted(X), ref, atol=0, rtol=0)  # W0 + 0 bit for bit
    # only the sparse values are trainable: floor(0.2 numel) per layer
    assert adapted.trainable_counts() == {"conv": math.floor(0.2 * 162),
                                          "fc1": math.floor(0.2 * 96),
                                          "fc2": math.floor(0.2 * 80)}
    assert adapted.num_trainable_parameters() == 32 + 19 + 16
    assert {n for n, p in adapted.named_parameters() if p.requires_grad} == {
        "model.conv.values", "model.fc1.values", "model.fc2.values"}


# ------------------------------------------------------------------------- selection
@pytest.mark.parametrize("fraction", [0.05, 0.3, 1.0])
def test_trainable_set_is_the_smallest_fraction_of_each_layer(fraction):
    net = Net()
    weights = {n: m.weight.detach().clone() for n, m in net.named_modules()
               if n in ("conv", "fc1", "fc2")}
    adapted = SaRAModel(net, SaRAConfig(target_modules=("conv", "fc1", "fc2"),
                                        fraction=fraction))
    for name, layer in adapted.adapter_layers().items():
        mag = weights[name].abs().flatten()
        k = math.floor(fraction * mag.numel())
        mask = layer.trainable_mask().flatten()
        assert int(mask.sum()) == k == layer.num_trainable
        if 0 < k < mag.numel():
            # every selected |w| <= every unselected |w|, and t is the smallest unselected
            assert float(mag[mask].max()) <= float(mag[~mask].min())
            assert layer.threshold == pytest.approx(float(mag[~mask].min()))
        else:
            assert math.isinf(layer.threshold)
        # indices are the sorted flat positions of the mask
        assert torch.equal(layer.indices, torch.nonzero(mask).flatten())


def test_absolute_threshold_and_ties_and_bad_input():
    w = torch.tensor([[0.5, -0.1, 0.1], [0.0, 2.0, -0.1]])
    idx, t = select_small_weights(w, threshold=0.2)
    assert idx.tolist() == [1, 2, 3, 5] and t == 0.2
    # fraction 0.5 of 6 = 3 entries; the three |w| = 0.1 / 0.0 ties broken by flat index
    idx, t = select_small_weights(w, fraction=0.5)
    assert idx.tolist() == [1, 2, 3] and t == pytest.approx(0.1)
    with pytest.raises(ValueError, match="exactly one"):
        select_small_weights(w)
    with pytest.raises(ValueError, match="fraction"):
        SaRAConfig(target_modules="fc1", fraction=1.5)
    with pytest.raises(ValueError, match="not both"):
        SaRAConfig(target_modules="fc1", fraction=0.1, threshold=0.01)
    with pytest.raises(ValueError, match="nuclear_target"):
        SaRAConfig(target_modules="fc1", nuclear_target="weights")


# ------------------------------------------------------------------------- gradients
def test_update_is_a_scatter_and_gradient_flows_only_to_masked_entries():
    net = Net()
    adapted = SaRAModel(net, SaRAConfig(target_modules=("conv", "fc1", "fc2"), fraction=0.25))
    randomize(adapted)
    layers = adapted.adapter_layers()
    fc1 = layers["fc1"]
    # ΔW is zero outside the mask and equals the values on it
    dw = fc1.delta_weight().detach()
    mask = fc1.trainable_mask()
    assert float(dw[~mask].abs().max()) == 0.0
    torch.testing.assert_close(dw.flatten()[fc1.indices], fc1.values.detach())
    # the gradient of the values is the dense weight gradient read at the indices
    x = torch.randn(7, 6, generator=GEN)
    W = (fc1.base_layer.weight + dw).detach().requires_grad_(True)
    F.linear(x, W, fc1.base_layer.bias).pow(2).sum().backward()
    fc1(x).pow(2).sum().backward()
    torch.testing.assert_close(fc1.values.grad, W.grad.flatten()[fc1.indices])
    # no other parameter of the model gets a gradient
    adapted.zero_grad(set_to_none=True)
    adapted(X).square().sum().backward()
    for n, p in adapted.named_parameters():
        if n.endswith(".values"):
            assert p.grad is not None and float(p.grad.abs().sum()) > 0
        else:
            assert p.grad is None, n


def test_conv_forward_uses_the_updated_kernel():
    net = Net()
    adapted = SaRAModel(net, SaRAConfig(target_modules="conv", fraction=0.4))
    randomize(adapted)
    conv = adapted.adapter_layers()["conv"]
    kernel = conv.base_layer.weight + conv.delta_weight().detach()
    expected = F.conv2d(X, kernel, conv.base_layer.bias, padding=1)
    torch.testing.assert_close(conv(X), expected, atol=1e-6, rtol=1e-5)


# ------------------------------------------------------------------------ nuclear norm
def test_nuclear_norm_value_and_gradient():
    g = torch.Generator().manual_seed(3)
    A = torch.randn(6, 9, generator=g, dtype=torch.float64, requires_grad=True)
    value = nuclear_norm(A)
    S = torch.linalg.svdvals(A.detach())
    torch.testing.assert_close(value.detach(), S.sum())
    value.backward()
    U, _, Vh = torch.linalg.svd(A.detach(), full_matrices=False)
    torch.testing.assert_close(A.grad, U @ Vh, atol=1e-10, rtol=1e-10)  # d||A||_* = U Vᵀ
    # central finite differences along a few random directions
    for _ in range(3):
        D = torch.randn(6, 9, generator=g, dtype=torch.float64)
        eps = 1e-6
        fd = (torch.linalg.svdvals(A.detach() + eps * D).sum()
              - torch.linalg.svdvals(A.detach() - eps * D).sum()) / (2 * eps)
        assert float(fd) == pytest.approx(float((A.grad * D).sum()), rel=1e-6, abs=1e-8)
    # at zero: value 0 and the minimal-norm subgradient 0
    Z = torch.zeros(4, 5, requires_grad=True)
    nuclear_norm(Z).backward()
    assert float(Z.grad.abs().max()) == 0.0


def test_penalty_equals_lambda_times_sum_of_singular_values_with_its_gradient():
    net = Net().double()
    lam = 0.37
    adapted = SaRAModel(net, SaRAConfig(target_modules=("conv", "fc1"), fraction=0.3,
                                        nuclear_weight=lam))
    randomize(adapted, seed=5)
    layers = adapted.adapter_layers()
    pen = adapted.nuclear_norm_penalty()
    dws = {n: layer.delta_weight().detach() for n, layer in layers.items()}
    expected = lam * sum(torch.linalg.svdvals(d.reshape(d.shape[0], -1)).sum()
                         for d in dws.values())
    torch.testing.assert_close(pen.detach(), expected)
    pen.backward()
    for name, layer in layers.items():
        D = dws[name].reshape(dws[name].shape[0], -1)
        U, _, Vh = torch.linalg.svd(D, full_matrices=False)
        grad_w = (lam * U @ Vh).flatten()  # the conv kernel is unfolded to [out, in k k]
        torch.testing.assert_close(layer.values.grad, grad_w[layer.indices], atol=1e-10,
                                   rtol=1e-8)
    # the reference code's variant penalises the masked weights (W0 + ΔW) ⊙ P
    fc1 = layers["fc1"]
    masked = (fc1.base_layer.weight + fc1.delta_weight()).detach() * fc1.trainable_mask()
    torch.testing.assert_close(fc1.nuclear_norm("masked_weight").detach(),
                               torch.linalg.svdvals(masked).sum())
    assert float(SaRAModel(Net(), SaRAConfig(target_modules="fc1", nuclear_weight=0.0))
                 .nuclear_norm_penalty()) == 0.0


def _fit(lam: float, steps: int = 400) -> torch.Tensor:
    """ΔW after SGD on y = x (W0 + 0.3 u vᵀ)ᵀ with half the entries trainable."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(24, 24, bias=False))
    g = torch.Generator().manual_seed(1)
    u, v = torch.randn(24, 1, generator=g), torch.randn(1, 24, generator=g)
    target = net[0].weight.detach() + 0.3 * (u @ v)
    x = torch.randn(512, 24, generator=g)
    y = x @ target.T
    adapted = SaRAModel(net, SaRAConfig(target_modules="0", fraction=0.5, nuclear_weight=lam,
                                        progressive_at=None))
    opt = torch.optim.SGD(adapted.adapter_parameters(), lr=0.05)
    for _ in range(steps):
        loss = F.mse_loss(adapted(x), y) + adapted.nuclear_norm_penalty()
        opt.zero_grad()
        loss.backward()
        opt.step()
    return adapted.delta_weights()["0"]


def test_nuclear_penalty_lowers_the_rank_of_the_update():
    """A sparse fit of a rank-1 change is full-rank; λ = 0.1 roughly halves its effective
    rank (measured: 10.8 -> 5.6 RankMe, 18 -> 10 singular values above 1 % of the top)."""
    free, penalised = _fit(0.0), _fit(0.1)

    def above(d):
        S = torch.linalg.svdvals(d)
        return int((S / S[0] > 1e-2).sum())

    assert float(effective_rank(penalised)) < 0.7 * float(effective_rank(free))
    assert above(penalised) <= above(free) - 4


# ------------------------------------------------------------------------ progressive
def test_reselection_freezes_entries_that_left_the_band_and_keeps_the_map():
    net = Net()
    adapted = SaRAModel(net, SaRAConfig(target_modules=("fc1", "fc2"), fraction=0.3,
                                        progressive_at=0.5))
    opt = torch.optim.Adam(adapted.adapter_parameters(), lr=0.1)
    layers = adapted.adapter_layers()
    fc1 = layers["fc1"]
    old_idx, t = fc1.indices.clone(), fc1.threshold
    # push half of fc1's entries far beyond the threshold, leave the rest tiny
    with torch.no_grad():
        fc1.values.copy_(torch.where(torch.arange(fc1.num_trainable) % 2 == 0,
                                     torch.full((fc1.num_trainable,), 5.0), torch.zeros(())))
    adapted(X).sum().backward()
    opt.step()  # creates optimizer state that must be dropped
    before = adapted(X).detach()
    w_now = (fc1.base_layer.weight.detach().flatten()[old_idx] + fc1.values.detach())
    expect_keep = w_now.abs() < t
    # not yet: 10 of 20 steps done is the trigger, 9 is not
    assert adapted.maybe_reselect(9, 20, opt) is None
    frozen = adapted.maybe_reselect(10, 20, opt)
    assert frozen is not None and frozen["fc1"] == int((~expect_keep).sum()) > 0
    assert torch.equal(fc1.indices, old_idx[expect_keep])
    assert torch.equal(fc1.frozen_indices, old_idx[~expect_keep])
    torch.testing.assert_close(fc1.frozen_values, w_now[~expect_keep]
                               - fc1.base_layer.weight.detach().flatten()[old_idx[~expect_keep]])
    torch.testing.assert_close(adapted(X), before, atol=0, rtol=0)  # same map
    # the optimizer now holds the new parameters, without state for them
    held = {id(p) for g in opt.param_groups for p in g["params"]}
    assert held == {id(p) for p in adapted.adapter_parameters()}
    assert fc1.values not in opt.state
    # training continues; frozen entries stay put; a second trigger does nothing
    opt.zero_grad()
    adapted(X).square().sum().backward()
    opt.step()
    torch.testing.assert_close(fc1.delta_weight().detach().flatten()[fc1.frozen_indices],
                               fc1.frozen_values)
    assert adapted.maybe_reselect(15, 20, opt) is None
    with pytest.raises(ValueError, match="does not hold"):
        adapted.reselect(torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=0.1))


# ------------------------------------------------------------------- merge / save / load
def test_merge_unload_and_lora_factors():
    net = Net()
    ref = Net()(X)
    adapted = SaRAModel(net, SaRAConfig(target_modules=("conv", "fc1"), fraction=0.3))
    randomize(adapted)
    out = adapted(X).detach()
    with pytest.raises(TypeError, match="no exact LoRA form"):
        adapted.lora_factors()
    fc1 = adapted.adapter_layers()["fc1"]
    B, A, err = fc1.lowrank_factors(6)  # full rank of a 16 x 6 matrix: exact
    torch.testing.assert_close(B @ A, fc1.delta_weight().detach(), atol=1e-6, rtol=1e-5)
    assert err < 1e-6
    _, _, err2 = fc1.lowrank_factors(2)
    assert 0 < err2 < 1
    merged = adapted.merge_and_unload()
    assert isinstance(merged.conv, nn.Conv2d) and isinstance(merged.fc1, nn.Linear)
    torch.testing.assert_close(merged(X), out, atol=1e-6, rtol=1e-5)
    net2 = Net()
    adapted2 = SaRAModel(net2, SaRAConfig(target_modules=("conv", "fc1"), fraction=0.3))
    randomize(adapted2)
    torch.testing.assert_close(adapted2.unload()(X), ref, atol=0, rtol=0)


def test_save_load_round_trip_after_reselection(tmp_path):
    net = Net()
    cfg = SaRAConfig(target_modules=("conv", "fc1"), fraction=0.3, modules_to_save=("fc2",))
    adapted = SaRAModel(net, cfg)
    randomize(adapted, scale=1.0)  # large values: some entries leave the band
    adapted.reselect()
    with torch.no_grad():
        adapted.model.fc2.weight.mul_(1.5)
    assert sum(int(layer.frozen_indices.numel())
               for layer in adapted.adapter_layers().values()) > 0
    out = adapted(X).detach()
    path = tmp_path / "sara.safetensors"
    adapted.save_adapter(path)
    loaded = load_adapter(Net(), path)
    assert isinstance(loaded, SaRAModel)
    torch.testing.assert_close(loaded(X), out, atol=0, rtol=0)
    for name, layer in loaded.adapter_layers().items():
        orig = adapted.adapter_layers()[name]
        assert torch.equal(layer.indices, orig.indices)
        assert torch.equal(layer.frozen_indices, orig.frozen_indices)
        assert layer.reselections == 1
    assert loaded.maybe_reselect(100, 100) is None  # already re-selected
    # another base model is refused
    with pytest.raises(ValueError, match="differs"):
        load_adapter(Net(seed=1), path)
