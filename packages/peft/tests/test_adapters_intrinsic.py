"""Intrinsic-dimension training: Hadamard / Fastfood / dense projections against explicit
matrices, the functional wrapper (init, gradients, merge, save / load), the d_int90 search,
and subspace training of a tiny MLP."""

import json
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from subspace_peft.adapters.intrinsic import (
    DenseProjection,
    FastfoodProjection,
    IntrinsicConfig,
    IntrinsicModel,
    find_intrinsic_dimension,
    fwht,
)

scipy_linalg = pytest.importorskip("scipy.linalg")

GEN = torch.Generator().manual_seed(0)


def mlp(seed: int = 0, classes: int = 4) -> nn.Sequential:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, classes))


# --------------------------------------------------------------------------- Hadamard
@pytest.mark.parametrize("n", [1, 2, 8, 64, 128, 4096])
def test_fwht_matches_scipy_hadamard(n):
    H = torch.tensor(scipy_linalg.hadamard(n), dtype=torch.float64)
    x = torch.randn(3, n, 2, dtype=torch.float64, generator=GEN)
    torch.testing.assert_close(fwht(x, dim=1), torch.einsum("ij,bjc->bic", H, x))
    # H H = n I
    torch.testing.assert_close(fwht(fwht(x, dim=1), dim=1), n * x)


def test_fwht_rejects_a_size_that_is_not_a_power_of_two():
    with pytest.raises(ValueError, match="power of two, got 12"):
        fwht(torch.zeros(12))


# -------------------------------------------------------------------------- Fastfood
def fastfood_matrix(proj: FastfoodProjection) -> torch.Tensor:
    """``c [H G Π H B]_{:D, :d}`` built from scipy's Hadamard and explicit diagonals."""
    L = proj.L
    H = torch.tensor(scipy_linalg.hadamard(L), dtype=torch.float64)
    Pi = torch.zeros(L, L, dtype=torch.float64)
    Pi[torch.arange(L), proj.perm] = 1.0  # (Π v)_i = v[perm[i]]
    full = H @ torch.diag(proj.gauss.double()) @ Pi @ H @ torch.diag(proj.signs.double())
    return proj.scale * full[:proj.D, :proj.d]


