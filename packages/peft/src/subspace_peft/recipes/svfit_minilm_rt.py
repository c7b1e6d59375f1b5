"""Recipe of ``peft/svfit_minilm.rotten_tomatoes``: SVFit on the fine-tuning harness."""

from __future__ import annotations

from pathlib import Path

from subspace_core.train import checkpoint_file

__all__ = ["LR", "MODEL_ID", "train"]

MODEL_ID = "peft/svfit_minilm.rotten_tomatoes"
#: best validation accuracy of the sweep {2e-2, 4e-2, 8e-2} (see peft/minilm_adapters)
LR = 4e-2


def train(out_dir: str | Path, *, quick: bool = False, progress: bool = True) -> Path:
    """Fine-tune MiniLM + SVFit on Rotten Tomatoes (harness settings of ``peft/minilm_adapters``,
    best-validation epoch kept) and write the adapter checkpoint; returns its path."""
    from subspace_core.zoo import save_state_dict
    from subspace_peft.adapters.zoo import ShippedAdapter
    from subspace_peft.benchmarks.finetuning import FULL, QUICK, _splits
    from subspace_peft.finetune import FinetuneConfig, finetune
    from subspace_peft.hf import load_minilm, load_minilm_tokenizer

    settings = QUICK if quick else FULL
    data = _splits(settings, load_minilm_tokenizer())
    result = finetune(FinetuneConfig("svfit", LR, epochs=settings["epochs"],
                                     batch_size=settings["batch_size"]),
                      data["train"], data["validation"], data["test"], encoder=load_minilm())
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / checkpoint_file(MODEL_ID)
    meta = {"model_id": MODEL_ID, "recipe": __name__, "lr": LR, "quick": quick,
            "steps": result.steps, "val_accuracy": result.val_accuracy,
            "test_accuracy": result.test_accuracy, **result.model.adapter_metadata()}
    save_state_dict(ShippedAdapter(result.model).state_dict(), path, metadata=meta)
    return path
