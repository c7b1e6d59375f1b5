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

**Protocol ``mnist_transfer``**: linear transfer of a Fashion-MNIST classifier's frozen
encoder to MNIST (the 9,000 / 1,000 real digits of ``mnist_10k``, normalised mean 0.1307
std 0.3081): the GAP features (``model.features``) standardised, a multinomial logistic
regression fit on the 9,000 and scored on the 1,000 (``mnist_linear_top1``, %). With 1,000
test digits one standard error is about 0.8 points.

**Protocol ``fmnist_retrieval``**: the model's embedding of the 10,000 Fashion-MNIST test
images, each one a query against the other 9,999 by cosine similarity: ``recall@K`` (%) for
K = 1, 2, 4, 8 (a hit when one of the K nearest shares the query's class) and ``nmi`` (%) of
k-means (10 clusters) on the embeddings.

**Protocol ``fmnist_clustering``**: an MLC model's clustering of the 10,000 Fashion-MNIST
test images from frozen ImageNet MobileNetV2 features (core ``pretrained_features``, 96 px):
``acc`` (best one-to-one cluster-to-class map), ``nmi``, ``ari`` of the spectral clustering of
the learnt membership, and in the same run the baselines on the same images — k-means on the
same input features raw (``kmeans_*``) and standardised + L2-normalised (``kmeans_std_l2_*``),
k-means on MLC's cluster-head embedding (``mlc_kmeans_*``), k-means on raw pixels
(``pixels_kmeans_*``), the untrained model (``random_mlc_*``) and k-means on a random
MobileNetV2's features (``random_backbone_kmeans_*``) (:func:`subspace_ssl.recipes.mlc.evaluate`).
Fractions in [0, 1].

Image-classifier heads (GCR, softmax) are also scored by the core protocol ``fmnist_test``.
"""

from __future__ import annotations

import torch
from torch import nn

from subspace_core.eval import Protocol, protocol_doc, register_protocol
from subspace_ssl.data import load_images
from subspace_ssl.probes import embed, knn_accuracy, linear_probe
from subspace_ssl.rankme import rankme

__all__ = ["FMNIST_CLUSTERING", "FMNIST_PROBE", "FMNIST_RETRIEVAL", "MNIST_TRANSFER",
           "encoder_readouts", "fmnist_clustering", "fmnist_probe", "fmnist_retrieval",
           "mnist_transfer"]


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


def mnist_transfer(model: nn.Module, device: torch.device | str = "cpu") -> dict[str, float]:
    """The ``mnist_transfer`` metric of a classifier with ``model.features`` [N,1,28,28] → [N, D]."""
    from subspace_ssl.recipes.gcr import linear_transfer

    return {"mnist_linear_top1": linear_transfer(model, device)}


def fmnist_retrieval(model: nn.Module, device: torch.device | str = "cpu") -> dict[str, float]:
    """The ``fmnist_retrieval`` metrics of an embedding model [N,1,28,28] → [N, D]."""
    from subspace_ssl.recipes.dsl import evaluate

    return evaluate(model, device)


def fmnist_clustering(model: nn.Module, device: torch.device | str = "cpu") -> dict[str, float]:
    """The ``fmnist_clustering`` metrics of an :class:`~subspace_ssl.mcr2.MLC` model."""
    from subspace_ssl.recipes.mlc import evaluate

    return evaluate(model, device)



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
        description=protocol_doc(__doc__, "fmnist_probe"),
    )
)

MNIST_TRANSFER = register_protocol(
    Protocol(
        name="mnist_transfer",
        dataset="mnist_10k",
        split="test",
        preprocessing="pixel/255, normalised mean 0.1307 std 0.3081, [N,1,28,28]; readout: "
        "the frozen encoder's GAP features, standardised (train 9,000 / test 1,000)",
        metrics=("mnist_linear_top1",),
        higher_is_better=(True,),
        run=mnist_transfer,
        description=protocol_doc(__doc__, "mnist_transfer"),
    )
)

FMNIST_RETRIEVAL = register_protocol(
    Protocol(
        name="fmnist_retrieval",
        dataset="fashion_mnist",
        split="test",
        preprocessing="pixel/255, normalised mean 0.2860 std 0.3530, [N,1,28,28]; the model's "
        "embedding of the 10,000 test images, cosine similarity",
        metrics=("recall@1", "recall@2", "recall@4", "recall@8", "nmi"),
        higher_is_better=(True, True, True, True, True),
        run=fmnist_retrieval,
        description=protocol_doc(__doc__, "fmnist_retrieval"),
    )
)

_CLUSTER_METRICS = tuple(f"{prefix}{m}" for prefix in ("", "mlc_kmeans_", "kmeans_",
                                                       "kmeans_std_l2_", "pixels_kmeans_",
                                                       "random_mlc_", "random_backbone_kmeans_")
                         for m in ("acc", "nmi", "ari"))

FMNIST_CLUSTERING = register_protocol(
    Protocol(
        name="fmnist_clustering",
        dataset="fashion_mnist",
        split="test",
        preprocessing="uint8 images -> ImageNet MobileNetV2 pooled features (96 px, core "
        "pretrained_features) [N, 1280]; the 10,000 test images, k = 10",
        metrics=_CLUSTER_METRICS,
        higher_is_better=(True,) * len(_CLUSTER_METRICS),
        run=fmnist_clustering,
        description=protocol_doc(__doc__, "fmnist_clustering"),
    )
)
