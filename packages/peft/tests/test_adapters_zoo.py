"""ShippedAdapter: a zoo checkpoint that holds only the adapter, loaded strictly."""

import pytest
import torch
from torch import nn

from subspace_peft.adapters import CorDAConfig, CorDAModel, SVFitConfig, SVFitModel
from subspace_peft.adapters.zoo import ShippedAdapter


def mlp(seed: int = 0) -> nn.Sequential:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(12, 20), nn.GELU(), nn.Linear(20, 7), nn.Tanh(),
                         nn.Linear(7, 3))


def _svfit(seed: int = 0) -> ShippedAdapter:
    return ShippedAdapter(SVFitModel(mlp(seed), SVFitConfig(target_modules=("0", "2"),
                                                            modules_to_save=("4",))))


def _train(model: nn.Module, x: torch.Tensor, steps: int = 5) -> None:
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    for _ in range(steps):
        loss = model(x).square().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()


def test_state_holds_only_the_adapter_and_round_trips():
    x = torch.randn(16, 12)
    trained = _svfit()
    _train(trained, x)
    state = trained.state_dict()
    base_params = sum(p.numel() for p in mlp().parameters())
    # SVFit: min(out, in) singular values per target (delta + reference) and the saved head
    assert sum(v.numel() for v in state.values()) == 2 * (12 + 7) + 7 * 3 + 3 < base_params
    fresh = _svfit()
    assert not torch.allclose(fresh(x), trained(x))
    fresh.load_state_dict(state, strict=True)
    torch.testing.assert_close(fresh(x), trained(x))


def test_corda_adapter_round_trips_through_its_state():
    x = torch.randn(64, 12)

    def build() -> ShippedAdapter:
        model = mlp()
        return ShippedAdapter(CorDAModel.calibrate(
            model, CorDAConfig(target_modules=("0",), rank=2), lambda: model(x)))

    trained = build()
    _train(trained, x)
    fresh = build()
    fresh.load_state_dict(trained.state_dict())
    torch.testing.assert_close(fresh(x), trained(x))


def test_loading_is_strict():
    state = _svfit().state_dict()
    with pytest.raises(ValueError, match="strict"):
        _svfit().load_state_dict(state, strict=False)
    missing = dict(state)
    missing.pop(next(k for k in state if k.startswith("modules_to_save.")))
    with pytest.raises(Exception, match=r"weight|bias|Missing"):
        _svfit().load_state_dict(missing)
    extra = dict(state, **{"5.delta_s": torch.zeros(3)})
    with pytest.raises(ValueError, match="no layer"):
        _svfit().load_state_dict(extra)
    with pytest.raises(TypeError, match="AdapterModel"):
        ShippedAdapter(mlp())
