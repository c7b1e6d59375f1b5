"""Frozen-feature readouts: weighted kNN and the linear probe, with their baselines.

* :func:`knn_accuracy`: cosine similarity to the training features, the top ``k``
  neighbours vote with weight ``exp(sim / T)`` (Wu et al. 2018's protocol, k = 200, T = 0.1).
* :func:`linear_probe`: multinomial logistic regression on standardised features (train-split
  mean/std; scikit-learn, L-BFGS to convergence, C = 1), scored on the test split.
* :func:`embed`: an encoder's embeddings of uint8 images in eval mode, in batches.
* :func:`pixel_features`: the raw-pixel baseline's features.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from subspace_ssl.data import to_input

__all__ = ["embed", "knn_accuracy", "linear_probe", "pixel_features"]


def _check_features(name: str, x: torch.Tensor, labels: torch.Tensor) -> None:
    if x.ndim != 2:
        raise ValueError(f"{name}: expected features [N, D], got {tuple(x.shape)}")
    if labels.shape != (x.shape[0],):
        raise ValueError(f"{name} labels: expected shape ({x.shape[0]},), got "
                         f"{tuple(labels.shape)}")


@torch.no_grad()
def embed(encoder: nn.Module | Callable[[torch.Tensor], torch.Tensor], images: torch.Tensor,
          dataset: str = "fmnist", *, batch_size: int = 1000,
          device: torch.device | str = "cpu") -> torch.Tensor:
    """Embeddings [N, D] (float32, CPU) of uint8 images [N, 28, 28] through ``encoder``."""
    if isinstance(encoder, nn.Module):
        was_training = encoder.training
        encoder.eval()
    out = []
    try:
        for start in range(0, len(images), batch_size):
            x = to_input(images[start:start + batch_size], dataset).to(device)
            out.append(encoder(x).float().cpu())
    finally:
        if isinstance(encoder, nn.Module):
            encoder.train(was_training)
    return torch.cat(out)


def pixel_features(images: torch.Tensor, dataset: str = "fmnist") -> torch.Tensor:
    """Raw-pixel baseline features [N, H·W] (normalised pixels)."""
    return to_input(images, dataset).flatten(1)


@torch.no_grad()
def knn_accuracy(train_x: torch.Tensor, train_y: torch.Tensor, test_x: torch.Tensor,
                 test_y: torch.Tensor, *, k: int = 200, temperature: float = 0.1,
                 n_classes: int | None = None, chunk: int = 1000) -> float:
    """Top-1 accuracy (%) of the temperature-weighted cosine kNN classifier.

    Args:
        train_x, test_x: features [N, D] and [M, D]; train_y, test_y: labels [N], [M].
        k: neighbours; temperature: T in ``exp(sim / T)``.
    """
    _check_features("train_x", train_x, train_y)
    _check_features("test_x", test_x, test_y)
    if not 1 <= k <= len(train_x):
        raise ValueError(f"k: expected 1 <= k <= {len(train_x)}, got {k}")
    if temperature <= 0:
        raise ValueError(f"temperature: expected > 0, got {temperature}")
    n_classes = int(train_y.max()) + 1 if n_classes is None else n_classes
    bank = F.normalize(train_x.float(), dim=1)
    queries = F.normalize(test_x.float(), dim=1)
    correct = 0
    for start in range(0, len(queries), chunk):
        sim = queries[start:start + chunk] @ bank.T
        top_sim, top_idx = sim.topk(k, dim=1)
        weights = (top_sim / temperature).exp()
        votes = torch.zeros(len(top_sim), n_classes)
        votes.scatter_add_(1, train_y[top_idx], weights)
        correct += int((votes.argmax(1) == test_y[start:start + chunk]).sum())
    return 100.0 * correct / len(test_y)


def linear_probe(train_x: torch.Tensor, train_y: torch.Tensor, test_x: torch.Tensor,
                 test_y: torch.Tensor, *, C: float = 1.0, max_iter: int = 1000) -> float:
    """Test top-1 accuracy (%) of a multinomial logistic regression on frozen features.

    Features are standardised with the training split's mean and std; scikit-learn's
    ``LogisticRegression`` (L-BFGS, inverse L2 strength ``C``) is fit to convergence, so the
    result depends only on the features (no learning-rate or epoch choice).
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    _check_features("train_x", train_x, train_y)
    _check_features("test_x", test_x, test_y)
    if C <= 0:
        raise ValueError(f"C: expected > 0, got {C}")
    train_np, test_np = train_x.double().numpy(), test_x.double().numpy()
    scaler = StandardScaler().fit(train_np)
    probe = LogisticRegression(C=C, max_iter=max_iter)
    probe.fit(scaler.transform(train_np), train_y.numpy())
    predictions = torch.as_tensor(probe.predict(scaler.transform(test_np)))
    return 100.0 * float((predictions == test_y).double().mean())
