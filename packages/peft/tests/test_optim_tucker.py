"""Tucker (HOSVD) projection of N-d weights: AdamW equivalence, shapes, orthonormal factors,
exact reconstruction of low multilinear rank, moment re-projection, a conv net that trains,
weights_only state round trip with bit-exact resume, memory formula, clear errors."""

from __future__ import annotations

import copy
import io
import math

import pytest
import torch
from torch import nn

from subspace_peft.optim.tucker import (
    TuckerProjector,
    mode_product,
    tucker_adam_step,
    tucker_projected_step,
    tucker_reproject_moments,
)


@pytest.fixture(autouse=True)
def _one_thread():
    # The test machine's cores are shared: one thread avoids oversubscription stalls.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def low_multilinear_rank(shape, ranks, seed=0) -> torch.Tensor:
    """A random tensor of exact multilinear rank ``ranks``."""
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(ranks, generator=g)
    for k, (n, r) in enumerate(zip(shape, ranks, strict=True)):
        X = mode_product(X, torch.randn(n, r, generator=g), k)
    return X


# ------------------------------------------------------------------ configuration
def test_ranks_modes_and_core_shape():
    p = TuckerProjector((16, 8, 3, 3), 4)
    assert p.ranks == (4, 4, 3, 3)
    assert p.projected_modes == (0, 1)  # the 3x3 spatial modes are full: skipped
    assert p.core_shape == (4, 4, 3, 3)
    p = TuckerProjector((16, 8, 3, 3), (8, 2, 3, 1))
    assert p.projected_modes == (0, 1, 3) and p.core_shape == (8, 2, 3, 1)
    p = TuckerProjector((16, 8, 3, 3), 4, modes=(0,))
    assert p.projected_modes == (0,) and p.core_shape == (4, 8, 3, 3)
    p.refresh(torch.randn(16, 8, 3, 3), 0)
    assert p.project(torch.randn(16, 8, 3, 3)).shape == (4, 8, 3, 3)
    assert p.project_back(torch.randn(4, 8, 3, 3)).shape == (16, 8, 3, 3)
    f = p.factors()
    assert f[1] is None and f[2] is None and f[3] is None and f[0].shape == (16, 4)
    # 2-D and 3-D weights work the same way
    q = TuckerProjector((12, 7, 5), (3, 7, 2))
    q.refresh(torch.randn(12, 7, 5), 0)
    assert q.project(torch.randn(12, 7, 5)).shape == (3, 7, 2)


@pytest.mark.parametrize("method", ["subspace_iteration", "randomized", "exact"])
def test_factors_are_orthonormal_and_recover_low_multilinear_rank(method):
    shape, ranks = (20, 12, 3, 3), (4, 3, 3, 3)
    G = low_multilinear_rank(shape, ranks)
    p = TuckerProjector(shape, (4, 3, 3, 3), scale=1.0, method=method, iters=3)
    old, new = p.refresh(G, 0)
    assert old is None
    for k in p.projected_modes:
        U = new[k]
        torch.testing.assert_close(U.T @ U, torch.eye(U.shape[1]), atol=1e-5, rtol=0)
    # G has exactly this multilinear rank: projecting and back-projecting reproduces it
    R = p.project_back(p.project(G))
    assert float((R - G).norm() / G.norm()) < 1e-4
    # a gradient outside the factors' span is not reproduced
    noise = torch.randn(shape, generator=torch.Generator().manual_seed(5))
    assert float((p.project_back(p.project(noise)) - noise).norm() / noise.norm()) > 0.5


def test_factors_are_the_hosvd_of_the_unfoldings():
    G = torch.randn(10, 9, 3, 3, generator=torch.Generator().manual_seed(1))
    p = TuckerProjector(G.shape, 4, method="exact")
    _, new = p.refresh(G, 0)
    for k in (0, 1):
        Uk = torch.linalg.svd(G.movedim(k, 0).reshape(G.shape[k], -1)).U[:, :4]
        torch.testing.assert_close(new[k] @ new[k].T, Uk @ Uk.T, atol=1e-5, rtol=0)


def test_scale_is_applied_on_back_projection():
    p = TuckerProjector((8, 6, 3, 3), 3, scale=0.25)
    p.refresh(torch.randn(8, 6, 3, 3), 0)
    C = torch.randn(p.core_shape)
    q = TuckerProjector((8, 6, 3, 3), 3, scale=1.0, state=p.state)
    torch.testing.assert_close(p.project_back(C), 0.25 * q.project_back(C))


