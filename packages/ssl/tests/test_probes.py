"""kNN and linear-probe readouts, RankMe and the encoder."""

from __future__ import annotations

import math

import pytest
import torch

from subspace_ssl.encoders import ConvEncoder, Projector, build_encoder
from subspace_ssl.probes import embed, knn_accuracy, linear_probe
from subspace_ssl.rankme import rankme, select_by_rankme, spearman


def _clusters(n_per=30, d=5, sep=6.0, seed=0):
    g = torch.Generator().manual_seed(seed)
    centres = sep * torch.eye(3, d)
    x = torch.cat([c + torch.randn(n_per, d, generator=g) for c in centres])
    y = torch.arange(3).repeat_interleave(n_per)
    return x, y


def test_knn_and_linear_probe_solve_separated_clusters():
    x, y = _clusters(seed=0)
    xt, yt = _clusters(seed=1)
    assert knn_accuracy(x, y, xt, yt, k=10) == 100.0
    assert linear_probe(x, y, xt, yt) == 100.0


def test_knn_with_one_neighbour_is_nearest_neighbour_by_cosine():
    x = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]])
    y = torch.tensor([0, 1, 2])
    q = torch.tensor([[0.9, 0.2], [0.1, 3.0], [-5.0, 1.0]])
    assert knn_accuracy(x, y, q, torch.tensor([0, 1, 2]), k=1) == 100.0
    assert knn_accuracy(x, y, q, torch.tensor([1, 1, 2]), k=1) == pytest.approx(200 / 3)


def test_linear_probe_is_at_chance_on_random_labels():
    g = torch.Generator().manual_seed(0)
    x, xt = torch.randn(400, 8, generator=g), torch.randn(400, 8, generator=g)
    y, yt = torch.randint(0, 4, (400,), generator=g), torch.randint(0, 4, (400,), generator=g)
    assert 10.0 < linear_probe(x, y, xt, yt) < 40.0


def test_readouts_reject_bad_shapes():
    with pytest.raises(ValueError, match="train_x"):
        knn_accuracy(torch.randn(5), torch.zeros(5).long(), torch.randn(2, 1), torch.zeros(2).long())
    with pytest.raises(ValueError, match="labels"):
        linear_probe(torch.randn(5, 2), torch.zeros(4).long(), torch.randn(2, 2),
                     torch.zeros(2).long())
    with pytest.raises(ValueError, match="k"):
        knn_accuracy(torch.randn(5, 2), torch.zeros(5).long(), torch.randn(2, 2),
                     torch.zeros(2).long(), k=6)


def test_rankme_equals_its_definition():
    g = torch.Generator().manual_seed(0)
    z = torch.randn(50, 6, generator=g, dtype=torch.float64) * torch.tensor(
        [5.0, 3, 2, 1, 0.5, 0.1], dtype=torch.float64)
    s = torch.linalg.svdvals(z)
    p = s / s.sum() + 1e-7
    assert rankme(z) == pytest.approx(math.exp(float(-(p * p.log()).sum())), rel=1e-6)
    # equal singular values: the rank itself; rank-one: 1
    q, _ = torch.linalg.qr(torch.randn(20, 4, generator=g, dtype=torch.float64))
    assert rankme(q) == pytest.approx(4.0, rel=1e-5)
    assert rankme(torch.ones(10, 3, dtype=torch.float64)) == pytest.approx(1.0, rel=1e-5)


def test_select_by_rankme_picks_the_highest_rank_and_spearman_ranks():
    g = torch.Generator().manual_seed(0)
    full = torch.randn(40, 8, generator=g)
    collapsed = full[:, :1].repeat(1, 8) + 1e-3 * torch.randn(40, 8, generator=g)
    best, scores = select_by_rankme({"collapsed": collapsed, "full": full})
    assert best == "full" and scores["full"] > 5 * scores["collapsed"]
    assert spearman([1, 2, 3, 4], [10, 20, 30, 45]) == pytest.approx(1.0)
    assert spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    with pytest.raises(ValueError, match="candidates"):
        select_by_rankme({})


def test_encoder_shapes_seeding_and_errors():
    e = build_encoder("tiny", seed=3)
    again = build_encoder("tiny", seed=3)
    for a, b in zip(e.state_dict().values(), again.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b)
    assert e(torch.randn(2, 1, 28, 28)).shape == (2, e.embed_dim)
    assert Projector(8, 16, 4)(torch.randn(3, 8)).shape == (3, 4)
    with pytest.raises(ValueError, match="size"):
        build_encoder("huge")
    with pytest.raises(ValueError, match="widths/strides"):
        ConvEncoder((8, 16), (1,))
    with pytest.raises(ValueError, match="x: expected"):
        e(torch.randn(2, 3, 28, 28))


def test_embed_restores_training_mode_and_batches():
    e = build_encoder("tiny", seed=0)
    e.train()
    images = torch.randint(0, 256, (5, 28, 28), dtype=torch.uint8)
    out = embed(e, images, batch_size=2)
    assert out.shape == (5, 256) and e.training
    torch.testing.assert_close(out, embed(e, images, batch_size=5), atol=1e-5, rtol=1e-5)
