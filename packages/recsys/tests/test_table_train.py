"""Gradients into the collisionless table and its per-row optimizers vs torch.optim."""

import pytest
import torch
from torch import nn

from subspace_recsys.table import CollisionlessEmbedding, sparse_step, sparse_zero_grad

DIM = 5


def _batches(num_ids: int, steps: int, seed: int, duplicates: bool):
    g = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        if duplicates:
            ids = torch.randint(0, num_ids, (12,), generator=g)
        else:  # a random subset: rows left out must not move (lazy updates)
            ids = torch.randperm(num_ids, generator=g)[: num_ids // 2]
        yield ids, torch.randn(ids.shape[0], DIM, generator=g)


def _train_pair(table, dense_opt_factory, *, duplicates, steps=6, num_ids=10):
    """Train the table and a dense copy of its rows on the same loss; return both."""
    ids_all = torch.arange(num_ids) * 7 + 3  # arbitrary ids
    rows = table.lookup_rows(ids_all, insert=True)
    dense = nn.Parameter(table.weight[rows].clone())
    opt = dense_opt_factory([dense])
    position = {int(i): k for k, i in enumerate(ids_all)}
    for local, coeff in _batches(num_ids, steps, seed=1, duplicates=duplicates):
        ids = ids_all[local]
        (table(ids) * coeff).sum().backward()
        table.step()
        opt.zero_grad()
        idx = torch.tensor([position[int(i)] for i in ids])
        (dense[idx] * coeff).sum().backward()
        opt.step()
    return table.weight[rows], dense.detach()


def test_sgd_equals_torch_sgd():
    table = CollisionlessEmbedding(DIM, optimizer="sgd", lr=0.3, init_std=0.5)
    got, ref = _train_pair(table, lambda p: torch.optim.SGD(p, lr=0.3), duplicates=False)
    assert torch.equal(got, ref)


def test_adagrad_equals_torch_adagrad_on_dense_copy():
    table = CollisionlessEmbedding(DIM, optimizer="adagrad", lr=0.2, eps=1e-8, init_std=0.5)
    factory = lambda p: torch.optim.Adagrad(p, lr=0.2, eps=1e-8)  # noqa: E731
    got, ref = _train_pair(table, factory, duplicates=False)
    # same arithmetic, same order: bit-equal (untouched rows of dense Adagrad do not move)
    assert torch.equal(got, ref)


def test_adagrad_with_duplicate_ids_matches_up_to_summation_order():
    table = CollisionlessEmbedding(DIM, optimizer="adagrad", lr=0.2, init_std=0.5)
    factory = lambda p: torch.optim.Adagrad(p, lr=0.2, eps=1e-8)  # noqa: E731
    got, ref = _train_pair(table, factory, duplicates=True)
    torch.testing.assert_close(got, ref, rtol=1e-6, atol=1e-7)


def test_adam_equals_one_sparse_adam_per_row():
    """Lazy Adam with per-row step counts = each row its own torch.optim.SparseAdam."""
    lr, betas, eps = 0.05, (0.8, 0.95), 1e-6
    table = CollisionlessEmbedding(DIM, optimizer="adam", lr=lr, betas=betas, eps=eps, init_std=0.5)
    ids_all = torch.arange(8) * 11
    rows = table.lookup_rows(ids_all, insert=True)
    embs = [nn.Embedding(1, DIM, sparse=True) for _ in range(8)]
    opts = []
    for k, emb in enumerate(embs):
        emb.weight.data.copy_(table.weight[rows[k]])
        opts.append(torch.optim.SparseAdam(emb.parameters(), lr=lr, betas=betas, eps=eps))
    for local, coeff in _batches(8, 7, seed=2, duplicates=False):
        (table(ids_all[local]) * coeff).sum().backward()
        table.step()
        for opt in opts:
            opt.zero_grad(set_to_none=True)
        for k, c in zip(local.tolist(), coeff, strict=True):
            (embs[k](torch.tensor([0]))[0] * c).sum().backward()
        for opt in opts:
            opt.step()  # rows without a gradient are skipped, like the table's lazy update
    ref = torch.stack([e.weight.detach()[0] for e in embs])
    torch.testing.assert_close(table.weight[rows], ref, rtol=1e-6, atol=1e-7)
    steps = torch.tensor([opt.state[embs[k].weight]["step"] for k, opt in enumerate(opts)])
    assert torch.equal(table.opt_step[rows], steps.long())


def test_duplicate_ids_and_repeated_forwards_accumulate():
    table = CollisionlessEmbedding(2, optimizer="sgd", lr=0.5)
    rows = table.lookup_rows(torch.tensor([5, 7]), insert=True)
    w0 = table.weight[rows].clone()
    c1 = torch.tensor([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]])
    (table(torch.tensor([5, 5, 7])) * c1).sum().backward()
    (table(torch.tensor([[7]])) * 10).sum().backward()  # a second forward before step
    table.step()
    expected = w0 - 0.5 * torch.stack([c1[0] + c1[1], c1[2] + 10])
    torch.testing.assert_close(table.weight[rows], expected)
    table.step()  # nothing pending: no change
    torch.testing.assert_close(table.weight[rows], expected)


