"""Benchmark ``peft/measured_memory``: optimizer state actually held, on real models.

The analytic table (``peft/optimizer_memory``) counts bytes from shapes. This one builds
each optimizer on a real model, takes training steps, and sums the bytes of every tensor
in ``optimizer.state`` (``measured_state``), next to the analytic count for the same
parameter shapes (``analytic_state``), so the formulas are checked against the code.
Small bookkeeping tensors (step counters, the Q-GaLore similarity queue) are included in
the measured number, which is why it can exceed the analytic one by a few KiB.

Cases: the micro decoder (quick and full) and, in the full run, SmolLM2-135M with its real
weights, where each method also runs in a fresh subprocess that reports its peak resident
memory (``peak_rss``, MiB; weights + gradients + optimizer state + activations of a
batch of 2 x 64 tokens; the CPU allocator's high-water mark, so it includes transients).
Rank ``d/4`` on the ``attn``/``mlp`` linears for every low-rank method; LoRA is Hugging
Face ``peft`` (base model frozen, AdamW on the adapters); 8-bit AdamW and Q-GaLore's moments
are :class:`~subspace_peft.optim.GaLoreAdamW8bit`'s block-wise 8-bit format with
bitsandbytes' block layout (2,048 per block, fp32 below 4,096 elements; 8-bit moments keep
one fp32 scale per block and a small shape record); Q-GaLore adds the INT4 basis and the
lazy refresh.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Callable

import torch
from torch import nn

from subspace_core.bench import BenchContext, Benchmark, Measurement, register_benchmark
from subspace_peft.benchmarks.memory import METHODS as ANALYTIC
from subspace_peft.benchmarks.memory import ParamShape
from subspace_peft.finetune.methods import optimizer_state_bytes as state_bytes
from subspace_peft.optim import GaLoreAdamW, GaLoreAdamW8bit, galore_param_groups

__all__ = ["MEASURED_MEMORY", "OPTIMIZERS", "build_optimizer", "run_measured_memory",
           "state_bytes"]

#: Module-name patterns of the projected / adapted linears (micro decoder and HF LLaMA).
TARGETS = (r"\.attn\.", r"\.mlp\.", r"self_attn\.")


def _galore(model: nn.Module, rank: int, **options) -> torch.optim.Optimizer:
    return GaLoreAdamW(galore_param_groups(model, TARGETS, rank=rank, **options), lr=1e-4)


def _qgalore(model: nn.Module, rank: int) -> torch.optim.Optimizer:
    # 8-bit moments for every tensor (optimizer-wide default), INT4 basis + lazy refresh
    groups = galore_param_groups(model, TARGETS, rank=rank, quant_bits=4, lazy=True)
    return GaLoreAdamW8bit(groups, lr=1e-4, state_block_size=2048, state_min_size=4096)


def _adamw8bit(model: nn.Module, rank: int) -> torch.optim.Optimizer:
    # bitsandbytes' layout (the analytic formula): blocks of 2,048, fp32 below 4,096 elements
    return GaLoreAdamW8bit(model.parameters(), lr=1e-4, state_block_size=2048,
                           state_min_size=4096)


def _sst(model: nn.Module, rank: int) -> torch.optim.Optimizer:
    from subspace_peft.sst import convert_to_sst
    from subspace_peft.sst.layer import sst_param_groups

    convert_to_sst(model, TARGETS, rank=rank)
    return torch.optim.AdamW(sst_param_groups(model), lr=1e-4)


def _lora(model: nn.Module, rank: int) -> tuple[nn.Module, torch.optim.Optimizer]:
    import peft

    names = [n for n, m in model.named_modules()
             if isinstance(m, nn.Linear) and any(re.search(t, n) for t in TARGETS)]
    config = peft.LoraConfig(r=rank, lora_alpha=rank, target_modules=names, lora_dropout=0.0)
    wrapped = peft.get_peft_model(model, config)
    params = [p for p in wrapped.parameters() if p.requires_grad]
    return wrapped, torch.optim.AdamW(params, lr=1e-4)


#: method -> builder(model, rank) returning an optimizer or (wrapped model, optimizer).
OPTIMIZERS: dict[str, Callable] = {
    "adamw": lambda model, rank: torch.optim.AdamW(model.parameters(), lr=1e-4),
    "adamw8bit": _adamw8bit,
    "galore": _galore,
    "fira": lambda model, rank: _galore(model, rank, fira=True),
    "qgalore": _qgalore,
    "sst": _sst,
    "lora": _lora,
}


def build_optimizer(method: str, model: nn.Module, rank: int):
    """``(model, optimizer)`` for ``method`` (LoRA wraps the model)."""
    out = OPTIMIZERS[method](model, rank)
    return out if isinstance(out, tuple) else (model, out)


def _shapes(model: nn.Module) -> list[ParamShape]:
    # the analytic formulas match on ".attn." / ".mlp." names; HF LLaMA uses self_attn/mlp
    return [ParamShape(n.replace("self_attn", "attn"), tuple(p.shape))
            for n, p in model.named_parameters()]


def _steps(model: nn.Module, optimizer, batch: Callable[[], torch.Tensor], loss_fn, steps: int):
    for _ in range(steps):
        optimizer.zero_grad(set_to_none=True)
        loss_fn(model, batch()).backward()
        optimizer.step()


def _micro_case(method: str, rank: int = 32) -> tuple[int, int]:
    from subspace_peft.models.decoder import MicroDecoder
    from subspace_peft.models.zoo import LLAMA_MICRO

    torch.manual_seed(0)
    model = MicroDecoder(LLAMA_MICRO)
    analytic = ANALYTIC[method][1](_shapes(model), rank)
    model, optimizer = build_optimizer(method, model, rank)
    gen = torch.Generator().manual_seed(0)

    def loss_fn(m, x):
        logits = m(x[:, :-1])
        return nn.functional.cross_entropy(logits.flatten(0, 1), x[:, 1:].flatten())

    _steps(model, optimizer, lambda: torch.randint(0, 257, (2, 65), generator=gen), loss_fn, 2)
    return state_bytes(optimizer), analytic


def _smollm2_case(method: str, rank: int = 144) -> dict[str, float]:
    """Run in a subprocess: measured/analytic state and peak RSS for one method."""
    import resource

    from subspace_peft.smollm2 import load_smollm2

    model = load_smollm2()
    model.train()
    analytic = ANALYTIC[method][1](_shapes(model), rank)
    model, optimizer = build_optimizer(method, model, rank)
    gen = torch.Generator().manual_seed(0)

    def loss_fn(m, x):
        return m(input_ids=x, labels=x).loss

    _steps(model, optimizer, lambda: torch.randint(0, 49152, (2, 64), generator=gen), loss_fn, 2)
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {"measured": state_bytes(optimizer), "analytic": analytic, "peak_rss": peak_kib / 1024}


def _rows(case: str, method: str, measured: int, analytic: int) -> list[Measurement]:
    label = ANALYTIC[method][0] + ("" if method in ("adamw", "adamw8bit") else " (r=d/4)")
    return [Measurement(case, label, "measured_state", measured / 2**20, "MiB", False),
            Measurement(case, label, "analytic_state", analytic / 2**20, "MiB", False)]


def run_measured_memory(ctx: BenchContext) -> list[Measurement]:
    rows: list[Measurement] = []
    for method in OPTIMIZERS:
        measured, analytic = _micro_case(method)
        rows += _rows("llama_micro (1.2M)", method, measured, analytic)
    if ctx.quick:
        return rows
    for method in OPTIMIZERS:
        code = ("import json, sys; from subspace_peft.benchmarks.measured_memory import "
                f"_smollm2_case; print(json.dumps(_smollm2_case({method!r})))")
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                              check=False)
        if done.returncode != 0:
            raise RuntimeError(f"SmolLM2 memory run for {method} failed:\n{done.stderr[-3000:]}")
        result = json.loads(done.stdout.strip().splitlines()[-1])
        case = "SmolLM2-135M (real weights)"
        rows += _rows(case, method, result["measured"], result["analytic"])
        label = rows[-1].method
        rows.append(Measurement(case, label, "peak_rss", result["peak_rss"], "MiB", False))
    return rows


MEASURED_MEMORY = register_benchmark(
    Benchmark(
        name="peft/measured_memory",
        method="GaLore (r=d/4)",
        baselines=("AdamW", "8-bit AdamW", "Fira (r=d/4)", "Q-GaLore (r=d/4)", "SST (r=d/4)",
                   "LoRA (r=d/4)"),
        run=run_measured_memory,
        description="Optimizer-state bytes actually held after training steps (and, full run, "
        "peak RSS per method in a fresh process) on the micro decoder and SmolLM2-135M's real "
        "weights, next to the analytic count.",
    )
)
