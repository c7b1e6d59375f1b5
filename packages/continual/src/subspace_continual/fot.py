"""Federated continual learning: FOT, FedAvg fine-tuning, and robust aggregators.

Clients are copies of the global model trained on their own shard of the current task. They
run either in one process (the simulation, the default) or spread over ``torch.distributed``
ranks (:mod:`subspace_continual.distributed`, gloo on CPU): client ``c`` runs on rank
``c mod world``, rank 0 is the server. Both placements execute the same loop
(:func:`run_federated` with a :class:`Collective`) and every random draw is seeded per
(task, round, client) (:func:`client_generator`), so they compute the same run.

**Round** (``FedConfig.rounds_per_task`` per task): every client starts from the global
weights ``θ``, runs ``local_steps`` SGD steps on its shard and reports ``Δ_c = θ_c − θ``;
Byzantine clients (the first ``byzantine`` ids) report an attacked update instead:
``Δ_c + attack_scale·‖Δ_c‖·ξ/‖ξ‖`` with Gaussian ``ξ`` (``attack="noise"``) or
``−attack_scale·Δ_c`` (``attack="signflip"``). The server aggregates
``Δ = agg(Δ_1..Δ_N)`` (:func:`aggregate`) and every replica sets ``θ ← θ + Δ``.

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
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from subspace_continual.data import Scenario, Task
from subspace_continual.harness import (
    STATE_FILE,
    ContinualResult,
    TrainConfig,
    _load_state,
    _save_state,
    evaluate,
    make_model,
)
from subspace_continual.memory import SubspaceMemory
from subspace_continual.metrics import summarize
from subspace_core.linalg import extend_basis_by_energy, robust_svd

__all__ = [
    "AGGREGATORS",
    "ATTACKS",
    "Collective",
    "FedConfig",
    "aggregate",
    "client_generator",
    "client_subspace",
    "client_summaries",
    "client_update",
    "coordinate_median",
    "flag_aggregate",
    "run_federated",
    "server_subspace",
    "task_shards",
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

    The IRLS runs in the ``N × N`` Gram space (exactly the SVD iteration of the module doc):
    with ``K = Ĝᵀ Ĝ`` and ``W = diag(sqrt(w))``, the top-``m`` eigenpairs ``(σ², V)`` of
    ``W K W`` give ``Y = Ĝ W V σ⁻¹``, so ``Yᵀ ĝ_i = σ⁻¹ Vᵀ W K[:, i]``; the ``n``-dimensional
    vectors are touched only to form ``K`` and the final projection (cost ``O(n N²)``).
    """
    N = G.shape[0]
    if isinstance(m, bool) or not isinstance(m, int) or not 1 <= m <= N:
        raise ValueError(f"m: expected an int in [1, {N}], got {m!r}")
    Gd = G.to(torch.float64)
    norms = Gd.norm(dim=1)
    keep = norms > 0
    if not bool(keep.any()):
        return torch.zeros_like(G[0])
    Ghat = Gd[keep] / norms[keep, None]  # [N', n] unit rows
    K = Ghat @ Ghat.T  # [N', N']
    w = torch.ones(Ghat.shape[0], dtype=torch.float64)
    for _ in range(iters):
        ws = w.sqrt()
        evals, evecs = torch.linalg.eigh(ws[:, None] * K * ws[None, :])
        top = evals.flip(0)[:m]
        good = top > top[0] * 1e-12
        sigma = top[good].sqrt()
        V = evecs.flip(1)[:, :m][:, good]  # [N', m']
        coeff = ws[:, None] * V / sigma  # Y = Ĝᵀ coeff  (columns of Y in R^n)
        captured = (coeff.T @ K).square().sum(0)  # ‖Yᵀ ĝ_i‖²
        resid = (1 - captured).clamp_min(0).sqrt()
        w = 1 / resid.clamp_min(eps)
    if clip:
        nu = norms.median()
        Gd = Gd * torch.clamp(nu / norms.clamp_min(1e-300), max=1.0)[:, None]
    mean = Gd.mean(0)
    # Y Yᵀ mean with Y = Ĝᵀ coeff
    return (Ghat.T @ (coeff @ (coeff.T @ (Ghat @ mean)))).to(G.dtype)


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


ATTACKS = ("noise", "signflip")


