"""``subzoo bench [PACKAGE ...]`` and ``subzoo bench kernels``."""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table

from subspace_core.bench import (
    BenchContext,
    BenchReport,
    bench_environment,
    list_benchmarks,
    list_kernel_benchmarks,
    run_benchmark,
    run_kernel_benchmarks,
    write_report,
)
from subspace_core.console import stderr_console


def add_parser(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "bench",
        help="run benchmarks: 'bench [PACKAGE ...]' or 'bench kernels [--op OP]'",
        description="Run each benchmark's method and baselines in one process and report "
        "ratios. 'subzoo bench kernels' times op backends instead.",
    )
    parser.add_argument("packages", nargs="*",
                        help="package areas (e.g. peft) or benchmark names (e.g. "
                        "peft/projector_refresh); default: all. Or 'kernels'")
    parser.add_argument("--quick", action="store_true", help="small sizes, for CI and a first look")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", default="runs/bench", help="folder for CSV/JSON/PNG reports")
    parser.add_argument("--json", metavar="F", help="also write the JSON report to F ('-': stdout)")
    parser.add_argument("--op", action="append", help="kernels: only this op (repeatable)")
    parser.add_argument("--backend", help="kernels: comma-separated backends, e.g. triton,torch")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from subspace_core.cli import emit_json

    device = torch.device(args.device)
    out = Path(args.out)
    if args.packages[:1] == ["kernels"]:
        if len(args.packages) > 1:
            raise ValueError(f"packages: 'kernels' takes no packages, got {args.packages[1:]}")
        report = _kernels(args, device)
        stem = f"kernels_{device.type}"
    else:
        if args.op or args.backend:
            raise ValueError("--op/--backend: only valid with 'subzoo bench kernels'")
        report = _benchmarks(args, device, out)
        stem = "bench"
    report.environment = bench_environment(device)
    if stem.startswith("kernels"):
        # kernel timings are only comparable on the same device and versions: stamp each row
        stamp = {k: report.environment[k] for k in ("device", "torch_version", "triton_version",
                                                     "git_sha", "date")}
        report.measurements = [{**row, **stamp} for row in report.measurements]
        report.ratios = [{**row, **stamp} for row in report.ratios]
    to_stdout = args.json == "-"
    written = write_report(report, out, stem,
                           json_path=None if to_stdout or not args.json else Path(args.json))
    if to_stdout:
        emit_json(report.to_dict())
    else:
        if stem.startswith("kernels"):
            Console().print(_kernel_table(report))
        if report.ratios or not stem.startswith("kernels"):
            Console().print(_ratio_table(report))
        stderr_console().print("wrote " + ", ".join(str(p) for p in written))
    return 0


def _benchmarks(args: argparse.Namespace, device: torch.device, out: Path) -> BenchReport:
    names = [p for p in args.packages if "/" in p]
    areas = [p for p in args.packages if "/" not in p]
    benchmarks = list_benchmarks(areas or None) if areas or not names else []
    if names:
        every = {b.name: b for b in list_benchmarks(None)}
        unknown = [n for n in names if n not in every]
        if unknown:
            raise ValueError(f"packages: unknown benchmarks {unknown}; registered: {sorted(every)}")
        benchmarks += [every[n] for n in names if every[n] not in benchmarks]
    if not benchmarks:
        raise RuntimeError(f"no benchmarks registered for {args.packages or 'any package'}")
    report = BenchReport()
    ctx = BenchContext(quick=args.quick, device=device, out_dir=out)
    for benchmark in benchmarks:
        stderr_console().print(f"[bold]{benchmark.name}[/]: {benchmark.description}")
        report.extend(run_benchmark(benchmark, ctx))
    return report


def _kernels(args: argparse.Namespace, device: torch.device) -> BenchReport:
    ops = args.op or list_kernel_benchmarks()
    if not ops:
        raise RuntimeError("no kernel benchmarks are registered (ops register them in "
                           "subspace_core.ops or a package plugin)")
    backends = args.backend.split(",") if args.backend else None
    return run_kernel_benchmarks(ops, backends, device, args.quick)


def _ratio_table(report: BenchReport) -> Table:
    table = Table(title="method vs. baselines, measured in one process (ratio = method / baseline)")
    for column in ("benchmark / case", "metric", "method", "baseline", "ratio"):
        table.add_column(column, overflow="fold")
    for r in report.ratios:
        mark = "green" if r["method_better"] else "red"
        unit = f" {r['unit']}" if r["unit"] else ""
        table.add_row(f"{r['benchmark']}\n{r['case']}", r["metric"],
                      f"{r['method']}\n{r['method_value']:,.4g}{unit}",
                      f"{r['baseline']}\n{r['baseline_value']:,.4g}{unit}",
                      f"[{mark}]{r['ratio']:.3g}[/]")
    return table


def _kernel_table(report: BenchReport) -> Table:
    env = report.environment
    table = Table(title=f"kernel timings on {env.get('device')} (torch {env.get('torch_version')}, "
                        f"triton {env.get('triton_version')}); backends that cannot run here "
                        "are not listed")
    for column in ("op", "case", "backend", "median", "bandwidth"):
        table.add_column(column, overflow="fold")
    bandwidth = {(r["benchmark"], r["case"], r["method"]): r["value"]
                 for r in report.measurements if r["metric"] == "bandwidth"}
    for r in report.measurements:
        if r["metric"] != "median_ms":
            continue
        gbs = bandwidth.get((r["benchmark"], r["case"], r["method"]))
        table.add_row(r["benchmark"].removeprefix("kernels/"), r["case"], r["method"],
                      f"{r['value']:.3f} ms", "" if gbs is None else f"{gbs:.2f} GB/s")
    return table
