"""HLOP: Hebbian subspace neurons converge to the top principal subspace, and projecting on
their complement protects old tasks."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from subspace_continual.data import synthetic_subspaces as synthetic
from subspace_continual.harness import Strategy, TrainConfig, make_strategy, run_sequence
from subspace_continual.hlop import HLOP, HebbianSubspace
from subspace_core.linalg import principal_angles


def _spiked(n: int, m: int, spectrum: list[float], noise: float, seed: int):
    """Rows x = Q diag(σ) z + noise: top principal subspace ≈ span(Q[:, :k])."""
    g = torch.Generator().manual_seed(seed)
    Q = torch.linalg.qr(torch.randn(m, len(spectrum), generator=g, dtype=torch.float64)).Q
    z = torch.randn(n, len(spectrum), generator=g, dtype=torch.float64)
    X = (z * torch.tensor(spectrum, dtype=torch.float64)) @ Q.T
    return X + noise * torch.randn(n, m, generator=g, dtype=torch.float64), Q


def test_hebbian_neurons_converge_to_the_top_principal_subspace():
    X, _ = _spiked(600, 40, [10, 8, 6, 5, 4, 1.0, 0.8, 0.5], noise=0.1, seed=0)
    neurons = HebbianSubspace(40)
    report = neurons.grow(X, threshold=0.9, chunk=5, epochs=30,
                          generator=torch.Generator().manual_seed(1))
    assert report.added == 5 and report.before == 0.0 and report.after >= 0.9
    # the sample's top-5 principal subspace (an SVD, for the test only)
    top = torch.linalg.svd(X.T, full_matrices=False).U[:, :5]
    angles = torch.rad2deg(principal_angles(neurons.H.T, top))
    assert float(angles.max()) < 2.0, angles
    assert neurons.orthonormality_error() < 1e-2  # Oja's rule normalises the rows itself
    energy = torch.linalg.svdvals(X).square()
    optimum = float(energy[:5].sum() / energy.sum())
    assert neurons.captured_energy(X) == pytest.approx(optimum, abs=2e-3)


def test_new_neurons_learn_the_residual_subspace_and_old_ones_stay():
    X1, Q1 = _spiked(400, 30, [6, 5, 4], noise=0.05, seed=2)
    X2, Q2 = _spiked(400, 30, [6, 5, 4], noise=0.05, seed=3)
    neurons = HebbianSubspace(30)
    g = torch.Generator().manual_seed(0)
    neurons.grow(X1, threshold=0.95, chunk=3, epochs=30, generator=g)
    H1 = neurons.H.clone()
    report = neurons.grow(X2, threshold=0.95, chunk=3, epochs=30, generator=g)
    assert report.added == 3 and torch.equal(neurons.H[:3], H1)  # old neurons frozen
    union = torch.cat([Q1, Q2], dim=1)
    angles = torch.rad2deg(principal_angles(neurons.H.T, union))
    assert float(angles.max()) < 3.0, angles
    assert neurons.orthonormality_error() < 2e-2


def test_hebbian_growth_stops_at_the_threshold_and_cap():
    X, _ = _spiked(300, 20, [5, 4, 3, 2, 1], noise=0.05, seed=4)
    neurons = HebbianSubspace(20)
    report = neurons.grow(X, threshold=0.99, chunk=2, epochs=20, max_neurons=4)
    assert report.size == 4 and report.after < 0.99  # capped before reaching the target
    with pytest.raises(ValueError, match="X: expected"):
        neurons.grow(torch.randn(5, 7), threshold=0.9)
    with pytest.raises(ValueError, match="lr"):
        neurons.grow(X, threshold=0.9, lr=2.0)
    with pytest.raises(ValueError, match="threshold"):
        neurons.grow(X, threshold=0.0)


def test_hlop_projection_keeps_a_linear_networks_old_outputs():
    """Old task in a 4-dim subspace: after Hebbian learning, projected SGD on a new task moves
    the old outputs by a tiny fraction of what unprojected SGD moves them."""
    torch.manual_seed(0)
    X_old, _ = _spiked(200, 12, [3, 2.5, 2, 1.5], noise=0.0, seed=5)
    neurons = HebbianSubspace(12)
    neurons.grow(X_old, threshold=0.999, chunk=4, epochs=60)
    assert neurons.size == 4
    changes = {}
    for projected in (False, True):
        layer = nn.Linear(12, 3, bias=False).double()
        torch.manual_seed(1)
        nn.init.normal_(layer.weight)
        before = layer(X_old).detach()
        opt = torch.optim.SGD(layer.parameters(), lr=0.05)
        X_new = torch.randn(64, 12, dtype=torch.float64)
        for _ in range(20):
            opt.zero_grad()
            (layer(X_new) - 1).square().mean().backward()
            if projected:  # the lateral circuit: ΔW ← ΔW (I − Hᵀ H)
                layer.weight.grad -= layer.weight.grad @ neurons.H.T @ neurons.H
            opt.step()
        changes[projected] = float((layer(X_old).detach() - before).norm() / before.norm())
    assert changes[False] > 0.05
    assert changes[True] < 1e-3 * changes[False] + 1e-6, changes


def test_hlop_strategy_protects_old_tasks():
    scenario = synthetic("domain", num_tasks=3, n=160)  # one shared head: fine-tuning forgets
    cfg = TrainConfig(epochs=5, batch_size=10, lr=0.1, hidden=(32, 32), seed=0)
    hlop = HLOP(threshold=0.999, chunk=5, epochs=40, num_samples=160)
    result = run_sequence(hlop, scenario, cfg)
    finetune = run_sequence(Strategy(), scenario, cfg)
    sizes = result.info["neurons"]
    assert sizes["body.0"] == 15  # three 5-dim input subspaces, found by Hebbian learning
    assert set(sizes) == {"body.0", "body.2", "heads.0"}
    assert finetune.metrics.bwt < -5
    # old tasks' accuracies stay within one test example (0.625 %) of their learnt value
    for j in range(2):
        assert float((result.R[j:, j] - result.R[j, j]).abs().max()) <= 0.625 + 1e-9
    assert result.metrics.bwt >= -0.625 and result.metrics.la > 85
    last = result.info["history"][-1]["body.0"]
    assert last["captured"] >= 0.999 and last["orthonormality_error"] < 0.05
    assert make_strategy("hlop").name == "hlop"


def test_projection_basis_is_the_settled_lateral_circuit():
    g = torch.Generator().manual_seed(0)
    neurons = HebbianSubspace(12)
    neurons.H = 0.4 * torch.randn(4, 12, generator=g, dtype=torch.float64)  # far from orthonormal
    G = torch.randn(5, 12, generator=g, dtype=torch.float64)
    P = torch.eye(12, dtype=torch.float64) - neurons.H.T @ neurons.H
    U = neurons.projection_basis()
    torch.testing.assert_close(G - G @ U @ U.T, G @ P @ P @ P, atol=1e-12, rtol=0)
    torch.testing.assert_close(neurons.lateral_residual(G), G @ P @ P @ P, atol=1e-12, rtol=0)
    # orthonormal rows: one round is already the orthogonal projection
    neurons.H = torch.linalg.qr(torch.randn(12, 4, generator=g, dtype=torch.float64)).Q.T
    torch.testing.assert_close(neurons.projection_basis() @ neurons.projection_basis().T,
                               neurons.H.T @ neurons.H, atol=1e-12, rtol=0)


def test_hlop_refuses_unconverged_neurons():
    scenario = synthetic("domain", num_tasks=1, n=160)
    hlop = HLOP(threshold=0.999, chunk=5, epochs=1, lr=0.01, num_samples=160,
                max_orthonormality_error=1e-6)
    with pytest.raises(RuntimeError, match="did not converge"):
        run_sequence(hlop, scenario, TrainConfig(epochs=1, hidden=(16,), lr=0.1))
