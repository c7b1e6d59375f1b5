"""MCR² and MLC against their formulas on small tensors, and MLC on a union of subspaces."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F

from subspace_core.linalg import coding_rate_reduction
from subspace_ssl.clustering import clustering_accuracy, kmeans_labels
from subspace_ssl.mcr2 import (
    MLC,
    MLCConfig,
    compression_rate,
    fit_mlc,
    mcr2_loss,
    mean_row_entropy,
    mlc_objective,
    sinkhorn,
    spectral_labels,
)

EPS = 0.5


def _plus_minus(*vectors: torch.Tensor) -> torch.Tensor:
    return torch.stack([s * v for v in vectors for s in (1.0, -1.0)])


# --- MCR² ----------------------------------------------------------------------------------


def test_mcr2_orthogonal_classes_beat_collapsed_classes_by_the_formula():
    e = torch.eye(4, dtype=torch.float64)
    labels = torch.tensor([0] * 4 + [1] * 4)
    # class 0 on span{e0, e1}, class 1 on span{e2, e3}: Σ zzᵀ = 2 I (n = 8, d = 4), and
    # each class's Gram is 2 I on its plane, so R = 2 log(1 + 1/ε²), R_c = log(1 + 2/ε²).
    orthogonal = torch.cat([_plus_minus(e[0], e[1]), _plus_minus(e[2], e[3])])
    expected = -(2 * math.log(1 + 1 / EPS**2) - math.log(1 + 2 / EPS**2))
    assert float(mcr2_loss(orthogonal, labels, EPS)) == pytest.approx(expected, rel=1e-10)
    # both classes on span{e0, e1} (the second rotated by 45°): R = R_c, so ΔR = 0.
    diag = (e[0] + e[1]) / math.sqrt(2), (e[0] - e[1]) / math.sqrt(2)
    collapsed = torch.cat([_plus_minus(e[0], e[1]), _plus_minus(*diag)])
    assert float(mcr2_loss(collapsed, labels, EPS)) == pytest.approx(0.0, abs=1e-10)
    assert expected < 0
    # rows are normalised first: the scale of the features does not matter
    assert float(mcr2_loss(3.0 * orthogonal, labels, EPS)) == pytest.approx(expected, rel=1e-10)


def test_mcr2_loss_is_differentiable_and_checks_input():
    features = torch.randn(10, 3, requires_grad=True)
    labels = torch.tensor([0, 1] * 5)
    mcr2_loss(features, labels).backward()
    assert features.grad is not None and bool(features.grad.abs().sum() > 0)
    with pytest.raises(ValueError, match="labels"):
        mcr2_loss(torch.randn(10, 3), torch.zeros(9, dtype=torch.long))
    with pytest.raises(ValueError, match="eps"):
        mcr2_loss(torch.randn(10, 3), labels, eps=0.0)
    with pytest.raises(ValueError, match="features"):
        mcr2_loss(torch.randn(10), labels)


# --- rates of the MLC objective --------------------------------------------------------------


def test_expansion_of_features_with_a_known_spectrum():
    # rows = basis vectors repeated m_i times: Σ zzᵀ = diag(m), so
    # R = ½ Σ_i log(1 + d m_i / (n ε²)).
    counts = [5, 3, 1, 1]
    z = torch.cat([torch.eye(4, dtype=torch.float64)[i].repeat(m, 1) for i, m in enumerate(counts)])
    n, d = z.shape
    expected = 0.5 * sum(math.log(1 + d * m / (n * EPS**2)) for m in counts)
    terms = mlc_objective(z, z, eps=EPS, eta=0.5, gamma=0.0)
    assert float(terms.expansion) == pytest.approx(expected, rel=1e-10)


def test_compression_rate_matches_core_for_soft_memberships():
    g = torch.Generator().manual_seed(0)
    z = F.normalize(torch.randn(12, 5, generator=g, dtype=torch.float64), dim=1)
    pi = torch.rand(4, 12, generator=g, dtype=torch.float64)
    pi = pi / pi.sum(dim=0, keepdim=True)  # columns sum to 1
    core = coding_rate_reduction(z.mT, eps=EPS, membership=pi).compression
    assert float(compression_rate(z, pi, EPS)) == pytest.approx(float(core), rel=1e-10)
    gamma = sinkhorn(z @ z.mT, 0.3, 50)
    core = coding_rate_reduction(z.mT, eps=EPS, membership=gamma).compression
    assert float(compression_rate(z, gamma, EPS)) == pytest.approx(float(core), rel=1e-8)


def test_compression_rate_of_identity_and_uniform_memberships():
    g = torch.Generator().manual_seed(1)
    z = F.normalize(torch.randn(9, 4, generator=g, dtype=torch.float64), dim=1)
    n, d = z.shape
    # Γ = I: every sample is its own rank-1 group, logdet(I + d/ε² z zᵀ) = log(1 + d/ε²)
    identity = compression_rate(z, torch.eye(n, dtype=torch.float64), EPS)
    assert float(identity) == pytest.approx(0.5 * math.log(1 + d / EPS**2), rel=1e-10)
    # Γ = 11ᵀ/n: every group is the whole set, so R_c = R
    uniform = compression_rate(z, torch.full((n, n), 1 / n, dtype=torch.float64), EPS)
    expansion = mlc_objective(z, z, eps=EPS).expansion
    assert float(uniform) == pytest.approx(float(expansion), rel=1e-10)
    with pytest.raises(ValueError, match="membership"):
        compression_rate(z, torch.eye(n + 1, dtype=torch.float64), EPS)


# --- Sinkhorn and the membership -----------------------------------------------------------


def test_sinkhorn_is_doubly_stochastic():
    g = torch.Generator().manual_seed(0)
    scores = torch.rand(20, 20, generator=g, dtype=torch.float64)
    gamma = sinkhorn(scores, 0.2, 200)
    assert bool((gamma >= 0).all())
    torch.testing.assert_close(gamma.sum(0), torch.ones(20, dtype=torch.float64))
    torch.testing.assert_close(gamma.sum(1), torch.ones(20, dtype=torch.float64))
    constant = sinkhorn(torch.full((5, 5), 0.7, dtype=torch.float64), 0.1, 3)
    torch.testing.assert_close(constant, torch.full((5, 5), 0.2, dtype=torch.float64))


def test_sinkhorn_solves_the_entropic_projection():
    g = torch.Generator().manual_seed(1)
    eta = 0.3
    scores = torch.rand(6, 6, generator=g, dtype=torch.float64)
    gamma = sinkhorn(scores, eta, 500)
    # Optimality: log Γ − M/η = a_i + b_j (the dual scalings), i.e. zero mixed differences.
    log_ratio = gamma.log() - scores / eta
    mixed = log_ratio - log_ratio[:, :1] - log_ratio[:1, :] + log_ratio[:1, :1]
    assert float(mixed.abs().max()) < 1e-10

    def objective(p: torch.Tensor) -> float:
        return float(-(scores * p).sum() + eta * torch.special.xlogy(p, p).sum())

    # Moves that keep every row and column sum (a ±t cycle) only increase the objective.
    cycle = torch.zeros(6, 6, dtype=torch.float64)
    cycle[0, 0] = cycle[2, 3] = 1.0
    cycle[0, 3] = cycle[2, 0] = -1.0
    for t in (1e-3, -1e-3):
        assert objective(gamma + t * cycle) > objective(gamma)


def test_sinkhorn_bad_input_raises():
    with pytest.raises(ValueError, match="scores"):
        sinkhorn(torch.rand(3, 4), 0.1)
    with pytest.raises(ValueError, match="eta"):
        sinkhorn(torch.rand(3, 3), 0.0)
    with pytest.raises(ValueError, match="num_iters"):
        sinkhorn(torch.rand(3, 3), 0.1, 0)


def test_mean_row_entropy_extremes():
    n = 8
    assert float(mean_row_entropy(torch.eye(n))) == pytest.approx(0.0)
    assert float(mean_row_entropy(torch.eye(n)[torch.randperm(n)])) == pytest.approx(0.0)
    assert float(mean_row_entropy(torch.full((n, n), 1 / n))) == pytest.approx(math.log(n))


def test_mlc_objective_combines_its_terms_and_reaches_both_heads():
    g = torch.Generator().manual_seed(0)
    z = torch.randn(16, 6, generator=g, requires_grad=True)
    c = torch.randn(16, 6, generator=g, requires_grad=True)
    terms = mlc_objective(z, c, eps=EPS, eta=0.2, gamma=0.7, sinkhorn_iters=20)
    expected = -terms.expansion + terms.compression - 0.7 * terms.entropy
    assert float(terms.loss.detach()) == pytest.approx(float(expected.detach()), rel=1e-6)
    gamma = sinkhorn((F.normalize(c, dim=1) @ F.normalize(c, dim=1).mT).abs(), 0.2, 20)
    torch.testing.assert_close(terms.membership, gamma)
    terms.loss.backward()
    assert bool(z.grad.abs().sum() > 0) and bool(c.grad.abs().sum() > 0)
    with pytest.raises(ValueError, match="gamma"):
        mlc_objective(z, c, gamma=-1.0)
    with pytest.raises(ValueError, match="c: expected"):
        mlc_objective(z, c[:3])


def test_spectral_labels_recover_blocks():
    blocks = torch.block_diag(*[torch.ones(6, 6)] * 3) + 0.01
    labels = torch.arange(3).repeat_interleave(6)
    assert clustering_accuracy(labels, spectral_labels(blocks, 3, knn=5)) == 1.0
    assert clustering_accuracy(labels, spectral_labels(blocks, 3, knn=None)) == 1.0


# --- the model -----------------------------------------------------------------------------


def test_mlc_model_shapes_init_and_errors():
    torch.manual_seed(0)
    model = MLC(input_dim=10, hidden_dim=16, z_dim=4, num_clusters=3)
    x = torch.randn(32, 10) * 3 + 1
    model.fit_input_normalization(x, pca=True)
    z, c = model.embed(x)
    assert z.shape == c.shape == (32, 4)
    torch.testing.assert_close(z.norm(dim=1), torch.ones(32))
    # PCA start: z = normalize(top-4 principal coordinates of the standardised x), up to sign
    xs = (x - x.mean(0)) / x.std(0)
    v = torch.linalg.svd(xs.double(), full_matrices=False).Vh[:4].float()
    pca = F.normalize(xs @ v.mT, dim=1)
    torch.testing.assert_close(z.abs(), pca.abs(), atol=1e-4, rtol=1e-4)  # signs are free
    torch.testing.assert_close(c, z)
    with torch.no_grad():
        model.cluster_head.weight.normal_()
    assert not torch.allclose(model.embed(x)[1], z)
    model.one_shot_init()
    torch.testing.assert_close(model.embed(x)[1], model.embed(x)[0])
    with pytest.raises(ValueError, match="x: expected"):
        model(torch.randn(3, 9))
    with pytest.raises(ValueError, match="z_dim"):
        MLC(input_dim=10, z_dim=0)


def _union_of_subspaces(seed: int, k: int = 3, dim: int = 2, ambient: int = 6, per: int = 60):
    g = torch.Generator().manual_seed(seed)
    xs = []
    for _ in range(k):
        basis = torch.linalg.qr(torch.randn(ambient, dim, generator=g))[0]
        points = torch.randn(per, dim, generator=g) @ basis.mT
        xs.append(points + 0.02 * torch.randn(per, ambient, generator=g))
    return F.normalize(torch.cat(xs), dim=1), torch.arange(k).repeat_interleave(per)


def test_mlc_improves_its_objective_and_recovers_subspaces_where_kmeans_fails():
    x, y = _union_of_subspaces(seed=2)
    # subspaces through the origin have no distinct means: k-means cannot separate them
    assert clustering_accuracy(y, kmeans_labels(x, 3, 0)) < 0.6
    cfg = replace(
        MLCConfig(),
        eps=0.5,
        eta=0.1,
        gamma=0.0,
        batch_size=len(x),
        epochs=150,
        lr=0.01,
        lr_cluster=0.01,
    )
    torch.manual_seed(0)
    model = MLC(input_dim=6, hidden_dim=64, z_dim=8, num_clusters=3, eta=cfg.eta)

    def full_batch_loss() -> float:
        z, c = model.embed(x)
        return float(mlc_objective(z, c, eps=cfg.eps, eta=cfg.eta, gamma=cfg.gamma).loss)

    model.fit_input_normalization(x, pca=True)
    model.one_shot_init()
    before = full_batch_loss()
    history = fit_mlc(model, x, cfg)
    after = full_batch_loss()
    assert after < before - 0.5
    assert history[-1]["loss"] < history[0]["loss"]
    assert clustering_accuracy(y, model.predict(x, knn=10)) >= 0.95


# --- the recipe (tiny smoke run on pixel features) ------------------------------------------


def test_recipe_trains_resumes_and_evaluates(tmp_path):
    from subspace_core.io import sha256_file
    from subspace_ssl.recipes import mlc as recipe

    settings = {
        "features": "pixels",
        "train_subset": 384,
        "batch_size": 128,
        "epochs": 2,
        "z_dim": 8,
        "hidden_dim": 32,
    }
    path = recipe.train(tmp_path, quick=True, progress=False, **settings)
    assert path.name == recipe.CHECKPOINT_FILE
    digest = path.with_name(path.name + ".sha256").read_text().split()[0]
    assert digest == sha256_file(path)
    # the state after the last epoch is on disk: a re-run resumes there and writes the same file
    assert recipe.train(tmp_path, quick=True, progress=False, **settings) == path
    assert sha256_file(path) == digest
    with pytest.raises(ValueError, match="different config"):
        recipe.train(tmp_path, quick=True, progress=False, **{**settings, "eta": 0.3})
    with pytest.raises(ValueError, match="unknown"):
        recipe.train(tmp_path, quick=True, progress=False, not_a_field=1)

    from safetensors.torch import load_file

    model = recipe.build_model(784, recipe.RecipeConfig(z_dim=8, hidden_dim=32))
    model.load_state_dict(load_file(str(path)))
    scores = recipe.evaluate(model, features="pixels", random_backbone=False, limit=300)
    for prefix in ("", "mlc_kmeans_", "kmeans_", "kmeans_std_l2_", "pixels_kmeans_", "random_mlc_"):
        for metric in ("acc", "nmi", "ari"):
            assert -1.0 <= scores[prefix + metric] <= 1.0
    assert scores["acc"] > 0.2  # 10 classes: chance is ~0.1
    # pixels are the input here, so the two k-means baselines are one computation
    assert scores["kmeans_acc"] == scores["pixels_kmeans_acc"]
