"""OptFS: gates, temperature schedule, penalty, selection, the deny-list wrapper, search."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from torch import nn

from subspace_recsys.data import CTRBatch, global_ids
from subspace_recsys.hashed import HashedEmbedding
from subspace_recsys.models import DeepFM, fm_interaction
from subspace_recsys.optfs import (
    FeatureGate,
    GatedEmbedding,
    MaskedEmbedding,
    OptFS,
    selection_by_field,
)


def _sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


def _collisionless():
    table = pytest.importorskip("subspace_recsys.table")
    if not hasattr(table, "CollisionlessEmbedding"):  # pragma: no cover
        pytest.skip("subspace_recsys.table.CollisionlessEmbedding is not there yet")
    return table.CollisionlessEmbedding


# ---------------------------------------------------------------- gates


def test_gates_start_at_one_and_follow_the_formula():
    gate = FeatureGate(HashedEmbedding(64, 1, init_std=0.0), init=0.5)
    ids = torch.tensor([[1, 2], [3, (1 << 40) | 9]])
    torch.testing.assert_close(gate(ids), torch.ones(2, 2))
    with torch.no_grad():
        gate.table.weight.copy_(torch.linspace(-2, 2, 64).unsqueeze(1))
    gate.temperature = 7.0
    m = 0.5 + gate.table.weight[gate.table.rows(ids), 0]
    torch.testing.assert_close(gate.logits(ids), m)
    torch.testing.assert_close(gate(ids), torch.sigmoid(7.0 * m) / _sigmoid(0.5))
    torch.testing.assert_close(gate.penalty(), torch.sigmoid(7.0 * (0.5 + gate.table.weight)).sum())
    gate.hard = True
    torch.testing.assert_close(gate(ids), (m > 0).float() / _sigmoid(0.5))


def test_high_temperature_turns_gates_into_steps():
    gate = FeatureGate(HashedEmbedding(1000, 1, init_std=0.3, seed=1))
    ids = torch.arange(5000)
    m = gate.logits(ids).detach()
    away = m.abs() > 0.01
    gate.temperature = 5000.0
    soft = gate(ids).detach()
    gate.hard = True
    torch.testing.assert_close(soft[away], gate(ids)[away], atol=1e-6, rtol=0)


def test_temperature_schedule_is_geometric_from_one_to_final():
    optfs = OptFS(HashedEmbedding(8, 1, init_std=0.0), final_temperature=200.0)
    temps = [optfs.temperature_at(e, 5) for e in range(5)]
    assert temps[0] == 1.0 and temps[-1] == pytest.approx(200.0)
    ratios = [b / a for a, b in itertools.pairwise(temps)]
    assert ratios == pytest.approx([200.0**0.25] * 4)
    assert optfs.temperature_at(0, 1) == 1.0
    with pytest.raises(ValueError, match="epoch"):
        optfs.temperature_at(5, 5)


def test_selection_keeps_exactly_the_positive_logits():
    gate = FeatureGate(HashedEmbedding(256, 1, init_std=0.5, seed=2), init=0.0)
    candidates = torch.randint(0, 1 << 40, (300,), generator=torch.Generator().manual_seed(0))
    m = gate.logits(candidates).detach()
    want = torch.unique(candidates[m > 0])
    assert torch.equal(gate.kept(candidates), want)
    assert 0 < len(want) < len(torch.unique(candidates))
    with pytest.raises(ValueError, match="candidates"):
        gate.kept()


def test_gate_checks_its_table():
    with pytest.raises(TypeError, match="table"):
        FeatureGate(nn.Embedding(4, 1))
    with pytest.raises(ValueError, match="dim-1"):
        FeatureGate(HashedEmbedding(4, 2))


def test_wrap_shares_one_gate_and_multiplies():
    optfs = OptFS(HashedEmbedding(32, 1, init_std=0.0))
    make = optfs.wrap(lambda d: HashedEmbedding(32, d, init_std=1.0))
    a, b = make(3), make(5)
    assert isinstance(a, GatedEmbedding) and a.gate is b.gate is optfs.gate
    with torch.no_grad():
        optfs.gate.table.weight.normal_()
    optfs.gate.temperature = 3.0
    ids = torch.tensor([[4, 8, 15]])
    torch.testing.assert_close(a(ids), a.inner(ids) * optfs.gate(ids).unsqueeze(-1))


def test_collisionless_gate_table_reads_and_penalises_every_admitted_id():
    collisionless = _collisionless()
    gate = FeatureGate(collisionless(1, init_std=0.0, optimizer="sgd", lr=0.1))
    ids = torch.tensor([3, 5, 5, 11])
    torch.testing.assert_close(gate(ids), torch.ones(4))  # admitted with offset 0
    gate.temperature = 2.0
    assert torch.equal(gate.table.keys(), torch.tensor([3, 5, 11]))
    penalty = gate.penalty()
    torch.testing.assert_close(penalty, torch.tensor(3 * _sigmoid(2.0 * 0.5)))
    penalty.backward()
    gate.table.step()
    # d/dm sigmoid(2m) = 2 s (1 - s) at m = 0.5; SGD moves every gate down by lr * that
    s = _sigmoid(1.0)
    gate.eval()
    torch.testing.assert_close(
        gate.logits(torch.tensor([3, 5, 11])), torch.full((3,), 0.5 - 0.1 * 2 * s * (1 - s))
    )
    assert torch.equal(gate.kept(), torch.tensor([3, 5, 11]))


# ---------------------------------------------------------------- admission deny/allow list


class _Recording(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.table = HashedEmbedding(64, dim, init_std=1.0)
        self.seen: list[torch.Tensor] = []

    def forward(self, ids, now=None):
        self.seen.append(ids.clone())
        return self.table(ids)


def test_masked_embedding_zeroes_and_hides_dropped_ids():
    ids = torch.tensor([[1, 2, 3], [4, 2, 9]])
    deny = MaskedEmbedding(_Recording(4), denied_ids=torch.tensor([2, 9, 100]))
    out = deny(ids)
    dropped = torch.tensor([[False, True, False], [False, True, True]])
    assert torch.count_nonzero(out[dropped]) == 0
    torch.testing.assert_close(out[~dropped], deny.inner.table(ids[~dropped]))
    assert sorted(deny.inner.seen[0].tolist()) == [1, 3, 4]  # dropped ids never reach it
    out.sum().backward()
    grad_rows = torch.nonzero(deny.inner.table.weight.grad.abs().sum(1)).reshape(-1)
    assert set(grad_rows.tolist()) == set(deny.inner.table.rows(torch.tensor([1, 3, 4])).tolist())

    allow = MaskedEmbedding(_Recording(4), allowed_ids=torch.tensor([2, 9]))
    assert torch.equal(allow.passes(ids), dropped)
    assert torch.count_nonzero(allow(ids)[~dropped]) == 0
    assert "listed_ids" in allow.state_dict()
    nothing_denied = MaskedEmbedding(_Recording(2), denied_ids=torch.zeros(0, dtype=torch.int64))
    assert bool(nothing_denied.passes(ids).all())
    with pytest.raises(ValueError, match="exactly one"):
        MaskedEmbedding(_Recording(2))
    with pytest.raises(TypeError, match="denied_ids"):
        MaskedEmbedding(_Recording(2), denied_ids=torch.tensor([1.0]))


def test_dropped_feature_removes_its_interactions():
    ids = global_ids(torch.tensor([[1, 2, 3]]))
    inner = HashedEmbedding(128, 4, init_std=1.0)
    masked = MaskedEmbedding(inner, denied_ids=ids[0, 1:2])
    e = inner(ids)
    # only the pair (field 0, field 2) survives
    torch.testing.assert_close(fm_interaction(masked(ids)), (e[:, 0] * e[:, 2]).sum(-1))


def test_denied_ids_are_never_admitted_by_a_collisionless_table():
    collisionless = _collisionless()
    masked = MaskedEmbedding(collisionless(3), denied_ids=torch.tensor([7, 8]))
    masked(torch.tensor([[7, 1, 8, 2, 7]]))
    assert torch.equal(masked.inner.keys(), torch.tensor([1, 2]))


def test_selection_by_field_counts():
    candidates = global_ids(torch.tensor([[1, 5], [2, 5], [3, 6]]))
    kept = candidates[[0, 2], 0].reshape(-1)  # field 0: values 1 and 3
    assert selection_by_field(candidates, kept, ("a", "b")) == {"a": (3, 2), "b": (2, 0)}


# ---------------------------------------------------------------- the search


def _signal_and_noise(n=8000, seed=0):
    """Field 0: 20 ids that set the click rate; field 1: 400 ids of pure noise."""
    g = torch.Generator().manual_seed(seed)
    signal = torch.randint(0, 20, (n,), generator=g)
    noise = torch.randint(0, 400, (n,), generator=g)
    weight = torch.randn(20, generator=g) * 2
    label = (torch.rand(n, generator=g) < torch.sigmoid(weight[signal])).float()
    return CTRBatch(ids=global_ids(torch.stack([signal, noise], 1)), dense=None, label=label,
                    timestamp=torch.arange(n, dtype=torch.float64))  # fmt: skip


def _kept_fractions(optfs, batch, candidates=None):
    kept = optfs.select_features(candidates)
    counts = selection_by_field(batch.ids, kept, ("signal", "noise"))
    return {k: kept_n / total for k, (total, kept_n) in counts.items()}


def test_search_drops_the_noise_field_with_hashed_gates():
    batch = _signal_and_noise()
    optfs = OptFS(HashedEmbedding(4096, 1, init_std=0.0), penalty_weight=1e-4,
                  final_temperature=100.0)  # fmt: skip
    torch.manual_seed(0)
    model = DeepFM(
        2, 4, hidden=(8,), embedding_factory=optfs.wrap(lambda d: HashedEmbedding(4096, d))
    )
    optfs.search(model, batch, epochs=4, batch_size=256, gate_lr=1e-2)
    assert optfs.gate.temperature == pytest.approx(100.0)
    kept = _kept_fractions(optfs, batch, torch.unique(batch.ids))
    assert kept["signal"] >= 0.75 and kept["noise"] <= 0.05
    # without the penalty nothing is pushed out
    free = OptFS(HashedEmbedding(4096, 1, init_std=0.0), penalty_weight=0.0)
    torch.manual_seed(0)
    model = DeepFM(
        2, 4, hidden=(8,), embedding_factory=free.wrap(lambda d: HashedEmbedding(4096, d))
    )
    free.search(model, batch, epochs=2, batch_size=256, gate_lr=1e-2)
    assert _kept_fractions(free, batch, torch.unique(batch.ids))["noise"] > 0.9


def test_search_drops_the_noise_field_with_collisionless_gates():
    collisionless = _collisionless()
    batch = _signal_and_noise(seed=1)
    optfs = OptFS(collisionless(1, init_std=0.0, optimizer="adam", lr=1e-2), penalty_weight=3e-4,
                  final_temperature=100.0)  # fmt: skip
    torch.manual_seed(0)
    factory = optfs.wrap(lambda d: collisionless(d, optimizer="adam", lr=1e-2))
    model = DeepFM(2, 4, hidden=(8,), embedding_factory=factory)
    optfs.search(model, batch, epochs=4, batch_size=256)
    assert len(optfs.gate.table) == len(torch.unique(batch.ids))  # gates keyed by the same ids
    kept = _kept_fractions(optfs, batch)
    assert kept["signal"] >= 0.6 and kept["noise"] <= 0.1


def test_search_needs_a_wrapped_model():
    optfs = OptFS(HashedEmbedding(16, 1, init_std=0.0))
    model = DeepFM(2, 4, embedding_factory=lambda d: HashedEmbedding(16, d))
    with pytest.raises(ValueError, match="wrap"):
        optfs.search(model, _signal_and_noise(n=10), epochs=1)
