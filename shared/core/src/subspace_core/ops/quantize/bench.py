"""Kernel benchmarks of ``quantize`` and ``dequantize``: torch reference vs Triton.

``register()`` registers both (``subzoo bench kernels --op quantize``); importing does not. Cases are
Q-GaLore's: INT4 projectors and INT8 weights in groups of 256, on LLaMA-sized matrices in
full mode; one small matrix in quick mode, so the torch backend runs on CPU in seconds.

Both ops are memory bound, so besides time the figure of merit is the achieved bandwidth,
``bytes_moved(case) / median time``: every case carries ``MB_moved`` (bytes read + written
/ 1e6), so GB/s = ``MB_moved / median_ms``; :func:`bandwidth_gbs` and
:func:`peak_bandwidth_gbs` turn that into absolute and relative numbers (target on GPU:
quantize at ≥ 60 % of the device's peak).
"""

from __future__ import annotations

from typing import Any

import torch

from subspace_core.bench import KernelBenchmark, register_kernel_benchmark
from subspace_core.ops.quantize import dequantize, quantize

__all__ = ["DEQUANTIZE_BENCH", "QUANTIZE_BENCH", "bandwidth_gbs", "bytes_moved",
           "peak_bandwidth_gbs", "register"]


def _element_size(dtype_name: str) -> int:
    return torch.empty((), dtype=getattr(torch, dtype_name)).element_size()


def bytes_moved(case: dict[str, Any]) -> int:
    """Bytes one quantize (or dequantize) call of ``case`` reads plus writes: the float
    tensor, the codes (``bits / 8`` bytes per element) and fp32 scales (+ zero-points)."""
    rows, cols = case["shape"]
    n = rows * cols
    groups = n // case["group_size"]
    per_group = 4 if case["symmetric"] else 8
    return n * _element_size(case["dtype"]) + n * case["bits"] // 8 + groups * per_group


def bandwidth_gbs(case: dict[str, Any], seconds: float) -> float:
    """Achieved bandwidth in GB/s (1e9 bytes / s) of one call taking ``seconds``."""
    return bytes_moved(case) / seconds / 1e9


def peak_bandwidth_gbs(device: torch.device) -> float | None:
    """Theoretical DRAM bandwidth of a CUDA ``device`` (2 · memory clock · bus width), or
    None where torch does not report them (CPU, older torch)."""
    if device.type != "cuda":
        return None
    props = torch.cuda.get_device_properties(device)
    clock_khz = getattr(props, "memory_clock_rate", None)
    bus_bits = getattr(props, "memory_bus_width", None)
    if not clock_khz or not bus_bits:
        return None
    return 2 * clock_khz * 1e3 * bus_bits / 8 / 1e9


def _cases(quick: bool) -> list[dict[str, Any]]:
    if quick:
        specs = [((256, 256), 8, False, True, "float32"), ((256, 256), 4, False, False, "float32")]
    else:
        specs = [  # (shape, bits, symmetric, stochastic, dtype)
            ((4096, 4096), 4, False, False, "bfloat16"),   # Q-GaLore INT4 projector
            ((4096, 4096), 8, False, True, "bfloat16"),    # INT8 weight, stochastic rounding
            ((4096, 11008), 8, False, True, "bfloat16"),   # LLaMA-7B MLP weight
            ((4096, 4096), 8, True, False, "float32"),
            ((4096, 4096), 4, True, True, "float32"),
        ]
    cases = []
    for shape, bits, symmetric, stochastic, dtype in specs:
        case = {"shape": list(shape), "bits": bits, "group_size": 256, "symmetric": symmetric,
                "stochastic": stochastic, "dtype": dtype}
        case["MB_moved"] = round(bytes_moved(case) / 1e6, 3)
        cases.append(case)
    return cases


def _make_quantize_inputs(case: dict[str, Any], device: torch.device) -> tuple:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(case["shape"], generator=g).to(device, getattr(torch, case["dtype"]))
    return x, case["bits"], case["group_size"], case["symmetric"], case["stochastic"]


def _quantizer(backend: str):
    def run(x, bits, group_size, symmetric, stochastic):
        return quantize(x, bits, group_size, symmetric=symmetric, stochastic=stochastic,
                        seed=0 if stochastic else None, backend=backend)
    return run


def _make_dequantize_inputs(case: dict[str, Any], device: torch.device) -> tuple:
    x, bits, group_size, symmetric, _ = _make_quantize_inputs(case, device)
    return quantize(x, bits, group_size, symmetric=symmetric, backend="torch"), x.dtype


def _dequantizer(backend: str):
    def run(q, dtype):
        return dequantize(q, dtype, backend=backend)
    return run


def _supports(backend: str, device: torch.device) -> bool:
    return backend == "torch" or device.type == "cuda"


QUANTIZE_BENCH = KernelBenchmark(
    op="quantize",
    cases=_cases,
    make_inputs=_make_quantize_inputs,
    backends={"torch": _quantizer("torch"), "triton": _quantizer("triton")},
    baseline="torch",
    supports=_supports,
    bytes_moved=bytes_moved,
)

DEQUANTIZE_BENCH = KernelBenchmark(
    op="dequantize",
    cases=_cases,
    make_inputs=_make_dequantize_inputs,
    backends={"torch": _dequantizer("torch"), "triton": _dequantizer("triton")},
    baseline="torch",
    supports=_supports,
    bytes_moved=bytes_moved,
)


def register() -> tuple[KernelBenchmark, KernelBenchmark]:
    """Register both benchmarks (once: later calls find them registered and return them)."""
    return register_kernel_benchmark(QUANTIZE_BENCH), register_kernel_benchmark(DEQUANTIZE_BENCH)
