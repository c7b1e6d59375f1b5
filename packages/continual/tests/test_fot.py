"""FOT (federated orthogonal training) and the robust aggregators."""

from __future__ import annotations

import pytest
import torch

from subspace_continual.data import synthetic_subspaces as synthetic
from subspace_continual.fot import (
    FedConfig,
    aggregate,
    client_subspace,
    client_update,
    coordinate_median,
    flag_aggregate,
    run_federated,
    server_subspace,
)
from subspace_continual.memory import SubspaceMemory

SMALL = dict(num_clients=4, rounds_per_task=3, local_steps=5, hidden=(24, 24), lr=0.1,
             batch_size=10)


def test_fot_with_full_thresholds_keeps_old_tasks_exactly():
    scenario = synthetic("task", num_tasks=3, n=160)
    fot = run_federated(scenario, FedConfig(method="fot", threshold=1.0, client_threshold=1.0,
                                            **SMALL))
    for j in range(3):
        assert fot.R[j:, j].tolist() == [fot.R[j, j].item()] * (3 - j)
    assert fot.metrics.bwt == 0.0
    assert fot.info["basis_sizes"]["body.0"] == 15


def test_server_subspace_equals_centralised_basis():
    """With client_threshold=1 the clients' summaries keep the pooled Gram exactly."""
    g = torch.Generator().manual_seed(0)
    clients = [torch.randn(30, 12, generator=g, dtype=torch.float64) @
               torch.randn(12, 20, generator=g, dtype=torch.float64) for _ in range(3)]
    model = torch.nn.Sequential(torch.nn.Linear(20, 2, bias=False))
    central = SubspaceMemory(model, threshold=0.9, dtype=torch.float64)
    central.add_activations("0", torch.cat(clients))
    central.update()
    summaries = []
    for rows in clients:
        local = SubspaceMemory(model, dtype=torch.float64)
        local.add_activations("0", rows)
        summaries.append(client_subspace(local.representation("0"), 1.0))
    U = server_subspace(summaries, 0.9, None)
    V = central.bases["0"]
    assert U.shape == V.shape
    torch.testing.assert_close(U @ U.T, V @ V.T, atol=1e-8, rtol=0)


