"""The shared recipe of the shipped MiniLM adapters on Rotten Tomatoes: one harness run of a
method (the ``peft/minilm_adapters`` full setting, best-validation epoch kept) saved as an
adapter-only checkpoint."""

from __future__ import annotations

from pathlib import Path

from subspace_core.train import checkpoint_file

__all__ = ["train_rt_adapter"]


def train_rt_adapter(method: str, lr: float, model_id: str, out_dir: str | Path, *,
                     recipe: str, quick: bool = False) -> Path:
    """Fine-tune MiniLM with harness ``method`` at ``lr`` on Rotten Tomatoes and write the
    adapter checkpoint ``out_dir / <model_id's file>``; returns its path. ``recipe`` (the
    calling module) is recorded in the metadata."""
    from subspace_core.zoo import save_state_dict
    from subspace_peft.adapters.zoo import ShippedAdapter
    from subspace_peft.benchmarks.finetuning import FULL, QUICK, _splits
    from subspace_peft.finetune import FinetuneConfig, finetune
    from subspace_peft.hf import load_minilm, load_minilm_tokenizer

    settings = QUICK if quick else FULL
    data = _splits(settings, load_minilm_tokenizer())
    result = finetune(FinetuneConfig(method, lr, epochs=settings["epochs"],
                                     batch_size=settings["batch_size"]),
                      data["train"], data["validation"], data["test"], encoder=load_minilm())
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / checkpoint_file(model_id)
    meta = {"model_id": model_id, "recipe": recipe, "harness_method": method, "lr": lr,
            "quick": quick,
            "steps": result.steps, "val_accuracy": result.val_accuracy,
            "test_accuracy": result.test_accuracy, **result.model.adapter_metadata()}
    save_state_dict(ShippedAdapter(result.model).state_dict(), path, metadata=meta)
    return path
