"""Recipe of ``peft/corda_minilm.rotten_tomatoes``: CorDA (instruction-previewed mode, rank 8,
calibrated on 8 training batches) on the fine-tuning harness."""

from __future__ import annotations

from pathlib import Path

__all__ = ["LR", "METHOD", "MODEL_ID", "train"]

MODEL_ID = "peft/corda_minilm.rotten_tomatoes"
METHOD = "corda_ipm"
#: best validation accuracy of the sweep {3e-4, 1e-3} (see peft/minilm_adapters)
LR = 3e-4


def train(out_dir: str | Path, *, quick: bool = False, progress: bool = True) -> Path:
    """Fine-tune MiniLM + CorDA-IPM on Rotten Tomatoes (harness settings of
    ``peft/minilm_adapters``) and write the adapter checkpoint; returns its path."""
    from subspace_peft.recipes.minilm_rt import train_rt_adapter

    return train_rt_adapter(METHOD, LR, MODEL_ID, out_dir, recipe=__name__, quick=quick)
