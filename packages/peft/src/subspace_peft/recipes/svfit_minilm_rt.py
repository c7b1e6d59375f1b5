"""Recipe of ``peft/svfit_minilm.rotten_tomatoes``: SVFit on the fine-tuning harness."""

from __future__ import annotations

from pathlib import Path

__all__ = ["LR", "MODEL_ID", "train"]

MODEL_ID = "peft/svfit_minilm.rotten_tomatoes"
#: best validation accuracy of the sweep {2e-2, 4e-2, 8e-2} (see peft/minilm_adapters)
LR = 4e-2


def train(out_dir: str | Path, *, quick: bool = False, progress: bool = True) -> Path:
    """Fine-tune MiniLM + SVFit on Rotten Tomatoes (harness settings of ``peft/minilm_adapters``,
    best-validation epoch kept) and write the adapter checkpoint; returns its path."""
    from subspace_peft.recipes.minilm_rt import train_rt_adapter

    return train_rt_adapter("svfit", LR, MODEL_ID, out_dir, recipe=__name__, quick=quick)