@dataclass(frozen=True)
class FedConfig:
    """Federated continual run (see module doc).

    Attributes:
        method: ``"fot"`` or ``"fedavg"``.
        num_clients: ``N`` clients; every task's training set is split into ``N`` shards.
        rounds_per_task, local_steps, batch_size, lr: each round every client runs
            ``local_steps`` SGD steps (batches of ``batch_size``, drawn with replacement from
            its shard) at ``lr``.
        hidden: trunk widths of the MLP.
        threshold: the server's energy threshold (global basis growth).
        client_threshold: each client's energy threshold (its summary ``U_c Σ_c``).
        num_samples: examples per client used for its activation summary.
        aggregator: one of :data:`AGGREGATORS`.
        byzantine: the first ``byzantine`` client ids are Byzantine (their model updates are
            replaced by ``attack``; their activation summaries are honest).
        attack: ``"noise"``: ``Δ + attack_scale·‖Δ‖·ξ/‖ξ‖`` (``ξ`` Gaussian);
            ``"signflip"``: ``−attack_scale·Δ``.
        attack_scale: strength of the attack.
        client_projection: FOT only: the server also sends the global basis to the clients,
            which project every local gradient on its complement (GPM locally); the server
            still projects the aggregate. False = the paper's server-side projection only.
        seed: model init, shards and every client's draws (see :func:`client_generator`).
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
    attack: str = "noise"
    attack_scale: float = 10.0
    client_projection: bool = False
    seed: int = 0

    def validate(self) -> None:
        """Raise ValueError naming the first bad field."""
        if self.method not in ("fot", "fedavg"):
            raise ValueError(f"cfg.method: expected 'fot' or 'fedavg', got {self.method!r}")
        if self.aggregator not in AGGREGATORS:
            raise ValueError(f"cfg.aggregator: expected one of {AGGREGATORS}, got "
                             f"{self.aggregator!r}")
        if self.attack not in ATTACKS:
            raise ValueError(f"cfg.attack: expected one of {ATTACKS}, got {self.attack!r}")
        for name in ("num_clients", "rounds_per_task", "local_steps", "batch_size",
                     "num_samples"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"cfg.{name}: expected a positive int, got {v!r}")
        if self.num_clients > 1000 or self.rounds_per_task > 1000:
            raise ValueError("cfg.num_clients and cfg.rounds_per_task: expected <= 1000 "
                             f"(client seeds), got {self.num_clients}, {self.rounds_per_task}")
        if not 0 <= self.byzantine < self.num_clients:
            raise ValueError(f"cfg.byzantine: expected an int in [0, {self.num_clients}), got "
                             f"{self.byzantine!r}")


def client_generator(seed: int, task: int, round_: int, client: int) -> torch.Generator:
    """The generator of client ``client`` in round ``round_`` of task ``task`` (its batches
    and, if Byzantine, its attack noise). Seeding per (task, round, client) makes every draw
    independent of which process runs the client, so the in-process simulation and the
    :mod:`torch.distributed` run draw the same numbers."""
    return torch.Generator().manual_seed(((seed * 1000 + task) * 1000 + round_) * 1000 + client)


def task_shards(seed: int, task_id: int, n: int, num_clients: int) -> list[torch.Tensor]:
    """Split ``range(n)`` into ``num_clients`` shards (a permutation seeded by ``seed`` and
    ``task_id``, cut into near-equal chunks; client ``c`` gets ``shards[c]``)."""
    if n < num_clients:
        raise ValueError(f"task {task_id}: {n} training examples cannot feed {num_clients} "
                         "clients")
    g = torch.Generator().manual_seed(seed * 1000 + 777 + task_id)
    return list(torch.randperm(n, generator=g).chunk(num_clients))


def _flat(model: torch.nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().reshape(-1) for p in model.parameters()])


def _unflat(model: torch.nn.Module, vec: torch.Tensor) -> dict[str, torch.Tensor]:
    out, i = {}, 0
    for name, p in model.named_parameters():
        out[name] = vec[i:i + p.numel()].view_as(p)
        i += p.numel()
    return out


def client_update(model: torch.nn.Module, task: Task, shard: torch.Tensor, head: int | None,
                  cfg: FedConfig, client: int, round_: int,
                  bases: dict[str, torch.Tensor] | None = None) -> torch.Tensor:
    """What client ``client`` reports in one round: ``θ_c − θ`` [n] after ``cfg.local_steps``
    SGD steps from the global ``model`` (not modified) on its ``shard``; Byzantine clients
    (``client < cfg.byzantine``) report the attacked update instead.

    ``bases`` ({layer: [m, k]}, the global subspace): when given (``cfg.client_projection``),
    every local gradient of those layers is projected on its complement (GPM on the client).
    """
    g = client_generator(cfg.seed, task.task_id, round_, client)
    local = copy.deepcopy(model)
    params = [p for p in local.parameters() if p.requires_grad]
    projector = None
    if bases and any(U.shape[1] for U in bases.values()):
        projector = SubspaceMemory(local, list(bases), threshold=1.0)
        projector.load_state_dict(bases)
    for _ in range(cfg.local_steps):
        idx = shard[torch.randint(len(shard), (cfg.batch_size,), generator=g)]
        for p in params:
            p.grad = None
        F.cross_entropy(local(task.x_train[idx], head), task.y_train[idx]).backward()
        if projector is not None:
            projector.project_gradients()
        with torch.no_grad():  # plain SGD, θ ← θ − lr·g (no torch.optim: lighter import)
            for p in params:
                if p.grad is not None:
                    p.sub_(p.grad, alpha=cfg.lr)
    delta = _flat(local) - _flat(model)
    if client < cfg.byzantine:
        if cfg.attack == "signflip":
            return -cfg.attack_scale * delta
        noise = torch.randn(delta.shape, generator=g)
        return delta + cfg.attack_scale * delta.norm() * noise / noise.norm()
    return delta


@torch.no_grad()
def client_summaries(model: torch.nn.Module, layers: list[str], task: Task,
                     shard: torch.Tensor, head: int | None, cfg: FedConfig
                     ) -> dict[str, torch.Tensor]:
    """A client's activation summaries ``{layer: U_c Σ_c [m, k_c]}`` (float64) from the first
    ``cfg.num_samples`` examples of its shard passed through the global ``model``."""
    probe = SubspaceMemory(model, layers)
    was_training = model.training
    model.eval()
    with probe.collect():
        model(task.x_train[shard[: cfg.num_samples]], head)
    model.train(was_training)
    return {n: client_subspace(probe.representation(n), cfg.client_threshold) for n in layers}


class Collective:
    """Where the clients run and how the server hears from them (see :func:`run_federated`).

    The in-process simulation is this base class: one process owns every client and is the
    server. :class:`subspace_continual.distributed.TorchDistributedCollective` spreads the
    clients over ``torch.distributed`` ranks with rank 0 as the server.
    """

    rank = 0
    world_size = 1

    @property
    def is_server(self) -> bool:
        return self.rank == 0

    def clients(self, num_clients: int) -> list[int]:
        """Ids of the clients this process runs (client ``c`` runs on rank ``c % world``)."""
        return [c for c in range(num_clients) if c % self.world_size == self.rank]

    def aggregate(self, updates: dict[int, torch.Tensor], num_clients: int, method: str
                  ) -> torch.Tensor:
        """The aggregated update [n] of all ``num_clients`` clients (every process gets it);
        ``updates`` holds this process's clients' updates by client id."""
        return aggregate(torch.stack([updates[c] for c in range(num_clients)]), method)

    def gather(self, tensors: dict[int, torch.Tensor], num_clients: int
               ) -> list[torch.Tensor] | None:
        """Every client's tensor in client order on the server (None elsewhere); shapes may
        differ between clients (same ndim)."""
        return [tensors[c] for c in range(num_clients)]

    def broadcast(self, tensor: torch.Tensor | None) -> torch.Tensor:
        """The server's ``tensor`` on every process (others pass None)."""
        assert tensor is not None
        return tensor


