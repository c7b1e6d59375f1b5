"""Kernel benchmark of ``projected_adam``: the ``torch`` reference vs the Triton kernels.

``register()`` adds it to the kernel-benchmark registry (``subzoo bench kernels``); it is
idempotent, and importing this module registers nothing.

Cases: full mode times GaLore and Fira steps on a 4096 × 4096 bf16 weight at rank 128
(right projection, GaLore's choice for a square matrix) and a smaller 1024 × 4096 one at
rank 64 (left projection); quick mode uses tiny float32 shapes, so the ``torch`` backend
runs in well under a second on CPU. Triton runs on CUDA only. Each timed call is a full
optimizer step at ``step=10`` and mutates its inputs (W drifts by lr per call, harmlessly).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from subspace_core.bench.registry import KernelBenchmark, register_kernel_benchmark
from subspace_core.ops.projected_adam import projected_adam, projection_side

__all__ = ["benchmark", "make_inputs", "register"]

_STEP = 10
_LR = 1e-3
_WEIGHT_DECAY = 0.01

_FULL = [
    {"m": 4096, "n": 4096, "rank": 128, "dtype": "bfloat16", "fira": False},
    {"m": 4096, "n": 4096, "rank": 128, "dtype": "bfloat16", "fira": True},
    {"m": 1024, "n": 4096, "rank": 64, "dtype": "bfloat16", "fira": True},
]
_QUICK = [
    {"m": 128, "n": 64, "rank": 8, "dtype": "float32", "fira": False},
    {"m": 64, "n": 128, "rank": 8, "dtype": "float32", "fira": True},
]



def _cases(quick: bool) -> list[dict[str, Any]]:
    return [dict(c) for c in (_QUICK if quick else _FULL)]


def make_inputs(case: dict[str, Any], device: torch.device) -> tuple:
    """``(W, G, P, M, V, fira_state, side)`` for one case, on ``device`` (seeded)."""
    m, n, rank = case["m"], case["n"], case["rank"]
    dtype = getattr(torch, case["dtype"])
    side = projection_side((m, n))
    gen = torch.Generator().manual_seed(0)
    W = (0.02 * torch.randn(m, n, generator=gen)).to(device, dtype)
    G = (1e-3 * torch.randn(m, n, generator=gen)).to(device, dtype)
    basis_rows = m if side == "left" else n
    # GaLore keeps P in the gradient's dtype.
    P = torch.linalg.qr(torch.randn(basis_rows, rank, generator=gen)).Q.to(device, dtype)
    moment_shape = (rank, n) if side == "left" else (m, rank)
    M = torch.zeros(moment_shape, device=device)
    V = torch.zeros(moment_shape, device=device)
    fira_state = torch.zeros((), device=device) if case["fira"] else None
    return W, G, P, M, V, fira_state, side


def _step(backend: str) -> Callable[..., None]:
    def run(W, G, P, M, V, fira_state, side) -> None:
        projected_adam(W, G, P, M, V, step=_STEP, side=side, lr=_LR,
                       weight_decay=_WEIGHT_DECAY, fira_state=fira_state, backend=backend)

    run.__name__ = f"projected_adam_{backend}"
    return run


PROJECTED_ADAM_BENCH = KernelBenchmark(
    op="projected_adam",
    cases=_cases,
    make_inputs=make_inputs,
    backends={"torch": _step("torch"), "triton": _step("triton")},
    baseline="torch",
    supports=lambda backend, device: backend == "torch" or device.type == "cuda",
)


def benchmark() -> KernelBenchmark:
    """The ``KernelBenchmark`` of ``projected_adam``."""
    return PROJECTED_ADAM_BENCH


def register() -> KernelBenchmark:
    """Register the benchmark (idempotent)."""
    return register_kernel_benchmark(PROJECTED_ADAM_BENCH)
