"""Tests of ``subspace_core.train``: exact resume from the training state, recipe import."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from safetensors import safe_open
from torch import nn

from subspace_core.train import (
    TRAINING_STATE,
    import_recipe,
    load_training_state,
    save_training_state,
)

X = torch.linspace(-1, 1, 64 * 4).reshape(64, 4)
Y = (X.sum(dim=1) > 0).long()


def _model() -> nn.Module:
    # dropout makes the forward pass consume the global RNG too
    return nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Dropout(0.2), nn.Linear(16, 2))


def _optimizer(model: nn.Module) -> torch.optim.Optimizer:
    return torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.1, betas=(0.8, 0.95))


def _epoch(model: nn.Module, optimizer: torch.optim.Optimizer) -> None:
    model.train()
    for idx in torch.randperm(len(X)).split(16):  # shuffling uses the global RNG
        loss = F.cross_entropy(model(X[idx]), Y[idx])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()


def _state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


@pytest.fixture(autouse=True)
def _keep_global_rng():
    state = torch.get_rng_state()
    yield
    torch.set_rng_state(state)


def test_train_resume_is_exact(tmp_path):
    torch.manual_seed(0)
    straight = _model()
    opt = _optimizer(straight)
    _epoch(straight, opt)
    _epoch(straight, opt)

    torch.manual_seed(0)
    first = _model()
    opt1 = _optimizer(first)
    _epoch(first, opt1)
    path = save_training_state(tmp_path, first, opt1, epoch=1, extra={"best": 0.5})
    assert path == tmp_path / TRAINING_STATE
    del first, opt1

    torch.manual_seed(1234)  # a different init and a different RNG stream
    resumed = _model()
    opt2 = _optimizer(resumed)
    torch.rand(1000)
    assert load_training_state(tmp_path, resumed, opt2) == (1, {"best": 0.5})
    _epoch(resumed, opt2)

    after_straight, after_resumed = _state(straight), _state(resumed)
    assert after_straight.keys() == after_resumed.keys()
    for key in after_straight:
        assert torch.equal(after_straight[key], after_resumed[key]), key
    # the optimizer states agree as well (Adam moments and step counts)
    s1, s2 = opt.state_dict(), opt2.state_dict()
    for index, state in s1["state"].items():
        for name, value in state.items():
            assert torch.equal(value, s2["state"][index][name]), (index, name)
    assert s1["param_groups"][0]["betas"] == tuple(s2["param_groups"][0]["betas"])


def test_train_resume_restores_without_extra_epoch(tmp_path):
    torch.manual_seed(0)
    model = _model()
    opt = _optimizer(model)
    _epoch(model, opt)
    save_training_state(tmp_path, model, opt, epoch=7)
    expected_rng = torch.get_rng_state()
    torch.manual_seed(99)
    fresh = _model()
    fresh_opt = _optimizer(fresh)
    assert load_training_state(tmp_path, fresh, fresh_opt) == (7, {})
    for key, value in model.state_dict().items():
        assert torch.equal(value, fresh.state_dict()[key])
    assert torch.equal(torch.get_rng_state(), expected_rng)
    loaded = fresh_opt.state_dict()
    assert loaded["param_groups"][0]["lr"] == 1e-2
    assert loaded["param_groups"][0]["weight_decay"] == 0.1
    assert set(loaded["state"][0]) == {"step", "exp_avg", "exp_avg_sq"}
    assert float(loaded["state"][0]["step"]) == 4.0  # 64 samples / 16 per batch


def test_train_state_file_layout_no_pickle(tmp_path):
    torch.manual_seed(0)
    model = _model()
    opt = _optimizer(model)
    _epoch(model, opt)
    path = save_training_state(tmp_path, model, opt, epoch=3, extra={"note": "x"})
    with safe_open(str(path), framework="pt") as fh:
        keys = set(fh.keys())
        meta = fh.metadata()
    assert {f"model.{k}" for k in model.state_dict()} <= keys
    state = {"optim.state.0.exp_avg", "optim.state.0.exp_avg_sq", "optim.state.0.step"}
    assert state | {"rng.torch"} <= keys
    assert meta["epoch"] == "3"
    assert json.loads(meta["extra"]) == {"note": "x"}
    skeleton = dict(json.loads(meta["optimizer"])["__dict__"])
    assert dict(skeleton["param_groups"][0]["__dict__"])["params"] == [0, 1, 2, 3]
    assert sorted(p.name for p in tmp_path.iterdir()) == [TRAINING_STATE]


def test_train_state_overwrite_is_atomic(tmp_path):
    torch.manual_seed(0)
    model = _model()
    opt = _optimizer(model)
    save_training_state(tmp_path, model, opt, epoch=1)
    save_training_state(tmp_path, model, opt, epoch=2)
    assert load_training_state(tmp_path, _model(), _optimizer(_model()))[0] == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == [TRAINING_STATE]


def test_train_state_before_first_step(tmp_path):
    """Saving before any optimizer step (empty optimizer state) still round-trips."""
    model = _model()
    opt = _optimizer(model)
    save_training_state(tmp_path / "new", model, opt, epoch=0)
    fresh = _model()
    assert load_training_state(tmp_path / "new", fresh, _optimizer(fresh)) == (0, {})
    for key, value in model.state_dict().items():
        assert torch.equal(value, fresh.state_dict()[key])


def test_train_load_without_state_returns_none(tmp_path):
    model = _model()
    before = _state(model)
    assert load_training_state(tmp_path, model, _optimizer(model)) is None
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())


def test_train_sgd_momentum_roundtrip(tmp_path):
    torch.manual_seed(0)
    model = _model()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    _epoch(model, opt)
    save_training_state(tmp_path, model, opt, epoch=1)
    fresh = _model()
    fresh_opt = torch.optim.SGD(fresh.parameters(), lr=0.1, momentum=0.9)
    load_training_state(tmp_path, fresh, fresh_opt)
    for index, state in opt.state_dict()["state"].items():
        assert torch.equal(state["momentum_buffer"],
                           fresh_opt.state_dict()["state"][index]["momentum_buffer"])


def test_train_import_recipe():
    assert import_recipe("json:dumps") is json.dumps
    with pytest.raises(ValueError, match="module:function"):
        import_recipe("json.dumps")
    with pytest.raises(ModuleNotFoundError):
        import_recipe("no_such_module_xyz:train")
    with pytest.raises(AttributeError):
        import_recipe("json:no_such_function")


def test_train_state_nested_optimizer_state_round_trips(tmp_path):
    """Optimizers with nested state (e.g. a projector dict per parameter) round-trip exactly."""

    class Nested(torch.optim.SGD):
        def step(self, closure=None):
            super().step(closure)
            for p in self.param_groups[0]["params"]:
                state = self.state[p]
                state["projector"] = {"basis": torch.randn(3, 2), "refreshes": 2, "seen": [1, 2]}

    torch.manual_seed(0)
    model = _model()
    opt = Nested(model.parameters(), lr=0.1)
    _epoch(model, opt)
    save_training_state(tmp_path, model, opt, epoch=1)
    fresh = _model()
    fresh_opt = Nested(fresh.parameters(), lr=0.1)
    load_training_state(tmp_path, fresh, fresh_opt)
    before, after = opt.state_dict()["state"], fresh_opt.state_dict()["state"]
    assert sorted(before) == sorted(after) and all(isinstance(k, int) for k in after)
    for index, state in before.items():
        assert torch.equal(state["projector"]["basis"], after[index]["projector"]["basis"])
        assert after[index]["projector"]["refreshes"] == 2
        assert after[index]["projector"]["seen"] == [1, 2]


def test_train_state_refuses_unpicklable_free_state(tmp_path):
    model = _model()
    opt = _optimizer(model)
    _epoch(model, opt)
    opt.state[next(model.parameters())]["closure"] = object()
    with pytest.raises(TypeError, match="cannot be saved without pickling"):
        save_training_state(tmp_path, model, opt, epoch=1)
    assert not (tmp_path / TRAINING_STATE).exists()


def test_warmup_cosine_and_checkpoint_file():
    from subspace_core.train import checkpoint_file, warmup_cosine

    assert warmup_cosine(0, 100, 10) == pytest.approx(0.1)
    assert warmup_cosine(9, 100, 10) == pytest.approx(1.0)
    assert warmup_cosine(55, 100, 10) == pytest.approx(0.5)
    assert warmup_cosine(100, 100, 10) == pytest.approx(0.0, abs=1e-12)
    assert checkpoint_file("ssl/gcr_tiny.fmnist") == "gcr_tiny.fmnist.safetensors"
    with pytest.raises(ValueError, match="model_id"):
        checkpoint_file("gcr_tiny")
