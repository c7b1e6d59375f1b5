"""PerLayerStepper: in-backward stepping that is correct under gradient accumulation."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from subspace_peft.optim import GaLoreAdamW, PerLayerStepper, galore_param_groups


def make_model(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(8, 24), nn.Tanh(), nn.Linear(24, 16), nn.Tanh(),
                         nn.Linear(16, 3))


def groups(model: nn.Module) -> list[dict]:
    # modules "0" and "2" are projected (right side, rank 4), the rest is plain AdamW
    return galore_param_groups(model, [r"^[02]$"], rank=4, update_proj_gap=2, scale=0.5,
                               method="exact")


def make_opt(g):
    return GaLoreAdamW(g, lr=1e-2, weight_decay=0.01)


def data(step: int, n: int = 24) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(step)
    return torch.randn(n, 8, generator=gen), torch.randn(n, 3, generator=gen)


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).detach().norm() / b.detach().norm())


def big_batch_run(steps: int) -> nn.Module:
    model = make_model()
    opt = make_opt(groups(model))
    for t in range(steps):
        x, y = data(t)
        opt.zero_grad()
        nn.functional.mse_loss(model(x), y).backward()
        opt.step()
    return model


def per_layer_run(steps: int, k: int, accumulation_steps: int) -> nn.Module:
    model = make_model()
    stepper = PerLayerStepper(groups(model), make_opt, accumulation_steps=accumulation_steps,
                              guard_patience=1, names=model)
    for t in range(steps):
        x, y = data(t)
        for xs, ys in zip(x.chunk(k), y.chunk(k), strict=True):
            (nn.functional.mse_loss(model(xs), ys) / k).backward()
            stepper.step()
    return model


@pytest.mark.parametrize("k", [1, 3, 4])
def test_accumulation_over_k_micro_batches_equals_one_big_batch(k):
    """Across 5 optimizer steps (3 projector refreshes): relative error <= 1e-5."""
    ref = big_batch_run(5)
    got = per_layer_run(5, k, accumulation_steps=k)
    for (name, a), b in zip(ref.named_parameters(), got.parameters(), strict=True):
        assert rel_err(b, a) <= 1e-5, (name, rel_err(b, a))


def test_stepping_every_micro_batch_would_be_wrong():
    """The test above has teeth: galore-torch's behaviour (step per micro-batch) differs."""
    ref = big_batch_run(3)
    wrong = per_layer_run(3, 4, accumulation_steps=1)
    errs = [rel_err(b, a) for a, b in zip(ref.parameters(), wrong.parameters(), strict=True)]
    assert max(errs) > 1e-3


def test_gradients_are_freed_after_each_window_and_kept_inside_it():
    model = make_model()
    stepper = PerLayerStepper(groups(model), make_opt, accumulation_steps=2)
    x, y = data(0)
    nn.functional.mse_loss(model(x[:12]), y[:12]).backward()
    assert not stepper.step()
    assert all(p.grad is not None for p in model.parameters())  # accumulating
    nn.functional.mse_loss(model(x[12:]), y[12:]).backward()
    assert all(p.grad is None for p in model.parameters())  # stepped in backward, freed
    assert stepper.step()


def test_parameter_without_gradient_in_last_micro_batch_still_steps():
    model = make_model()
    extra = nn.Linear(8, 3)
    stepper = PerLayerStepper([{"params": list(model.parameters()) + list(extra.parameters())}],
                              make_opt, accumulation_steps=2)
    before = extra.weight.detach().clone()
    x, y = data(0)
    nn.functional.mse_loss(model(x) + extra(x), y).backward()  # extra used here only
    stepper.step()
    nn.functional.mse_loss(model(x), y).backward()
    stepper.step()
    assert extra.weight.grad is None and not torch.equal(before, extra.weight)


def test_guard_names_a_parameter_that_never_gets_a_gradient():
    model = make_model()
    model.add_module("dead", nn.Linear(3, 3))
    stepper = PerLayerStepper(model, lambda g: torch.optim.AdamW(g, lr=1e-3),
                              accumulation_steps=2, guard_patience=2)
    x, y = data(0)
    with pytest.raises(RuntimeError, match=r"dead\.weight"):
        for _ in range(4):
            nn.functional.mse_loss(model[:5](x), y).backward()
            stepper.step()


def test_resume_is_bit_exact(tmp_path):
    k = 2
    full = per_layer_run(6, k, accumulation_steps=k)

    model = make_model()
    stepper = PerLayerStepper(groups(model), make_opt, accumulation_steps=k)

    def run(steps):
        for t in steps:
            x, y = data(t)
            for xs, ys in zip(x.chunk(k), y.chunk(k), strict=True):
                (nn.functional.mse_loss(model(xs), ys) / k).backward()
                stepper.step()

    run(range(3))
    torch.save({"model": model.state_dict(), "stepper": stepper.state_dict()}, tmp_path / "c.pt")
    ckpt = torch.load(tmp_path / "c.pt", weights_only=True)
    stepper.remove()
    model = make_model(seed=7)
    model.load_state_dict(ckpt["model"])
    stepper = PerLayerStepper(groups(model), make_opt, accumulation_steps=k)
    stepper.load_state_dict(ckpt["stepper"])
    run(range(3, 6))
    for a, b in zip(full.parameters(), model.parameters(), strict=True):
        assert torch.equal(a, b)


def test_bad_accumulation_steps():
    with pytest.raises(ValueError, match="accumulation_steps: expected an int >= 1, got 0"):
        PerLayerStepper(make_model(), make_opt, accumulation_steps=0)
