"""Kernel benchmark of ``selective_scan``: the torch reference vs the Triton kernels.

``register()`` adds it to the kernel-benchmark registry (``subzoo bench kernels --op
selective_scan``); it is idempotent, and importing this module registers nothing.

Each case is timed as ``pass="fwd"`` (under ``no_grad``) and ``pass="fwd+bwd"``, with
Mamba's configuration (D skip, gate z, delta_bias with softplus). Full mode: Mamba-130M's
inner width (d = 1536, N = 16) at L = 2048 and a longer L = 8192 in bf16; quick mode: a
tiny fp32 case, so the torch backend runs on CPU in about a second. Triton runs on CUDA only.
"""

from __future__ import annotations

from typing import Any

import torch

from subspace_core.bench.registry import KernelBenchmark, register_kernel_benchmark
from subspace_core.ops.selective_scan import selective_scan

__all__ = ["SELECTIVE_SCAN_BENCH", "benchmark", "make_inputs", "register"]

_FULL = [(8, 1536, 2048, 16, "bfloat16"), (1, 1536, 8192, 16, "bfloat16")]
_QUICK = [(1, 32, 64, 8, "float32")]


def _cases(quick: bool) -> list[dict[str, Any]]:
    return [{"batch": b, "dim": d, "L": L, "N": n, "dtype": dt, "pass": p}
            for b, d, L, n, dt in (_QUICK if quick else _FULL) for p in ("fwd", "fwd+bwd")]


def make_inputs(case: dict[str, Any], device: torch.device) -> tuple:
    """``(u, delta, A, B, C, D, z, delta_bias, pass, grad_out)`` for one case (seeded)."""
    g = torch.Generator().manual_seed(0)
    b, d, L, n = case["batch"], case["dim"], case["L"], case["N"]
    dtype = getattr(torch, case["dtype"])
    grad = case["pass"] == "fwd+bwd"

    def act(*shape, std=1.0):
        return (torch.randn(shape, generator=g) * std).to(device, dtype).requires_grad_(grad)

    u, z = act(b, d, L), act(b, d, L)
    delta = act(b, d, L, std=0.5)
    B, C = act(b, n, L), act(b, n, L)
    # Mamba's S4D-Real init: A = -(1..N), kept in float32
    A = -torch.arange(1, n + 1, dtype=torch.float32).repeat(d, 1).to(device)
    D = torch.ones(d, device=device)
    delta_bias = torch.full((d,), -4.0, device=device)
    for t in (A, D, delta_bias):
        t.requires_grad_(grad)
    grad_out = torch.randn((b, d, L), generator=g).to(device, dtype)
    return u, delta, A, B, C, D, z, delta_bias, case["pass"], grad_out


def _runner(backend: str):
    def run(u, delta, A, B, C, D, z, delta_bias, pass_, grad_out):
        if pass_ == "fwd":
            with torch.no_grad():
                return selective_scan(u, delta, A, B, C, D, z, delta_bias, True,
                                      backend=backend)
        out = selective_scan(u, delta, A, B, C, D, z, delta_bias, True, backend=backend)
        out.backward(grad_out)
        for t in (u, delta, A, B, C, D, z, delta_bias):
            t.grad = None  # no accumulation across repeats
        return None

    run.__name__ = f"selective_scan_{backend}"
    return run


SELECTIVE_SCAN_BENCH = KernelBenchmark(
    op="selective_scan",
    cases=_cases,
    make_inputs=make_inputs,
    backends={"torch": _runner("torch"), "triton": _runner("triton")},
    baseline="torch",
    supports=lambda backend, device: backend == "torch" or device.type == "cuda",
)


def benchmark() -> KernelBenchmark:
    """The ``KernelBenchmark`` of ``selective_scan``."""
    return SELECTIVE_SCAN_BENCH


def register() -> KernelBenchmark:
    """Register the benchmark (idempotent)."""
    return register_kernel_benchmark(SELECTIVE_SCAN_BENCH)
