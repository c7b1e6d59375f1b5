"""The S4D sFMNIST recipe: runs, writes a verified checkpoint, resumes bit-identically."""

from __future__ import annotations

import itertools
import shutil

import pytest
import torch

from subspace_core.io import sha256_file
from subspace_core.train import TRAINING_STATE
from subspace_core.zoo import load_state_dict
from subspace_ssm.recipes.s4d_sfmnist import CHECKPOINT_FILE, lr_factor, train

TINY = dict(train_subset=64, batch_size=16, save_every=2, warmup_steps=2)  # 4 steps


def test_lr_schedule():
    assert lr_factor(0, 100, 10) == pytest.approx(0.1)
    assert lr_factor(9, 100, 10) == pytest.approx(1.0)
    assert lr_factor(10, 100, 10) == pytest.approx(1.0)
    assert lr_factor(55, 100, 10) == pytest.approx(0.5)
    assert lr_factor(100, 100, 10) == pytest.approx(0.0, abs=1e-12)


def test_recipe_trains_and_resumes_bit_identically(tmp_path):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        try:
            path = train(tmp_path / "a", quick=True, progress=False, **TINY)
        except Exception as exc:  # data not reachable on this machine
            if "fashion_mnist" in str(exc):
                pytest.skip(str(exc))
            raise
        assert path.name == CHECKPOINT_FILE
        digest = (path.parent / (path.name + ".sha256")).read_text().split()[0]
        assert sha256_file(path) == digest
        state = load_state_dict(path, sha256=digest)
        assert state["head.weight"].shape == (10, 32)
        # an interrupted run: only the state saved at step 2 exists; it finishes the same way
        (tmp_path / "b").mkdir()
        shutil.copy(tmp_path / "a" / TRAINING_STATE, tmp_path / "b" / TRAINING_STATE)
        resumed = train(tmp_path / "b", quick=True, progress=False, **TINY)
        assert sha256_file(resumed) == digest
    finally:
        torch.set_num_threads(threads)


def test_listops_batches_are_length_buckets_covering_every_example():
    from subspace_ssm.data.listops import generate_listops
    from subspace_ssm.recipes.classifier import RecipeConfig, _batch, _batch_orders

    cfg = RecipeConfig(arch="s4d_tiny", task="listops", epochs=2, batch_size=4, max_length=700)
    data = generate_listops(16, seed=3, min_length=100, max_length=700)
    orders = _batch_orders(cfg, data)
    lengths = data.mask.sum(1)
    for epoch in orders:
        assert sorted(torch.cat(epoch).tolist()) == list(range(16))
        for idx in epoch:  # a bucket: no example shorter than any example of a lower bucket
            x, _y, mask = _batch(cfg, data, idx)
            assert x.shape[1] == int(lengths[idx].max()) and mask.shape == x.shape
            assert torch.equal(mask.sum(1), lengths[idx])
        spans = sorted((int(lengths[i].min()), int(lengths[i].max())) for i in epoch)
        assert all(a[1] <= b[0] for a, b in itertools.pairwise(spans))
    assert [t.tolist() for t in orders[0]] != [t.tolist() for t in orders[1]]


def test_listops_recipe_writes_a_loadable_checkpoint(tmp_path):
    from subspace_ssm.recipes.classifier import train as train_any

    path = train_any(tmp_path, model_id="ssm/s4d_tiny.listops", quick=True, progress=False,
                     n_train=8, batch_size=4)
    state = load_state_dict(path, sha256=(path.parent / (path.name + ".sha256")).read_text().split()[0])
    assert state["head.weight"].shape == (10, 32)
    with pytest.raises(ValueError, match="model_id"):
        train_any(tmp_path, model_id="ssm/nope.listops")


def test_mamba_sfmnist14_recipe_runs_on_pooled_sequences(tmp_path):
    from subspace_ssm.recipes.classifier import train as train_any

    try:
        path = train_any(tmp_path, model_id="ssm/mamba_tiny.sfmnist14", quick=True,
                         progress=False, train_subset=32, batch_size=16)
    except Exception as exc:  # data not reachable on this machine
        if "fashion_mnist" in str(exc):
            pytest.skip(str(exc))
        raise
    state = load_state_dict(path, sha256=(path.parent / (path.name + ".sha256")).read_text().split()[0])
    assert state["head.weight"].shape == (10, 32)
