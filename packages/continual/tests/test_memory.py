"""SubspaceMemory: orthogonality of projected gradients, exact preservation, thresholds."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from subspace_continual.memory import SubspaceMemory, layer_inputs


def _linear_net(bias: bool) -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(20, 16, bias=bias), nn.Linear(16, 12, bias=bias),
                         nn.Linear(12, 5, bias=bias)).double()


def _low_rank_inputs(n: int, dim: int, rank: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(n, rank, generator=g, dtype=torch.float64)
    return a @ torch.randn(rank, dim, generator=g, dtype=torch.float64)


def test_projected_gradients_orthogonal_to_bases():
    model = nn.Sequential(nn.Linear(30, 24), nn.ReLU(), nn.Linear(24, 10))
    memory = SubspaceMemory(model, threshold=0.9)
    with memory.collect():
        model(torch.randn(64, 30))
    memory.update()
    sizes = memory.basis_sizes()
    assert all(0 < k < memory.dim(n) for n, k in sizes.items()), sizes
    model(torch.randn(32, 30)).square().sum().backward()
    memory.project_gradients()
    for name, module in memory.layers.items():
        U = memory.bases[name]
        g = torch.cat([module.weight.grad, module.bias.grad[:, None]], dim=1)
        scale = float(g.norm())
        assert scale > 0
        assert float((g @ U).abs().max()) <= 1e-6 * scale  # float32 precision
        torch.testing.assert_close(U.T @ U, torch.eye(U.shape[1]), atol=1e-5, rtol=0)


@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize(("opt_name", "mode"), [("sgd", "gradient"), ("sgd", "update"),
                                                ("adam", "update"), ("adamw", "update")])
def test_old_task_outputs_unchanged_by_projected_updates(bias, opt_name, mode):
    model = _linear_net(bias)
    old_x = _low_rank_inputs(40, 20, rank=6, seed=1)  # task 1 lives in a 6-dim subspace
    memory = SubspaceMemory(model, threshold=1.0, dtype=torch.float64)
    with memory.collect():
        before = model(old_x).detach()
    memory.update()
    opt = {"sgd": lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9),
           "adam": lambda p: torch.optim.Adam(p, lr=1e-2),
           "adamw": lambda p: torch.optim.AdamW(p, lr=1e-2, weight_decay=0.1)}[opt_name](
        model.parameters())
    handle = memory.attach(opt, mode=mode)
    new_x = torch.randn(40, 20, dtype=torch.float64)
    start = [p.detach().clone() for p in model.parameters()]
    for _ in range(10):
        opt.zero_grad()
        (model(new_x) - 1).square().mean().backward()
        opt.step()
    handle.remove()
    moved = sum(float((p.detach() - s).norm()) for p, s in zip(model.parameters(), start, strict=True))
    assert moved > 1e-2  # it did learn something
    after = model(old_x).detach()
    assert float((after - before).abs().max()) <= 1e-10 * float(before.abs().max())


def test_adam_gradient_mode_is_not_exact_and_update_mode_is():
    """Why ``mode="update"`` is the default: Adam rescales a projected gradient element-wise."""
    results = {}
    for mode in ("gradient", "update"):
        model = _linear_net(False)
        old_x = _low_rank_inputs(40, 20, rank=6, seed=1)
        memory = SubspaceMemory(model, threshold=1.0, dtype=torch.float64)
        with memory.collect():
            before = model(old_x).detach()
        memory.update()
        opt = torch.optim.Adam(model.parameters(), lr=1e-2)
        memory.attach(opt, mode=mode)
        for _ in range(5):
            opt.zero_grad()
            (model(torch.randn(40, 20, dtype=torch.float64)) - 1).square().mean().backward()
            opt.step()
        results[mode] = float((model(old_x).detach() - before).abs().max())
    assert results["gradient"] > 1e-4 and results["update"] < 1e-10


def test_conv2d_projection_preserves_old_outputs():
    torch.manual_seed(0)
    conv = nn.Conv2d(2, 4, kernel_size=3, padding=1, stride=1).double()
    model = nn.Sequential(conv)
    # old task: images whose patches span a low-dimensional space (smooth ramps)
    ramp = torch.linspace(0, 1, 8, dtype=torch.float64)
    old_x = torch.stack([torch.stack([a * ramp[None, :] + c * ramp[:, None] for a, c in
                                      ((1.0, 0.5), (0.2, -1.0))]) * s for s in (1.0, -2.0, 0.5)])
    memory = SubspaceMemory(model, threshold=1.0, dtype=torch.float64)
    with memory.collect():
        before = model(old_x).detach()
    memory.update()
    k = memory.basis_sizes()["0"]
    assert 0 < k < memory.dim("0") == 2 * 9 + 1
    rows = layer_inputs(conv, old_x, include_bias=True)
    assert rows.shape == (3 * 64, 19)
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    memory.attach(opt, mode="gradient")
    for _ in range(5):
        opt.zero_grad()
        model(torch.randn(4, 2, 8, 8, dtype=torch.float64)).square().mean().backward()
        opt.step()
    assert float((model(old_x).detach() - before).abs().max()) <= 1e-10


def test_threshold_selects_smallest_k_reaching_energy():
    # singular values 3, 2, 1, 0.5: energies 9, 4, 1, 0.25 (total 14.25)
    torch.manual_seed(0)
    Q = torch.linalg.qr(torch.randn(10, 4, dtype=torch.float64)).Q
    V = torch.linalg.qr(torch.randn(50, 4, dtype=torch.float64)).Q
    rows = (Q @ torch.diag(torch.tensor([3.0, 2, 1, 0.5], dtype=torch.float64)) @ V.T).T
    for threshold, k in ((0.6, 1), (0.9, 2), (0.95, 3), (0.99, 4), (1.0, 4)):
        model = nn.Sequential(nn.Linear(10, 3, bias=False))
        memory = SubspaceMemory(model, threshold=threshold)
        memory.add_activations("0", rows)
        report = memory.update()["0"]
        assert report.added == k == report.size, (threshold, report)
        energies = torch.tensor([9, 4, 1, 0.25])
        assert report.captured == pytest.approx(float(energies[:k].sum() / energies.sum()),
                                                abs=1e-6)
        assert report.captured >= threshold - 1e-9


def test_energy_already_captured_counts_for_later_tasks():
    model = nn.Sequential(nn.Linear(10, 3, bias=False))
    memory = SubspaceMemory(model, threshold=0.95)
    g = torch.Generator().manual_seed(0)
    basis = torch.linalg.qr(torch.randn(10, 3, generator=g, dtype=torch.float64)).Q
    memory.add_activations("0", (basis @ torch.randn(3, 40, generator=g,
                                                       dtype=torch.float64)).T)
    assert memory.update()["0"].size == 3
    # task 2 inside the stored span: nothing added
    memory.add_activations("0", (basis @ torch.randn(3, 40, generator=g,
                                                       dtype=torch.float64)).T)
    report = memory.update()["0"]
    assert report.added == 0 and report.captured_before == pytest.approx(1.0)
    # task 2 with 97 % of its energy inside the span: still nothing added (0.97 >= 0.95)
    inside = basis @ torch.randn(3, 200, generator=g, dtype=torch.float64)
    out_dir = torch.linalg.qr(torch.cat([basis, torch.randn(10, 1, generator=g,
                                                              dtype=torch.float64)], 1)).Q[:, 3:]
    outside = out_dir @ torch.randn(1, 200, generator=g, dtype=torch.float64)
    outside *= (0.03 / 0.97 * inside.square().sum() / outside.square().sum()).sqrt()
    memory.add_activations("0", (inside + outside).T)
    report = memory.update()["0"]
    assert report.captured_before == pytest.approx(0.97, abs=0.01)
    assert report.added == 0
    # with a stricter threshold the missing direction is added, orthogonal to the old basis
    memory.add_activations("0", (inside + outside).T)
    report = memory.update(threshold=0.99)["0"]
    assert report.added == 1 and report.size == 4
    U = memory.bases["0"].double()
    torch.testing.assert_close(U.T @ U, torch.eye(4, dtype=torch.float64), atol=1e-6, rtol=0)
    assert abs(float(U[:, 3] @ out_dir[:, 0])) == pytest.approx(1.0, abs=1e-5)


def test_streaming_sketch_equals_one_shot():
    model = nn.Sequential(nn.Linear(6, 2, bias=False))
    x = torch.randn(100, 6, dtype=torch.float64)
    memory = SubspaceMemory(model)
    with memory.collect(max_samples=70):
        for chunk in x.split(9):
            model.double()(chunk)
    S = memory.representation("0")
    assert S.shape[1] <= 6
    torch.testing.assert_close(S @ S.T, x[:70].T @ x[:70])


def test_merge_is_orthonormal_union():
    model = nn.Sequential(nn.Linear(8, 2, bias=False))
    memory = SubspaceMemory(model)
    e = torch.eye(8)
    memory.merge({"0": e[:, :3]})
    added = memory.merge({"0": torch.stack([e[:, 2] + e[:, 3], e[:, 0]], 1)})
    assert added == {"0": 1}
    U = memory.bases["0"]
    torch.testing.assert_close(U.T @ U, torch.eye(4), atol=1e-6, rtol=0)
    torch.testing.assert_close(U[:, :3], e[:, :3])
    assert float(U[:, 3].abs()[4:].max()) < 1e-6


def test_state_dict_roundtrip_and_errors():
    model = nn.Sequential(nn.Linear(8, 4), nn.ReLU(), nn.Linear(4, 2))
    memory = SubspaceMemory(model, threshold={"0": 0.9, "2": 0.99})
    with memory.collect():
        model(torch.randn(16, 8))
    memory.update()
    other = SubspaceMemory(model)
    other.load_state_dict(memory.state_dict())
    assert other.basis_sizes() == memory.basis_sizes()
    assert SubspaceMemory(model, layers=["0"]).uncovered_parameters(model) == ["2.weight",
                                                                               "2.bias"]
    with pytest.raises(RuntimeError, match="recorded no inputs"):
        memory.update()
    with pytest.raises(ValueError, match="threshold"):
        SubspaceMemory(model, threshold=1.5)
    with pytest.raises(ValueError, match="missing"):
        SubspaceMemory(model, threshold={"0": 0.9})
    with pytest.raises(TypeError, match="ReLU"):
        SubspaceMemory(model, layers=["1"])
    with pytest.raises(KeyError, match="not a module"):
        SubspaceMemory(model, layers=["fc"])
    with pytest.raises(ValueError, match="mode"):
        memory.attach(torch.optim.SGD(model.parameters(), lr=0.1), mode="grad")
    with pytest.raises(ValueError, match="does not hold"):
        memory.attach(torch.optim.SGD(model[0].parameters(), lr=0.1))
    with pytest.raises(ValueError, match="grouped"):
        SubspaceMemory(nn.Sequential(nn.Conv2d(4, 4, 3, groups=2)))


def test_protected_thresholds_and_auto_projection_mode():
    from subspace_continual.gpm import PMNIST_THRESHOLDS, projection_mode, protected_thresholds

    layers = ["fc1", "fc2", "fc3"]
    assert protected_thresholds(None, layers) == dict(zip(layers, PMNIST_THRESHOLDS, strict=True))
    assert protected_thresholds(None, ["a", "b"]) == {"a": 0.97, "b": 0.97}
    assert protected_thresholds(0.9, ["a"]) == {"a": 0.9}
    with pytest.raises(ValueError, match="expected 3 values"):
        protected_thresholds([0.9, 0.9], layers)
    w = torch.nn.Parameter(torch.zeros(2))
    assert projection_mode("auto", torch.optim.SGD([w], lr=0.1)) == "gradient"
    assert projection_mode("auto", torch.optim.SGD([w], lr=0.1, weight_decay=1e-4)) == "update"
    assert projection_mode("auto", torch.optim.Adam([w])) == "update"
    assert projection_mode("gradient", torch.optim.Adam([w])) == "gradient"
