"""Federated continual learning: FOT, FedAvg fine-tuning, and robust aggregators.

In-process simulation of ``N`` clients (no transport; every client is a copy of the global
model trained on its own shard of the current task).

**Round** (``FedConfig.rounds_per_task`` per task): every client starts from the global
weights ``θ``, runs ``local_steps`` SGD steps on its shard and reports ``Δ_c = θ_c − θ``;
Byzantine clients (the first ``byzantine`` ids) report ``Δ_c + attack_scale·‖Δ_c‖·ξ/‖ξ‖`` with
Gaussian ``ξ`` instead. The server aggregates ``Δ = agg(Δ_1..Δ_N)`` (:func:`aggregate`) and
sets ``θ ← θ + Δ``.

**FOT** (Bakman et al., "Federated Orthogonal Training", 2023): after each task every
client passes ``num_samples`` of its examples through the global model and summarises each
protected layer's inputs by its top singular directions scaled by their singular values,
``U_c Σ_c`` (the smallest number reaching ``client_threshold`` of the energy). The server
stacks ``[U_1 Σ_1, ..., U_N Σ_N]`` — whose Gram approximates ``Σ_c R_c R_cᵀ``, the Gram of
the union of the clients' activations — and grows the global basis by GPM's energy
criterion (``threshold``). For later tasks the *aggregated* update of every protected
layer is projected on the complement: ``ΔW ← ΔW − ΔW U Uᵀ``. With ``client_threshold=1``
the server basis equals the one centralised GPM would build from the pooled samples.

**Aggregators** over the flattened client updates ``g_1..g_N`` [n]:

* ``mean`` — FedAvg.
* ``median`` — coordinate-wise median.
* ``flag`` — Flag Aggregator (Almasi et al., 2023): the flag median subspace
  ``Y ∈ Gr(m, n)`` minimising ``Σ_i sqrt(1 − ‖Yᵀ ĝ_i‖²)`` (``ĝ_i = g_i/‖g_i‖``; the chordal
  distance of each normalised update to ``span(Y)``, not squared, hence robust), by
  iteratively re-weighted least squares: ``w_i = 1 / max(sqrt(1 − ‖Yᵀ ĝ_i‖²), ε)``,
  ``Y ←`` top-``m`` left singular vectors of ``[sqrt(w_i) ĝ_i]``; the aggregate is the mean
  update projected on it, ``Y Yᵀ (1/N) Σ_i clip(g_i)``. Our choices (not fixed by the paper):
  ``m = 1`` by default (each extra dimension can absorb one outlying direction), and every
  update is first clipped to the median client norm, ``clip(g) = g · min(1, ν/‖g‖)``, so a
  few huge updates cannot dominate the projected mean.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from subspace_continual.data import Scenario
from subspace_continual.harness import ContinualResult, TrainConfig, evaluate, make_model
from subspace_continual.memory import SubspaceMemory
from subspace_continual.metrics import summarize
from subspace_core.linalg import extend_basis_by_energy, robust_svd

__all__ = [
    "AGGREGATORS",
    "FedConfig",
    "aggregate",
    "client_subspace",
    "coordinate_median",
    "flag_aggregate",
    "run_federated",
    "server_subspace",
]

AGGREGATORS = ("mean", "median", "flag")


def coordinate_median(G: torch.Tensor) -> torch.Tensor:
    """Coordinate-wise median of the rows of ``G`` [N, n] → [n] (mean of the two middle
    values for even ``N``)."""
    return G.quantile(0.5, dim=0) if G.shape[0] % 2 == 0 else G.median(dim=0).values


def flag_aggregate(G: torch.Tensor, m: int = 1, iters: int = 20, eps: float = 1e-8,
                   clip: bool = True) -> torch.Tensor:
    """Flag Aggregator of the rows of ``G`` [N, n] (see module doc) → [n].

    Args:
        G: client updates, one per row.
        m: subspace dimension, ``1 <= m <= N``.
        iters: IRLS iterations.
        eps: floor of the residual distances in the weights.
        clip: clip every update to the median update norm before averaging.
    """
    N = G.shape[0]
    if isinstance(m, bool) or not isinstance(m, int) or not 1 <= m <= N:
        raise ValueError(f"m: expected an int in [1, {N}], got {m!r}")
    Gd = G.to(torch.float64)
    norms = Gd.norm(dim=1, keepdim=True)
    keep = norms[:, 0] > 0
    if not bool(keep.any()):
        return torch.zeros_like(G[0])
    Ghat = (Gd[keep] / norms[keep]).T  # [n, N'] unit columns
    m = min(m, Ghat.shape[1])
    w = torch.ones(Ghat.shape[1], dtype=torch.float64)
    for _ in range(iters):
        Y = robust_svd(Ghat * w.sqrt()).U[:, :m]
        resid = (1 - (Y.T @ Ghat).square().sum(0)).clamp_min(0).sqrt()
        w = 1 / resid.clamp_min(eps)
    if clip:
        nu = norms[:, 0].median()
        Gd = Gd * torch.clamp(nu / norms.clamp_min(1e-300), max=1.0)
    mean = Gd.mean(0)
    return (Y @ (Y.T @ mean)).to(G.dtype)


def aggregate(G: torch.Tensor, method: str) -> torch.Tensor:
    """Aggregate client updates ``G`` [N, n] with ``method`` in :data:`AGGREGATORS`."""
    if method == "mean":
        return G.mean(0)
    if method == "median":
        return coordinate_median(G)
    if method == "flag":
        return flag_aggregate(G)
    raise ValueError(f"method: expected one of {AGGREGATORS}, got {method!r}")


def client_subspace(sketch: torch.Tensor, threshold: float) -> torch.Tensor:
    """A client's summary ``U_k Σ_k`` [m, k] of its layer inputs (sketch ``S`` with
    ``S Sᵀ = R Rᵀ``): the fewest top singular directions reaching ``threshold`` energy."""
    U, S, _ = robust_svd(sketch)
    energy = S.square()
    k = int((energy.cumsum(0) < threshold * energy.sum() * (1 - 1e-12)).sum()) + 1
    k = min(k, int((S > 0).sum()))
    return U[:, :k] * S[:k]


def server_subspace(summaries: list[torch.Tensor], threshold: float,
                    basis: torch.Tensor | None) -> torch.Tensor:
    """Grow the global ``basis`` [m, k] from the clients' summaries by GPM's energy rule."""
    return extend_basis_by_energy(torch.cat(summaries, dim=1), threshold, basis).basis


@dataclass(frozen=True)
class FedConfig:
    """Federated continual run (see module doc).

    ``method``: ``"fot"`` or ``"fedavg"``; ``aggregator``: one of :data:`AGGREGATORS`;
    thresholds: server energy threshold (``threshold``) and each client's (``client_threshold``).
    """

    method: str = "fot"
    num_clients: int = 5
    rounds_per_task: int = 10
    local_steps: int = 20
    batch_size: int = 32
    lr: float = 0.05
    hidden: tuple[int, ...] = (100, 100)
    threshold: float = 0.97
    client_threshold: float = 0.99
    num_samples: int = 200
    aggregator: str = "mean"
    byzantine: int = 0
    attack_scale: float = 10.0
    seed: int = 0


def _flat(model: torch.nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().reshape(-1) for p in model.parameters()])


def _unflat(model: torch.nn.Module, vec: torch.Tensor) -> dict[str, torch.Tensor]:
    out, i = {}, 0
    for name, p in model.named_parameters():
        out[name] = vec[i:i + p.numel()].view_as(p)
        i += p.numel()
    return out


def run_federated(scenario: Scenario, cfg: FedConfig | None = None) -> ContinualResult:
    """Train the global model over ``scenario``'s tasks with ``cfg.num_clients`` simulated
    clients; returns the accuracy matrix of the global model (same metrics as the harness)."""
    cfg = cfg or FedConfig()
    if cfg.method not in ("fot", "fedavg"):
        raise ValueError(f"cfg.method: expected 'fot' or 'fedavg', got {cfg.method!r}")
    if cfg.aggregator not in AGGREGATORS:
        raise ValueError(f"cfg.aggregator: expected one of {AGGREGATORS}, got {cfg.aggregator!r}")
    if not 0 <= cfg.byzantine < cfg.num_clients:
        raise ValueError(f"cfg.byzantine: expected an int in [0, {cfg.num_clients}), got "
                         f"{cfg.byzantine!r}")
    start = time.perf_counter()
    train_cfg = TrainConfig(hidden=cfg.hidden, seed=cfg.seed, lr=cfg.lr)
    model = make_model(scenario, train_cfg)
    multi = scenario.setting == "task"
    protected = model.trunk_layers() + ([] if multi else ["heads.0"])
    memory = SubspaceMemory(model, protected, threshold=cfg.threshold)

    def head(t: int) -> int | None:
        return t if multi else None

    T = scenario.num_tasks
    b = torch.tensor(evaluate(model, scenario, head), dtype=torch.float64)
    R = torch.full((T, T), float("nan"), dtype=torch.float64)
    g = torch.Generator().manual_seed(cfg.seed)
    for task in scenario.tasks:
        shards = torch.randperm(len(task.y_train), generator=g).chunk(cfg.num_clients)
        for _ in range(cfg.rounds_per_task):
            theta = _flat(model)
            updates = []
            for c, shard in enumerate(shards):
                local = copy.deepcopy(model)
                opt = torch.optim.SGD(local.parameters(), lr=cfg.lr)
                for _ in range(cfg.local_steps):
                    idx = shard[torch.randint(len(shard), (cfg.batch_size,), generator=g)]
                    opt.zero_grad(set_to_none=True)
                    F.cross_entropy(local(task.x_train[idx], head(task.task_id)),
                                    task.y_train[idx]).backward()
                    opt.step()
                delta = _flat(local) - theta
                if c < cfg.byzantine:
                    noise = torch.randn(delta.shape, generator=g)
                    delta = delta + cfg.attack_scale * delta.norm() * noise / noise.norm()
                updates.append(delta)
            step = aggregate(torch.stack(updates), cfg.aggregator)
            new = _unflat(model, theta + step)
            if cfg.method == "fot" and not memory.is_empty():
                step = step.clone()
                views = _unflat(model, step)  # views into ``step``: projected in place
                memory.project_({n: (views[f"{n}.weight"], views.get(f"{n}.bias"))
                                 for n in protected})
                new = _unflat(model, theta + step)
            with torch.no_grad():
                for name, p in model.named_parameters():
                    p.copy_(new[name])
        if cfg.method == "fot":
            _grow_global_subspace(model, memory, task, shards, head(task.task_id), cfg)
        R[task.task_id] = torch.tensor(evaluate(model, scenario, head))
    name = cfg.method + ("" if cfg.aggregator == "mean" else f"+{cfg.aggregator}")
    return ContinualResult(name, scenario.name, R, b, summarize(R, b),
                           time.perf_counter() - start, train_cfg,
                           {"federated": cfg.__dict__ | {"hidden": list(cfg.hidden)},
                            "basis_sizes": memory.basis_sizes()})


@torch.no_grad()
def _grow_global_subspace(model, memory: SubspaceMemory, task, shards, head, cfg) -> None:
    summaries: dict[str, list[torch.Tensor]] = {n: [] for n in memory.layers}
    for shard in shards:
        client = SubspaceMemory(model, list(memory.layers))
        with client.collect():
            model(task.x_train[shard[: cfg.num_samples]], head)
        for n in memory.layers:
            summaries[n].append(client_subspace(client.representation(n), cfg.client_threshold))
    for n in memory.layers:
        basis = memory.bases[n].to(torch.float64)
        memory.bases[n] = server_subspace(summaries[n], cfg.threshold, basis).to(memory.dtype)


def main(argv: list[str] | None = None) -> list[ContinualResult]:
    """``python -m subspace_continual.fot``: FOT vs FedAvg vs centralised GPM on
    Split-Fashion-MNIST (task-incremental), clean and with Byzantine clients."""
    import argparse
    import json
    from pathlib import Path

    from subspace_continual.data import split_fashion_mnist
    from subspace_continual.gpm import GPM
    from subspace_continual.harness import run_sequence

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--train-per-class", type=int, default=500)
    parser.add_argument("--clients", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--local-steps", type=int, default=10)
    parser.add_argument("--byzantine", type=int, default=1)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    scenario = split_fashion_mnist("task", train_per_class=args.train_per_class,
                                   test_per_class=200)
    base = FedConfig(num_clients=args.clients, rounds_per_task=args.rounds,
                     local_steps=args.local_steps)
    runs = [("fedavg", {"method": "fedavg"}), ("fot", {"method": "fot"})]
    if args.byzantine:
        runs += [(f"{m}+{agg}, {args.byzantine} byzantine",
                  {"method": m, "aggregator": agg, "byzantine": args.byzantine})
                 for m in ("fot",) for agg in AGGREGATORS]
    results = []
    steps = args.rounds * args.local_steps  # same number of SGD steps per task as a client
    central = run_sequence(GPM(threshold=base.threshold), scenario,
                           TrainConfig(epochs=1, batch_size=base.batch_size, lr=base.lr,
                                       max_steps_per_task=steps))
    central.method = "centralised GPM"
    for label, overrides in runs:
        r = run_federated(scenario, FedConfig(**{**base.__dict__, **overrides}))
        r.method = label
        results.append(r)
    for r in [central, *results]:
        m = r.metrics
        print(f"{r.method:32s} ACC {m.acc:6.2f}  BWT {m.bwt:6.2f}  ({r.seconds:.0f} s)", flush=True)
    if args.out is not None:
        args.out.write_text(json.dumps([r.to_dict() for r in [central, *results]], indent=1))
    return [central, *results]


if __name__ == "__main__":
    main()
