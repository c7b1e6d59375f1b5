"""FOT / FedAvg over real ``torch.distributed`` processes (gloo on CPU, any backend that has
``all_reduce``, ``gather`` and ``broadcast``).

The algorithm is :func:`subspace_continual.fot.run_federated`; this module only supplies
:class:`TorchDistributedCollective`, which places the clients on ranks and routes the
server traffic through collectives:

* client ``c`` runs on rank ``c mod world_size``; every rank holds a replica of the global
  model (like DDP) and rank 0 is the server;
* ``aggregator="mean"`` (FedAvg's average): each rank sums its clients' updates, one
  ``all_reduce(SUM)``, divided by ``N`` — ``O(n)`` traffic per rank;
* robust aggregators (``median``, ``flag``) need every update: ``gather`` to the server,
  which aggregates and ``broadcast`` s the step;
* FOT's activation subspaces: each client's summary ``U_c Σ_c`` [m, k_c] is ``gather`` ed to
  the server (zero-padded to a common shape, then trimmed back), the server grows the
  global basis and ``broadcast`` s it;
* accuracies are measured on the server and broadcast, so every rank returns the same
  :class:`~subspace_continual.harness.ContinualResult`.

Equality with the in-process simulation (same ``FedConfig``, same seeds): every client
draws from its own generator (:func:`~subspace_continual.fot.client_generator`), so the
client updates are bitwise the same as in one process. Robust aggregation and the subspace
step run on the same tensors in the same order, so those runs are bitwise identical; the
mean differs only by the summation order of ``all_reduce`` (float32 rounding, ~1e-7
relative per round).

Launch (one process per rank)::

    torchrun --nproc-per-node 2 -m subspace_continual.distributed --scenario sfmnist-task \\
        --config '{"method": "fot", "num_clients": 4}' --out runs/fot_ddp

or with an explicit rendezvous: ``--init-method tcp://127.0.0.1:29500 --rank R
--world-size W``.
"""

from __future__ import annotations

import argparse
import json
import math
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.distributed as dist

from subspace_continual.fot import Collective, FedConfig, aggregate, run_federated
from subspace_continual.harness import ContinualResult

__all__ = ["TorchDistributedCollective", "main", "run_federated_distributed"]

_DTYPES = (torch.float32, torch.float64, torch.int64, torch.bfloat16, torch.float16)
_MAX_NDIM = 6


class TorchDistributedCollective(Collective):
    """:class:`~subspace_continual.fot.Collective` over an initialised process group.

    Args:
        group: the process group (default: the world group). Its rank 0 is the server.

    Raises RuntimeError when ``torch.distributed`` is not initialised.
    """

    def __init__(self, group: dist.ProcessGroup | None = None):
        if not (dist.is_available() and dist.is_initialized()):
            raise RuntimeError("TorchDistributedCollective: call "
                               "torch.distributed.init_process_group(...) on every rank first")
        self.group = group
        self.rank = dist.get_rank(group)
        self.world_size = dist.get_world_size(group)
        self._server = 0 if group is None else dist.get_global_rank(group, 0)

    def clients(self, num_clients: int) -> list[int]:
        if num_clients < self.world_size:
            raise ValueError(f"cfg.num_clients: expected >= world_size {self.world_size} "
                             f"(every rank runs at least one client), got {num_clients}")
        return super().clients(num_clients)

    def aggregate(self, updates: dict[int, torch.Tensor], num_clients: int, method: str
                  ) -> torch.Tensor:
        if method == "mean":
            total = None
            for c in sorted(updates):
                total = updates[c].clone() if total is None else total + updates[c]
            assert total is not None  # every rank has >= 1 client
            dist.all_reduce(total, op=dist.ReduceOp.SUM, group=self.group)
            return total / num_clients
        gathered = self.gather(updates, num_clients)
        step = aggregate(torch.stack(gathered), method) if gathered is not None else None
        return self.broadcast(step)

    def gather(self, tensors: dict[int, torch.Tensor], num_clients: int
               ) -> list[torch.Tensor] | None:
        ids = sorted(tensors)
        first = tensors[ids[0]]
        ndim, dtype = first.ndim, first.dtype
        if ndim > _MAX_NDIM:
            raise ValueError(f"tensors: expected at most {_MAX_NDIM} dims, got {ndim}")
        per_rank = math.ceil(num_clients / self.world_size)
        # header rows: [client id, dim_0, ..., dim_{ndim-1}]; id −1 marks padding
        header = torch.full((per_rank, 1 + ndim), -1, dtype=torch.int64)
        for i, c in enumerate(ids):
            header[i, 0] = c
            header[i, 1:] = torch.tensor(tensors[c].shape)
        largest = header[:, 1:].amax(0).clamp_min(0)
        dist.all_reduce(largest, op=dist.ReduceOp.MAX, group=self.group)
        padded = torch.zeros((per_rank, *largest.tolist()), dtype=dtype)
        for i, c in enumerate(ids):
            padded[(i, *(slice(0, d) for d in tensors[c].shape))] = tensors[c]
        server = self.is_server
        headers = [torch.empty_like(header) for _ in range(self.world_size)] if server else None
        blocks = [torch.empty_like(padded) for _ in range(self.world_size)] if server else None
        dist.gather(header, headers, dst=self._server, group=self.group)
        dist.gather(padded, blocks, dst=self._server, group=self.group)
        if not server:
            return None
        out: dict[int, torch.Tensor] = {}
        for h, block in zip(headers, blocks, strict=True):
            for i in range(per_rank):
                c = int(h[i, 0])
                if c >= 0:
                    out[c] = block[(i, *(slice(0, int(d)) for d in h[i, 1:]))].clone()
        if sorted(out) != list(range(num_clients)):
            raise RuntimeError(f"gather: expected clients 0..{num_clients - 1}, got {sorted(out)}")
        return [out[c] for c in range(num_clients)]

    def broadcast(self, tensor: torch.Tensor | None) -> torch.Tensor:
        header = torch.zeros(2 + _MAX_NDIM, dtype=torch.int64)
        if self.is_server:
            if tensor is None:
                raise ValueError("broadcast: the server must pass a tensor")
            if tensor.dtype not in _DTYPES or tensor.ndim > _MAX_NDIM:
                raise ValueError(f"broadcast: unsupported tensor {tensor.dtype} "
                                 f"{tuple(tensor.shape)}")
            header[0], header[1] = _DTYPES.index(tensor.dtype), tensor.ndim
            header[2:2 + tensor.ndim] = torch.tensor(tensor.shape)
        dist.broadcast(header, src=self._server, group=self.group)
        shape = header[2:2 + int(header[1])].tolist()
        if self.is_server:
            data = tensor.contiguous().clone()
        else:
            data = torch.empty(shape, dtype=_DTYPES[int(header[0])])
        dist.broadcast(data, src=self._server, group=self.group)
        return data


