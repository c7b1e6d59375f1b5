"""Grassmann class heads: the logit formula, orthonormal frames under training, a toy problem."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from subspace_core.train import load_training_state, save_training_state
from subspace_ssl.gcr import (
    GCRClassifier,
    GrassmannClassHead,
    LinearClassifier,
    build_classifier,
    build_optimizers,
    grassmann_parameters,
)


def _subspace_data(n_per_class: int, dim: int, n_classes: int, k: int, sample_seed: int):
    """Each class spans its own random k-dim subspace; coefficients are symmetric Gaussians,
    so every class has mean 0 and no single direction separates the classes."""
    bases = torch.linalg.qr(
        torch.randn(n_classes, dim, k, generator=torch.Generator().manual_seed(0))
    ).Q
    generator = torch.Generator().manual_seed(sample_seed)
    coeffs = torch.randn(n_classes, n_per_class, k, generator=generator)
    x = (coeffs @ bases.mT).reshape(-1, dim)
    y = torch.arange(n_classes).repeat_interleave(n_per_class)
    return x, y


def test_logits_are_the_scaled_projection_norms():
    head = GrassmannClassHead(6, 3, 2, scale=7.0, seed=0).double()
    x = torch.randn(5, 6, dtype=torch.float64)
    unit = x / x.norm(dim=1, keepdim=True)
    for c in range(3):
        projector = head.frames[c] @ head.frames[c].T  # S Sᵀ, the orthogonal projector
        expected = 7.0 * torch.sqrt(torch.einsum("nd,de,ne->n", unit, projector, unit))
        torch.testing.assert_close(head(x)[:, c], expected.detach())
    raw = GrassmannClassHead(6, 3, 2, scale=2.0, normalize=False, seed=0).double()
    expected_raw = 2.0 * (x @ raw.frames[1]).norm(dim=1)
    torch.testing.assert_close(raw(x)[:, 1], expected_raw.detach())


def test_logit_extremes_and_basis_invariance():
    head = GrassmannClassHead(5, 2, 2, scale=3.0, seed=1).double()
    with torch.no_grad():  # float32 frames are orthonormal to ~1e-7 only; polish in float64
        head.frames.copy_(torch.linalg.qr(head.frames).Q)
    inside = head.frames[0].detach() @ torch.tensor([0.6, -0.8], dtype=torch.float64)
    torch.testing.assert_close(head(inside[None])[0, 0], torch.tensor(3.0, dtype=torch.float64))
    # a feature orthogonal to class 1's subspace has logit 0 for class 1
    basis = head.frames[1].detach()
    orth = torch.randn(5, dtype=torch.float64)
    orth = orth - basis @ (basis.T @ orth)
    assert head(orth[None])[0, 1].abs() < 1e-12
    # the logit depends on the subspace only, not on the basis chosen for it
    x = torch.randn(4, 5, dtype=torch.float64)
    before = head(x)
    rotation = torch.linalg.qr(torch.randn(2, 2, dtype=torch.float64)).Q
    with torch.no_grad():
        head.frames.copy_(head.frames @ rotation)
    torch.testing.assert_close(head(x), before)


@pytest.mark.parametrize(
    ("optimizer", "step_map"), [("sgd", "retraction"), ("adamw", "retraction"), ("sgd", "exp")]
)
def test_frames_stay_orthonormal_after_many_steps(optimizer, step_map):
    torch.manual_seed(0)
    head = GrassmannClassHead(32, 10, 8, scale=25.0, seed=0)
    assert head.orthonormality_error() < 1e-5
    # large steps make any drift off the manifold show quickly
    lr = 0.5 if optimizer == "sgd" else 0.05
    pair = build_optimizers(head, lr=lr, optimizer=optimizer, step_map=step_map)
    assert pair.euclidean is None and pair.grassmann is not None
    start = head.frames.detach().clone()
    for _ in range(300):
        x, y = torch.randn(64, 32), torch.randint(0, 10, (64,))
        loss = F.cross_entropy(head(x), y)
        pair.zero_grad()
        loss.backward()
        pair.step()
    assert head.orthonormality_error() < 1e-5
    assert (head.frames.detach() - start).abs().max() > 0.1  # the frames did move


def test_gcr_learns_subspace_classes_that_softmax_cannot():
    x, y = _subspace_data(100, 12, 4, 2, sample_seed=1)
    x_test, y_test = _subspace_data(100, 12, 4, 2, sample_seed=2)  # same subspaces, new samples
    torch.manual_seed(0)
    gcr = GrassmannClassHead(12, 4, 2, scale=10.0, seed=3)
    softmax = nn.Linear(12, 4)
    for model in (gcr, softmax):
        pair = build_optimizers(model, lr=0.05, optimizer="adamw", weight_decay=0.0)
        for _ in range(400):
            loss = F.cross_entropy(model(x), y)
            pair.zero_grad()
            loss.backward()
            pair.step()
    accuracy = {
        name: (m(x_test).argmax(1) == y_test).float().mean().item()
        for name, m in (("gcr", gcr), ("softmax", softmax))
    }
    # each class has zero mean and a symmetric distribution: a linear score w·x + b is as
    # often negative as positive on its own class, while ‖Sᵀx̂‖ recovers the subspace
    assert accuracy["gcr"] > 0.95, accuracy
    assert accuracy["softmax"] < 0.7, accuracy
    assert gcr.orthonormality_error() < 1e-5


def test_build_optimizers_splits_parameters():
    model = build_classifier("gcr", seed=0)
    pair = build_optimizers(model, lr=0.1, weight_decay=1e-3, frame_lr=0.02)
    frames = grassmann_parameters(model)
    assert frames == [model.head.frames]
    euclid = {id(p) for g in pair.euclidean.param_groups for p in g["params"]}
    grass = {id(p) for g in pair.grassmann.param_groups for p in g["params"]}
    assert grass == {id(model.head.frames)} and not euclid & grass
    assert euclid | grass == {id(p) for p in model.parameters()}
    assert pair.grassmann.param_groups[0]["lr"] == 0.02
    assert all(g["base_lr"] == g["lr"] for g in pair.param_groups)
    decayed = {
        id(p) for g in pair.euclidean.param_groups if g["weight_decay"] > 0 for p in g["params"]
    }
    assert all(p.ndim >= 2 for p in model.parameters() if id(p) in decayed)
    softmax_pair = build_optimizers(build_classifier("softmax", seed=0), lr=0.1)
    assert softmax_pair.grassmann is None
    with pytest.raises(ValueError, match="optimizer"):
        build_optimizers(model, lr=0.1, optimizer="lbfgs")


def test_classifiers_shapes_and_errors():
    gcr, softmax = build_classifier("gcr", seed=0), build_classifier("softmax", seed=0)
    # same seed, same weights
    torch.testing.assert_close(build_classifier("gcr", seed=0).state_dict(), gcr.state_dict())
    x = torch.randn(3, 1, 28, 28)
    for model in (gcr, softmax):
        assert model(x).shape == (3, 10)
        assert model.features(x).shape == (3, 256)
    assert isinstance(gcr, GCRClassifier) and isinstance(softmax, LinearClassifier)
    assert gcr.head.frames.shape == (10, 256, 8)
    with pytest.raises(ValueError, match="in_dim"):
        GCRClassifier(gcr.encoder, GrassmannClassHead(128, 10, 8))
    with pytest.raises(ValueError, match="subspace_dim"):
        GrassmannClassHead(4, 2, 5)
    with pytest.raises(ValueError, match=r"x: expected features \[N, 4\]"):
        GrassmannClassHead(4, 2, 2)(torch.randn(3, 5))
    with pytest.raises(ValueError, match="head"):
        build_classifier("cosine")


def test_optimizer_pair_resumes_exactly(tmp_path):
    def make():
        torch.manual_seed(0)
        model = nn.Sequential(nn.Linear(6, 8), GrassmannClassHead(8, 3, 2, seed=0))
        return model, build_optimizers(model, lr=0.1, momentum=0.9)

    data = [(torch.randn(16, 6), torch.randint(0, 3, (16,))) for _ in range(6)]

    def run(model, pair, batches):
        for x, y in batches:
            loss = F.cross_entropy(model(x), y)
            pair.zero_grad()
            loss.backward()
            pair.step()

    straight, straight_pair = make()
    run(straight, straight_pair, data)
    first, first_pair = make()
    run(first, first_pair, data[:3])
    save_training_state(tmp_path, first, first_pair, epoch=3)
    resumed, resumed_pair = make()
    assert load_training_state(tmp_path, resumed, resumed_pair)[0] == 3
    run(resumed, resumed_pair, data[3:])  # momentum buffers of both optimizers came back
    torch.testing.assert_close(resumed.state_dict(), straight.state_dict())


def test_recipe_evaluate_on_small_stand_in_data(monkeypatch):
    import subspace_ssl.data as data
    from subspace_ssl.recipes import gcr as recipe

    generator = torch.Generator().manual_seed(0)
    fake = {
        (d, s): (
            torch.randint(0, 256, (n, 28, 28), dtype=torch.uint8, generator=generator),
            torch.arange(n) % 10,
        )
        for d in ("fmnist", "mnist")
        for s, n in (("train", 60), ("test", 30))
    }
    monkeypatch.setattr(data, "load_images", lambda d, s, progress=False: fake[(d, s)])
    model = build_classifier("gcr", seed=0)
    result = recipe.evaluate(model, "cpu")
    assert set(result) == {"top1", "nll", "mnist_linear_top1"}
    logits = model.eval()(data.to_input(fake[("fmnist", "test")][0], "fmnist"))
    expected = 100.0 * (logits.argmax(1) == fake[("fmnist", "test")][1]).float().mean().item()
    assert result["top1"] == pytest.approx(expected)
    assert 0.0 <= result["mnist_linear_top1"] <= 100.0


def test_recipe_writes_a_loadable_checkpoint_and_resumes(tmp_path):
    from subspace_core.zoo import load_state_dict
    from subspace_ssl.recipes import gcr as recipe

    kwargs = dict(quick=True, progress=False, train_subset=128, batch_size=64)
    path = recipe.train(tmp_path, **kwargs)
    assert path.name == "gcr_tiny.fmnist.safetensors"
    sha = (tmp_path / "gcr_tiny.fmnist.safetensors.sha256").read_text().split()[0]
    state = load_state_dict(path, sha256=sha)
    model = build_classifier("gcr")
    model.load_state_dict(state)  # strict: the zoo builder's keys and shapes
    assert model.head.orthonormality_error() < 1e-5
    # a finished run re-run in the same folder resumes at its end and rewrites the same bytes
    assert recipe.train(tmp_path, **kwargs) == path
    assert (tmp_path / "gcr_tiny.fmnist.safetensors.sha256").read_text().split()[0] == sha
    with pytest.raises(ValueError, match="different config"):
        recipe.train(tmp_path, **{**kwargs, "batch_size": 32})