class _ServerState:
    """The server's stored bases seen as a harness strategy state (for resuming)."""

    name = "federated"

    def __init__(self, memory: SubspaceMemory):
        self.memory = memory

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {f"bases.{n}": U for n, U in self.memory.state_dict().items()}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.memory.load_state_dict({k[6:]: v for k, v in state.items()
                                     if k.startswith("bases.")})


def run_federated(scenario: Scenario, cfg: FedConfig | None = None, *,
                  collective: Collective | None = None,
                  state_dir: str | Path | None = None,
                  log: Callable[[str], None] | None = None) -> ContinualResult:
    """Train the global model over ``scenario``'s tasks with ``cfg.num_clients`` clients;
    returns the accuracy matrix of the global model (same metrics as the harness), the final
    global model (``result.model``) and the server's final bases (``result.bases``,
    ``{layer: [m, k]}``; empty ``k = 0`` bases for FedAvg).

    Args:
        scenario: the task sequence (the task id is given to the heads when ``task``-incremental).
        cfg: :class:`FedConfig`.
        collective: where clients run: None = in-process simulation; a
            :class:`~subspace_continual.distributed.TorchDistributedCollective` = clients spread
            over ``torch.distributed`` ranks (call this on every rank). Every rank returns the
            same result.
        state_dir: in-process runs only: after every task the global model, the server's
            bases and ``R`` so far are written atomically to
            ``state_dir/continual_state.safetensors`` (sha256 sidecar), and a re-run with the
            same arguments resumes after the last finished task. Every draw is seeded per
            (task, round, client), so the resumed run equals an uninterrupted one. A state of
            another run (scenario, config) is refused.
        log: called with one line per finished task.
    """
    cfg = cfg or FedConfig()
    cfg.validate()
    comm = collective or Collective()
    if state_dir is not None and comm.world_size != 1:
        raise ValueError(f"state_dir: only the in-process run (world size 1) resumes, got world "
                         f"size {comm.world_size}")
    start = time.perf_counter()
    train_cfg = TrainConfig(hidden=cfg.hidden, seed=cfg.seed, lr=cfg.lr)
    model = make_model(scenario, train_cfg)
    multi = scenario.setting == "task"
    protected = model.trunk_layers() + ([] if multi else ["heads.0"])
    memory = SubspaceMemory(model, protected, threshold=cfg.threshold)
    mine = comm.clients(cfg.num_clients)

    def head(t: int) -> int | None:
        return t if multi else None

    def server_eval() -> torch.Tensor:
        row = (torch.tensor(evaluate(model, scenario, head), dtype=torch.float64)
               if comm.is_server else None)
        return comm.broadcast(row)

    T = scenario.num_tasks
    b = server_eval()
    R = torch.full((T, T), float("nan"), dtype=torch.float64)
    state_path = None if state_dir is None else Path(state_dir) / STATE_FILE
    identity = {"strategy": f"federated:{cfg.method}", "scenario": scenario.name,
                "num_tasks": T, "train_sizes": [len(t.y_train) for t in scenario.tasks],
                "test_sizes": [len(t.y_test) for t in scenario.tasks],
                "config": cfg.__dict__ | {"hidden": list(cfg.hidden)}}
    done = 0
    if state_path is not None and state_path.is_file():
        done, R, b = _load_state(state_path, model, _ServerState(memory), identity)
        if log is not None:
            log(f"[{cfg.method}] resumed from {state_path} after {done} task(s)")
    for task in scenario.tasks[done:]:
        shards = task_shards(cfg.seed, task.task_id, len(task.y_train), cfg.num_clients)
        for r in range(cfg.rounds_per_task):
            bases = memory.bases if cfg.method == "fot" and cfg.client_projection else None
            updates = {c: client_update(model, task, shards[c], head(task.task_id), cfg, c, r,
                                        bases) for c in mine}
            step = comm.aggregate(updates, cfg.num_clients, cfg.aggregator).clone()
            if not bool(torch.isfinite(step).all()):
                raise FloatingPointError(
                    f"task {task.task_id}, round {r}: the {cfg.aggregator} aggregate of the "
                    f"client updates is not finite ({cfg.byzantine} Byzantine client(s), attack "
                    f"{cfg.attack!r} x{cfg.attack_scale}); the global model diverged")
            if cfg.method == "fot" and not memory.is_empty():
                views = _unflat(model, step)  # views into ``step``: projected in place
                memory.project_({n: (views[f"{n}.weight"], views.get(f"{n}.bias"))
                                 for n in protected})
            new = _unflat(model, _flat(model) + step)
            with torch.no_grad():
                for name, p in model.named_parameters():
                    p.copy_(new[name])
        if cfg.method == "fot":
            summaries = {c: client_summaries(model, protected, task, shards[c],
                                             head(task.task_id), cfg) for c in mine}
            for n in protected:
                gathered = comm.gather({c: s[n] for c, s in summaries.items()},
                                       cfg.num_clients)
                basis = None
                if comm.is_server:
                    old = memory.bases[n].to(torch.float64)
                    basis = server_subspace(gathered, cfg.threshold, old).to(memory.dtype)
                memory.bases[n] = comm.broadcast(basis)
        R[task.task_id] = server_eval()
        if state_path is not None:
            _save_state(state_path, model, _ServerState(memory), R, b, task.task_id + 1,
                        identity)
        if log is not None:
            row = " ".join(f"{v:5.1f}" for v in R[task.task_id].tolist())
            log(f"[{cfg.method}] after task {task.task_id}: {row} (bases "
                f"{memory.basis_sizes()})")
    name = cfg.method + ("" if cfg.aggregator == "mean" else f"+{cfg.aggregator}")
    return ContinualResult(name, scenario.name, R, b, summarize(R, b),
                           time.perf_counter() - start, train_cfg,
                           {"federated": cfg.__dict__ | {"hidden": list(cfg.hidden)},
                            "basis_sizes": memory.basis_sizes(),
                            "world_size": comm.world_size},
                           model=model, bases=memory.state_dict())