def run_federated_distributed(scenario, cfg: FedConfig | None = None, *,
                              group: dist.ProcessGroup | None = None) -> ContinualResult:
    """:func:`~subspace_continual.fot.run_federated` with the clients spread over the ranks of
    ``group`` (call on every rank, after ``init_process_group``)."""
    return run_federated(scenario, cfg, collective=TorchDistributedCollective(group))


def _scenario(name: str, train_per_class: int | None, test_per_class: int | None):
    from subspace_continual.data import split_fashion_mnist, synthetic_subspaces

    if name == "synthetic":
        return synthetic_subspaces("task", num_tasks=3, n=160)
    if name in ("sfmnist-task", "sfmnist-class"):
        return split_fashion_mnist(name.split("-")[1], train_per_class=train_per_class,
                                   test_per_class=test_per_class)
    raise ValueError(f"scenario: expected synthetic, sfmnist-task or sfmnist-class, got {name!r}")


def main(argv: Sequence[str] | None = None) -> list[ContinualResult]:
    """Run one or more federated configurations on every rank; rank 0 writes
    ``out/run<i>.safetensors`` (final weights, ``R``, ``b``) and ``out/results.json``."""
    from subspace_core.zoo import save_state_dict

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--scenario", default="sfmnist-task")
    parser.add_argument("--train-per-class", type=int, default=500)
    parser.add_argument("--test-per-class", type=int, default=200)
    parser.add_argument("--config", action="append", default=[],
                        help="JSON object of FedConfig fields; repeat for several runs")
    parser.add_argument("--backend", default="gloo")
    parser.add_argument("--init-method", default="env://")
    parser.add_argument("--rank", type=int, default=None)
    parser.add_argument("--world-size", type=int, default=None)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    kwargs = {"backend": args.backend, "init_method": args.init_method}
    if args.rank is not None:
        kwargs |= {"rank": args.rank, "world_size": args.world_size}
    dist.init_process_group(**kwargs)
    try:
        scenario = _scenario(args.scenario, args.train_per_class, args.test_per_class)
        results = []
        for i, text in enumerate(args.config or ["{}"]):
            fields = json.loads(text)
            if "hidden" in fields:
                fields["hidden"] = tuple(fields["hidden"])
            result = run_federated_distributed(scenario, FedConfig(**fields))
            results.append(result)
            if dist.get_rank() == 0:
                m = result.metrics
                print(f"[run {i}] {result.method}: ACC {m.acc:.2f} BWT {m.bwt:.2f} "
                      f"({result.seconds:.1f} s, {dist.get_world_size()} ranks)", flush=True)
                if args.out is not None:
                    assert result.model is not None
                    state = {f"model.{k}": v for k, v in result.model.state_dict().items()}
                    save_state_dict({**state, "R": result.R, "b": result.b},
                                    args.out / f"run{i}.safetensors")
        if dist.get_rank() == 0 and args.out is not None:
            (args.out / "results.json").write_text(
                json.dumps([r.to_dict() for r in results], indent=1))
        dist.barrier()
        return results
    finally:
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