def test_refresh_is_deterministic_and_warm_started():
    G1 = torch.randn(24, 16, 3, 3, generator=torch.Generator().manual_seed(2))
    G2 = G1 + 0.01 * torch.randn(24, 16, 3, 3, generator=torch.Generator().manual_seed(3))
    a = TuckerProjector(G1.shape, 4, update_proj_gap=5, seed=7)
    a.refresh(G1, 0)
    b = TuckerProjector(G1.shape, 4, update_proj_gap=5, seed=7, state=copy.deepcopy(a.state))
    _, fa = a.refresh(G2, 5)
    _, fb = b.refresh(G2, 5)
    for x, y in zip(fa, fb, strict=True):
        assert (x is None and y is None) or torch.equal(x, y)
    assert a.state["refreshes"] == 2 and a.state["next_refresh"] == 10
    assert not a.due(9) and a.due(10)


# -------------------------------------------------------------------- AdamW equivalence
def test_full_rank_every_mode_scale_one_equals_adamw():
    torch.manual_seed(0)
    w0 = torch.randn(6, 4, 3, 3)
    ref = nn.Parameter(w0.clone())
    opt = torch.optim.AdamW([ref], lr=1e-2, betas=(0.9, 0.99), eps=1e-8, weight_decay=0.1,
                            foreach=False)
    w = w0.clone()
    proj = TuckerProjector(w.shape, tuple(w.shape), modes=(), scale=1.0)
    state = {"step": 0, "projector": proj.state}
    for t in range(6):
        grad = torch.randn(6, 4, 3, 3, generator=torch.Generator().manual_seed(100 + t))
        ref.grad = grad.clone()
        opt.step()
        tucker_projected_step(w, grad, proj, state, lr=1e-2, betas=(0.9, 0.99), eps=1e-8,
                              weight_decay=0.1)
        torch.testing.assert_close(w, ref.detach(), atol=1e-6, rtol=1e-5)
    assert state["step"] == 6
    assert not torch.equal(w, w0)


def test_projected_step_moves_only_inside_the_factor_span():
    """Without weight decay, the change of W lies in the span of the factors."""
    shape = (12, 10, 3, 3)
    w = torch.randn(shape)
    w0 = w.clone()
    proj = TuckerProjector(shape, 3, scale=1.0, update_proj_gap=100)
    state = {"step": 0, "projector": proj.state}
    for t in range(3):
        grad = torch.randn(shape, generator=torch.Generator().manual_seed(t))
        tucker_projected_step(w, grad, proj, state, lr=1e-2)
    delta = w - w0
    assert float(delta.norm()) > 0
    inside = proj.project_back(proj.project(delta))
    torch.testing.assert_close(inside, delta, atol=1e-6, rtol=1e-5)


# ------------------------------------------------------------------- re-projection
def test_reprojection_is_exact_for_permutations_and_sign_flips():
    shape = (10, 8, 3, 3)
    G = torch.randn(shape, generator=torch.Generator().manual_seed(4))
    old = TuckerProjector(shape, 4, scale=1.0)
    old.refresh(G, 0)
    fo = old.factors()
    perm = [torch.randperm(4, generator=torch.Generator().manual_seed(k)) for k in range(2)]
    signs = [torch.tensor([1.0, -1.0, 1.0, -1.0]), torch.tensor([-1.0, -1.0, 1.0, 1.0])]
    fn = (fo[0][:, perm[0]] * signs[0], fo[1][:, perm[1]] * signs[1], None, None)
    new = TuckerProjector(shape, 4, scale=1.0)
    new.set_factors(fn)
    M = old.project(G)
    V = M.square() + 0.1
    M2, V2 = M.clone(), V.clone()
    tucker_reproject_moments(M2, V2, fo, fn)
    torch.testing.assert_close(M2, new.project(G), atol=1e-5, rtol=1e-5)
    expected_V = V[perm[0]][:, perm[1]]
    torch.testing.assert_close(V2, expected_V, atol=1e-6, rtol=1e-5)
    assert (V2 >= 0).all()


