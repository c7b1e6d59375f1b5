"""Image-classification protocols (top-1 accuracy and NLL on a registered dataset split)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from subspace_core.eval.protocol import Protocol

__all__ = ["image_classification_protocol", "normalize_images"]


def normalize_images(
    x: torch.Tensor, mean: float, std: float, max_value: float = 255.0
) -> torch.Tensor:
    """Integer images ``[N, H, W]`` → float32 ``[N, 1, H, W]``: ``(x / max_value - mean) / std``."""
    if x.dtype.is_floating_point or x.ndim != 3:
        raise ValueError(f"x: expected integer images [N, H, W], got {x.dtype} {tuple(x.shape)}")
    return ((x.float() / max_value - mean) / std).unsqueeze(1)


@torch.no_grad()
def _classify(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, device: torch.device, batch_size: int
) -> dict[str, float]:
    model.eval()
    correct = 0
    nll = 0.0
    for start in range(0, len(x), batch_size):
        xb = x[start : start + batch_size].to(device)
        yb = y[start : start + batch_size].to(device)
        logits = model(xb).float()
        nll += F.cross_entropy(logits, yb, reduction="sum").item()
        correct += (logits.argmax(dim=1) == yb).sum().item()
    return {"top1": 100.0 * correct / len(x), "nll": nll / len(x)}


def image_classification_protocol(
    name: str,
    dataset: str,
    split: str,
    *,
    mean: float,
    std: float,
    max_value: float = 255.0,
    batch_size: int = 1000,
    description: str = "",
) -> Protocol:
    """A protocol scoring top-1 accuracy (%) and mean NLL of a classifier on ``dataset/split``.

    The model receives float32 ``[N, 1, H, W]`` images: pixel / ``max_value`` then
    ``(· - mean) / std``.
    """

    def run(model: nn.Module, device: torch.device) -> dict[str, float]:
        from subspace_core.data import load_dataset

        data = load_dataset(dataset, split)
        x = normalize_images(data.x, mean, std, max_value)
        return _classify(model, x, data.y, device, batch_size)

    return Protocol(
        name=name,
        dataset=dataset,
        split=split,
        preprocessing=f"pixel/{max_value:g}, normalise mean={mean} std={std}, shape [N,1,H,W]",
        metrics=("top1", "nll"),
        higher_is_better=(True, False),
        run=run,
        description=description,
    )
