"""Benchmark ``ssm/selective_scan``: the reference selective scan vs a naive per-timestep
loop on CPU, plus the Triton kernels and mamba-ssm's CUDA kernel where CUDA is available.

Every case runs Mamba's configuration of the scan (D skip, gate z, delta_bias, softplus;
A = −(1 … N) per channel, as Mamba initialises it) on seeded float32 inputs, timed as
``fwd`` (under ``no_grad``) and ``fwd+bwd`` (forward, then backward of a fixed output
gradient into every input) with :func:`subspace_core.bench.median_time`:

* ``reference``: :func:`subspace_core.ops.selective_scan.selective_scan_ref`, the spec
  (the discretised operators for all steps precomputed, then a loop over L) — the method;
* ``naive loop``: :func:`naive_selective_scan`, a straightforward float32 loop over L that
  discretises each step as it goes (no precomputed decay tensors) — the CPU baseline;
* ``triton`` (CUDA with triton installed): ``selective_scan(..., backend="triton")``; on the
  same GPU cases ``reference`` runs there too and the triton row gets
  ``speedup_vs_reference``;
* ``mamba-ssm`` (CUDA with ``mamba_ssm`` importable): its ``selective_scan_fn``; the triton
  row then gets ``time_vs_mamba_ssm`` (triton time / mamba-ssm time; the issue's target is
  at most 2).

Without CUDA the GPU rows are skipped with a printed note (the benchmark still measures its
method and baseline). Each non-reference row records ``max_abs_diff`` (output, ``fwd``) or
``max_abs_grad_diff`` (all input gradients, ``fwd+bwd``) against the reference on the same
device. The runner's ratio is ``reference / naive loop`` time (lower is better).

``quick``: CPU shapes ``(b, d, N, L)`` = (2, 32, 16, 256) and (1, 64, 16, 1024), 3 timed
calls (about 10 s on one busy thread); GPU (1, 256, 16, 1024). Full: CPU (4, 64, 16, 256),
(2, 128, 16, 1024), (1, 256, 16, 2048), 5 calls (about 2 minutes, estimated); GPU Mamba-130M's inner width (8, 1536, 16,
2048). The reference's backward indexes one step of its precomputed ``[b, d, N, L]`` tensors
at a time, so it grows as O(L²) with L; the naive loop's does not (see the measured rows).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from subspace_core.bench import (
    BenchContext,
    Benchmark,
    Measurement,
    median_time,
    register_benchmark,
)
from subspace_core.console import stderr_console
from subspace_core.ops import triton_available
from subspace_core.ops.selective_scan import selective_scan, selective_scan_ref
from subspace_ssm.mamba import mamba_ssm_available

__all__ = ["SELECTIVE_SCAN_BENCH", "ScanConfig", "make_inputs", "naive_selective_scan",
           "run_selective_scan"]

METHOD = "reference"
NAIVE = "naive loop"
BASELINES = (NAIVE,)
TRITON = "triton"
MAMBA_SSM = "mamba-ssm"
PASSES = ("fwd", "fwd+bwd")

Shape = tuple[int, int, int, int]  # (batch, dim, N, L)


@dataclass(frozen=True)
class ScanConfig:
    cpu_shapes: tuple[Shape, ...]
    gpu_shapes: tuple[Shape, ...]
    repeats: int = 5
    seed: int = 0


QUICK = ScanConfig(cpu_shapes=((2, 32, 16, 256), (1, 64, 16, 1024)),
                   gpu_shapes=((1, 256, 16, 1024),), repeats=3)
FULL = ScanConfig(cpu_shapes=((4, 64, 16, 256), (2, 128, 16, 1024), (1, 256, 16, 2048)),
                  gpu_shapes=((8, 1536, 16, 2048),), repeats=5)


def naive_selective_scan(u: torch.Tensor, delta: torch.Tensor, A: torch.Tensor,
                         B: torch.Tensor, C: torch.Tensor, D: torch.Tensor, z: torch.Tensor,
                         delta_bias: torch.Tensor) -> torch.Tensor:
    """Mamba's selective scan (softplus on ``delta + delta_bias``), one step at a time::

        Δ_t = softplus(δ_t + bias);  h_t = exp(Δ_t A) ⊙ h_{t−1} + Δ_t B_t u_t
        y_t = (Σ_n C_t[n] h_t[n] + D u_t) · silu(z_t)

    Shapes as in ``selective_scan_ref``: u, delta, z ``[b, d, L]``; A ``[d, N]``; B, C
    ``[b, N, L]``; D, delta_bias ``[d]``. float32 throughout; returns ``[b, d, L]``.
    """
    b, d, _ = u.shape
    h = u.new_zeros(b, d, A.shape[1])
    ys = []
    steps = zip(u.unbind(-1), delta.unbind(-1), B.unbind(-1), C.unbind(-1), z.unbind(-1),
                strict=True)
    for u_t, dt_t, B_t, C_t, z_t in steps:
        dt_t = F.softplus(dt_t + delta_bias)                              # [b, d]
        h = torch.exp(dt_t[..., None] * A) * h + (dt_t * u_t)[..., None] * B_t[:, None, :]
        y_t = (h * C_t[:, None, :]).sum(-1) + D * u_t
        ys.append(y_t * F.silu(z_t))
    return torch.stack(ys, -1)


def make_inputs(shape: Shape, device: torch.device, seed: int = 0) -> tuple[torch.Tensor, ...]:
    """``(u, delta, A, B, C, D, z, delta_bias)`` float32 on ``device``, seeded."""
    b, d, n, L = shape
    g = torch.Generator().manual_seed(seed)
    u, z = torch.randn(b, d, L, generator=g), torch.randn(b, d, L, generator=g)
    delta = 0.5 * torch.randn(b, d, L, generator=g)
    B, C = torch.randn(b, n, L, generator=g), torch.randn(b, n, L, generator=g)
    A = -torch.arange(1, n + 1, dtype=torch.float32).repeat(d, 1)
    D = torch.ones(d)
    delta_bias = torch.full((d,), -4.0)
    return tuple(t.to(device) for t in (u, delta, A, B, C, D, z, delta_bias))


def _backends(device: torch.device) -> dict[str, Callable[..., torch.Tensor]]:
    def ref(u, delta, A, B, C, D, z, bias):
        return selective_scan_ref(u, delta, A, B, C, D, z, bias, True)

    fns: dict[str, Callable[..., torch.Tensor]] = {METHOD: ref}
    if device.type == "cpu":
        fns[NAIVE] = naive_selective_scan
        return fns

    def triton(u, delta, A, B, C, D, z, bias):
        return selective_scan(u, delta, A, B, C, D, z, bias, True, backend="triton")

    if triton_available():
        fns[TRITON] = triton
    if mamba_ssm_available():
        from mamba_ssm.ops.selective_scan_interface import selective_scan_fn

        def mamba(u, delta, A, B, C, D, z, bias):
            return selective_scan_fn(u, delta, A, B, C, D, z=z, delta_bias=bias,
                                     delta_softplus=True)

        fns[MAMBA_SSM] = mamba
    return fns


def _measure(shape: Shape, device: torch.device, cfg: ScanConfig) -> list[Measurement]:
    b, d, n, L = shape
    inputs = make_inputs(shape, device, cfg.seed)
    grad_out = torch.randn(b, d, L, generator=torch.Generator().manual_seed(cfg.seed + 1))
    grad_out = grad_out.to(device)
    rows: list[Measurement] = []
    for pass_ in PASSES:
        case = f"{device.type} b={b},d={d},N={n},L={L} {pass_}"
        results: dict[str, tuple[torch.Tensor, ...]] = {}
        times: dict[str, float] = {}
        for label, fn in _backends(device).items():
            if pass_ == "fwd":
                def call(fn=fn, label=label, results=results):
                    with torch.no_grad():
                        results[label] = (fn(*inputs),)
            else:
                leaves = [t.detach().clone().requires_grad_(True) for t in inputs]

                def call(fn=fn, label=label, leaves=leaves, results=results):
                    for t in leaves:
                        t.grad = None
                    fn(*leaves).backward(grad_out)
                    results[label] = tuple(t.grad for t in leaves)

            stats = median_time(call, device, warmup=1, repeats=cfg.repeats)
            times[label] = stats["median"]
            rows.append(Measurement(case, label, "ms", 1e3 * stats["median"], "ms", False))
        metric = "max_abs_diff" if pass_ == "fwd" else "max_abs_grad_diff"
        for label, got in results.items():
            if label != METHOD:
                diff = max(float((a - r).abs().max()) for a, r in zip(got, results[METHOD],
                                                                       strict=True))
                rows.append(Measurement(case, label, metric, diff, "", False))
        if TRITON in times:
            rows.append(Measurement(case, TRITON, "speedup_vs_reference",
                                    times[METHOD] / times[TRITON], "x"))
        if TRITON in times and MAMBA_SSM in times:
            rows.append(Measurement(case, TRITON, "time_vs_mamba_ssm",
                                    times[TRITON] / times[MAMBA_SSM], "x", False))
    return rows


def run_selective_scan(ctx: BenchContext, cfg: ScanConfig | None = None) -> list[Measurement]:
    cfg = cfg or (QUICK if ctx.quick else FULL)
    cpu = torch.device("cpu")
    rows: list[Measurement] = []
    for shape in cfg.cpu_shapes:
        rows += _measure(shape, cpu, cfg)
    gpu = ctx.device if ctx.device.type == "cuda" else (
        torch.device("cuda") if torch.cuda.is_available() else None)
    if gpu is None:
        stderr_console().print("ssm/selective_scan: no CUDA device; the triton and mamba-ssm "
                               "rows are skipped (CPU rows only: reference vs naive loop)")
        return rows
    if not triton_available():
        stderr_console().print("ssm/selective_scan: triton is not installed; its rows are "
                               "skipped (pip install 'subspace-core[triton]')")
    if not mamba_ssm_available():
        stderr_console().print("ssm/selective_scan: mamba_ssm does not import; its rows are "
                               "skipped (pip install 'subspace-ssm[cuda]')")
    for shape in cfg.gpu_shapes:
        rows += _measure(shape, gpu, cfg)
    return rows


SELECTIVE_SCAN_BENCH = register_benchmark(
    Benchmark(
        name="ssm/selective_scan",
        method=METHOD,
        baselines=BASELINES,
        run=run_selective_scan,
        description="Selective scan (Mamba's configuration), forward and forward+backward: "
        "the torch reference vs a naive per-timestep loop on CPU; with CUDA also the Triton "
        "kernels and mamba-ssm's CUDA kernel (speed-ups, max abs diffs vs the reference).",
    )
)