def test_reprojection_to_identical_factors_is_identity_and_checks_shapes():
    p = TuckerProjector((8, 6, 3, 3), 3)
    _, f = p.refresh(torch.randn(8, 6, 3, 3), 0)
    M, V = torch.randn(p.core_shape), torch.rand(p.core_shape)
    M2, V2 = M.clone(), V.clone()
    tucker_reproject_moments(M2, V2, f, f)
    torch.testing.assert_close(M2, M, atol=1e-5, rtol=0)
    # C∘C with C = I up to round-off: V unchanged
    torch.testing.assert_close(V2, V, atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="old_factors"):
        tucker_reproject_moments(M, V, f[:2], f)
    with pytest.raises(ValueError, match=r"old_factors\[0\]"):
        tucker_reproject_moments(M, V, (None, *f[1:]), f)


# ----------------------------------------------------------------------- training
class SmallConvNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 8, 3, padding=1)
        self.conv2 = nn.Conv2d(8, 16, 3, padding=1)
        self.head = nn.Linear(16, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.conv1(x))
        x = torch.relu(self.conv2(x))
        return self.head(x.mean(dim=(2, 3)))


def conv_data(n: int = 128):
    g = torch.Generator().manual_seed(11)
    x = torch.randn(n, 1, 8, 8, generator=g)
    torch.manual_seed(123)
    teacher = SmallConvNet()
    with torch.no_grad():
        y = teacher(x).argmax(dim=1)
    return x, y


def train_tucker(model, steps, x, y, states=None, train_others=True):
    """Tucker-projected GaLore-Adam on the conv kernels (as GaLoreAdamW will do for N-d
    weights), AdamW on the rest (or nothing when ``train_others`` is False)."""
    convs = [model.conv1.weight, model.conv2.weight]
    if states is None:
        states = [{"step": 0} for _ in convs]
    projs = [TuckerProjector(p.shape, 4, scale=1.0, update_proj_gap=10, seed=i,
                             state=st.get("projector")) for i, (p, st) in
             enumerate(zip(convs, states, strict=True))]
    for pr, st in zip(projs, states, strict=True):
        st["projector"] = pr.state
    others = [p for n, p in model.named_parameters() if n not in ("conv1.weight", "conv2.weight")]
    opt = torch.optim.AdamW(others, lr=1e-2, foreach=False) if train_others else None
    losses = []
    for _ in range(steps):
        model.zero_grad(set_to_none=True)
        loss = nn.functional.cross_entropy(model(x), y)
        loss.backward()
        losses.append(loss.item())
        if opt is not None:
            opt.step()
        with torch.no_grad():
            for p, pr, st in zip(convs, projs, states, strict=True):
                tucker_projected_step(p.data, p.grad, pr, st, lr=1e-2, weight_decay=0.01)
    return losses, projs, states


def test_small_conv_net_trains_with_tucker_projected_conv_weights():
    x, y = conv_data()
    torch.manual_seed(0)
    model = SmallConvNet()
    conv2_before = model.conv2.weight.detach().clone()
    losses, projs, states = train_tucker(model, 60, x, y)
    assert projs[0].projected_modes == (0,)  # conv1 [8, 1, 3, 3]: only the output mode
    assert projs[1].projected_modes == (0, 1)  # conv2 [16, 8, 3, 3]
    assert states[1]["exp_avg"].shape == (4, 4, 3, 3)
    assert projs[1].state["refreshes"] == 6  # steps 0, 10, ..., 50
    assert not torch.equal(model.conv2.weight, conv2_before)
    assert losses[-1] < 0.1 * losses[0], losses[::10]


def test_state_round_trips_weights_only_and_resume_is_bit_exact():
    x, y = conv_data(64)
    torch.manual_seed(0)
    a = SmallConvNet()
    b = copy.deepcopy(a)
    train_tucker(a, 15, x, y, train_others=False)  # uninterrupted
    _, _, states = train_tucker(b, 7, x, y, train_others=False)  # interrupted after 7 steps
    buf = io.BytesIO()
    torch.save({"states": states, "model": b.state_dict()}, buf)
    buf.seek(0)
    loaded = torch.load(buf, weights_only=True)
    assert loaded["states"][1]["projector"]["refreshes"] == 1
    c = SmallConvNet()
    c.load_state_dict(loaded["model"])
    _, projs, _ = train_tucker(c, 8, x, y, states=loaded["states"], train_others=False)
    assert projs[1].state["refreshes"] == 2  # the refresh at step 10 happened after resuming
    for (name, p1), (_, p2) in zip(a.named_parameters(), c.named_parameters(), strict=True):
        assert torch.equal(p1, p2), name


