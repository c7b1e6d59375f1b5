"""Benchmarks: methods against their baselines in one process, reported as ratios."""

from subspace_core.bench.registry import (
    BenchContext,
    Benchmark,
    KernelBenchmark,
    Measurement,
    get_kernel_benchmark,
    list_benchmarks,
    list_kernel_benchmarks,
    register_benchmark,
    register_kernel_benchmark,
)
from subspace_core.bench.runner import (
    BenchReport,
    bench_environment,
    run_benchmark,
    run_kernel_benchmarks,
    write_report,
)
from subspace_core.bench.timing import median_time

__all__ = [
    "BenchContext",
    "BenchReport",
    "Benchmark",
    "KernelBenchmark",
    "Measurement",
    "bench_environment",
    "get_kernel_benchmark",
    "list_benchmarks",
    "list_kernel_benchmarks",
    "median_time",
    "register_benchmark",
    "register_kernel_benchmark",
    "run_benchmark",
    "run_kernel_benchmarks",
    "write_report",
]
