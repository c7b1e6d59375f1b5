"""GaLoreAdafactor: torch.optim.Adafactor equivalence, a written-out reference for beta1 and
the absolute step, projection at full rank, factor re-projection, training, resume."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from subspace_peft.optim import GaLoreAdafactor, galore_param_groups


class Net(nn.Module):
    """Matrices whose module names contain 'attn'/'mlp', plus vectors and a 3-D weight."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Linear(6, 12)
        self.attn = nn.Linear(12, 12)
        self.mlp = nn.Sequential(nn.Linear(12, 20), nn.Tanh(), nn.Linear(20, 12))
        self.head = nn.Linear(12, 4)
        self.mix = nn.Parameter(torch.randn(2, 3, 4) * 0.1)  # factored over its last two dims

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.tanh(self.embed(x))
        h = h + self.mlp(torch.tanh(self.attn(h)))
        return self.head(h) + self.mix.sum() * 0.01


def make_model(seed: int = 0) -> Net:
    torch.manual_seed(seed)
    return Net()


def batch(step: int, n: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(500 + step)
    return torch.randn(n, 6, generator=g), torch.randn(n, 4, generator=g)


def train(model: nn.Module, opt: torch.optim.Optimizer, steps) -> list[float]:
    losses = []
    for t in steps:
        x, y = batch(t)
        opt.zero_grad(set_to_none=True)
        loss = nn.functional.mse_loss(model(x), y)
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    return losses


# ------------------------------------------------------------------ plain Adafactor
@pytest.mark.parametrize("eps", [(None, 1e-3), (1e-30, 1e-2)])
def test_plain_group_is_bit_identical_to_torch_adafactor(eps):
    """Defaults (no beta1, relative step, clipping d=1) with weight decay, 6 steps:
    parameters and factored/unfactored second moments equal torch.optim.Adafactor's."""
    ref, ours = make_model(), make_model()
    kw = dict(lr=2e-2, beta2_decay=-0.8, eps=eps, d=1.0, weight_decay=0.1)
    ref_opt = torch.optim.Adafactor(ref.parameters(), foreach=False, **kw)
    our_opt = GaLoreAdafactor(ours.parameters(), **kw)
    train(ref, ref_opt, range(6))
    train(ours, our_opt, range(6))
    for (name, a), b in zip(ref.named_parameters(), ours.parameters(), strict=True):
        assert torch.equal(a, b), name
        sa, sb = ref_opt.state[a], our_opt.state[b]
        for key in ("row_var", "col_var", "variance"):
            if key in sa:
                assert torch.equal(sa[key], sb[key]), (name, key)
        assert int(sa["step"]) == sb["step"] == 6


def reference_adafactor(params, grads_per_step, *, lr, beta1, eps1, d, weight_decay,
                        beta2_decay=-0.8):
    """Adafactor written out (absolute step size lr, first moment of the clipped update)."""
    params = [p.detach().clone() for p in params]
    states = [{} for _ in params]
    for t, grads in enumerate(grads_per_step, start=1):
        b2 = 1.0 - t**beta2_decay
        for w, g, s in zip(params, grads, states, strict=True):
            g2 = g * g
            if g.dim() > 1:
                row0 = torch.zeros((*g.shape[:-1], 1))
                col0 = torch.zeros((*g.shape[:-2], 1, g.shape[-1]))
                s["row"] = b2 * s.get("row", row0) + (1 - b2) * g2.mean(dim=-1, keepdim=True)
                s["col"] = b2 * s.get("col", col0) + (1 - b2) * g2.mean(dim=-2, keepdim=True)
                v = s["row"] * s["col"] / s["row"].mean(dim=-2, keepdim=True).clamp(min=eps1)
            else:
                s["v"] = b2 * s.get("v", torch.zeros_like(g)) + (1 - b2) * g2
                v = s["v"]
            u = g / v.clamp(min=eps1**2).sqrt()
            u = u / max(1.0, float(u.pow(2).mean().sqrt()) / d)
            s["m"] = beta1 * s.get("m", torch.zeros_like(g)) + (1 - beta1) * u
            w.mul_(1 - lr * weight_decay).sub_(lr * s["m"])
    return params


def test_beta1_and_absolute_step_match_a_written_out_reference():
    torch.manual_seed(0)
    shapes = [(7, 5), (9,), (2, 3, 4)]
    params = [nn.Parameter(torch.randn(s)) for s in shapes]
    start = [p.detach().clone() for p in params]
    kw = dict(lr=1e-2, beta1=0.9, d=1.0, weight_decay=0.05)
    opt = GaLoreAdafactor(params, relative_step=False, eps=(1e-30, 1e-3), **kw)
    steps = [[torch.randn(s) for s in shapes] for _ in range(5)]
    for grads in steps:
        for p, g in zip(params, grads, strict=True):
            p.grad = g
        opt.step()
    expected = reference_adafactor(start, steps, eps1=1e-30, **kw)
    for p, e in zip(params, expected, strict=True):
        torch.testing.assert_close(p.detach(), e, rtol=1e-5, atol=1e-7)


# -------------------------------------------------------------------- projection
@pytest.mark.parametrize("beta1", [None, 0.9])
def test_full_rank_identity_basis_equals_plain_adafactor(beta1):
    """With P = I at full rank (and scale 1) the projected step is the plain one."""
    ref, gal = make_model(), make_model()
    kw = dict(lr=1e-2, weight_decay=0.1, beta1=beta1)
    ref_opt = GaLoreAdafactor(ref.parameters(), **kw)
    groups = galore_param_groups(gal, ("attn", "mlp"), rank=12, scale=1.0,
                                 update_proj_gap=10**9)
    gal_opt = GaLoreAdafactor(groups, **kw)
    for p in groups[1]["params"]:
        proj = gal_opt.projector(p)
        assert proj.rank == min(p.shape)
        proj.install_basis(torch.eye(proj.basis_rows))
    train(ref, ref_opt, range(5))
    train(gal, gal_opt, range(5))
    for (name, a), b in zip(ref.named_parameters(), gal.parameters(), strict=True):
        torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-6, msg=name)