def test_not_admitted_ids_get_zeros_and_no_update():
    table = CollisionlessEmbedding(3, admit_after=2, optimizer="sgd", lr=1.0)
    out = table(torch.tensor([4]))
    assert torch.equal(out, torch.zeros(1, 3))
    out.sum().backward()
    table.step()
    assert len(table) == 0
    assert torch.equal(table.weight, torch.zeros_like(table.weight))


def test_zero_grad_drops_pending_and_table_is_not_a_parameter():
    model = nn.Sequential()
    model.add_module("emb", CollisionlessEmbedding(3, optimizer="sgd"))
    model.add_module("head", nn.Linear(3, 1))
    assert [n for n, _ in model.named_parameters()] == ["head.weight", "head.bias"]
    model.emb(torch.tensor([1, 2]))
    before = model.emb.weight.clone()
    model.head(model.emb(torch.tensor([1, 2]))).sum().backward()
    sparse_zero_grad(model)
    sparse_step(model)
    assert torch.equal(model.emb.weight, before)
    model.head(model.emb(torch.tensor([1, 2]))).sum().backward()
    sparse_step(model)
    assert not torch.equal(model.emb.weight, before)
    assert not model.emb.has_pending_grad


def test_accumulate_grad_low_level_path_matches_autograd():
    a = CollisionlessEmbedding(3, optimizer="adagrad", seed=4)
    b = CollisionlessEmbedding(3, optimizer="adagrad", seed=4)
    ids = torch.tensor([3, 9, 3])
    coeff = torch.randn(3, 3, generator=torch.Generator().manual_seed(0))
    (a(ids) * coeff).sum().backward()
    a.step()
    rows = b.lookup_rows(ids, insert=True)
    b.accumulate_grad(torch.cat((rows, torch.tensor([-1]))), torch.cat((coeff, coeff[:1])))
    b.step()
    assert torch.equal(a.weight, b.weight)


def test_grad_of_rows_evicted_before_step_is_dropped():
    table = CollisionlessEmbedding(2, ttl=1, optimizer="sgd", lr=1.0)
    table(torch.tensor([1]), now=0).sum().backward()
    table.expire(now=5)
    new_row = table.lookup_rows(torch.tensor([2]), insert=True, now=5)
    fresh = table.weight[new_row].clone()
    table.step()  # the pending gradient belonged to evicted id 1, whose row id 2 now owns
    assert torch.equal(table.weight[new_row], fresh)


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"dim": 0}, "dim"),
        ({"dim": 2.5}, "dim"),
        ({"dim": 4, "admit_after": 0}, "admit_after"),
        ({"dim": 4, "ttl": -1}, "ttl"),
        ({"dim": 4, "optimizer": "rmsprop"}, "optimizer"),
        ({"dim": 4, "lr": 0}, "lr"),
        ({"dim": 4, "eps": -1e-3}, "eps"),
        ({"dim": 4, "betas": (0.9, 1.0)}, "betas"),
        ({"dim": 4, "init_std": -1}, "init_std"),
        ({"dim": 4, "initial_capacity": 0}, "initial_capacity"),
        ({"dim": 4, "slots_per_bucket": 3}, "slots_per_bucket"),
        ({"dim": 4, "max_load": 1.0}, "max_load"),
    ],
)
def test_bad_constructor_arguments_name_the_argument(kwargs, name):
    with pytest.raises(ValueError, match=rf"^{name}: expected .*got"):
        CollisionlessEmbedding(**kwargs)


def test_bad_ids_raise_clear_errors():
    table = CollisionlessEmbedding(3)
    with pytest.raises(ValueError, match="ids: expected non-negative ids, got min -2"):
        table(torch.tensor([1, -2]))
    with pytest.raises(TypeError, match=r"ids: expected an integer tensor.*float32"):
        table(torch.tensor([1.0]))
    with pytest.raises(TypeError, match=r"ids: expected an integer tensor.*bool"):
        table.lookup_rows(torch.tensor([True]), insert=False)
    with pytest.raises(TypeError, match=r"ids: expected an integer torch\.Tensor, got list"):
        table([1, 2])
    with pytest.raises(ValueError, match="rows: expected values in"):
        table.gather_rows(torch.tensor([table.num_rows]))
    with pytest.raises(ValueError, match=r"grad: expected shape \[2, 3\]"):
        table.accumulate_grad(torch.tensor([0, 1]), torch.zeros(2, 4))
    with pytest.raises(ValueError, match="now: expected a finite number"):
        table(torch.tensor([1]), now=float("nan"))
    assert table(torch.tensor([1], dtype=torch.int32)).shape == (1, 3)  # any int dtype works
