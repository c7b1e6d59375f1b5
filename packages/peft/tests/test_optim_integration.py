"""GaLoreAdamW with N-d (Tucker-projected) weights and Q-GaLore INT8 weights."""

import io

import pytest
import torch
from torch import nn

from subspace_peft.optim import GaLoreAdamW, galore_param_groups
from subspace_peft.optim.qweights import convert_linear_to_int8, int8_weight_of


def _convnet() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Conv2d(8, 6, 3), nn.Flatten(),
                         nn.Linear(6 * 6 * 6, 4))


def _batch():
    g = torch.Generator().manual_seed(1)
    return torch.randn(16, 3, 10, 10, generator=g), torch.randint(0, 4, (16,), generator=g)


def _train(net, opt, steps):
    x, y = _batch()
    losses = []
    for _ in range(steps):
        opt.zero_grad(set_to_none=True)
        loss = nn.functional.cross_entropy(net(x), y)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses


def test_param_groups_select_conv_weights_only_when_asked():
    net = _convnet()
    plain = galore_param_groups(net, [r"^[024]$"], rank=2)
    assert [p.dim() for p in plain[-1]["params"]] == [2]
    tensor = galore_param_groups(net, [r"^[024]$"], rank=2, tensor_weights=True)
    assert sorted(p.dim() for p in tensor[-1]["params"]) == [2, 4, 4]


def test_full_rank_tucker_in_galore_adamw_equals_adamw():
    ref_net, net = _convnet(), _convnet()
    ref = torch.optim.AdamW(ref_net.parameters(), lr=1e-2, weight_decay=0.1, foreach=False)
    convs = [net[0].weight, net[2].weight]
    rest = [p for p in net.parameters() if all(p is not c for c in convs)]
    opt = GaLoreAdamW([{"params": rest}, {"params": convs, "rank": 100, "scale": 1.0,
                                          "update_proj_gap": 3, "tucker_modes": ()}],
                      lr=1e-2, weight_decay=0.1)
    _train(ref_net, ref, 6)
    _train(net, opt, 6)
    for a, b in zip(ref_net.parameters(), net.parameters(), strict=True):
        torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-6)


def test_tucker_projected_conv_weights_train_and_hold_core_sized_moments():
    net = _convnet()
    opt = GaLoreAdamW(galore_param_groups(net, [r"^[02]$"], rank=3, update_proj_gap=5,
                                          scale=1.0, tensor_weights=True), lr=1e-2)
    losses = _train(net, opt, 30)
    assert losses[-1] < 0.3 * losses[0]
    assert tuple(opt.state[net[0].weight]["exp_avg"].shape) == (3, 3, 3, 3)
    assert tuple(opt.state[net[2].weight]["exp_avg"].shape) == (3, 3, 3, 3)


def test_tucker_refuses_options_it_does_not_have():
    net = _convnet()
    with pytest.raises(ValueError, match="fira"):
        GaLoreAdamW(galore_param_groups(net, [r"^0$"], rank=2, tensor_weights=True,
                                        fira=True))


def _int8_regression():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(32, 64), nn.Tanh(), nn.Linear(64, 8))
    convert_linear_to_int8(model, [r"^[02]$"], group_size=32)
    g = torch.Generator().manual_seed(2)
    x = torch.randn(128, 32, generator=g)
    target = torch.tanh(x @ torch.randn(32, 8, generator=g))
    return model, x, target


def _int8_steps(model, opt, x, target, steps):
    losses = []
    for _ in range(steps):
        opt.zero_grad(set_to_none=True)
        loss = nn.functional.mse_loss(model(x), target)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses


def _int8_optimizer(model):
    return GaLoreAdamW(galore_param_groups(model, [r"^[02]$"], rank=4, update_proj_gap=10,
                                           scale=1.0), lr=1e-2)


def test_int8_weights_train_through_galore_with_stochastic_rounding():
    model, x, target = _int8_regression()
    before = int8_weight_of(model[0].weight).tensors()["codes"].clone()
    opt = _int8_optimizer(model)
    losses = _int8_steps(model, opt, x, target, 40)
    assert losses[-1] < 0.5 * losses[0]
    codes = int8_weight_of(model[0].weight).tensors()["codes"]
    assert codes.dtype == torch.int8 and not torch.equal(codes, before)


def test_int8_weights_resume_bit_exactly():
    model, x, target = _int8_regression()
    opt = _int8_optimizer(model)
    _int8_steps(model, opt, x, target, 12)
    buf = io.BytesIO()
    torch.save({"model": model.state_dict(), "opt": opt.state_dict()}, buf)
    uninterrupted = _int8_steps(model, opt, x, target, 8)

    resumed_model, _, _ = _int8_regression()
    buf.seek(0)
    saved = torch.load(buf, weights_only=True)
    resumed_model.load_state_dict(saved["model"])
    resumed_opt = _int8_optimizer(resumed_model)
    resumed_opt.load_state_dict(saved["opt"])
    assert _int8_steps(resumed_model, resumed_opt, x, target, 8) == uninterrupted
    for a, b in zip(model.state_dict().values(), resumed_model.state_dict().values(),
                    strict=True):
        assert torch.equal(a, b)
