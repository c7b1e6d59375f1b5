"""Shipped micro-decoder checkpoints: one per optimizer, same data and token budget.

Each is trained by :mod:`subspace_peft.recipes.llama_micro_text` (``subzoo train ID``) and
scored by the ``text_val_ppl`` protocol (``subzoo eval ID``); weights are stored in bf16.
"""

from __future__ import annotations

from torch import nn

from subspace_core.zoo import PretrainedCfg, register_model
from subspace_peft.models.decoder import MicroDecoder
from subspace_peft.models.zoo import LLAMA_MICRO

__all__ = ["SHIPPED"]

_PAPERS = {
    "adamw": "Loshchilov & Hutter 2019, Decoupled Weight Decay Regularization, arXiv:1711.05101",
    "galore": "Zhao et al. 2024, GaLore: Memory-Efficient LLM Training by Gradient Low-Rank "
    "Projection, arXiv:2403.03507",
    "fira": "Chen et al. 2024, Fira: Can We Achieve Full-rank Training of LLMs Under Low-rank "
    "Constraint?, arXiv:2410.01623",
}

#: optimizer -> (sha256, bytes, num_params, claimed text_val_ppl metrics)
SHIPPED: dict[str, tuple[str, int, int, dict[str, float]]] = {
    "adamw": ("32bcc48f36b651d163255f84daee9836021276b2efdc8d2447674ef8fd38fc8a", 2_446_376,
              1_220_352, {"ppl": 4.8694, "bits_per_token": 2.2838, "loss": 1.5830}),
    "galore": ("623d7a49e9b35b34629d74bedcdf1be5d785208fc9f973edccf7d7ae776be7cc", 2_446_376,
               1_220_352, {"ppl": 4.9240, "bits_per_token": 2.2998, "loss": 1.5941}),
    "fira": ("1aa670fa4158d06c05291c3adec7a3c8d637ca5a955b79449c2b4cd91eabf5a0", 2_446_376,
             1_220_352, {"ppl": 4.7025, "bits_per_token": 2.2334, "loss": 1.5481}),
}


def _builder(**overrides) -> nn.Module:
    return MicroDecoder(LLAMA_MICRO, **overrides)


for _optimizer, (_sha, _bytes, _params, _metrics) in SHIPPED.items():
    register_model(
        f"peft/llama_micro.text_{_optimizer}",
        pretrained_cfg=PretrainedCfg(
            file=f"llama_micro.text_{_optimizer}.safetensors",
            sha256=_sha,
            num_bytes=_bytes,
            num_params=_params,
            license="Apache-2.0",
            paper=_PAPERS[_optimizer],
            recipe=f"subspace_peft.recipes.llama_micro_text:train_{_optimizer}",
            metrics={"text_val_ppl": _metrics},
            data={"dataset": "newsgroups20+reuters", "tokens": "UTF-8 bytes + EOS (vocab 257)",
                  "context": 256},
            train_budget="1,500 steps x 8 x 256 tokens (3.1M tokens), about 10 min alone on "
            "2 CPU cores (22 min with the three recipes sharing them)",
            package="subspace_peft.weights",
            notes="bf16 weights loaded into the fp32 model.",
        ),
        protocols=("text_val_ppl",),
        description=f"Micro decoder (1.22M params) pre-trained with {_optimizer} (tuned lr) on "
        "20NG+R8 bytes.",
    )(_builder)