def main(argv: list[str] | None = None) -> list[ContinualResult]:
    """``python -m subspace_continual.fot``: FOT vs FedAvg vs centralised GPM on
    Split-Fashion-MNIST (task-incremental), clean and with Byzantine clients (every
    aggregator). Centralised GPM trains on as many examples per task as all clients together
    (``clients · rounds · local_steps`` steps of the same batch size)."""
    import argparse
    import json
    import math

    from subspace_continual.data import split_fashion_mnist
    from subspace_continual.gpm import GPM
    from subspace_continual.harness import run_sequence

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--train-per-class", type=int, default=300)
    parser.add_argument("--test-per-class", type=int, default=200)
    parser.add_argument("--clients", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=25)
    parser.add_argument("--local-steps", type=int, default=4)
    parser.add_argument("--byzantine", type=int, default=1)
    parser.add_argument("--attack", choices=ATTACKS, default="signflip")
    parser.add_argument("--attack-scale", type=float, default=10.0)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    scenario = split_fashion_mnist("task", train_per_class=args.train_per_class,
                                   test_per_class=args.test_per_class)
    base = FedConfig(num_clients=args.clients, rounds_per_task=args.rounds,
                     local_steps=args.local_steps)
    runs = [("fedavg", {"method": "fedavg"}), ("fot", {"method": "fot"}),
            ("fot+client-proj", {"method": "fot", "client_projection": True})]
    if args.byzantine:
        runs += [(f"fot+{agg}, {args.byzantine} byzantine ({args.attack})",
                  {"method": "fot", "aggregator": agg, "byzantine": args.byzantine,
                   "attack": args.attack, "attack_scale": args.attack_scale})
                 for agg in AGGREGATORS]
    steps = args.clients * args.rounds * args.local_steps
    n = len(scenario.tasks[0].y_train)
    central = run_sequence(GPM(threshold=base.threshold), scenario,
                           TrainConfig(epochs=math.ceil(steps / math.ceil(n / base.batch_size)),
                                       batch_size=base.batch_size, lr=base.lr,
                                       max_steps_per_task=steps))
    central.method = "centralised GPM"
    results = [central]
    print(f"{central.method:40s} ACC {central.metrics.acc:6.2f}  BWT {central.metrics.bwt:6.2f}",
          flush=True)
    for label, overrides in runs:
        try:
            r = run_federated(scenario, FedConfig(**{**base.__dict__, **overrides}))
        except FloatingPointError as exc:
            print(f"{label:40s} diverged: {exc}", flush=True)
            continue
        r.method = label
        results.append(r)
        m = r.metrics
        print(f"{label:40s} ACC {m.acc:6.2f}  BWT {m.bwt:6.2f}  ({r.seconds:.0f} s)", flush=True)
    if args.out is not None:
        args.out.write_text(json.dumps([r.to_dict() for r in results], indent=1))
    return results


if __name__ == "__main__":
    main()
