"""Benchmark ``peft/optimizer_memory``: analytic optimizer-state bytes (runs in milliseconds)."""

from __future__ import annotations

import json

from subspace_core.bench import BenchContext, Benchmark, Measurement, register_benchmark
from subspace_peft.benchmarks.memory import (
    LLAMA_1B,
    LLAMA_7B,
    METHODS,
    SMOLLM2_135M,
    optimizer_state_bytes,
)

__all__ = ["CASES", "OPTIMIZER_MEMORY", "run_optimizer_memory"]

CASES = {"llama_7b": LLAMA_7B, "llama_1b": LLAMA_1B, "smollm2_135m": SMOLLM2_135M}
_METHOD = "galore"


def _label(name: str, hidden: int) -> str:
    label = METHODS[name][0]
    return f"{label} (r=d/4)" if name in ("galore", "qgalore", "fira", "sst", "lora") else label


def run_optimizer_memory(ctx: BenchContext) -> list[Measurement]:
    rows: list[Measurement] = []
    summary = {}
    for case, cfg in CASES.items():
        sizes = optimizer_state_bytes(cfg)
        summary[case] = {"rank": cfg.hidden // 4, "bytes": sizes}
        for name, value in sizes.items():
            label = _label(name, cfg.hidden)
            rows.append(Measurement(case, label, "optimizer_state", value / 2**20, "MiB", False))
            rows.append(Measurement(case, label, "vs_adamw", 100.0 * value / sizes["adamw"], "%", False))
    ctx.out_dir.mkdir(parents=True, exist_ok=True)
    (ctx.out_dir / "peft_optimizer_memory.json").write_text(json.dumps(summary, indent=2))
    return rows


OPTIMIZER_MEMORY = register_benchmark(
    Benchmark(
        name="peft/optimizer_memory",
        method=_label(_METHOD, 0),
        baselines=tuple(_label(n, 0) for n in METHODS if n != _METHOD),
        run=run_optimizer_memory,
        description="Exact optimizer-state bytes from parameter shapes (no allocation) on "
        "LLaMA-7B/1B and SmolLM2-135M shapes, rank d/4 for the low-rank methods. Targets: "
        "GaLore <= 35 % and Q-GaLore <= 20 % of AdamW's state.",
    )
)
