"""Shipped adapters (the base model loads from its package or its weights file, the checkpoint
holds only the adapter) and the ``rt_sentiment`` protocol that scores the MiniLM ones.

``peft/matryoshka_kv_smollm2.newsgroups20``: MatryoshkaKV key / value bases for all 30 layers of
SmolLM2-135M (the base loads from its GGUF weights), scored by ``kv_cache_ppl``.

``peft/svfit_minilm.rotten_tomatoes``: SVFit on the 36 encoder matrices (every singular value,
13,824 scalars) + the 2-way head (770), trained by
:func:`subspace_peft.recipes.svfit_minilm_rt.train` on the ``peft/minilm_adapters`` harness
setting (1 epoch of Rotten Tomatoes, lr 4e-2, the sweep's best validation accuracy).

``peft/corda_minilm.rotten_tomatoes``: CorDA in the instruction-previewed mode (rank 8, as
LoRA r=8) on the same 36 matrices + head, trained by
:func:`subspace_peft.recipes.corda_minilm_rt.train` (same setting, lr 3e-4).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache

import torch
from torch import nn

from subspace_core.eval import Protocol, register_protocol
from subspace_core.zoo import PretrainedCfg, register_model
from subspace_peft.adapters.base import find_targets
from subspace_peft.adapters.matryoshka_kv import protocol as _kv_protocol  # noqa: F401  kv_cache_ppl

__all__ = ["RT_SENTIMENT", "SHIPPED", "SHIPPED_KV", "corda_minilm_rt", "matryoshka_kv_smollm2",
           "svfit_minilm_rt"]

_SVFIT_PAPER = ("Sun et al. 2024, SVFit: Parameter-Efficient Fine-Tuning of Large Pre-Trained "
                "Models Using Singular Values, arXiv:2409.05926")


_CORDA_PAPER = ("Yang et al. 2024, CorDA: Context-Oriented Decomposition Adaptation of Large "
                "Language Models for Task-Aware Parameter-Efficient Fine-tuning, "
                "arXiv:2406.05223")


def corda_minilm_rt(**overrides) -> nn.Module:
    """MiniLM classifier (2 classes) with CorDA (IPM, rank 8) on its 36 encoder matrices, as
    shipped. Built from an identity covariance (no calibration data at load time); loading
    the checkpoint replaces the initial factors by the calibrated ones and re-derives the
    frozen residual from the pretrained weights."""
    from subspace_peft.adapters.corda import CorDAConfig, CorDAModel
    from subspace_peft.adapters.zoo import ShippedAdapter
    from subspace_peft.finetune import ENCODER_LINEARS, build_classifier
    from subspace_peft.finetune.methods import CorDASettings

    if overrides:
        raise ValueError(f"overrides: the shipped adapter takes none, got {sorted(overrides)}")
    model = build_classifier(2, seed=0)
    config = CorDAConfig(target_modules=(ENCODER_LINEARS,), modules_to_save=("head",),
                         rank=CorDASettings().rank, mode="ipm", alpha=CorDASettings().alpha)
    eye = {n: torch.eye(m.in_features, dtype=torch.float64)
           for n, m in model.named_modules() if n in set(find_targets(model, ENCODER_LINEARS))}
    return ShippedAdapter(CorDAModel(model, config, eye))


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

@dataclass(frozen=True)
class _RTCard:
    """What differs between the shipped MiniLM Rotten Tomatoes adapters."""

    sha256: str
    num_bytes: int
    num_params: int
    metrics: dict[str, float]
    builder: Callable[..., nn.Module]
    paper: str
    recipe: str
    notes: str
    description: str


#: model id -> card of the shipped MiniLM adapters (claimed rt_sentiment metrics)
SHIPPED: dict[str, _RTCard] = {
    "peft/svfit_minilm.rotten_tomatoes": _RTCard(
        "52aa4608e0c8a8f235335a67a8707f9854bf802ebfa7f84240cb612c4c62aaaf", 128_872, 28_418,
        {"validation_acc": 80.86, "test_acc": 79.69}, svfit_minilm_rt, _SVFIT_PAPER,
        "subspace_peft.recipes.svfit_minilm_rt:train",
        "Stores only the 13,824 singular-value deltas, their reference singular values and "
        "the head; the base MiniLM loads from its PyPI wheel files.",
        "all-MiniLM-L6-v2 + SVFit (every singular value of the 36 encoder matrices trained) "
        "fine-tuned for Rotten Tomatoes sentiment."),
    "peft/corda_minilm.rotten_tomatoes": _RTCard(
        "4e8cdc28f08ac7981156975c18091c1b8d5de9c9681c50d8d8a7bbb669e05e50", 2_681_672, 664_322,
        {"validation_acc": 80.86, "test_acc": 80.78}, corda_minilm_rt,
        _CORDA_PAPER, "subspace_peft.recipes.corda_minilm_rt:train",
        "Stores the trained rank-8 factors of the 36 encoder matrices, their initial "
        "(decomposition) factors and the head; the base MiniLM loads from its PyPI wheel "
        "files and the frozen residual is re-derived from it.",
        "all-MiniLM-L6-v2 + CorDA (instruction-previewed mode, rank 8, calibrated on 8 "
        "training batches) fine-tuned for Rotten Tomatoes sentiment."),
}

for _model_id, _card in SHIPPED.items():
    register_model(
        _model_id,
        pretrained_cfg=PretrainedCfg(
            file=f"{_model_id.split('/')[1]}.safetensors",
            sha256=_card.sha256,
            num_bytes=_card.num_bytes,
            num_params=_card.num_params,
            license="Apache-2.0 (base all-MiniLM-L6-v2: Apache-2.0)",
            paper=_card.paper,
            recipe=_card.recipe,
            metrics={"rt_sentiment": _card.metrics},
            data={"dataset": "rotten_tomatoes", "split": "train (10,201 snippets)",
                  "input": "MiniLM WordPiece tokens, <= 64 per snippet",
                  "output": "[N, 2] logits (0 rotten, 1 fresh)"},
            train_budget="1 epoch, 319 steps of 32 snippets, one thread: ~4-15 min on a "
            "2-core CPU depending on load",
            package="subspace_peft.weights",
            notes=_card.notes,
        ),
        protocols=("rt_sentiment",),
        description=_card.description,
    )(_card.builder)


_MATRYOSHKA_KV_PAPER = ("Lin et al. 2024, MatryoshkaKV: Adaptive KV Compression via Trainable "
                        "Orthogonal Projection, arXiv:2410.14731")


def matryoshka_kv_smollm2(**overrides) -> nn.Module:
    """SmolLM2-135M with MatryoshkaKV bases on all 30 attention layers, as shipped."""
    from subspace_peft.adapters.matryoshka_kv import MatryoshkaKVConfig, MatryoshkaKVModel
    from subspace_peft.adapters.zoo import ShippedAdapter
    from subspace_peft.smollm2 import load_smollm2

    if overrides:
        raise ValueError(f"overrides: the shipped adapter takes none, got {sorted(overrides)}")
    return ShippedAdapter(MatryoshkaKVModel(load_smollm2(), MatryoshkaKVConfig()))


#: model id -> sha256, bytes, parameters, claimed kv_cache_ppl metrics
SHIPPED_KV: dict[str, tuple[str, int, int, dict[str, float]]] = {
    "peft/matryoshka_kv_smollm2.newsgroups20": (
        "3393c5d6082b9618bc9acfcc35aa5c76f75651795841a8fc8f0fae095a388a34", 2_955_712, 737_280,
        {"ppl_cache_50": 164.81, "ppl_cache_25": 249.98, "ppl_cache_75": 145.96,
         "ppl_full": 133.63}),
}

for _model_id, (_sha, _bytes, _params, _metrics) in SHIPPED_KV.items():
    register_model(
        _model_id,
        pretrained_cfg=PretrainedCfg(
            file=f"{_model_id.split('/')[1]}.safetensors",
            sha256=_sha,
            num_bytes=_bytes,
            num_params=_params,
            license="Apache-2.0 (base SmolLM2-135M-Instruct: Apache-2.0)",
            paper=_MATRYOSHKA_KV_PAPER,
            recipe="subspace_peft.recipes.matryoshka_kv_smollm2:train",
            metrics={"kv_cache_ppl": _metrics},
            data={"dataset": "newsgroups20",
                  "split": "train (300 documents: PCA calibration; the next 3,000: "
                  "distillation)",
                  "input": "SmolLM2 token ids [B, T]",
                  "output": "[B, T, 49152] logits; keys / values cached at the ranks set by "
                  "set_ranks (default: all 64)"},
            train_budget="PCA on 16 x 256 tokens, then 240 distillation steps of 2 x 256 "
            "tokens, one thread: 54 min measured on a 2-core CPU with 3-4 other jobs running "
            "(51 min of training steps, ~13 s a step)",
            package="subspace_peft.weights",
            notes="Stores each layer's orthogonal key and value bases [3, 64, 64] (fp32); "
            "the base model is the de-quantised Q4_1 GGUF of SmolLM2-135M-Instruct (not the "
            "bf16 release). One set of bases serves every cache size: set_ranks(r) keeps r of "
            "64 dimensions per head.",
        ),
        protocols=("kv_cache_ppl",),
        description="SmolLM2-135M-Instruct + MatryoshkaKV: trained nested orthogonal key / "
        "value projections compressing the KV cache to any r/64 of its size.",
    )(matryoshka_kv_smollm2)