@pytest.mark.parametrize("D,d", [(37, 5), (64, 64), (100, 20)])
def test_fastfood_is_linear_and_equals_its_explicit_matrix(D, d):
    proj = FastfoodProjection(D, d, seed=3)
    padded = 1 << math.ceil(math.log2(D))  # D padded to a power of two
    assert padded == proj.L
    explicit = fastfood_matrix(proj)
    columns = proj.matrix().double()  # P e_j for every unit vector e_j
    torch.testing.assert_close(columns, explicit, atol=1e-5, rtol=1e-5)
    a, b = torch.randn(d, generator=GEN), torch.randn(d, generator=GEN)
    torch.testing.assert_close(proj(2.0 * a - 3.0 * b), 2.0 * proj(a) - 3.0 * proj(b),
                               atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(proj(a).double(), explicit @ a.double(), atol=1e-5, rtol=1e-5)


def test_fastfood_backward_is_the_transpose():
    proj = FastfoodProjection(100, 20, seed=1).double()
    theta = torch.randn(20, dtype=torch.float64, requires_grad=True)
    g = torch.randn(100, dtype=torch.float64, generator=GEN)
    (proj(theta) @ g).backward()
    torch.testing.assert_close(theta.grad, fastfood_matrix(proj).T @ g)
    assert torch.autograd.gradcheck(proj, (theta.detach().requires_grad_(),))


def test_column_norms():
    """Dense: columns normalised to norm 1 exactly. Fastfood: norm 1 exactly when D is a power
    of two (every column of H G Π H B has squared norm L Σ G²), ≈ 1 otherwise (the kept D of
    the L rows carry D/L of it in expectation; c = 1/sqrt(D Σ G²) compensates)."""
    dense = DenseProjection(300, 40, seed=0).matrix()
    torch.testing.assert_close(dense.norm(dim=0), torch.ones(40), atol=1e-5, rtol=0)
    exact = FastfoodProjection(256, 40, seed=0).matrix()
    torch.testing.assert_close(exact.norm(dim=0), torch.ones(40), atol=1e-5, rtol=0)
    approx = FastfoodProjection(1000, 64, seed=0).matrix().norm(dim=0)
    assert abs(float(approx.square().mean()) - 1.0) < 0.02
    assert float((approx - 1).abs().max()) < 0.1


def test_dense_chunked_equals_stored_and_backward_is_the_transpose():
    stored = DenseProjection(500, 30, seed=7, chunk_entries=1000)
    chunked = DenseProjection(500, 30, seed=7, max_entries=0, chunk_entries=1000)
    assert stored.materialized and not chunked.materialized and chunked.num_chunks == 16  # 33 rows
    torch.testing.assert_close(chunked.matrix(), stored.matrix(), atol=0, rtol=0)
    theta = torch.randn(30, generator=GEN, requires_grad=True)
    g = torch.randn(500, generator=GEN)
    (chunked(theta) @ g).backward()
    torch.testing.assert_close(chunked(theta.detach()), stored.matrix() @ theta.detach(),
                               atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(theta.grad, stored.matrix().T @ g, atol=1e-5, rtol=1e-5)
    # the seed decides the matrix
    assert not torch.equal(DenseProjection(500, 30, seed=8).matrix(), stored.matrix())


# ----------------------------------------------------------------------------- model
@pytest.mark.parametrize("projection", ["dense", "fastfood"])
@pytest.mark.parametrize("per_tensor", [False, True])
def test_output_unchanged_at_zero_and_only_theta_d_gets_gradients(projection, per_tensor):
    net = mlp()
    x = torch.randn(8, 16, generator=GEN)
    ref = net(x)
    sub = IntrinsicModel(net, IntrinsicConfig(dim=12, projection=projection,
                                              per_tensor=per_tensor))
    assert sub.D == 16 * 32 + 32 + 32 * 4 + 4 and sub.num_trainable_parameters() == 12
    torch.testing.assert_close(sub(x), ref, atol=0, rtol=0)
    sub(x).square().sum().backward()
    assert float(sub.theta_d.grad.abs().max()) > 0
    assert all(p.grad is None and not p.requires_grad for p in net.parameters())
    # θ = θ0 + P θ_d, parameter by parameter
    with torch.no_grad():
        sub.theta_d.normal_(generator=GEN)
    flat = sub.offset().detach()
    theta = torch.cat([p.detach().reshape(-1) for p in net.parameters()]) + flat
    start = 0
    expected = {}
    for name, p in net.named_parameters():
        expected[name] = theta[start:start + p.numel()].view(p.shape)
        start += p.numel()
    now = sub.parameters_now()
    for name in expected:
        torch.testing.assert_close(now[name], expected[name])
    out = sub(x)
    merged = sub.merge_and_unload()
    torch.testing.assert_close(merged(x), out, atol=1e-6, rtol=1e-6)
    assert all(p.requires_grad for p in merged.parameters())


def test_parameter_selection_and_save_load(tmp_path):
    sub = IntrinsicModel(mlp(), IntrinsicConfig(dim=6, parameters="weight", seed=4))
    assert sub.param_names == ("0.weight", "2.weight") and sub.D == 16 * 32 + 32 * 4
    with torch.no_grad():
        sub.theta_d.normal_(generator=GEN)
    x = torch.randn(5, 16, generator=GEN)
    path = tmp_path / "sub.safetensors"
    sub.save(path)
    loaded = IntrinsicModel.load(mlp(), path)
    torch.testing.assert_close(loaded(x), sub(x), atol=0, rtol=0)
    with pytest.raises(ValueError, match="differ from the θ0"):
        IntrinsicModel.load(mlp(seed=1), path)


def test_bad_input():
    with pytest.raises(ValueError, match="dim: expected d <= D"):
        IntrinsicModel(mlp(), IntrinsicConfig(dim=10_000))
    with pytest.raises(ValueError, match="selected no trainable parameter"):
        IntrinsicModel(mlp(), IntrinsicConfig(dim=2, parameters="nothing"))
    with pytest.raises(ValueError, match="projection: expected one of"):
        IntrinsicConfig(dim=2, projection="sparse")
    with pytest.raises(ValueError, match="dim: expected an int >= 1"):
        IntrinsicConfig(dim=0)
    with pytest.raises(ValueError, match="theta: expected shape"):
        FastfoodProjection(10, 3)(torch.zeros(4))


# ---------------------------------------------------------------------------- search
def curve(d: int) -> float:
    """Synthetic accuracy curve: 0.95 (1 - exp(-d / 300)); 90 % of 0.95 is reached at
    d = 300 ln 10 ≈ 690.8."""
    return 0.95 * (1 - math.exp(-d / 300))


@pytest.mark.parametrize("search", ["scan", "bisect"])
def test_d_int90_search_on_a_synthetic_curve(search):
    calls = []

    def train_fn(d):
        calls.append(d)
        return curve(d)

    dims = list(range(100, 1300, 100))
    result = find_intrinsic_dimension(train_fn, dims, baseline_acc=0.95, search=search)
    assert result.d_int == 700 and result.reached
    assert math.isclose(result.threshold, 0.855)
    if search == "scan":
        assert calls == dims
    else:
        assert len(calls) <= math.ceil(math.log2(len(dims) + 1)) and 700 in calls and 600 in calls
    none = find_intrinsic_dimension(curve, [10, 20], baseline_acc=0.95, search=search)
    assert none.d_int is None and not none.reached


def test_scan_returns_the_smallest_passing_d_on_a_noisy_curve():
    accs = {100: 0.5, 200: 0.91, 300: 0.85, 400: 0.95}
    result = find_intrinsic_dimension(accs.__getitem__, accs, baseline_acc=1.0)
    assert result.d_int == 200 and result.accuracies == accs


# ------------------------------------------------------------------------- training
def separable_problem():
    g = torch.Generator().manual_seed(0)
    X = torch.randn(1000, 16, generator=g)
    y = (X @ torch.randn(16, 4, generator=g)).argmax(1)  # linearly separable, 4 classes
    return X[:700], y[:700], X[700:], y[700:]


def train(model, params, data, steps=300, lr=1e-2):
    Xtr, ytr, Xte, yte = data
    opt = torch.optim.Adam(params, lr=lr)
    for _ in range(steps):
        opt.zero_grad()
        F.cross_entropy(model(Xtr), ytr).backward()
        opt.step()
    with torch.no_grad():
        return (model(Xte).argmax(1) == yte).float().mean().item()


@pytest.mark.parametrize("projection", ["dense", "fastfood"])
def test_full_dimension_recovers_full_training_and_tiny_d_does_worse(projection):
    data = separable_problem()
    net = mlp()
    full = train(net, net.parameters(), data)
    D = sum(p.numel() for p in mlp().parameters())
    sub_full = IntrinsicModel(mlp(), IntrinsicConfig(dim=D, projection=projection))
    tiny = IntrinsicModel(mlp(), IntrinsicConfig(dim=2, projection=projection))
    acc_full_d = train(sub_full, [sub_full.theta_d], data)
    acc_tiny = train(tiny, [tiny.theta_d], data)
    assert full > 0.85
    assert acc_full_d >= full - 0.05, (full, acc_full_d)
    assert acc_tiny <= full - 0.3, (full, acc_tiny)


def test_benchmark_wiring_on_a_few_steps(tmp_path):
    """``run_intrinsic`` end to end on 5 steps (numbers meaningless; rows and JSON checked)."""
    from subspace_core.bench import BenchContext
    from subspace_core.data import DatasetUnavailable
    from subspace_peft.benchmarks.intrinsic import IntrinsicBenchConfig, run_intrinsic

    cfg = IntrinsicBenchConfig(datasets=("mnist_10k",), dims=(10, 40), steps=5, search="scan",
                               target_fraction=0.01)
    ctx = BenchContext(quick=True, device=torch.device("cpu"), out_dir=tmp_path)
    try:
        rows = run_intrinsic(ctx, cfg)
    except DatasetUnavailable as err:  # pragma: no cover - offline without the cache
        pytest.skip(str(err))
    metrics = {(r.method, r.metric): r.value for r in rows}
    assert metrics[("full training", "trainable_params")] == 199_210
    assert metrics[("random subspace (Fastfood)", "d_int90")] == 10  # 1 % of the baseline
    assert not any("paper" in method for method, _ in metrics)  # references are not rows
    summary = json.loads((tmp_path / "peft_intrinsic.json").read_text())
    assert summary["datasets"]["mnist_10k"]["paper_d_int90"] == 750