@pytest.mark.parametrize("side", ["left", "right"])
def test_reprojection_moves_the_factored_estimate_with_a_permuted_basis(side):
    """A basis change that permutes/flips columns permutes the rank-1 estimate V̂ = row col /
    mean(row) exactly along the basis coordinates (and rotates the first moment)."""
    torch.manual_seed(0)
    opt = GaLoreAdafactor([nn.Parameter(torch.zeros(5, 6))], beta1=0.9)
    old = torch.eye(8)[:, :3]
    perm, signs = [2, 0, 1], torch.tensor([1.0, -1.0, 1.0])
    new = old[:, perm] * signs
    if side == "left":  # R [3, n]: rows are basis coordinates
        state = {"row_var": torch.rand(3, 1) + 0.1, "col_var": torch.rand(1, 6),
                 "exp_avg": torch.randn(3, 6)}
    else:  # R [m, 3]: columns are basis coordinates
        state = {"row_var": torch.rand(5, 1) + 0.1, "col_var": torch.rand(1, 3),
                 "exp_avg": torch.randn(5, 3)}

    def estimate(s):
        return s["row_var"] @ s["col_var"] / s["row_var"].mean()

    before, M = estimate(state), state["exp_avg"].clone()
    opt._reproject_state(state, side, old, new, opt.param_groups[0])
    if side == "left":
        torch.testing.assert_close(estimate(state), before[perm])
        torch.testing.assert_close(state["exp_avg"], M[perm] * signs[:, None])
    else:
        torch.testing.assert_close(estimate(state), before[:, perm])
        torch.testing.assert_close(state["exp_avg"], M[:, perm] * signs)
    # a basis that only partly overlaps: V̂ ← (C∘C) V̂ / V̂ (C∘C)ᵀ, exactly, in factored form
    third = torch.linalg.qr(torch.randn(8, 3)).Q
    C2 = (third.T @ new) ** 2
    before = estimate(state)
    opt._reproject_state(state, side, new, third, opt.param_groups[0])
    expected = C2 @ before if side == "left" else before @ C2.T
    torch.testing.assert_close(estimate(state), expected, rtol=1e-5, atol=1e-7)