def _updates(byzantine: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    true = torch.randn(2000, generator=g)
    honest = true + 0.3 * torch.randn(10 - byzantine, 2000, generator=g)
    attack = 100 * torch.randn(byzantine, 2000, generator=g)
    return torch.cat([attack, honest]), true


def test_flag_and_median_resist_byzantine_clients_mean_does_not():
    G, true = _updates(byzantine=2)
    err = {m: float((aggregate(G, m) - true).norm() / true.norm()) for m in ("mean", "median",
                                                                              "flag")}
    assert err["mean"] > 5
    assert err["median"] < 0.3 and err["flag"] < 0.3, err
    clean, true = _updates(byzantine=0)
    assert float((flag_aggregate(clean) - true).norm() / true.norm()) < 0.2


def test_aggregator_details():
    G = torch.tensor([[1.0, 5.0], [2.0, -1.0], [10.0, 0.0]])
    assert coordinate_median(G).tolist() == [2.0, 0.0]
    assert coordinate_median(G[:2]).tolist() == [1.5, 2.0]
    # identical updates: the flag aggregate is that update
    same = torch.tensor([[3.0, 4.0]] * 4)
    torch.testing.assert_close(flag_aggregate(same), torch.tensor([3.0, 4.0]))
    with pytest.raises(ValueError, match="method"):
        aggregate(G, "krum")
    with pytest.raises(ValueError, match="m: expected"):
        flag_aggregate(G, m=5)
    with pytest.raises(ValueError, match="byzantine"):
        run_federated(synthetic(), FedConfig(num_clients=2, byzantine=2))


def test_attacks_are_the_documented_transformations():
    scenario = synthetic("task", num_tasks=1, n=100)
    task = scenario.tasks[0]
    from subspace_continual.harness import TrainConfig, make_model

    model = make_model(scenario, TrainConfig(hidden=(8,)))
    shard = torch.arange(50)
    honest = client_update(model, task, shard, 0, FedConfig(**SMALL), client=0, round_=0)
    flipped = client_update(model, task, shard, 0,
                            FedConfig(**SMALL, byzantine=1, attack="signflip",
                                      attack_scale=10.0), client=0, round_=0)
    torch.testing.assert_close(flipped, -10.0 * honest)
    noisy = client_update(model, task, shard, 0,
                          FedConfig(**SMALL, byzantine=1, attack="noise", attack_scale=3.0),
                          client=0, round_=0)
    assert float((noisy - honest).norm()) == pytest.approx(3.0 * float(honest.norm()), rel=1e-5)
    # a client's draws depend only on (seed, task, round, client)
    again = client_update(model, task, shard, 0, FedConfig(**SMALL), client=0, round_=0)
    assert torch.equal(again, honest)
    other = client_update(model, task, shard, 0, FedConfig(**SMALL), client=1, round_=0)
    assert not torch.equal(other, honest)


def test_sign_flip_clients_break_the_mean_not_flag_or_median():
    """1 of 5 clients (20 %) sends −10× its update: the mean ascends the loss."""
    scenario = synthetic("task", num_tasks=3, n=160)
    base = {**SMALL, "num_clients": 5, "rounds_per_task": 5, "local_steps": 10}
    attack = {"byzantine": 1, "attack": "signflip", "attack_scale": 10.0}
    clean = run_federated(scenario, FedConfig(**base)).metrics.acc
    acc = {agg: run_federated(scenario, FedConfig(**base, **attack, aggregator=agg)).metrics.acc
           for agg in ("mean", "median", "flag")}
    assert clean > 80
    assert acc["mean"] < clean - 30, acc  # chance is 50 %
    assert acc["median"] > clean - 10 and acc["flag"] > clean - 15, (clean, acc)


def test_client_projection_keeps_old_tasks_exactly():
    scenario = synthetic("task", num_tasks=3, n=160)
    cfg = FedConfig(method="fot", threshold=1.0, client_threshold=1.0, client_projection=True,
                    **SMALL)
    result = run_federated(scenario, cfg)
    for j in range(3):
        assert result.R[j:, j].tolist() == [result.R[j, j].item()] * (3 - j)


def test_diverging_aggregate_raises_and_bad_configs_are_refused():
    scenario = synthetic("task", num_tasks=1, n=100)
    with pytest.raises(FloatingPointError, match="not finite"):
        run_federated(scenario, FedConfig(**SMALL, byzantine=1, attack="noise",
                                          attack_scale=float("inf")))
    with pytest.raises(ValueError, match="attack"):
        run_federated(scenario, FedConfig(attack="gaussian"))
    with pytest.raises(ValueError, match="local_steps"):
        run_federated(scenario, FedConfig(local_steps=0))


def test_federated_run_resumes_to_the_same_result_and_returns_its_bases(tmp_path, monkeypatch):
    import subspace_continual.fot as fot_module
    from subspace_continual.harness import STATE_FILE

    scenario = synthetic("task", num_tasks=3, n=160)
    cfg = FedConfig(method="fot", **SMALL)
    full = run_federated(scenario, cfg)
    assert set(full.bases) == {"body.0", "body.2"}
    assert {n: U.shape[1] for n, U in full.bases.items()} == full.info["basis_sizes"]
    for U in full.bases.values():  # orthonormal columns
        torch.testing.assert_close(U.T @ U, torch.eye(U.shape[1]), atol=1e-5, rtol=0)

    real = fot_module.client_summaries

    def crash_at_task_1(model, layers, task, *args, **kwargs):
        if task.task_id == 1:  # after task 1's rounds, before its state is written
            raise KeyboardInterrupt("simulated crash")
        return real(model, layers, task, *args, **kwargs)

    monkeypatch.setattr(fot_module, "client_summaries", crash_at_task_1)
    with pytest.raises(KeyboardInterrupt):
        run_federated(scenario, cfg, state_dir=tmp_path)
    monkeypatch.setattr(fot_module, "client_summaries", real)
    assert (tmp_path / STATE_FILE).is_file()  # task 0 finished and was saved
    lines: list[str] = []
    resumed = run_federated(scenario, cfg, state_dir=tmp_path, log=lines.append)
    assert lines[0].endswith("after 1 task(s)") and len(lines) == 3  # resumed, tasks 1, 2
    assert torch.equal(resumed.R, full.R) and torch.equal(resumed.b, full.b)
    for name, U in full.bases.items():
        assert torch.equal(resumed.bases[name], U), name
    for name, p in full.model.state_dict().items():
        assert torch.equal(resumed.model.state_dict()[name], p), name
    # a state written by another configuration is refused
    with pytest.raises(ValueError, match="another run"):
        run_federated(scenario, FedConfig(method="fot", **{**SMALL, "lr": 0.05}),
                      state_dir=tmp_path)
