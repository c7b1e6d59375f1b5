"""GaLoreAdamW: AdamW equivalence at full rank, moment re-projection, bit-exact resume,
weights_only state, Fira / Q-GaLore options, update guard and clear errors."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from subspace_peft.optim import (
    GaLoreAdamW,
    SubspaceProjector,
    UpdateGuard,
    galore_param_groups,
)


class Block(nn.Module):
    """A tiny transformer-like block whose module names contain 'attn' and 'mlp'."""

    def __init__(self, d: int = 12, h: int = 20, out: int = 5) -> None:
        super().__init__()
        self.embed = nn.Linear(6, d)
        self.attn = nn.ModuleDict({"q_proj": nn.Linear(d, d), "o_proj": nn.Linear(d, d)})
        self.norm = nn.LayerNorm(d)
        self.mlp = nn.Sequential(nn.Linear(d, h), nn.GELU(), nn.Linear(h, d))
        self.head = nn.Linear(d, out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.embed(x)
        x = x + self.attn["o_proj"](torch.tanh(self.attn["q_proj"](x)))
        x = x + self.mlp(self.norm(x))
        return self.head(x)


def batch(step: int, n: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1000 + step)
    return torch.randn(n, 6, generator=g), torch.randn(n, 5, generator=g)


def train(model: nn.Module, opt: torch.optim.Optimizer, steps: range) -> None:
    for t in steps:
        x, y = batch(t)
        opt.zero_grad(set_to_none=True)
        nn.functional.mse_loss(model(x), y).backward()
        opt.step()


def make_model(seed: int = 0) -> Block:
    torch.manual_seed(seed)
    return Block()


# --------------------------------------------------------------------- AdamW equivalence
def test_full_rank_identity_basis_equals_adamw():
    """At full rank with P = I (square, orthonormal) GaLore's step is AdamW's step."""
    ref, gal = make_model(), make_model()
    kw = dict(lr=3e-3, betas=(0.9, 0.99), eps=1e-8, weight_decay=0.1)
    ref_opt = torch.optim.AdamW(ref.parameters(), **kw)
    groups = galore_param_groups(gal, ("attn", "mlp"), rank=12, scale=1.0,
                                 update_proj_gap=10**9)
    gal_opt = GaLoreAdamW(groups, **kw)
    for p in groups[1]["params"]:
        proj = gal_opt.projector(p)
        assert proj.rank == min(p.shape)  # full rank: P square
        proj.install_basis(torch.eye(proj.basis_rows))
    train(ref, ref_opt, range(6))
    train(gal, gal_opt, range(6))
    for (name, a), b in zip(ref.named_parameters(), gal.parameters(), strict=True):
        torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-6, msg=name)


@pytest.mark.parametrize("reproject", [True, False])
def test_full_rank_refreshing_basis_with_moment_reprojection(reproject):
    """Full rank, basis refreshed from the gradient every step (arbitrary rotations and sign
    flips). In Adam's linear regime (ε ≫ √v, so the step is rotation-equivariant) GaLore
    equals AdamW exactly when the moments are re-projected, and not without (GaLore#54)."""
    torch.manual_seed(0)
    ref = nn.Linear(10, 7, bias=False)
    gal = nn.Linear(10, 7, bias=False)
    gal.load_state_dict(ref.state_dict())
    kw = dict(lr=1e5, betas=(0.9, 0.999), eps=1e6)
    ref_opt = torch.optim.AdamW(ref.parameters(), weight_decay=0.0, **kw)
    gal_opt = GaLoreAdamW([{"params": gal.parameters(), "rank": 7, "scale": 1.0,
                            "update_proj_gap": 1, "method": "exact",
                            "reproject_moments": reproject}], **kw)
    for t in range(6):
        g = torch.Generator().manual_seed(t)
        x, y = torch.randn(32, 10, generator=g), torch.randn(32, 7, generator=g)
        for model, opt in ((ref, ref_opt), (gal, gal_opt)):
            opt.zero_grad()
            nn.functional.mse_loss(model(x), y).backward()
            opt.step()
    if reproject:
        torch.testing.assert_close(gal.weight, ref.weight, rtol=1e-4, atol=1e-6)
    else:
        assert not torch.allclose(gal.weight, ref.weight, rtol=1e-2, atol=1e-4)


def test_reprojection_of_a_permuted_basis_is_exact():
    """A basis that only permutes / flips columns moves M and V exactly along with it."""
    state = {"exp_avg": torch.arange(6.0).reshape(3, 2) - 2,
             "exp_avg_sq": torch.arange(6.0).reshape(3, 2) + 1}
    old = torch.eye(4)[:, :3]
    new = old[:, [2, 0, 1]] * torch.tensor([1.0, -1.0, 1.0])
    M, V = state["exp_avg"].clone(), state["exp_avg_sq"].clone()
    GaLoreAdamW._reproject(state, "left", old, new)
    # new coordinate i holds old coordinate perm[i], times its sign
    torch.testing.assert_close(state["exp_avg"], M[[2, 0, 1]] * torch.tensor([[1.0], [-1.0], [1.0]]))
    torch.testing.assert_close(state["exp_avg_sq"], V[[2, 0, 1]])


# ----------------------------------------------------------------------------- resume
CONFIGS = {
    "galore": {},
    "fira": {"fira": True},
    "randomized": {"method": "randomized"},
    "qgalore_int4_lazy": {"quant_bits": 4, "quant_group_size": 8, "lazy": True,
                          "queue_size": 1, "cos_threshold": 0.0},
}


def make_opt(model: nn.Module, config: dict) -> GaLoreAdamW:
    groups = galore_param_groups(model, ("attn", "mlp"), rank=4, update_proj_gap=3,
                                 scale=0.5, **config)
    return GaLoreAdamW(groups, lr=1e-2, weight_decay=0.01)


@pytest.mark.parametrize("name", list(CONFIGS))
def test_resume_is_bit_exact_and_weights_only(name, tmp_path):
    """Save after 4 steps (refreshes at 0 and 3), reload with weights_only=True into a fresh
    model and optimizer, continue across the next refresh: torch.equal to an unbroken run."""
    config = CONFIGS[name]
    full = make_model()
    full_opt = make_opt(full, config)
    train(full, full_opt, range(10))

    first = make_model()
    first_opt = make_opt(first, config)
    train(first, first_opt, range(4))
    path = tmp_path / "ckpt.pt"
    torch.save({"model": first.state_dict(), "optim": first_opt.state_dict()}, path)
    del first, first_opt

    ckpt = torch.load(path, weights_only=True)
    resumed = make_model(seed=123)  # different init: everything must come from the file
    resumed.load_state_dict(ckpt["model"])
    resumed_opt = make_opt(resumed, config)
    resumed_opt.load_state_dict(ckpt["optim"])
    train(resumed, resumed_opt, range(4, 10))

    for (pname, a), b in zip(full.named_parameters(), resumed.parameters(), strict=True):
        assert torch.equal(a, b), pname
    if name == "qgalore_int4_lazy":
        state = full_opt.state[full.mlp[0].weight]["projector"]
        assert state["basis_codes"].dtype == torch.uint8 and "basis" not in state
        assert state["gap"] > 3  # lazy refresh grew the gap


def test_state_is_plain_tensors_and_numbers():
    model = make_model()
    opt = make_opt(model, {"fira": True})
    train(model, opt, range(2))

    def check(v):
        if isinstance(v, dict):
            for x in v.values():
                check(x)
        elif isinstance(v, list | tuple):
            for x in v:
                check(x)
        else:
            assert v is None or isinstance(v, torch.Tensor | int | float | str | bool), type(v)

    check(opt.state_dict())


# --------------------------------------------------------------- training mechanics
@pytest.mark.parametrize("config", [{}, {"fira": True}, {"quant_bits": 4, "lazy": True}])
def test_every_trainable_parameter_changes(config):
    model = make_model()
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    opt = make_opt(model, config)
    guard = UpdateGuard(model, patience=2).attach(opt)
    train(model, opt, range(3))
    assert guard.missing == []
    for n, p in model.named_parameters():
        assert not torch.equal(before[n], p), f"{n} did not change"


def test_guard_names_a_parameter_that_never_gets_a_gradient():
    model = make_model()
    model.unused = nn.Linear(3, 3)  # registered, trainable, never called in forward
    opt = make_opt(model, {})
    UpdateGuard(model, patience=2).attach(opt)
    train(model, opt, range(1))
    with pytest.raises(RuntimeError, match=r"unused\.weight.*unused\.bias|unused\.bias.*unused\.weight"):
        train(model, opt, range(1, 2))


def test_param_groups_select_by_module_name_and_regex():
    model = make_model()
    groups = galore_param_groups(model, ("attn", "mlp"), rank=4)
    projected = {id(p) for p in groups[1]["params"]}
    names = {n for n, p in model.named_parameters() if id(p) in projected}
    assert names == {"attn.q_proj.weight", "attn.o_proj.weight", "mlp.0.weight", "mlp.2.weight"}
    assert len(groups[0]["params"]) + len(groups[1]["params"]) == len(list(model.parameters()))
    regex = galore_param_groups(model, [r"^mlp\.\d+$"], rank=4)
    assert {id(p) for p in regex[1]["params"]} == {id(model.mlp[0].weight),
                                                   id(model.mlp[2].weight)}


# ---------------------------------------------------------------------- bad inputs
def test_rank_larger_than_min_dim_is_a_clear_error():
    model = make_model()
    with pytest.raises(ValueError, match=r"rank: expected an int in \[1, min\(m, n\) = 12\]"):
        GaLoreAdamW(galore_param_groups(model, "attn", rank=13))


def test_unknown_proj_type_is_a_clear_error():
    model = make_model()
    with pytest.raises(ValueError, match=r"proj_type: expected one of .* got 'diagonal'"):
        GaLoreAdamW(galore_param_groups(model, "attn", rank=4, proj_type="diagonal"))


def test_other_bad_inputs():
    model = make_model()
    with pytest.raises(ValueError, match="projects 2-D weights only"):
        GaLoreAdamW([{"params": [model.head.bias], "rank": 2}])
    with pytest.raises(ValueError, match="no module with a trainable 2-D weight matches"):
        galore_param_groups(model, ("decoder",), rank=4)
    with pytest.raises(ValueError, match="unknown keys"):
        GaLoreAdamW([{"params": [model.head.weight], "rank": 2, "rnak": 3}])
    with pytest.raises(ValueError, match="method"):
        GaLoreAdamW([{"params": [model.head.weight], "rank": 2, "method": "qr"}])


def test_non_finite_gradient_raises_instead_of_a_zero_basis():
    w = nn.Parameter(torch.randn(8, 6))
    opt = GaLoreAdamW([{"params": [w], "rank": 2}])
    w.grad = torch.full_like(w, float("nan"))
    with pytest.raises(ValueError, match="NaN or Inf"):
        opt.step()


# ----------------------------------------------------------------------- projector
@pytest.mark.parametrize("shape,proj_type,side", [((20, 8), "std", "right"),
                                                  ((8, 20), "std", "left"),
                                                  ((20, 8), "reverse_std", "left"),
                                                  ((20, 8), "left", "left")])
def test_projector_side_and_top_subspace(shape, proj_type, side):
    torch.manual_seed(0)
    U = torch.linalg.qr(torch.randn(shape[0], 3)).Q
    V = torch.linalg.qr(torch.randn(shape[1], 3)).Q
    G = U @ torch.diag(torch.tensor([10.0, 5.0, 2.0])) @ V.T + 1e-3 * torch.randn(shape)
    for method in ("subspace_iteration", "randomized", "exact"):
        proj = SubspaceProjector(shape, 3, proj_type=proj_type, method=method)
        assert proj.side == side
        proj.refresh(G, 0)
        P = proj.basis()
        truth = U if side == "left" else V
        assert P.shape == (truth.shape[0], 3)
        torch.testing.assert_close(P.T @ P, torch.eye(3), atol=1e-5, rtol=0)
        # same subspace as the true top-3 singular vectors
        torch.testing.assert_close(P @ P.T, truth @ truth.T, atol=1e-3, rtol=0)
        proj.refresh(G, 1)  # warm-started second refresh
        torch.testing.assert_close(proj.basis() @ proj.basis().T, truth @ truth.T,
                                   atol=1e-3, rtol=0)


def test_lazy_refresh_doubles_the_gap_of_a_converged_layer():
    G = torch.randn(16, 8)
    proj = SubspaceProjector(G.shape, 2, update_proj_gap=4, lazy=True, queue_size=2,
                             quant_bits=4, quant_group_size=8)
    for k in range(3):
        assert proj.due(proj.state["next_refresh"])
        proj.refresh(G, proj.state["next_refresh"])
        assert proj.state["gap"] == (4 if k < 2 else 8)
    assert proj.state["basis_codes"].numel() * 2 == 8 * 2  # INT4: two codes per byte


def test_bfloat16_weights_keep_float32_state_across_a_weights_only_reload(tmp_path):
    torch.manual_seed(0)
    w = nn.Parameter(torch.randn(16, 8, dtype=torch.bfloat16))
    opt = GaLoreAdamW([{"params": [w], "rank": 3, "update_proj_gap": 2, "fira": True}])
    for t in range(3):
        w.grad = torch.randn(16, 8, generator=torch.Generator().manual_seed(t)).bfloat16()
        opt.step()
    torch.save(opt.state_dict(), tmp_path / "o.pt")
    fresh = GaLoreAdamW([{"params": [w], "rank": 3, "update_proj_gap": 2, "fira": True}])
    fresh.load_state_dict(torch.load(tmp_path / "o.pt", weights_only=True))
    for key in ("exp_avg", "exp_avg_sq", "fira_state"):
        assert fresh.state[w][key].dtype == torch.float32
        assert torch.equal(fresh.state[w][key], opt.state[w][key])
    assert fresh.state[w]["projector"]["basis"].dtype == torch.float32


# ------------------------------------------------------------- multi-tensor fast path
def test_plain_group_is_bit_identical_to_torch_adamw_foreach():
    """A group without 'rank' is torch.optim.AdamW(foreach=True) bit for bit, weight decay
    and several steps included (embeddings, matrices, vectors of different sizes)."""
    ref, ours = make_model(), make_model()
    kw = dict(lr=3e-3, betas=(0.9, 0.95), eps=1e-7, weight_decay=0.1)
    ref_opt = torch.optim.AdamW(ref.parameters(), foreach=True, **kw)
    our_opt = GaLoreAdamW(ours.parameters(), **kw)
    train(ref, ref_opt, range(7))
    train(ours, our_opt, range(7))
    for (name, a), b in zip(ref.named_parameters(), ours.parameters(), strict=True):
        assert torch.equal(a, b), name
        for key in ("exp_avg", "exp_avg_sq", "step"):
            assert torch.equal(ref_opt.state[a][key], our_opt.state[b][key]), (name, key)


def _reference_steps(W, grads, P, side, *, fira, steps_kw):
    """projected_adam_ref on copies: the spec the optimizer's batched path must match."""
    from subspace_core.ops.projected_adam import projected_adam_ref

    W = W.detach().clone()
    shape = (P.shape[1], W.shape[1]) if side == "left" else (W.shape[0], P.shape[1])
    M, V = torch.zeros(shape), torch.zeros(shape)
    fira_state = torch.zeros(()) if fira else None
    for t, G in enumerate(grads, start=1):
        projected_adam_ref(W, G, P, M, V, step=t, side=side, fira_state=fira_state, **steps_kw)
    return W, M, V, fira_state


@pytest.mark.parametrize("fira", [False, True])
@pytest.mark.parametrize("quant_bits", [None, 8])
def test_batched_projected_steps_match_the_core_reference(fira, quant_bits):
    """Several weights of a group (runs of equal shapes on both sides, as the fast path
    batches them) against projected_adam_ref weight by weight, over 5 steps with growing
    gradients (so that Fira's limiter engages)."""
    torch.manual_seed(0)
    shapes = [(12, 8), (12, 8), (12, 8), (6, 10), (6, 10), (9, 9)]
    weights = [nn.Parameter(torch.randn(s)) for s in shapes]
    kw = dict(lr=1e-2, beta1=0.9, beta2=0.99, eps=1e-8, weight_decay=0.05, alpha=0.5)
    opt = GaLoreAdamW([{"params": weights, "rank": 3, "scale": 0.5, "update_proj_gap": 10**6,
                        "fira": fira, "quant_bits": quant_bits, "quant_group_size": 3}],
                      lr=kw["lr"], betas=(0.9, 0.99), eps=1e-8, weight_decay=0.05)
    bases, inits = [], [w.detach().clone() for w in weights]
    for w in weights:
        proj = opt.projector(w)
        proj.install_basis(torch.linalg.qr(torch.randn(proj.basis_rows, 3)).Q)
        bases.append((proj.basis(), proj.side))  # dequantised when quantised
    grads = [[(1.5**t) * torch.randn(s) for t in range(5)] for s in shapes]
    for t in range(5):
        for w, g in zip(weights, grads, strict=True):
            w.grad = g[t]
        opt.step()
    assert {side for _, side in bases} == {"left", "right"}
    for w, w0, g, (P, side) in zip(weights, inits, grads, bases, strict=True):
        W, M, V, fs = _reference_steps(w0, g, P, side, fira=fira, steps_kw=kw)
        state = opt.state[w]
        torch.testing.assert_close(w.detach(), W, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(state["exp_avg"], M, rtol=1e-5, atol=1e-7)
        torch.testing.assert_close(state["exp_avg_sq"], V, rtol=1e-5, atol=1e-9)
        if fira:
            torch.testing.assert_close(state["fira_state"], fs, rtol=1e-4, atol=0)
    if fira:  # the limiter acted: without it (huge γ) the reference ends elsewhere
        free = _reference_steps(inits[0], grads[0], *bases[0], fira=True,
                                steps_kw={**kw, "fira_gamma": 1e9})
        assert not torch.allclose(free[0], weights[0].detach(), rtol=1e-3, atol=1e-4)


def test_bfloat16_weights_match_the_core_reference():
    torch.manual_seed(0)
    w = nn.Parameter(torch.randn(16, 8).bfloat16())
    w0 = w.detach().clone()
    opt = GaLoreAdamW([{"params": [w], "rank": 3, "update_proj_gap": 10**6, "fira": True}],
                      lr=1e-2, weight_decay=0.1)
    proj = opt.projector(w)
    proj.install_basis(torch.linalg.qr(torch.randn(8, 3)).Q)
    grads = [torch.randn(16, 8).bfloat16() for _ in range(3)]
    for g in grads:
        w.grad = g
        opt.step()
    kw = dict(lr=1e-2, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.1, alpha=0.25)
    W, *_ = _reference_steps(w0, grads, proj.basis(), proj.side, fira=True, steps_kw=kw)
    assert w.dtype == torch.bfloat16
    torch.testing.assert_close(w.detach().float(), W.float(), rtol=1e-2, atol=1e-2)
    assert (w.detach() != W).float().mean() < 0.02  # bf16 rounding: rare one-ulp flips only


def test_moments_of_a_group_share_one_buffer_and_resume_from_plain_tensors(tmp_path):
    """The fast path keeps a whole group's moments in one buffer (views in the state); a
    state dict saved from it loads as separate tensors and is laid out again, bit-exactly."""
    model = make_model()
    opt = make_opt(model, {})
    train(model, opt, range(2))
    projected = opt.param_groups[1]["params"]
    ptrs = {opt.state[p]["exp_avg"].untyped_storage().data_ptr() for p in projected}
    assert len(ptrs) == 1
    torch.save(opt.state_dict(), tmp_path / "o.pt")
    fresh = make_opt(model, {})
    fresh.load_state_dict(torch.load(tmp_path / "o.pt", weights_only=True))
    for p in projected:
        assert torch.equal(fresh.state[p]["exp_avg"], opt.state[p]["exp_avg"])
        assert fresh.state[p]["exp_avg"].numel() == fresh.state[p]["exp_avg"].untyped_storage(
        ).nbytes() // 4  # a plain tensor of its own after loading


def test_step_param_equals_the_batched_group_step():
    """``_step_param(p, group, state)`` (the per-parameter entry point, e.g. for a gathered
    FSDP2 weight) takes the same step as ``step()`` up to float32 rounding."""
    a, b = make_model(), make_model()
    opt_a, opt_b = make_opt(a, {"fira": True}), make_opt(b, {"fira": True})
    for t in range(4):
        for model in (a, b):
            x, y = batch(t)
            model.zero_grad(set_to_none=True)
            nn.functional.mse_loss(model(x), y).backward()
        opt_a.step()
        for group in opt_b.param_groups:
            for p in group["params"]:
                opt_b._step_param(p, group, opt_b.state[p])
    for (name, p), q in zip(a.named_parameters(), b.parameters(), strict=True):
        torch.testing.assert_close(q, p, rtol=1e-5, atol=1e-6, msg=name)


def test_unknown_backend_is_a_clear_error():
    model = make_model()
    with pytest.raises(ValueError, match=r"backend: expected one of .* got 'cuda'"):
        GaLoreAdamW(galore_param_groups(model, "attn", rank=4, backend="cuda"))


def test_a_refused_param_group_is_not_kept():
    model = make_model()
    opt = GaLoreAdamW([{"params": [model.head.weight]}])
    with pytest.raises(ValueError, match=r"rank: expected an int in \[1, min\(m, n\) = 12\]"):
        opt.add_param_group({"params": [model.attn["q_proj"].weight], "rank": 20})
    assert len(opt.param_groups) == 1
