"""Kernel benchmarks of ``lowrank_linear`` and ``svd_linear``: torch reference vs Triton.

``register()`` registers both (``subzoo bench kernels --op lowrank_linear``); importing
does not. Each case is timed as ``pass="fwd"`` (forward under ``no_grad``) and
``pass="fwd+bwd"`` (forward, then backward with the training set-up of the method: frozen
base weight and bias, trained factors; for ``svd_linear`` frozen ``U``/``Vh`` and trained
``σ``, as in SVFit). Full mode: LLaMA-7B attention-sized layers (4096 × 4096, 8192 tokens) in bf16;
quick mode: a small fp32 layer, so the torch backend runs on CPU in seconds.
"""

from __future__ import annotations

from typing import Any

import torch

from subspace_core.bench import KernelBenchmark, register_kernel_benchmark
from subspace_core.ops.lowrank_linear import lowrank_linear, svd_linear

__all__ = ["LOWRANK_LINEAR_BENCH", "SVD_LINEAR_BENCH", "register"]


def _cases(rank_key: str, full_ranks: tuple[int, ...], quick_rank: int):
    def cases(quick: bool) -> list[dict[str, Any]]:
        if quick:
            dims = [(256, 256, 256, quick_rank, "float32")]
        else:
            dims = [(8192, 4096, 4096, r, "bfloat16") for r in full_ranks]
        return [{"tokens": m, "d_in": i, "d_out": o, rank_key: r, "dtype": dt, "pass": p}
                for m, i, o, r, dt in dims for p in ("fwd", "fwd+bwd")]
    return cases


def _randn(shape, g, device, dtype, std: float, grad: bool) -> torch.Tensor:
    t = (torch.randn(shape, generator=g) * std).to(device, dtype)
    return t.requires_grad_(grad)


def _make_lowrank_inputs(case: dict[str, Any], device: torch.device) -> tuple:
    g = torch.Generator().manual_seed(0)
    dtype = getattr(torch, case["dtype"])
    m, d_in, d_out, r = case["tokens"], case["d_in"], case["d_out"], case["rank"]
    x = _randn((m, d_in), g, device, dtype, 1.0, True)
    W = _randn((d_in, d_out), g, device, dtype, d_in**-0.5, False)
    A = _randn((d_in, r), g, device, dtype, d_in**-0.5, True)
    B = _randn((r, d_out), g, device, dtype, r**-0.5, True)
    bias = _randn((d_out,), g, device, dtype, 0.1, False)
    grad_y = _randn((m, d_out), g, device, dtype, 1.0, False)
    return x, W, A, B, bias, 2.0, case["pass"], grad_y


def _lowrank_runner(backend: str):
    def run(x, W, A, B, bias, scale, pass_, grad_y):
        if pass_ == "fwd":
            with torch.no_grad():
                return lowrank_linear(x, W, A, B, bias, scale, backend=backend)
        lowrank_linear(x, W, A, B, bias, scale, backend=backend).backward(grad_y)
        for t in (x, A, B):
            t.grad = None  # no accumulation across repeats
        return None
    return run


def _make_svd_inputs(case: dict[str, Any], device: torch.device) -> tuple:
    g = torch.Generator().manual_seed(0)
    dtype = getattr(torch, case["dtype"])
    m, d_in, d_out, k = case["tokens"], case["d_in"], case["d_out"], case["k"]
    x = _randn((m, d_in), g, device, dtype, 1.0, True)
    U = _randn((d_in, k), g, device, dtype, d_in**-0.5, False)
    S = (torch.rand(k, generator=g) + 0.5).to(device, dtype).requires_grad_(True)
    Vh = _randn((k, d_out), g, device, dtype, k**-0.5, False)
    bias = _randn((d_out,), g, device, dtype, 0.1, False)
    grad_y = _randn((m, d_out), g, device, dtype, 1.0, False)
    return x, U, S, Vh, bias, case["pass"], grad_y


def _svd_runner(backend: str):
    def run(x, U, S, Vh, bias, pass_, grad_y):
        if pass_ == "fwd":
            with torch.no_grad():
                return svd_linear(x, U, S, Vh, bias, backend=backend)
        svd_linear(x, U, S, Vh, bias, backend=backend).backward(grad_y)
        x.grad = S.grad = None
        return None
    return run


def _supports(backend: str, device: torch.device) -> bool:
    return backend == "torch" or device.type == "cuda"


LOWRANK_LINEAR_BENCH = KernelBenchmark(
    op="lowrank_linear",
    cases=_cases("rank", (16, 64), 8),
    make_inputs=_make_lowrank_inputs,
    backends={"torch": _lowrank_runner("torch"), "triton": _lowrank_runner("triton")},
    baseline="torch",
    supports=_supports,
)

SVD_LINEAR_BENCH = KernelBenchmark(
    op="svd_linear",
    cases=_cases("k", (4096, 512), 64),
    make_inputs=_make_svd_inputs,
    backends={"torch": _svd_runner("torch"), "triton": _svd_runner("triton")},
    baseline="torch",
    supports=_supports,
)


def register() -> tuple[KernelBenchmark, KernelBenchmark]:
    """Register both benchmarks (once: later calls find them registered and return them)."""
    return register_kernel_benchmark(LOWRANK_LINEAR_BENCH), register_kernel_benchmark(SVD_LINEAR_BENCH)
