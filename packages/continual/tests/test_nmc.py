"""NMCBaseline: nearest class mean on frozen features, with injected cheap feature functions
(the real backbone is exercised by the continual/sfmnist_class benchmark)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from subspace_continual.baselines import NMCBaseline
from subspace_continual.data import permuted_mnist, split_fashion_mnist


def pixels(images: torch.Tensor) -> torch.Tensor:
    """Identity features: the flattened pixels."""
    return images.flatten(1).float()


def nmc_accuracy(train: list[tuple[torch.Tensor, torch.Tensor]], x: torch.Tensor,
                 y: torch.Tensor) -> float:
    """Independent NMC: pooled class means of L2-normalised features, cosine assignment."""
    z = torch.cat([F.normalize(pixels(a).double(), dim=1) for a, _ in train])
    labels = torch.cat([b for _, b in train])
    classes = sorted(set(labels.tolist()))
    means = F.normalize(torch.stack([z[labels == c].mean(0) for c in classes]), dim=1)
    sims = F.normalize(pixels(x).double(), dim=1) @ means.T
    pred = torch.tensor(classes)[sims.argmax(1)]
    return 100.0 * float((pred == y).sum()) / len(y)


@pytest.fixture(scope="module")
def class_il():
    return split_fashion_mnist("class", train_per_class=40, test_per_class=30)


def test_class_incremental_matrix_is_nmc_over_the_classes_seen(class_il):
    result = NMCBaseline(pixels).run(class_il)
    s = class_il
    assert result.method == "nmc" and result.config is None
    assert result.info == {"features": "pixels features", "feature_dim": 784,
                           "normalize": True, "classes": 10}
    for i in range(5):
        seen = [(s.images(t.x_train), t.y_train) for t in s.tasks[: i + 1]]
        for j in range(5):
            if j > i:  # unseen classes are never predicted
                assert result.R[i, j] == 0.0
                continue
            t = s.tasks[j]
            assert result.R[i, j].item() == pytest.approx(
                nmc_accuracy(seen, s.images(t.x_test), t.y_test), abs=1e-9), (i, j)
    assert torch.isnan(result.b).all() and result.metrics.fwt is None
    assert result.metrics.acc > 60  # pixel NMC on 10 FMNIST classes is far above chance


def test_task_incremental_nothing_is_forgotten():
    s = split_fashion_mnist("task", train_per_class=40, test_per_class=30)
    result = NMCBaseline(pixels).run(s)
    R = result.R
    assert torch.isnan(torch.triu(R, diagonal=1)[torch.triu(torch.ones(5, 5), 1).bool()]).all()
    for j in range(5):  # a task's means never change after it is learnt
        assert R[j:, j].tolist() == [R[j, j].item()] * (5 - j)
    assert result.metrics.bwt == 0.0 and result.metrics.forgetting == 0.0
    assert result.metrics.acc > 85


def test_domain_incremental_means_pool_every_task():
    s = permuted_mnist(3, seed=0, train_per_class=20)
    result = NMCBaseline(pixels, normalize=False).run(s)
    assert result.info["classes"] == 10  # one mean per digit, over all permutations
    # normalize=False: plain Euclidean NMC on the pooled means of the three tasks
    z = torch.cat([pixels(s.images(t.x_train)).double() for t in s.tasks])
    y = torch.cat([t.y_train for t in s.tasks])
    means = torch.stack([z[y == c].mean(0) for c in range(10)])
    for j, t in enumerate(s.tasks):
        pred = torch.cdist(pixels(s.images(t.x_test)).double(), means).argmin(1)
        assert result.R[2, j].item() == pytest.approx(
            100.0 * float((pred == t.y_test).sum()) / len(pred), abs=1e-9)
    assert torch.isfinite(result.R).all()  # shared labels: unseen tasks are measurable


def test_default_features_call_the_core_backbone_lazily(monkeypatch, class_il):
    import subspace_core.backbones as backbones

    calls = []

    def fake(name, images, *, size, batch_size):
        calls.append((name, images.dtype, tuple(images.shape[1:]), size, batch_size))
        return pixels(images)[:, :16]

    monkeypatch.setattr(backbones, "pretrained_features", fake)
    nmc = NMCBaseline(size=64, batch_size=32)
    assert nmc.label == "mobilenet_v2 features"
    result = nmc.run(class_il)
    assert result.info["feature_dim"] == 16
    assert calls and all(c == ("mobilenet_v2", torch.uint8, (28, 28), 64, 32) for c in calls)
    assert len(calls) == 10  # every test set once, every training set once


def test_bad_feature_functions_raise(class_il):
    with pytest.raises(ValueError, match="one row per input"):
        NMCBaseline(lambda im: pixels(im)[:3]).run(class_il)
    with pytest.raises(FloatingPointError, match="non-finite"):
        NMCBaseline(lambda im: pixels(im) * float("nan")).run(class_il)
    with pytest.raises(TypeError, match="features"):
        NMCBaseline(features=3)
