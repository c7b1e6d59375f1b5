"""Evaluation protocols of the package's image encoders.

**Protocol ``fmnist_probe``**: the encoder's global-average-pooled embedding of the 60,000
Fashion-MNIST training and 10,000 test images (pixel/255, normalised mean 0.2860 std
0.3530, [N, 1, 28, 28], no augmentation), then

* ``linear_top1``: test accuracy (%) of a multinomial logistic regression fit on the
  standardised training embeddings (full-batch L-BFGS, L2 1e-4; :func:`~subspace_ssl.
  probes.linear_probe`);
* ``knn_top1``: test accuracy (%) of the cosine kNN classifier, k = 200, weights
  ``exp(sim / 0.1)`` (:func:`~subspace_ssl.probes.knn_accuracy`);
* ``rankme``: RankMe (effective rank) of the 10,000 test embeddings
  (:func:`~subspace_ssl.rankme.rankme`), which uses no labels.
"""

from __future__ import annotations

import torch
from torch import nn

from subspace_core.eval import Protocol, register_protocol
from subspace_ssl.data import load_images
from subspace_ssl.probes import embed, knn_accuracy, linear_probe
from subspace_ssl.rankme import rankme

__all__ = ["FMNIST_PROBE", "encoder_readouts", "fmnist_probe"]


def encoder_readouts(train_x: torch.Tensor, train_y: torch.Tensor, test_x: torch.Tensor,
                     test_y: torch.Tensor) -> dict[str, float]:
    """``linear_top1``, ``knn_top1`` and ``rankme`` of frozen features (see module doc)."""
    return {"linear_top1": linear_probe(train_x, train_y, test_x, test_y),
            "knn_top1": knn_accuracy(train_x, train_y, test_x, test_y),
            "rankme": rankme(test_x)}


def fmnist_probe(model: nn.Module, device: torch.device | str = "cpu") -> dict[str, float]:
    """The ``fmnist_probe`` metrics of an encoder mapping [N, 1, 28, 28] → [N, D]."""
    train_images, train_y = load_images("fmnist", "train")
    test_images, test_y = load_images("fmnist", "test")
    train_x = embed(model, train_images, "fmnist", device=device)
    test_x = embed(model, test_images, "fmnist", device=device)
    return encoder_readouts(train_x, train_y, test_x, test_y)


def _protocol_doc(name: str) -> str:
    return (__doc__ or "").split(f"**Protocol ``{name}``**")[1].split("\n\n")[0].strip()


FMNIST_PROBE = register_protocol(
    Protocol(
        name="fmnist_probe",
        dataset="fashion_mnist",
        split="test",
        preprocessing="pixel/255, normalised mean 0.2860 std 0.3530, [N,1,28,28]; readout: "
        "the encoder's global-average-pooled embedding (train 60,000 / test 10,000)",
        metrics=("linear_top1", "knn_top1", "rankme"),
        higher_is_better=(True, True, True),
        run=fmnist_probe,
        description=_protocol_doc("fmnist_probe"),
    )
)