# ------------------------------------------------------------------------- memory
def test_optimizer_state_is_the_core_size():
    shape = (32, 16, 3, 3)
    w = torch.randn(shape)
    proj = TuckerProjector(shape, 4)
    state = {"step": 0, "projector": proj.state}
    tucker_projected_step(w, torch.randn(shape), proj, state, lr=1e-3)
    assert state["exp_avg"].numel() == state["exp_avg_sq"].numel() == math.prod((4, 4, 3, 3))
    tensors = [state["exp_avg"], state["exp_avg_sq"]] + [
        v for v in proj.state.values() if isinstance(v, torch.Tensor)]
    nbytes = sum(t.numel() * t.element_size() for t in tensors)
    assert nbytes == 4 * proj.state_numel() == 4 * (2 * 4 * 4 * 9 + 32 * 4 + 16 * 4)
    assert nbytes < 0.1 * 2 * 4 * math.prod(shape)  # AdamW's two full-size moments


# -------------------------------------------------------------------------- errors
def test_clear_errors():
    with pytest.raises(ValueError, match=r"rank: mode 0 .* 27"):
        TuckerProjector((64, 3, 3, 3), 32)
    with pytest.raises(ValueError, match="rank: expected 4 ints"):
        TuckerProjector((8, 4, 3, 3), (2, 2))
    with pytest.raises(ValueError, match="rank: expected 4 ints"):
        TuckerProjector((8, 4, 3, 3), (9, 2, 3, 3))
    with pytest.raises(ValueError, match="projects no mode"):
        TuckerProjector((8, 4, 3, 3), 8)
    TuckerProjector((8, 4, 3, 3), 8, modes=())  # on purpose: allowed
    with pytest.raises(ValueError, match="modes: expected distinct ints"):
        TuckerProjector((8, 4, 3, 3), 2, modes=(0, 4))
    with pytest.raises(ValueError, match="method"):
        TuckerProjector((8, 4, 3, 3), 2, method="svd")
    p = TuckerProjector((8, 4, 3, 3), 2)
    with pytest.raises(RuntimeError, match="refresh"):
        p.project(torch.randn(8, 4, 3, 3))
    with pytest.raises(ValueError, match=r"G: expected shape \(8, 4, 3, 3\)"):
        p.refresh(torch.randn(8, 4, 3), 0)
    bad = torch.randn(8, 4, 3, 3)
    bad[0, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        p.refresh(bad, 0)
    p.refresh(torch.randn(8, 4, 3, 3), 0)
    w = torch.randn(8, 4, 3, 3)
    with pytest.raises(ValueError, match="exp_avg: expected a float32 tensor of the core shape"):
        tucker_adam_step(w, w, p, torch.zeros(8, 4, 3, 3), torch.zeros(8, 4, 3, 3), step=1,
                         lr=1e-3)
    with pytest.raises(ValueError, match="step: expected an int >= 1"):
        tucker_adam_step(w, w, p, torch.zeros(p.core_shape), torch.zeros(p.core_shape),
                         step=0, lr=1e-3)
    with pytest.raises(ValueError, match="state\\['projector'\\]"):
        tucker_projected_step(w, w, p, {"step": 0}, lr=1e-3)


def test_from_group_reads_galore_options_and_refuses_unsupported_ones():
    group = {"rank": 4, "update_proj_gap": 7, "scale": 0.5, "method": "randomized", "iters": 1,
             "oversample": 2, "seed": 3, "quant_bits": None, "lazy": False, "fira": False}
    p = TuckerProjector.from_group(group, (16, 8, 3, 3))
    assert (p.update_proj_gap, p.scale, p.method, p.iters, p.oversample, p.seed) == (
        7, 0.5, "randomized", 1, 2, 3)
    assert p.core_shape == (4, 4, 3, 3)
    p = TuckerProjector.from_group({**group, "tucker_modes": (1,)}, (16, 8, 3, 3))
    assert p.core_shape == (16, 4, 3, 3)
    for key, value in (("quant_bits", 4), ("lazy", True), ("fira", True)):
        with pytest.raises(ValueError, match=f"{key}: expected"):
            TuckerProjector.from_group({**group, key: value}, (16, 8, 3, 3))
