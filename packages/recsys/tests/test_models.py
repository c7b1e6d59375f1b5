"""CTR models (FM identity, DCN-v2 cross layers, model decompositions) and the batch trainer."""

from __future__ import annotations

import itertools

import pytest
import torch
from torch import nn

from subspace_recsys.batch import evaluate_ctr, predict_ctr, train_ctr
from subspace_recsys.data import CriteoLikeGenerator, CTRBatch, global_ids
from subspace_recsys.hashed import HashedEmbedding
from subspace_recsys.metrics import auc, logloss
from subspace_recsys.models import (
    CrossLayerV2,
    CrossNetworkV2,
    DCNv2,
    DeepFM,
    WideAndDeep,
    fm_interaction,
)
from subspace_recsys.table import sparse_step


def hashed(dim: int) -> HashedEmbedding:
    return HashedEmbedding(4096, dim, seed=0, init_std=0.1)


def _ids(batch=8, fields=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    return global_ids(torch.randint(0, 50, (batch, fields), generator=g))


# ---------------------------------------------------------------- building blocks


def test_fm_identity_matches_the_pairwise_sum():
    e = torch.randn(6, 7, 4, dtype=torch.float64)
    explicit = torch.zeros(6, dtype=torch.float64)
    for i, j in itertools.combinations(range(7), 2):
        explicit += (e[:, i] * e[:, j]).sum(-1)
    torch.testing.assert_close(fm_interaction(e), explicit)
    with pytest.raises(ValueError, match="embeddings"):
        fm_interaction(torch.zeros(3, 4))


def _cross_loop(layer: CrossLayerV2, x0: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    out = []
    for b in range(x0.shape[0]):
        out.append(x0[b] * (layer.weight @ x[b] + layer.bias) + x[b])
    return torch.stack(out)


def test_full_rank_cross_layer_matches_the_formula():
    torch.manual_seed(0)
    layer = CrossLayerV2(6).double()
    nn.init.normal_(layer.bias)
    x0, x = torch.randn(5, 6, dtype=torch.float64), torch.randn(5, 6, dtype=torch.float64)
    torch.testing.assert_close(layer(x0, x), _cross_loop(layer, x0, x))


def test_low_rank_cross_layer_is_the_full_layer_with_w_equal_uv():
    torch.manual_seed(1)
    low = CrossLayerV2(6, rank=2).double()
    nn.init.normal_(low.bias)
    full = CrossLayerV2(6).double()
    with torch.no_grad():
        full.weight.copy_(low.u[0] @ low.v[0].T)
        full.bias.copy_(low.bias)
    x0, x = torch.randn(4, 6, dtype=torch.float64), torch.randn(4, 6, dtype=torch.float64)
    torch.testing.assert_close(low(x0, x), full(x0, x))
    assert sum(p.numel() for p in low.parameters()) == 2 * 6 * 2 + 6


def test_mixture_cross_layer_matches_an_expert_loop():
    torch.manual_seed(2)
    layer = CrossLayerV2(5, rank=3, num_experts=4).double()
    nn.init.normal_(layer.bias)
    x0, x = torch.randn(3, 5, dtype=torch.float64), torch.randn(3, 5, dtype=torch.float64)
    want = torch.zeros(3, 5, dtype=torch.float64)
    for b in range(3):
        gates = torch.softmax(layer.gate.weight @ x[b], 0)
        for k in range(4):
            inner = torch.tanh(layer.c[k] @ torch.tanh(layer.v[k].T @ x[b]))
            want[b] += gates[k] * x0[b] * (layer.u[k] @ inner + layer.bias)
        want[b] += x[b]
    torch.testing.assert_close(layer(x0, x), want)


def test_cross_network_feeds_x0_to_every_layer():
    torch.manual_seed(3)
    net = CrossNetworkV2(4, 3).double()
    x0 = torch.randn(2, 4, dtype=torch.float64)
    x = x0
    for layer in net.layers:
        x = _cross_loop(layer, x0, x)
    torch.testing.assert_close(net(x0), x)


def test_cross_layer_bad_arguments():
    with pytest.raises(ValueError, match="num_experts"):
        CrossLayerV2(4, num_experts=2)
    with pytest.raises(ValueError, match="rank"):
        CrossLayerV2(4, rank=0)


# ---------------------------------------------------------------- models


def _zero_deep(model: nn.Module) -> None:
    with torch.no_grad():
        model.deep_out.weight.zero_()
        model.deep_out.bias.zero_()


def test_deepfm_is_first_order_plus_fm_plus_mlp():
    torch.manual_seed(0)
    model = DeepFM(5, 4, dense_dim=3, hidden=(8,), embedding_factory=hashed)
    ids, dense = _ids(), torch.randn(8, 3)
    full = model(ids, dense)
    _zero_deep(model)
    rows = model.embedding(ids)
    want = (
        model.bias
        + rows[..., 0].sum(1)
        + fm_interaction(rows[..., 1:])
        + dense @ model.dense_linear.weight[0]
    )
    torch.testing.assert_close(model(ids, dense), want)
    assert not torch.allclose(full, want)  # the MLP did contribute before zeroing


def test_wide_and_deep_without_deep_part_is_logistic_regression():
    torch.manual_seed(0)
    model = WideAndDeep(5, 4, hidden=(8, 4), embedding_factory=hashed)
    ids = _ids()
    _zero_deep(model)
    torch.testing.assert_close(model(ids), model.bias + model.embedding(ids)[..., 0].sum(1))


@pytest.mark.parametrize("structure", ["parallel", "stacked"])
@pytest.mark.parametrize(("rank", "experts"), [(None, 1), (3, 1), (3, 2)])
def test_dcnv2_shapes_and_gradients(structure, rank, experts):
    torch.manual_seed(0)
    model = DCNv2(5, 4, dense_dim=2, hidden=(8,), embedding_factory=hashed,
                  cross_rank=rank, num_experts=experts, structure=structure)  # fmt: skip
    out = model(_ids(), torch.randn(8, 2))
    assert out.shape == (8,)
    out.sum().backward()
    assert model.embedding.weight.grad.abs().sum() > 0
    assert all(p.grad is not None for p in model.cross.parameters())


def test_dcnv2_stacked_feeds_the_cross_output_to_the_mlp():
    torch.manual_seed(0)
    model = DCNv2(3, 2, hidden=(4,), embedding_factory=hashed, structure="stacked")
    ids = _ids(fields=3)
    x0 = model.embedding(ids).flatten(1)
    torch.testing.assert_close(model(ids), model.head(model.deep(model.cross(x0))).squeeze(-1))


def test_models_check_their_inputs():
    model = DeepFM(5, 4, dense_dim=2, embedding_factory=hashed)
    with pytest.raises(ValueError, match=r"ids: expected shape \[B, 5\]"):
        model(_ids(fields=4), torch.zeros(8, 2))
    with pytest.raises(ValueError, match="dense"):
        model(_ids(), None)
    with pytest.raises(ValueError, match="dense"):
        model(_ids(), torch.zeros(8, 3))
    with pytest.raises(TypeError, match="ids"):
        model(_ids().float(), torch.zeros(8, 2))
    with pytest.raises(ValueError, match="dense_dim=0"):
        DeepFM(5, 4, embedding_factory=hashed)(_ids(), torch.zeros(8, 2))
    with pytest.raises(ValueError, match="embedding_factory"):
        DeepFM(5, 4, embedding_factory=lambda d: HashedEmbedding(10, d + 1))(_ids())
    with pytest.raises(ValueError, match="structure"):
        DCNv2(5, 4, embedding_factory=hashed, structure="serial")
    with pytest.raises(ValueError, match="hidden"):
        WideAndDeep(5, 4, embedding_factory=hashed, hidden=(8, 0))


def test_models_run_on_the_collisionless_table():
    table = pytest.importorskip("subspace_recsys.table")
    if not hasattr(table, "CollisionlessEmbedding"):  # pragma: no cover
        pytest.skip("subspace_recsys.table.CollisionlessEmbedding is not there yet")
    gen = CriteoLikeGenerator(200, num_categorical=4, num_dense=2, seed=0)
    batch = gen.sample(256)
    for cls in (WideAndDeep, DeepFM, DCNv2):
        torch.manual_seed(0)
        model = cls(4, 4, dense_dim=2, hidden=(8,),
                    embedding_factory=lambda d: table.CollisionlessEmbedding(d, lr=0.1))  # fmt: skip
        before = evaluate_ctr(model, batch)["logloss"]
        train_ctr(model, batch, epochs=3, batch_size=64, dense_lr=1e-2)
        assert len(model.embedding) == len(torch.unique(batch.ids))
        assert evaluate_ctr(model, batch)["logloss"] < before


# ---------------------------------------------------------------- trainer


@pytest.fixture(scope="module")
def small_stream():
    gen = CriteoLikeGenerator(20, num_categorical=6, num_dense=3, num_interactions=3, seed=5)
    return gen, gen.sample(16000), gen.sample(4000)


def test_training_learns_the_planted_interactions(small_stream):
    gen, train, test = small_stream
    torch.manual_seed(0)
    model = DeepFM(6, 8, dense_dim=3, hidden=(32,), embedding_factory=hashed)
    before = evaluate_ctr(model, test)
    losses = train_ctr(model, train, epochs=3, batch_size=256, dense_lr=1e-2)
    after = evaluate_ctr(model, test)
    z = gen.planted_logits(test.ids, test.dense, test.timestamp)
    z_first = gen.planted_logits(test.ids, test.dense, test.timestamp, interactions=False)
    assert losses[-1] < losses[0]
    assert after["logloss"] < before["logloss"]
    # better than the best first-order model could be: it learned the planted pairs
    assert after["auc"] > auc(z_first, test.label) + 0.08
    assert after["auc"] < auc(z, test.label) + 0.01


def test_training_is_deterministic_and_can_stop_early(small_stream):
    _, train, _ = small_stream

    def run(stop_after=None):
        torch.manual_seed(0)
        model = WideAndDeep(6, 4, dense_dim=3, hidden=(8,), embedding_factory=hashed)
        seen = []

        def cb(epoch, m, loss):
            seen.append(loss)
            return stop_after is not None and epoch >= stop_after

        history = train_ctr(model, train, epochs=3, batch_size=500, seed=1, on_epoch_end=cb)
        return model, history, seen

    a, ha, seen = run()
    b, hb, _ = run()
    assert ha == hb == seen and len(ha) == 3
    for pa, pb in zip(a.parameters(), b.parameters(), strict=True):
        assert torch.equal(pa, pb)
    _, hc, _ = run(stop_after=0)
    assert hc == ha[:1]


def test_trainer_accepts_batch_lists_and_refuses_one_shot_iterators(small_stream):
    _, train, _ = small_stream
    batches = [train.batch(slice(i, i + 1000)) for i in range(0, 4000, 1000)]
    model = DeepFM(6, 4, dense_dim=3, hidden=(8,), embedding_factory=hashed)
    assert len(train_ctr(model, batches, epochs=2)) == 2
    assert len(train_ctr(model, lambda epoch: batches[epoch:], epochs=2)) == 2
    with pytest.raises(ValueError, match="one-shot"):
        train_ctr(model, iter(batches), epochs=2)
    with pytest.raises(ValueError, match="epochs"):
        train_ctr(model, batches, epochs=0)


def test_evaluate_matches_the_metrics_and_restores_mode(small_stream):
    _, _, test = small_stream
    model = DCNv2(6, 4, dense_dim=3, hidden=(8,), embedding_factory=hashed)
    model.train()
    logits, labels = predict_ctr(model, test, batch_size=1000)
    assert model.training
    got = evaluate_ctr(model, test)
    assert got["auc"] == pytest.approx(auc(logits, labels))
    assert got["logloss"] == pytest.approx(logloss(logits, labels))
    assert got["n"] == len(test)


class _CountingTable(nn.Module):
    """A stand-in sparse table: records step() calls, flagged like CollisionlessEmbedding."""

    sparse_step_target = True

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.inner = HashedEmbedding(64, dim)
        self.steps = 0

    def forward(self, ids, now=None):
        return self.inner(ids, now=now)

    def step(self):
        self.steps += 1

    def zero_grad(self, set_to_none: bool = True):
        pass


def test_trainer_steps_the_sparse_tables_once_per_batch():
    batch = CTRBatch(ids=_ids(batch=10, fields=3), dense=None,
                     label=(torch.arange(10) % 2).float(),
                     timestamp=torch.arange(10, dtype=torch.float64))  # fmt: skip
    model = DeepFM(3, 2, hidden=(4,), embedding_factory=_CountingTable)
    train_ctr(model, batch, epochs=2, batch_size=4)
    assert model.embedding.steps == 2 * 3
    sparse_step(model)
    assert model.embedding.steps == 7
