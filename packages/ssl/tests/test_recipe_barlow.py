"""The Barlow Twins recipe: quick run, snapshots, and bit-identical resume after a crash."""

from __future__ import annotations

import pytest
import torch

from subspace_core.io import sha256_file
from subspace_core.zoo import load_state_dict
from subspace_ssl.encoders import build_encoder
from subspace_ssl.recipes import barlow


def _weights(path):
    return load_state_dict(path, sha256=sha256_file(path))


SMALL = {"train_subset": 256, "batch_size": 32, "projector_dim": 32, "save_every": 3}


@pytest.mark.parametrize("model_id", sorted(barlow.PRESETS))
def test_quick_run_writes_encoder_and_epoch_snapshots(tmp_path, model_id):
    path = barlow.train(tmp_path, model_id=model_id, quick=True, progress=False, epochs=2,
                        **SMALL)
    encoder = build_encoder("tiny")
    encoder.load_state_dict(_weights(path))
    assert encoder(torch.randn(2, 1, 28, 28)).shape == (2, 256)
    snaps = sorted(p.name for p in (tmp_path / "snapshots").glob("*.safetensors"))
    assert snaps == ["epoch_001.safetensors", "epoch_002.safetensors"]
    final = _weights(path)
    last = _weights(tmp_path / "snapshots" / "epoch_002.safetensors")
    assert all(torch.equal(final[k], last[k]) for k in final)


def test_interrupted_run_resumes_to_the_same_weights(tmp_path, monkeypatch):
    reference = barlow.train(tmp_path / "a", model_id="ssl/mixed_barlow_tiny.fmnist",
                             quick=True, progress=False, **SMALL)
    real_save = barlow.save_training_state
    calls = {"n": 0}

    def crash_after_first_save(*args, **kwargs):
        real_save(*args, **kwargs)
        calls["n"] += 1
        if calls["n"] == 1:
            raise KeyboardInterrupt("simulated crash")

    monkeypatch.setattr(barlow, "save_training_state", crash_after_first_save)
    with pytest.raises(KeyboardInterrupt):
        barlow.train(tmp_path / "b", model_id="ssl/mixed_barlow_tiny.fmnist", quick=True,
                     progress=False, **SMALL)
    resumed = barlow.train(tmp_path / "b", model_id="ssl/mixed_barlow_tiny.fmnist",
                           quick=True, progress=False, **SMALL)
    a, b = _weights(reference), _weights(resumed)
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_unknown_model_id_is_refused(tmp_path):
    with pytest.raises(ValueError, match="model_id"):
        barlow.train(tmp_path, model_id="ssl/nope.fmnist")
