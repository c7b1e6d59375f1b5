"""N:M sparse training: exact N:M forward, straight-through / decayed gradients against their
formulas, SR-STE decay, schedule values, finalize, and short training runs."""

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from subspace_peft.sparsity import (
    NMSchedule,
    NMSparseLinear,
    NMStepState,
    apply_nm_sparsity,
    is_nm_sparse,
    nm_group_nonzeros,
    nm_mask,
)

GEN = torch.Generator().manual_seed(0)


class MLP(nn.Module):
    def __init__(self, d_in: int = 32, hidden: int = 64, d_out: int = 4, seed: int = 0) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.fc1 = nn.Linear(d_in, hidden)
        self.fc2 = nn.Linear(hidden, hidden)
        self.head = nn.Linear(hidden, d_out)

    def forward(self, x):
        return self.head(F.relu(self.fc2(F.relu(self.fc1(x)))))


def expected_mask(w: torch.Tensor, n: int, m: int) -> torch.Tensor:
    """Top-n |w| of each group of m columns, by an independent argsort."""
    groups = w.abs().reshape(w.shape[0], -1, m)
    top = torch.topk(groups, n, dim=-1).indices
    mask = torch.zeros_like(groups, dtype=torch.bool).scatter_(-1, top, True)
    return mask.reshape(w.shape)


# ------------------------------------------------------------------------- forward
@pytest.mark.parametrize("n,m", [(2, 4), (1, 8)])
def test_forward_uses_exactly_nm_weights_recomputed_from_the_dense_weights(n, m):
    layer = NMSparseLinear.from_linear(nn.Linear(32, 12), n, m, NMSchedule("srste"))
    W = layer.weight.detach()
    Wt = layer.effective_weight().detach()
    assert is_nm_sparse(Wt, n, m)
    assert int(nm_group_nonzeros(Wt, m).max()) == n  # every group keeps exactly n (no zeros)
    P = expected_mask(W, n, m)
    assert torch.equal(nm_mask(W, n, m), P)
    assert torch.equal(Wt, W * P)
    x = torch.randn(5, 32, generator=GEN)
    torch.testing.assert_close(layer(x), F.linear(x, W * P, layer.bias), atol=0, rtol=0)
    # the mask follows the dense weights: make a pruned weight the largest of its group
    pruned = torch.nonzero(~P[0]).flatten()[0]
    with torch.no_grad():
        layer.weight[0, pruned] = 10.0
    Wt2 = layer.effective_weight().detach()
    assert float(Wt2[0, pruned]) == 10.0 and is_nm_sparse(Wt2, n, m)
    assert not is_nm_sparse(W, n, m)  # the dense weights themselves are not sparse


# ------------------------------------------------------------------------ gradients
def grads(schedule: NMSchedule, step: int, n: int = 2, m: int = 4):
    """(dense weight gradient, g = dL/dW̃, W, mask, state) of one backward at ``step``."""
    torch.manual_seed(1)
    layer = NMSparseLinear.from_linear(nn.Linear(16, 6), n, m, schedule)
    layer.step = step
    x = torch.randn(9, 16, generator=torch.Generator().manual_seed(2))
    target = torch.randn(9, 6, generator=torch.Generator().manual_seed(3))
    state = layer.state()
    Wt = layer.effective_weight().detach().requires_grad_(True)
    F.mse_loss(F.linear(x, Wt, layer.bias.detach()), target).backward()
    F.mse_loss(layer(x), target).backward()
    W = layer.weight.detach()
    return layer.weight.grad, Wt.grad, W, nm_mask(W, n, m), state


