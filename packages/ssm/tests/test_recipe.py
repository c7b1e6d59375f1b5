"""The S4D sFMNIST recipe: runs, writes a verified checkpoint, resumes bit-identically."""

from __future__ import annotations

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
