"""The shipped checkpoint: verified file, strict load, real accuracy, tampering refused."""

from __future__ import annotations

import pytest
import torch

import subspace_ssm.plugin  # noqa: F401
from subspace_core.io import ChecksumError, sha256_file
from subspace_core.zoo import (
    count_parameters,
    create_model,
    get_model_entry,
    list_models,
    load_state_dict,
    resolve_checkpoint,
)
from subspace_ssm.pretrained import SHIPPED

MODEL_ID = "ssm/s4d_tiny.sfmnist"
pytestmark = pytest.mark.skipif(not SHIPPED, reason="no checkpoint shipped")


def test_shipped_checkpoint_matches_its_cfg():
    assert MODEL_ID in list_models("ssm/*", pretrained=True)
    entry = get_model_entry(MODEL_ID)
    cfg = entry.pretrained_cfg
    assert entry.protocols == ("sfmnist_test", "ptd_robustness")
    resolved = resolve_checkpoint(cfg, progress=False)
    assert resolved.source == "package file"
    assert sha256_file(resolved.path) == cfg.sha256
    assert resolved.path.stat().st_size == cfg.num_bytes <= 5 * 1024 * 1024
    state = load_state_dict(resolved.path, sha256=cfg.sha256)
    assert count_parameters(state) == cfg.num_params


def test_shipped_model_classifies_test_images():
    from subspace_ssm.data import load_sfmnist
    from subspace_ssm.protocols import classify

    model = create_model(MODEL_ID, pretrained=True, progress=False)
    data = load_sfmnist("test", n=300, seed=1)
    acc = classify(model, data)["top1"]
    claimed = get_model_entry(MODEL_ID).pretrained_cfg.metrics["sfmnist_test"]["top1"]
    assert acc > claimed - 6.0, (acc, claimed)  # 300 images: a few points of sampling noise


def test_tampered_checkpoint_is_refused(tmp_path):
    cfg = get_model_entry(MODEL_ID).pretrained_cfg
    data = bytearray(resolve_checkpoint(cfg, progress=False).path.read_bytes())
    data[-1] ^= 0xFF
    bad = tmp_path / cfg.file
    bad.write_bytes(bytes(data))
    with pytest.raises(ChecksumError):
        create_model(MODEL_ID, checkpoint_path=bad, sha256=cfg.sha256)
    assert torch.is_tensor(load_state_dict(resolve_checkpoint(cfg, progress=False).path,
                                           sha256=cfg.sha256)["head.weight"])