@pytest.mark.parametrize("schedule,step,beta,lam,alpha", [
    (NMSchedule("masked"), 7, 0.0, 0.0, 0.0),  # hard mask: nothing reaches pruned weights
    (NMSchedule("ste"), 7, 1.0, 0.0, 0.0),  # plain straight-through
    (NMSchedule("srste"), 7, 1.0, 2e-4, 0.0),
    (NMSchedule("srste", srste_decay=0.05), 0, 1.0, 0.05, 0.0),
    (NMSchedule("dgf", decay_fn="exp", decay_coef=0.1, dense_steps=3), 13,
     math.exp(-1.0), 0.0, 0.0),
    (NMSchedule("dgf", decay_fn="linear", decay_coef=0.02), 30, 0.4, 0.0, 0.0),
    (NMSchedule("mdgf", decay_fn="linear", decay_coef=0.02), 30, 0.4, 0.0, 0.4),
    (NMSchedule("mdgf", decay_fn="exp", decay_coef=0.01, straight_through=True), 50,
     1.0, 0.0, math.exp(-0.5)),
    (NMSchedule("mdgf", decay_fn="linear", decay_coef=0.02), 80, 0.0, 0.0, 0.0),
])
def test_gradient_to_pruned_entries_is_the_dense_gradient_scaled_as_documented(
        schedule, step, beta, lam, alpha):
    gW, g, W, P, state = grads(schedule, step)
    assert state.mask_value == pytest.approx(alpha) and state.grad_scale == pytest.approx(beta)
    assert state.decay == pytest.approx(lam)
    # kept entries: the straight-through gradient g; pruned: β g + λ_W W
    torch.testing.assert_close(gW[P], g[P], atol=0, rtol=0)
    torch.testing.assert_close(gW[~P], beta * g[~P] + lam * W[~P], atol=1e-7, rtol=1e-6)
    assert float(g[~P].abs().max()) > 0  # the comparison is not vacuous
    # the forward weight of an MDGF step is W ⊙ (P + α (1 − P))
    if schedule.recipe == "mdgf":
        layer = NMSparseLinear.from_linear(nn.Linear(16, 6), 2, 4, schedule)
        layer.step = step
        Wl = layer.weight.detach()
        Pl = nm_mask(Wl, 2, 4)
        torch.testing.assert_close(layer.effective_weight().detach(),
                                   torch.where(Pl, Wl, alpha * Wl))


def test_srste_update_matches_its_formula():
    """One SGD step of SR-STE: W ← W − γ (g(W̃) + λ_W (1 − P) ⊙ W) (Zhou et al. 2021)."""
    lam, lr = 0.3, 0.1
    torch.manual_seed(4)
    net = MLP()
    handle = apply_nm_sparsity(net, ("fc1", "fc2"), 2, 4, NMSchedule("srste", srste_decay=lam))
    x = torch.randn(8, 32, generator=GEN)
    y = torch.randint(0, 4, (8,), generator=GEN)
    W0 = {n: layer.weight.detach().clone() for n, layer in handle.layers.items()}
    # g: gradient of the same loss w.r.t. the sparse forward weights
    plain = MLP()
    with torch.no_grad():
        for n, layer in handle.layers.items():
            getattr(plain, n).weight.copy_(layer.effective_weight())
        plain.head.load_state_dict(net.head.state_dict())
        plain.fc1.bias.copy_(net.fc1.bias)
        plain.fc2.bias.copy_(net.fc2.bias)
    F.cross_entropy(plain(x), y).backward()
    opt = torch.optim.SGD(net.parameters(), lr=lr)
    F.cross_entropy(net(x), y).backward()
    opt.step()
    handle.step()
    for n in handle.layers:
        P = nm_mask(W0[n], 2, 4)
        g = getattr(plain, n).weight.grad
        expected = W0[n] - lr * (g + lam * (~P) * W0[n])
        torch.testing.assert_close(handle.layers[n].weight.detach(), expected, atol=1e-7,
                                   rtol=1e-6)


