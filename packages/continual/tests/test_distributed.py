"""FOT over 2 real torch.distributed (gloo) ranks equals the in-process simulation.

Tolerance: robust aggregation (``flag``) gathers every client update to the server, so the
run is bitwise identical to the simulation (asserted with zero tolerance). ``mean`` sums
with ``all_reduce`` (another float32 summation order than ``torch.stack(...).mean(0)``),
so weights agree to 1e-5 relative and accuracies exactly on this run.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import pytest
import torch

from subspace_continual.data import synthetic_subspaces
from subspace_continual.fot import Collective, FedConfig, run_federated
from subspace_core.zoo import load_state_dict

SMALL = {"num_clients": 4, "rounds_per_task": 5, "local_steps": 10, "hidden": [24, 24],
         "lr": 0.1, "batch_size": 10, "num_samples": 60}
CONFIGS = [
    {**SMALL, "method": "fot", "aggregator": "mean"},
    {**SMALL, "method": "fot", "aggregator": "flag", "byzantine": 1, "attack": "signflip",
     "attack_scale": 5.0},
]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def distributed_runs(tmp_path_factory):
    out = tmp_path_factory.mktemp("fot_ddp")
    port = _free_port()
    env = {**os.environ, "OMP_NUM_THREADS": "1", "GLOO_SOCKET_IFNAME": "lo"}
    args = ["--scenario", "synthetic", "--init-method", f"tcp://127.0.0.1:{port}",
            "--world-size", "2", "--out", str(out)]
    for cfg in CONFIGS:
        args += ["--config", json.dumps(cfg)]
    procs = [subprocess.Popen([sys.executable, "-m", "subspace_continual.distributed",
                               "--rank", str(r), *args], env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True) for r in range(2)]
    logs = []
    for p in procs:
        try:
            logs.append(p.communicate(timeout=180)[0])
        except subprocess.TimeoutExpired:
            for q in procs:
                q.kill()
            raise
    assert all(p.returncode == 0 for p in procs), "\n".join(logs)
    results = json.loads((out / "results.json").read_text())
    states = []
    for i in range(len(CONFIGS)):
        path = out / f"run{i}.safetensors"
        sha = (out / f"run{i}.safetensors.sha256").read_text().split()[0]
        states.append(load_state_dict(path, sha256=sha))
    return results, states


def _in_process(i: int):
    fields = {**CONFIGS[i], "hidden": tuple(CONFIGS[i]["hidden"])}
    return run_federated(synthetic_subspaces("task", num_tasks=3, n=160), FedConfig(**fields))


def test_distributed_flag_run_is_bitwise_the_simulation(distributed_runs):
    results, states = distributed_runs
    ref = _in_process(1)
    assert results[1]["info"]["world_size"] == 2
    assert torch.equal(states[1]["R"], ref.R)
    for name, p in ref.model.state_dict().items():
        assert torch.equal(states[1][f"model.{name}"], p), name
    assert results[1]["info"]["basis_sizes"] == ref.info["basis_sizes"]
    assert ref.metrics.la > 70  # it learns despite the sign-flipping client (mean: ~39)


def test_distributed_mean_run_equals_the_simulation(distributed_runs):
    results, states = distributed_runs
    ref = _in_process(0)
    torch.testing.assert_close(states[0]["R"], ref.R, rtol=0, atol=0)
    for name, p in ref.model.state_dict().items():
        err = float((states[0][f"model.{name}"] - p).norm() / p.norm())
        assert err <= 1e-5, (name, err)
    assert results[0]["info"]["basis_sizes"] == ref.info["basis_sizes"]
    assert results[0]["metrics"]["bwt"] == pytest.approx(0.0, abs=1.0)  # FOT protects


def test_collective_base_is_the_in_process_placement():
    comm = Collective()
    assert comm.clients(3) == [0, 1, 2] and comm.is_server
    G = {c: torch.full((4,), float(c)) for c in range(3)}
    assert comm.aggregate(G, 3, "mean").tolist() == [1.0] * 4
    assert [t.tolist() for t in comm.gather(G, 3)] == [[c] * 4 for c in range(3)]


def test_distributed_collective_needs_a_process_group():
    from subspace_continual.distributed import TorchDistributedCollective

    with pytest.raises(RuntimeError, match="init_process_group"):
        TorchDistributedCollective()
