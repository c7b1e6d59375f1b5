"""Dynamic Subspace Learners: slices, attention, margin loss, clustering, schedule, training."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from subspace_core.train import load_training_state, save_training_state
from subspace_ssl.dsl import (
    DSLTrainer,
    DynamicSubspaceLearners,
    LearnerSchedule,
    MarginLoss,
    assign_clusters,
    build_dsl,
    learner_slices,
)
from subspace_ssl.encoders import ConvEncoder


def _tiny_model(max_learners: int = 3, embed_dim: int = 12, seed: int = 0):
    torch.manual_seed(seed)
    encoder = ConvEncoder(widths=(8, 16), strides=(1, 2))  # 1×8×8 → 16×4×4
    return DynamicSubspaceLearners(encoder, embed_dim, max_learners, attention_hidden=8)


def _toy_images(n_per_class: int, n_classes: int = 4, seed: int = 0):
    """8×8 images: one bright class-specific quadrant plus noise."""
    generator = torch.Generator().manual_seed(seed)
    labels = torch.arange(n_classes).repeat_interleave(n_per_class)
    x = 0.3 * torch.randn(len(labels), 1, 8, 8, generator=generator)
    for c in range(n_classes):
        r, q = divmod(c, 2)
        x[labels == c, :, 4 * r : 4 * r + 4, 4 * q : 4 * q + 4] += 1.5
    return x, labels


def test_learner_slices_follow_divide_and_conquer():
    assert learner_slices(128, 1) == [slice(0, 128)]
    assert [s.stop - s.start for s in learner_slices(128, 3)] == [43, 43, 42]
    assert learner_slices(10, 4) == [slice(0, 3), slice(3, 6), slice(6, 9), slice(9, 10)]
    with pytest.raises(ValueError, match="empty slice"):
        learner_slices(10, 6)  # ceil(10/6) = 2: the sixth learner would get nothing
    with pytest.raises(ValueError, match="n_learners"):
        learner_slices(10, 0)


def test_encode_attention_weights_and_embedding():
    model = _tiny_model(max_learners=3)
    model.set_learners(3)
    x = torch.randn(5, 1, 8, 8)
    out = model.encode(x)
    assert out.learner_weights.shape == (5, 3)
    torch.testing.assert_close(out.learner_weights.sum(1), torch.ones(5))
    assert out.spatial_attention.shape == (5, 3, 4, 4)
    torch.testing.assert_close(out.spatial_attention.sum((2, 3)), torch.ones(5, 3))
    assert [e.shape[1] for e in out.learners] == [4, 4, 4]
    torch.testing.assert_close(out.embedding.norm(dim=1), torch.ones(5))
    expected = torch.cat(
        [out.learner_weights[:, i : i + 1].sqrt() * e for i, e in enumerate(out.learners)], dim=1
    )
    torch.testing.assert_close(out.embedding, expected)
    # zero-initialised attention and gate: uniform weights, and each learner pools like GAP
    torch.testing.assert_close(out.learner_weights, torch.full((5, 3), 1 / 3))
    gap = model.encoder(x)
    for e, s in zip(out.learners, model.slices(), strict=True):
        manual = F.normalize(gap @ model.embedding.weight[s].T + model.embedding.bias[s], dim=1)
        torch.testing.assert_close(e, manual)
    # cosine of final embeddings = weighted mix of the learners' cosines
    cos = out.embedding[0] @ out.embedding[1]
    mix = sum(
        (out.learner_weights[0, i] * out.learner_weights[1, i]).sqrt()
        * (out.learners[i][0] @ out.learners[i][1])
        for i in range(3)
    )
    torch.testing.assert_close(cos, mix)
    assert model(x).shape == (5, 12)


def test_add_learner_and_limits():
    model = _tiny_model(max_learners=2)
    assert model.n_learners == 1
    assert model.add_learner() == 2
    with pytest.raises(RuntimeError, match="already active"):
        model.add_learner()
    with pytest.raises(ValueError, match="n_learners"):
        model.set_learners(3)
    assert int(model.state_dict()["n_active"]) == 2  # the checkpoint records K
    with pytest.raises(ValueError, match="feature_map"):
        DynamicSubspaceLearners(torch.nn.Linear(3, 3))
    with pytest.raises(ValueError, match="add_at"):
        LearnerSchedule(add_at=(3, 2))


def _margin_loss_by_hand(e, labels, beta, margin, cutoff):
    e = e / e.norm(dim=1, keepdim=True)
    terms = []
    for a in range(len(labels)):
        positives = [p for p in range(len(labels)) if p != a and labels[p] == labels[a]]
        negatives = sorted(
            (float((e[a] - e[n]).norm()), n)
            for n in range(len(labels))
            if labels[n] != labels[a] and float((e[a] - e[n]).norm()) >= cutoff
        )
        terms += [max(0.0, float((e[a] - e[p]).norm()) - beta + margin) for p in positives]
        terms += [max(0.0, beta - d + margin) for d, _ in negatives[: len(positives)]]
    nonzero = sum(t > 0 for t in terms)
    return sum(terms) / max(nonzero, 1)


def test_margin_loss_matches_a_direct_computation():
    generator = torch.Generator().manual_seed(0)
    e = torch.randn(10, 3, generator=generator, dtype=torch.float64)
    labels = torch.tensor([0, 0, 0, 1, 1, 2, 2, 2, 2, 3])
    loss_fn = MarginLoss(2, beta=1.1, margin=0.2, cutoff=0.5).double()
    with torch.no_grad():
        loss_fn.beta[1] = 0.9
    for index, beta in ((0, 1.1), (1, 0.9)):
        # sqrt(d² + 1e-8) in the loss: agreement to ~1e-8
        assert loss_fn(e, labels, index).item() == pytest.approx(
            _margin_loss_by_hand(e, labels, beta, 0.2, 0.5), abs=1e-6
        )
    # hand-checked: two pairs, one positive at distance 2 (cost 2 − 1.2 + 0.2 = 1.0) and its
    # negative at distance √2 beyond β + α = 1.4 (cost 0): loss = 1.0 / 1 non-zero term
    e2 = torch.tensor([[1.0, 0.0], [-1.0, 0.0], [0.0, 1.0]], dtype=torch.float64)
    loss2 = MarginLoss().double()(e2, torch.tensor([0, 0, 1]))
    assert loss2.item() == pytest.approx(1.0, abs=1e-6)


def test_dsl_loss_decreases_on_a_toy_batch():
    model = _tiny_model(max_learners=2)
    model.set_learners(2)
    trainer = DSLTrainer(model, 32, LearnerSchedule(add_at=(1,)))
    model.set_learners(2)
    x, labels = _toy_images(8)
    optimizer = torch.optim.AdamW(trainer.parameters(), lr=3e-3)
    indices = torch.arange(32)
    losses = []
    for step in range(40):
        loss = trainer.loss(x, labels, indices, learner=step % 2)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert math.isfinite(losses[-1])
    assert sum(losses[-5:]) / 5 < 0.5 * sum(losses[:5]) / 5, losses


def test_assign_clusters_keeps_learners_on_their_data():
    generator = torch.Generator().manual_seed(0)
    centres = torch.eye(3) * 5
    groups = torch.arange(3).repeat_interleave(20)
    features = centres[groups] + 0.1 * torch.randn(60, 3, generator=generator)
    # same K: whatever k-means numbers its clusters, the old ids come back
    previous = torch.tensor([2, 0, 1])[groups]
    assert torch.equal(assign_clusters(features, 3, previous), previous)
    # K grows 2 → 3: the group that had learner 0 alone keeps it; of the two groups that
    # shared learner 1, one keeps 1 and the other goes to the new learner 2
    previous2 = torch.tensor([0, 1, 1])[groups]
    new = assign_clusters(features, 3, previous2)
    assert (new[groups == 0] == 0).all()
    assert {int(new[groups == 1][0]), int(new[groups == 2][0])} == {1, 2}
    for g in range(3):
        assert new[groups == g].unique().numel() == 1
    assert torch.equal(assign_clusters(features, 1), torch.zeros(60, dtype=torch.long))


def test_trainer_adds_learners_on_schedule_and_resumes(tmp_path):
    x, labels = _toy_images(6)  # 24 samples
    schedule = LearnerSchedule(add_at=(1, 3), finetune_from=4)
    assert [schedule.n_learners(e) for e in range(6)] == [1, 2, 2, 3, 3, 3]

    def make():
        model = _tiny_model(max_learners=3)
        trainer = DSLTrainer(model, len(labels), schedule)
        return model, trainer, torch.optim.AdamW(trainer.parameters(), lr=1e-3)

    model, trainer, optimizer = make()
    generator = torch.Generator().manual_seed(0)
    seen_learners = []
    for epoch in range(5):
        assert model.n_learners == schedule.n_learners(epoch)
        batches = trainer.batches(epoch, 5, generator)
        covered = torch.cat([idx for _, idx in batches]).sort().values
        assert torch.equal(covered, torch.arange(len(labels)))  # every sample once (none < 2)
        learners = {learner for learner, _ in batches}
        if model.n_learners == 1 or schedule.finetuning(epoch):
            assert learners == {None}
        else:
            assert learners == set(range(model.n_learners))
            for learner, idx in batches:  # a batch never mixes clusters
                assert (trainer.clusters[idx] == learner).all()
        for learner, idx in batches:
            loss = trainer.loss(x[idx], labels[idx], idx, learner)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        trainer.end_epoch(epoch)
        seen_learners.append(model.n_learners)
        if epoch == 2:
            save_training_state(tmp_path, trainer, optimizer, epoch=3)
            saved_clusters = trainer.clusters.clone()
    assert seen_learners == [2, 2, 3, 3, 3]
    assert int(trainer.clusters.max()) == 0  # fine-tuning: one group
    # a fresh trainer restores K and the cluster ids of the saved epoch
    model2, trainer2, optimizer2 = make()
    assert model2.n_learners == 1
    assert load_training_state(tmp_path, trainer2, optimizer2)[0] == 3
    assert model2.n_learners == 3
    assert torch.equal(trainer2.clusters, saved_clusters)


def test_build_dsl_and_recipe_evaluate(monkeypatch):
    import subspace_ssl.data as data
    from subspace_ssl.recipes import dsl as recipe

    model = build_dsl(max_learners=4, seed=0)
    assert model(torch.randn(2, 1, 28, 28)).shape == (2, 128)
    generator = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (40, 28, 28), dtype=torch.uint8, generator=generator)
    labels = torch.arange(40) % 10
    monkeypatch.setattr(data, "load_images", lambda d, s, progress=False: (images, labels))
    result = recipe.evaluate(model, "cpu")
    assert set(result) == {"recall@1", "recall@2", "recall@4", "recall@8", "nmi"}
    assert result["recall@1"] <= result["recall@2"] <= result["recall@4"] <= result["recall@8"]
    assert all(0.0 <= v <= 100.0 for v in result.values())


def test_recipe_grows_learners_and_writes_a_loadable_checkpoint(tmp_path):
    from subspace_core.zoo import load_state_dict
    from subspace_ssl.recipes import dsl as recipe

    path = recipe.train(tmp_path, quick=True, progress=False, train_subset=96, batch_size=32)
    sha = (tmp_path / "dsl_tiny.fmnist.safetensors.sha256").read_text().split()[0]
    model = build_dsl()
    model.load_state_dict(load_state_dict(path, sha256=sha))  # strict: the builder's shapes
    assert model.n_learners == 3  # quick: learners added at epochs 1 and 2
    assert model(torch.randn(2, 1, 28, 28)).shape == (2, 128)