# ------------------------------------------------------------------------- schedule
def test_schedule_values_match_their_formulas():
    lin = NMSchedule("mdgf", decay_fn="linear", decay_coef=0.01, dense_steps=10)
    for t, f in [(0, 1.0), (10, 1.0), (35, 0.75), (110, 0.0), (500, 0.0)]:
        assert lin.factor(t) == pytest.approx(f)
    assert lin.state(5, 2, 4) == NMStepState(4, 4, 1.0, 1.0, 0.0)  # dense warm-up
    assert lin.state(35, 2, 4) == NMStepState(2, 4, 0.75, 0.75, 0.0)
    ex = NMSchedule("dgf", decay_fn="exp", decay_coef=0.003)
    for t in (0, 1, 100, 1000):
        assert ex.factor(t) == pytest.approx(math.exp(-0.003 * t))
        assert ex.state(t, 1, 8) == NMStepState(1, 8, 0.0, ex.factor(t), 0.0)
    assert NMSchedule("srste").state(123, 1, 8) == NMStepState(1, 8, 0.0, 1.0, 2e-4)
    # SDGF: equal frames of the sparse phase [dense_steps, total_steps)
    sd = NMSchedule("sdgf", total_steps=90, dense_steps=10)
    assert sd.patterns(1, 8) == [(7, 8), (4, 8), (2, 8), (1, 8)]
    assert sd.patterns(2, 4) == [(3, 4), (2, 4)]
    assert [sd.pattern(t, 1, 8) for t in (0, 9, 10, 29, 30, 50, 70, 89, 200)] == [
        (8, 8), (8, 8), (7, 8), (7, 8), (4, 8), (2, 8), (1, 8), (1, 8), (1, 8)]
    geo = NMSchedule("sdgf", sdgf_kind="geometric", total_steps=40)
    assert geo.patterns(1, 8) == [(8, 64), (4, 32), (2, 16), (1, 8)]
    assert [geo.pattern(t, 1, 8) for t in (0, 10, 20, 39)] == [(8, 64), (4, 32), (2, 16),
                                                                (1, 8)]
    with pytest.raises(ValueError, match="total_steps"):
        NMSchedule("sdgf")
    with pytest.raises(ValueError, match="recipe"):
        NMSchedule("mask_decay")
    with pytest.raises(ValueError, match="n, m"):
        NMSchedule().state(0, 3, 2)


def test_sdgf_layer_forward_follows_the_frames():
    sched = NMSchedule("sdgf", total_steps=40)
    handle = apply_nm_sparsity(MLP(), "fc2", 1, 8, sched)
    layer = handle.layers["fc2"]
    for step, n in [(0, 7), (10, 4), (20, 2), (30, 1)]:
        handle.set_step(step)
        assert int(nm_group_nonzeros(layer.effective_weight().detach(), 8).max()) == n


# ------------------------------------------------------------------------- finalize
@pytest.mark.parametrize("n,m", [(2, 4), (1, 8)])
def test_finalize_gives_exact_nm_weights_and_the_masked_outputs(n, m):
    net = MLP()
    keys = set(net.state_dict())
    handle = apply_nm_sparsity(net, ("fc1", "fc2"), n, m,
                               NMSchedule("mdgf", decay_fn="linear", decay_coef=0.1))
    params = {n_: id(p) for n_, p in net.named_parameters()}
    assert set(net.state_dict()) == keys  # same keys: checkpoints stay compatible
    x = torch.randn(6, 32, generator=GEN)
    handle.set_step(5)  # α = 0.5: the forward is not N:M yet
    assert not is_nm_sparse(handle.layers["fc1"].effective_weight().detach(), n, m)
    handle.set_step(10)  # α = 0: strict masked forward
    masked = net(x).detach()
    model = handle.finalize()
    assert model is net
    for name in ("fc1", "fc2"):
        mod = getattr(net, name)
        assert type(mod) is nn.Linear and is_nm_sparse(mod.weight, n, m)
    assert {n_: id(p) for n_, p in net.named_parameters()} == params
    torch.testing.assert_close(net(x), masked, atol=0, rtol=0)
    with pytest.raises(RuntimeError, match="finalized"):
        handle.step()


