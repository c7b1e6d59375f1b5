"""Scenarios: Permuted-MNIST, Split-Fashion-MNIST and the power-law recurrence schedule."""

from __future__ import annotations

from collections import Counter

import pytest
import torch

from subspace_continual.data import permuted_mnist, power_law_schedule, split_fashion_mnist


@pytest.fixture(scope="module")
def pmnist():
    return permuted_mnist(3, seed=0, train_per_class=30)


def test_permuted_mnist_tasks(pmnist):
    assert pmnist.setting == "domain" and pmnist.head_sizes == (10,)
    t0, t1 = pmnist.tasks[0], pmnist.tasks[1]
    assert t0.x_train.shape == (300, 784) and t0.x_test.shape == (1000, 784)
    assert t0.x_train.dtype == torch.float32
    assert Counter(t0.y_train.tolist()) == dict.fromkeys(range(10), 30)
    assert torch.equal(t0.y_train, t1.y_train) and torch.equal(t0.y_test, t1.y_test)
    # every task is a fixed pixel permutation of the same images
    perm0 = torch.randperm(784, generator=torch.Generator().manual_seed(0))
    perm1 = torch.randperm(784, generator=torch.Generator().manual_seed(1))
    base = torch.empty_like(t0.x_test)
    base[:, perm0] = t0.x_test
    torch.testing.assert_close(t1.x_test, base[:, perm1])
    assert not torch.equal(t0.x_test, t1.x_test)
    # normalised pixels: the background value is -mean/std
    assert float(t0.x_test.min()) == pytest.approx(-0.1307 / 0.3081, abs=1e-5)
    again = permuted_mnist(3, seed=0, train_per_class=30)
    assert torch.equal(again.tasks[2].x_train, pmnist.tasks[2].x_train)


@pytest.mark.parametrize("setting", ["task", "class"])
def test_split_fashion_mnist(setting):
    s = split_fashion_mnist(setting, train_per_class=20, test_per_class=10)
    assert s.num_tasks == 5
    assert [t.classes for t in s.tasks] == [(0, 1), (2, 3), (4, 5), (6, 7), (8, 9)]
    for t in s.tasks:
        assert t.x_train.shape == (40, 784) and t.x_test.shape == (20, 784)
        labels = set(t.y_train.tolist()) | set(t.y_test.tolist())
        assert labels == ({0, 1} if setting == "task" else set(t.classes))
    assert s.head_sizes == ((2,) * 5 if setting == "task" else (10,))
    order = [9, 8, 7, 6, 5, 4, 3, 2, 1, 0]
    assert split_fashion_mnist("class", class_order=order, train_per_class=5,
                               test_per_class=5).tasks[0].classes == (9, 8)


def test_split_fashion_mnist_errors():
    with pytest.raises(ValueError, match="setting"):
        split_fashion_mnist("domain")
    with pytest.raises(ValueError, match="num_tasks"):
        split_fashion_mnist(num_tasks=3)
    with pytest.raises(ValueError, match="class_order"):
        split_fashion_mnist(class_order=[0] * 10)


def test_power_law_schedule():
    s = power_law_schedule(6, 3000, alpha=1.0, new_task_prob=0.05, seed=3)
    assert s == power_law_schedule(6, 3000, alpha=1.0, new_task_prob=0.05, seed=3)
    assert len(s) == 3000 and s[0] == 0 and set(s) == set(range(6))
    # tasks are introduced in id order
    first = [s.index(k) for k in range(6)]
    assert first == sorted(first)
    # recurrence gaps: a power law makes short gaps far likelier than long ones
    gaps = []
    last: dict[int, int] = {}
    for step, k in enumerate(s):
        if k in last:
            gaps.append(step - last[k])
        last[k] = step
    counts = Counter(gaps)
    assert counts[1] > counts[2] > counts[4] > counts[8]
    # alpha = 0: uniform over the seen tasks
    u = power_law_schedule(3, 6000, alpha=0.0, new_task_prob=1.0, seed=0)
    assert u[:3] == [0, 1, 2]
    freq = Counter(u[3:])
    assert all(abs(freq[k] / 5997 - 1 / 3) < 0.03 for k in range(3))
    with pytest.raises(ValueError, match="alpha"):
        power_law_schedule(3, 10, alpha=-1.0)
    with pytest.raises(ValueError, match="new_task_prob"):
        power_law_schedule(3, 10, new_task_prob=2.0)


def test_scenario_images_invert_the_normalisation_exactly(pmnist):
    from subspace_continual.data import FMNIST_MEAN, FMNIST_STD, _normalise, synthetic_subspaces

    s = split_fashion_mnist("class", train_per_class=20, test_per_class=10)
    assert s.image_shape == (28, 28) and s.pixel_norm == (FMNIST_MEAN, FMNIST_STD)
    x = s.tasks[1].x_test
    images = s.images(x)
    assert images.dtype == torch.uint8 and images.shape == (len(x), 28, 28)
    assert torch.equal(_normalise(images, FMNIST_MEAN, FMNIST_STD), x)  # bit-exact round trip
    assert torch.equal(_normalise(pmnist.images(pmnist.tasks[0].x_train), *pmnist.pixel_norm),
                       pmnist.tasks[0].x_train)
    with pytest.raises(ValueError, match="x: expected inputs"):
        s.images(x[:, :100])
    with pytest.raises(ValueError, match="not images"):
        synthetic_subspaces().images(torch.zeros(2, 40))