def test_galore_adafactor_trains_a_toy_regression():
    """y = X A B (rank 2) + noise: a rank-2 projection of both layers' gradients fits it."""
    torch.manual_seed(0)
    A, B = torch.randn(16, 2), torch.randn(2, 8)
    X = torch.randn(256, 16)
    Y = X @ A @ B + 0.01 * torch.randn(256, 8)
    model = nn.Sequential(nn.Linear(16, 32), nn.Linear(32, 8))
    opt = GaLoreAdafactor([{"params": [model[0].weight, model[1].weight], "rank": 4,
                            "update_proj_gap": 20, "scale": 1.0},
                           {"params": [model[0].bias, model[1].bias]}],
                          lr=3e-2, relative_step=False, beta1=0.9)
    losses = []
    for _ in range(150):
        opt.zero_grad()
        loss = nn.functional.mse_loss(model(X), Y)
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < 0.05 * losses[0], (losses[0], losses[-1])


# ------------------------------------------------------------------------ resume
@pytest.mark.parametrize("config", [{}, {"quant_bits": 4, "quant_group_size": 4,
                                         "lazy": True, "queue_size": 1}])
def test_resume_is_bit_exact_and_weights_only(config, tmp_path):
    def make_opt(model):
        groups = galore_param_groups(model, ("attn", "mlp"), rank=4, update_proj_gap=3,
                                     scale=0.5, **config)
        return GaLoreAdafactor(groups, lr=1e-2, weight_decay=0.01, beta1=0.9)

    full = make_model()
    train(full, make_opt(full), range(9))
    first = make_model()
    first_opt = make_opt(first)
    train(first, first_opt, range(4))  # refreshes at 0 and 3, resumed before the one at 6
    torch.save({"model": first.state_dict(), "optim": first_opt.state_dict()},
               tmp_path / "c.pt")
    ckpt = torch.load(tmp_path / "c.pt", weights_only=True)
    resumed = make_model(seed=5)
    resumed.load_state_dict(ckpt["model"])
    opt = make_opt(resumed)
    opt.load_state_dict(ckpt["optim"])
    state = opt.state[resumed.attn.weight]
    assert state["row_var"].dtype == torch.float32 and isinstance(state["step"], int)
    train(resumed, opt, range(4, 9))
    for (name, a), b in zip(full.named_parameters(), resumed.parameters(), strict=True):
        assert torch.equal(a, b), name


def test_bfloat16_weights_keep_float32_factors():
    w = nn.Parameter(torch.randn(10, 6).bfloat16())
    opt = GaLoreAdafactor([{"params": [w], "rank": 2}])
    w.grad = torch.randn(10, 6).bfloat16()
    before = w.detach().clone()
    opt.step()
    assert w.dtype == torch.bfloat16 and not torch.equal(before, w)
    assert opt.state[w]["row_var"].dtype == torch.float32


# ---------------------------------------------------------------------- bad input
def test_bad_hyper_parameters_are_clear_errors():
    p = [nn.Parameter(torch.zeros(3, 3))]
    with pytest.raises(ValueError, match=r"beta1: expected None or a value in \[0, 1\), got 1.0"):
        GaLoreAdafactor(p, beta1=1.0)
    with pytest.raises(ValueError, match=r"d: expected a clipping threshold >= 1, got 0.5"):
        GaLoreAdafactor(p, d=0.5)
    with pytest.raises(ValueError, match=r"beta2_decay: expected <= 0, got 0.5"):
        GaLoreAdafactor(p, beta2_decay=0.5)
    with pytest.raises(TypeError, match=r"unknown options \['fira'\]"):
        GaLoreAdafactor(p, fira=True)
    with pytest.raises(ValueError, match="projects 2-D weights only"):
        GaLoreAdafactor([{"params": [nn.Parameter(torch.zeros(3))], "rank": 1}])
