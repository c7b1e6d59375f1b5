"""Effort: exact at init, only residual factors train, principal part frozen, regularisers."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from subspace_safety.effort import (
    EffortConv1x1,
    EffortLinear,
    apply_effort,
    effort_layers,
    effort_losses,
)


def _assert_close(actual, expected, rtol=1.3e-6, atol=1e-5):
    # plain allclose: torch.testing's first call imports torch._dynamo (~10 s on this machine)
    assert actual.shape == expected.shape
    assert torch.allclose(actual, expected, rtol=rtol, atol=atol), \
        float((actual - expected).abs().max())


def _mlp() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(12, 16), nn.ReLU(), nn.Linear(16, 8), nn.ReLU(),
                         nn.Linear(8, 3))


def test_init_equals_frozen_model_and_only_residual_trains():
    base = _mlp()
    model = copy.deepcopy(base)
    replaced = apply_effort(model, ["0", "2"], rank_keep=5)
    assert replaced == ["0", "2"]
    assert isinstance(model[0], EffortLinear) and isinstance(model[4], nn.Linear)
    x = torch.randn(7, 12)
    _assert_close(model(x), base(x), rtol=1e-5, atol=1e-5)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == {f"{i}.{f}" for i in (0, 2) for f in ("U_res", "S_res", "V_res")}
    # residual sizes: k − r with k = min(out, in)
    assert model[0].residual_rank == 12 - 5 and model[2].residual_rank == 8 - 5
    assert model[0].U_res.shape == (16, 7) and model[0].V_res.shape == (12, 7)
    # the split is an SVD: principal singular values are the top ones, descending
    full = torch.linalg.svdvals(base[0].weight.detach())
    _assert_close(torch.cat([model[0].S_r, model[0].S_res]), full,
                  rtol=1e-5, atol=1e-6)


def test_optimizer_step_changes_residual_not_principal():
    model = _mlp()
    apply_effort(model, ["0", "2", "4"], rank_keep=2)
    frozen = {n: b.clone() for n, b in model.named_buffers()}
    residual = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    loss = model(torch.randn(32, 12)).pow(2).mean()
    loss.backward()
    # one SGD step written out (constructing a torch.optim optimizer imports torch._dynamo,
    # ~10 s here); frozen tensors must have received no gradient at all
    with torch.no_grad():
        for param in model.parameters():
            if param.requires_grad:
                param -= 0.1 * param.grad
            else:
                assert param.grad is None
    for name, buf in model.named_buffers():
        assert torch.equal(buf, frozen[name]), name
    changed = [n for n, p in model.named_parameters()
               if p.requires_grad and not torch.equal(p.detach(), residual[n])]
    assert changed, "no residual factor moved"
    # the effective weight moved only by the residual: W − W_r = W_res exactly
    layer = model[0]
    _assert_close(layer.weight() - layer.weight_main, layer.residual_weight())


def test_orthogonality_loss_zero_at_init_grows_off_orthogonal():
    model = _mlp()
    apply_effort(model, ["0", "2"], rank_keep=3)
    losses = effort_losses(model)
    losses = type(losses)(*(t.detach() for t in losses))
    assert float(losses.orthogonality) < 1e-5
    assert float(losses.singular_value) < 1e-4 * float(model[0].weight_fnorm2)
    layer = model[0]
    with torch.no_grad():
        # rotating the residual within its own span keeps U_res orthonormal: still ~0
        Q, _ = torch.linalg.qr(torch.randn(layer.residual_rank, layer.residual_rank))
        layer.U_res.copy_(layer.U_res @ Q)
    assert float(layer.orthogonality_loss().detach()) < 1e-5
    with torch.no_grad():
        # tilting one residual column towards a principal one breaks orthogonality
        layer.U_res[:, 0] += 0.3 * layer.U_r[:, 0]
    tilted = float(layer.orthogonality_loss().detach())
    # closed form for the U half: Gram entries 0.3 (twice, off-diagonal) and 0.09 (diagonal)
    expected = 0.5 * (2 * 0.3**2 + 0.09**2) ** 0.5
    assert tilted == pytest.approx(expected, rel=1e-4)
    with torch.no_grad():
        layer.U_res[:, 0] += 0.3 * layer.U_r[:, 0]
    assert float(layer.orthogonality_loss().detach()) > tilted


def test_singular_value_loss_measures_energy_change():
    model = _mlp()
    apply_effort(model, ["0"], rank_keep=4)
    layer = model[0]
    with torch.no_grad():
        layer.S_res.mul_(2.0)
    # residual columns are orthonormal and ⟂ principal, so ‖W‖² = Σ S_r² + Σ (2 S_res)²
    expected = 3 * float((layer.S_res.detach() / 2).pow(2).sum())
    assert float(layer.singular_value_loss().detach()) == pytest.approx(expected, rel=1e-4)


def test_pointwise_convs_of_pretrained_mobilenet():
    from subspace_core.backbones import load_backbone

    base = load_backbone("mobilenet_v2").eval()
    model = copy.deepcopy(base)
    names = apply_effort(model, ["features.[2-9].conv.2", "features.1.conv.1"], rank_keep=8)
    assert "features.1.conv.1" in names and "features.2.conv.2" in names
    assert all(isinstance(model.get_submodule(n), EffortConv1x1) for n in names)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        _assert_close(model(x), base(x), rtol=1e-3, atol=1e-3)
    assert float(effort_losses(model).orthogonality.detach()) < 1e-3
    n_trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    expected = sum(layer.U_res.numel() + layer.S_res.numel() + layer.V_res.numel()
                   for layer in effort_layers(model))
    assert n_trainable == expected
    # a depthwise 3x3 conv is refused with a message naming it
    with pytest.raises(TypeError, match=r"features\.2\.conv\.1\.0.*pointwise"):
        apply_effort(copy.deepcopy(base), ["features.2.conv.1.0"], rank_keep=1)


def test_strided_pointwise_conv_matches():
    torch.manual_seed(1)
    conv = nn.Conv2d(6, 10, 1, stride=2, padding=1, bias=True)
    layer = EffortConv1x1(conv, rank_keep=2)
    x = torch.randn(3, 6, 9, 9)
    _assert_close(layer(x), conv(x), rtol=1e-5, atol=1e-5)


def test_bad_inputs_raise_clear_errors():
    model = _mlp()
    with pytest.raises(ValueError, match="matches no module"):
        apply_effort(model, ["encoder.*"], rank_keep=1)
    with pytest.raises(TypeError, match="ReLU"):
        apply_effort(model, ["1"], rank_keep=1)
    with pytest.raises(ValueError, match="rank_keep: expected < 8"):
        apply_effort(model, ["2"], rank_keep=8)
    with pytest.raises(ValueError, match="rank_keep"):
        apply_effort(model, ["2"], rank_keep=-1)
    with pytest.raises(ValueError, match="target_modules"):
        apply_effort(model, [], rank_keep=1)
    with pytest.raises(ValueError, match="pointwise"):
        EffortConv1x1(nn.Conv2d(3, 4, 3), rank_keep=1)
    with pytest.raises(ValueError, match="apply_effort"):
        effort_losses(model)
    # validation happens before any replacement: the model is untouched after an error
    assert not effort_layers(model)