def test_apply_rejects_bad_targets():
    with pytest.raises(ValueError, match="multiple of the group size"):
        apply_nm_sparsity(MLP(d_in=30), "fc1", 2, 4)
    with pytest.raises(ValueError, match="multiple of the group size 64"):
        apply_nm_sparsity(MLP(), "fc1", 1, 8, NMSchedule("sdgf", sdgf_kind="geometric",
                                                          total_steps=10))
    tied = MLP(d_in=64, hidden=64)
    tied.fc2.weight = tied.fc1.weight
    with pytest.raises(ValueError, match="tied"):
        apply_nm_sparsity(tied, "fc1", 2, 4)
    with pytest.raises(ValueError, match="n, m"):
        apply_nm_sparsity(MLP(), "fc1", 0, 4)


# ------------------------------------------------------------------------- training
def teacher_task(seed: int = 0):
    """4 classes: the argmax of a random linear map of 32 Gaussian features (a dense MLP
    reaches about 94 % test accuracy in the budget below)."""
    g = torch.Generator().manual_seed(seed)
    teacher = torch.randn(4, 32, generator=g)
    x = torch.randn(4096, 32, generator=g)
    y = (x @ teacher.T).argmax(1)
    return x[:3072], y[:3072], x[3072:], y[3072:]


@pytest.mark.parametrize("schedule", [
    NMSchedule("srste"),
    NMSchedule("mdgf", decay_fn="exp", decay_coef=0.015),
])
def test_short_training_learns_and_finalizes(schedule):
    xtr, ytr, xte, yte = teacher_task()
    net = MLP()
    handle = apply_nm_sparsity(net, ("fc1", "fc2"), 2, 4, schedule)
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        first = float(F.cross_entropy(net(xte), yte))
    for _ in range(400):
        idx = torch.randint(0, len(xtr), (64,), generator=gen)
        opt.zero_grad()
        F.cross_entropy(net(xtr[idx]), ytr[idx]).backward()
        opt.step()
        handle.step()
    state = handle.state()
    assert state.mask_value < 1e-2  # the progressive schedule has (almost) reached N:M
    handle.finalize()
    with torch.no_grad():
        logits = net(xte)
    # measured: CE 1.39 -> 0.16 (SR-STE) / 0.13 (MDGF), accuracy 93 % / 95 %
    assert float(F.cross_entropy(logits, yte)) < 0.25 * first
    assert float((logits.argmax(1) == yte).float().mean()) > 0.88
    assert is_nm_sparse(net.fc1.weight, 2, 4) and is_nm_sparse(net.fc2.weight, 2, 4)


def test_benchmark_wiring_on_a_few_steps(tmp_path):
    """``run_nm_sparsity`` end to end on 4 steps (numbers meaningless; rows, JSON and the
    exact N:M check of the finalized models exercised)."""
    import json

    from subspace_core.bench import BenchContext
    from subspace_core.data import DatasetUnavailable
    from subspace_peft.benchmarks.nm_sparsity import LABELS, NMBenchConfig, run_nm_sparsity

    cfg = NMBenchConfig(patterns=((1, 8),), recipes=("srste", "mdgf", "dgf", "sdgf"), steps=4)
    ctx = BenchContext(quick=True, device=torch.device("cpu"), out_dir=tmp_path)
    try:
        rows = run_nm_sparsity(ctx, cfg)
    except DatasetUnavailable as err:  # pragma: no cover - offline without the cache
        pytest.skip(str(err))
    methods = {r.method for r in rows if r.metric == "accuracy"}
    assert methods == {LABELS[k] for k in ("dense", "srste", "mdgf", "dgf", "sdgf")}
    assert all(0 <= r.value <= 100 for r in rows if r.metric == "accuracy")
    summary = json.loads((tmp_path / "peft_nm_sparsity.json").read_text())
    assert set(summary["runs"]) == {"dense", "srste 1:8", "mdgf 1:8", "dgf 1:8", "sdgf 1:8"}
