"""``core/mlp_tiny.fmnist``: the canary model that exercises data → train → zoo → eval."""

from __future__ import annotations

from subspace_core.models.mlp import MLPClassifier
from subspace_core.protocols import FMNIST_MEAN, FMNIST_STD
from subspace_core.zoo import PretrainedCfg, register_model

__all__ = ["build_mlp_tiny"]


def build_mlp_tiny(**kwargs) -> MLPClassifier:
    """784-256-10 MLP (ReLU, dropout 0.1) for 28×28 greyscale images."""
    return MLPClassifier(**{"in_features": 784, "hidden": (256,), "num_classes": 10, **kwargs})


register_model(
    "core/mlp_tiny.fmnist",
    pretrained_cfg=PretrainedCfg(
        file="mlp_tiny.fmnist.safetensors",
        sha256="3ea218cc6a28c145a9c13efd5c2edeac2d6a9b418bb8d70b8e8a5a8ef34f445e",
        num_bytes=814_672,
        num_params=203_530,
        license="Apache-2.0",
        paper="Canary model (no paper); data: Xiao et al. 2017, Fashion-MNIST, arXiv:1708.07747",
        recipe="subspace_core.recipes.mlp_tiny_fmnist:train",
        metrics={"fmnist_test": {"top1": 88.75, "nll": 0.3402}},
        data={"dataset": "fashion_mnist", "input_shape": [1, 28, 28],
              "mean": FMNIST_MEAN, "std": FMNIST_STD},
        train_budget="12 epochs AdamW, ~1 min on 2 CPU cores",
        package="subspace_core.weights",
    ),
    protocols=("fmnist_test",),
)(build_mlp_tiny)
