"""Recipes for ``peft/llama_micro.text_{adamw,galore,fira}``: byte-level pre-training on
20 Newsgroups + Reuters R8 with the same token budget for every optimizer.

Budget: 1,500 steps × 8 sequences × 256 tokens = 3.1M tokens, cosine schedule with 100
warm-up steps; about 10 minutes on 2 CPU cores per optimizer. Each optimizer uses its best
peak learning rate of a sweep on this budget (:data:`TUNED_LR`; validation perplexity):
AdamW 5e-4 → 5.008, 1e-3 → 4.869, 3e-3 → 4.972, 6e-3 → 5.757; GaLore 1e-3 → 6.105, 3e-3 → 5.157,
1e-2 → 4.924; Fira 3e-3 → 4.899, 6e-3 → 4.747, 1e-2 → 4.702. GaLore and Fira project the
2-D weights of every ``attn``/``mlp`` module at rank d/4 = 32 (refresh every 200 steps,
scale 0.25); embeddings and norms use AdamW in the same optimizer. ``quick`` runs 20 steps
(a smoke test of the path, not a reproduction). Checkpoints are stored in bfloat16.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch

from subspace_core.data.datasets.text import lm_corpus
from subspace_core.zoo import save_state_dict
from subspace_peft.models.decoder import MicroDecoder
from subspace_peft.models.train import train_decoder
from subspace_peft.models.zoo import LLAMA_MICRO
from subspace_peft.optim import GaLoreAdamW, galore_param_groups

__all__ = ["TUNED_LR", "RecipeConfig", "cosine_schedule", "make_optimizer", "train", "train_adamw",
           "train_fira", "train_galore"]


#: Best peak learning rate per optimizer from the sweep in the module docstring.
TUNED_LR = {"adamw": 1e-3, "galore": 1e-2, "fira": 1e-2}


@dataclass(frozen=True)
class RecipeConfig:
    optimizer: str  # "adamw" | "galore" | "fira"
    steps: int = 1500
    warmup: int = 100
    batch: int = 8
    context: int = 256
    lr: float = 3e-3
    weight_decay: float = 0.01
    rank: int = 32
    update_proj_gap: int = 200
    scale: float = 0.25
    seed: int = 0


def make_optimizer(model: torch.nn.Module, cfg: RecipeConfig) -> torch.optim.Optimizer:
    """The recipe's optimizer: AdamW, or GaLoreAdamW over the attn/mlp weights."""
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    groups = galore_param_groups(model, ("attn", "mlp"), rank=cfg.rank,
                                 update_proj_gap=cfg.update_proj_gap, scale=cfg.scale,
                                 fira=cfg.optimizer == "fira")
    return GaLoreAdamW(groups, lr=cfg.lr, weight_decay=cfg.weight_decay)


def cosine_schedule(optimizer: torch.optim.Optimizer, cfg: RecipeConfig):
    """Linear warm-up then cosine decay to 10 % of the peak learning rate."""
    def factor(step: int) -> float:
        if step < cfg.warmup:
            return (step + 1) / cfg.warmup
        progress = (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup)
        return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def train(optimizer: str, out_dir: str | Path, *, quick: bool = False, progress: bool = True,
          **overrides) -> Path:
    """Train with ``optimizer`` and the recipe's settings, changed by ``overrides`` (e.g. ``lr``
    for a learning-rate sweep of the baseline); returns the bf16 checkpoint's path."""
    cfg = RecipeConfig(optimizer, lr=TUNED_LR[optimizer])
    if quick:
        cfg = replace(cfg, steps=20, warmup=5)
    cfg = replace(cfg, **overrides)
    out_dir = Path(out_dir)
    torch.manual_seed(cfg.seed)
    model = MicroDecoder(LLAMA_MICRO)
    opt = make_optimizer(model, cfg)
    losses = train_decoder(model, lm_corpus("train"), opt, cfg.steps, cfg.batch, cfg.context,
                           cfg.seed, scheduler=cosine_schedule(opt, cfg), out_dir=out_dir,
                           save_every=100)
    path = out_dir / f"llama_micro.text_{optimizer}.safetensors"
    state = {k: v.to(torch.bfloat16) for k, v in model.state_dict().items()}
    save_state_dict(state, path, metadata={"model_id": f"peft/llama_micro.text_{optimizer}",
                                           "final_train_loss": losses[-1] if losses else None,
                                           **asdict(cfg)})
    return path


def train_adamw(out_dir: str | Path, *, quick: bool = False, progress: bool = True) -> Path:
    """AdamW baseline on the same token budget."""
    return train("adamw", out_dir, quick=quick, progress=progress)


def train_galore(out_dir: str | Path, *, quick: bool = False, progress: bool = True) -> Path:
    """GaLore (rank 32) on the same token budget."""
    return train("galore", out_dir, quick=quick, progress=progress)


def train_fira(out_dir: str | Path, *, quick: bool = False, progress: bool = True) -> Path:
    """Fira (GaLore + norm-scaled residual + growth limiter) on the same token budget."""
    return train("fira", out_dir, quick=quick, progress=progress)
