"""Benchmark registries: method-vs-baselines benchmarks and kernel (op backend) benchmarks."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from subspace_core.plugins import available_plugins, load_plugin, load_plugins

__all__ = [
    "BenchContext",
    "Benchmark",
    "KernelBenchmark",
    "Measurement",
    "get_kernel_benchmark",
    "list_benchmarks",
    "list_kernel_benchmarks",
    "register_benchmark",
    "register_kernel_benchmark",
]

_BENCHMARKS: dict[str, Benchmark] = {}
_KERNEL_BENCHMARKS: dict[str, KernelBenchmark] = {}


@dataclass(frozen=True)
class Measurement:
    """One number measured by a benchmark for one method on one case."""

    case: str
    method: str
    metric: str
    value: float
    unit: str = ""
    higher_is_better: bool = True


@dataclass(frozen=True)
class BenchContext:
    """What a benchmark run is told: quick mode, device, where to write artefacts."""

    quick: bool
    device: torch.device
    out_dir: Path


@dataclass(frozen=True)
class Benchmark:
    """A benchmark measuring ``method`` and its ``baselines`` in one process.

    ``run(ctx)`` returns measurements for the method and every baseline; the runner turns
    them into ratios method/baseline per (case, metric).
    """

    name: str
    method: str
    baselines: tuple[str, ...]
    run: Callable[[BenchContext], list[Measurement]]
    description: str = ""

    @property
    def area(self) -> str:
        return self.name.split("/", 1)[0]


@dataclass(frozen=True)
class KernelBenchmark:
    """Timings of one op across backends, over a list of shape cases.

    Attributes:
        op: op name (``subspace_core.ops.<op>``).
        cases: ``cases(quick)`` → list of case dicts (shapes, dtypes), each JSON-able.
        make_inputs: ``make_inputs(case, device)`` → positional args of the op.
        backends: backend name → callable taking those args.
        baseline: backend the ratios are taken against (the reference, ``torch``).
        supports: ``supports(backend, device)`` → whether the backend can run there.
        bytes_moved: ``bytes_moved(case)`` → bytes read + written by one call, for
            memory-bound ops; the runner then also reports achieved bandwidth (GB/s).
    """

    op: str
    cases: Callable[[bool], list[dict[str, Any]]]
    make_inputs: Callable[[dict[str, Any], torch.device], tuple]
    backends: dict[str, Callable[..., Any]]
    baseline: str = "torch"
    supports: Callable[[str, torch.device], bool] = lambda backend, device: True
    bytes_moved: Callable[[dict[str, Any]], int] | None = None


def register_benchmark(benchmark: Benchmark) -> Benchmark:
    if benchmark.name in _BENCHMARKS:
        raise ValueError(f"benchmark: {benchmark.name!r} is already registered")
    _BENCHMARKS[benchmark.name] = benchmark
    return benchmark


def register_kernel_benchmark(benchmark: KernelBenchmark) -> KernelBenchmark:
    """Register ``benchmark``; registering the same object again is a no-op."""
    if _KERNEL_BENCHMARKS.get(benchmark.op) is benchmark:
        return benchmark
    if benchmark.op in _KERNEL_BENCHMARKS:
        raise ValueError(f"kernel benchmark: {benchmark.op!r} is already registered")
    if benchmark.baseline not in benchmark.backends:
        raise ValueError(
            f"baseline: expected one of {sorted(benchmark.backends)}, got {benchmark.baseline!r}"
        )
    _KERNEL_BENCHMARKS[benchmark.op] = benchmark
    return benchmark


def list_benchmarks(packages: list[str] | None = None) -> list[Benchmark]:
    """Registered benchmarks of ``packages`` (all installed plugins when None), by name."""
    if packages:
        unknown = sorted(set(packages) - set(available_plugins()))
        if unknown:
            raise KeyError(f"packages: {unknown} not installed; installed: {available_plugins()}")
        for name in packages:
            load_plugin(name)
    else:
        load_plugins()
    return [b for n, b in sorted(_BENCHMARKS.items()) if not packages or b.area in packages]


def list_kernel_benchmarks() -> list[str]:
    load_plugins()
    return sorted(_KERNEL_BENCHMARKS)


def get_kernel_benchmark(op: str) -> KernelBenchmark:
    if op not in _KERNEL_BENCHMARKS:
        load_plugins()
    if op not in _KERNEL_BENCHMARKS:
        raise KeyError(f"op: {op!r} has no kernel benchmark; known: {sorted(_KERNEL_BENCHMARKS)}")
    return _KERNEL_BENCHMARKS[op]
