"""Optimizer grouping, the classifier (masks, learning a toy task) and the zoo entries."""

from __future__ import annotations

import pytest
import torch

from subspace_core.zoo import create_model, get_model_entry, list_models
from subspace_ssm import S4D, Mamba, SSMClassifier, ssm_param_groups
from subspace_ssm.optim import is_ssm_param
from subspace_ssm.pretrained import SHIPPED


def test_ssm_param_groups_separate_ssm_parameters():
    model = SSMClassifier(3, kind="s4d", d_model=8, n_layers=2, d_state=8)
    groups = ssm_param_groups(model, lr_ssm=1e-3, weight_decay=0.1)
    by_name = {g["name"]: g for g in groups}
    assert by_name["default"]["weight_decay"] == 0.1
    ssm = by_name["ssm"]
    assert ssm["lr"] == 1e-3 and ssm["weight_decay"] == 0.0
    ssm_ids = {id(p) for p in ssm["params"]}
    layer = model.layers[0].ssm
    for p in (layer.log_dt, layer.log_A_real, layer.A_imag, layer.B):
        assert id(p) in ssm_ids
    assert id(layer.C) not in ssm_ids and id(model.head.weight) not in ssm_ids
    # every trainable parameter exactly once
    listed = [id(p) for g in groups for p in g["params"]]
    assert sorted(listed) == sorted(id(p) for p in model.parameters())
    torch.optim.AdamW(groups, lr=1e-2)  # accepted by torch
    with pytest.raises(ValueError, match="lr_ssm: expected"):
        ssm_param_groups(model, lr_ssm=-1.0)


def test_layer_lr_marks_and_mamba_marks():
    layer = S4D(4, 8, lr=5e-4)
    assert layer.ssm.log_dt._optim == {"weight_decay": 0.0, "lr": 5e-4}
    groups = ssm_param_groups(layer)
    assert [g["lr"] for g in groups if g["name"] == "ssm"] == [5e-4]
    m = Mamba(8, d_state=4)
    assert is_ssm_param(m.A_log) and is_ssm_param(m.D) and is_ssm_param(m.dt_proj.bias)
    assert not is_ssm_param(m.in_proj.weight)


@pytest.mark.parametrize("kind", ["s4d", "s4", "s5", "mamba"])
def test_classifier_masks_ignore_padding(kind):
    torch.manual_seed(0)
    model = SSMClassifier(4, kind=kind, encoder="embedding", vocab_size=11, d_model=8,
                          n_layers=2, d_state=8).eval()
    x = torch.randint(1, 11, (2, 10))
    mask = torch.ones(2, 10, dtype=torch.bool)
    mask[1, 6:] = False
    padded = x.clone()
    padded[1, 6:] = 0
    logits = model(padded, mask=mask)
    assert logits.shape == (2, 4)
    torch.testing.assert_close(logits[1], model(x[1:, :6])[0], rtol=1e-4, atol=1e-4)
    padded[1, 6:] = 7  # different padding tokens, same answer
    torch.testing.assert_close(model(padded, mask=mask), logits, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("kind", ["s4d", pytest.param("mamba", marks=pytest.mark.slow)])
def test_tiny_model_learns_to_remember_the_first_token(kind):
    # label = sign of the first step, then 15 steps of noise: needs memory across the sequence
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)

    def batch(n):
        x = torch.randn(n, 16, 1, generator=g)
        return x, (x[:, 0, 0] > 0).long()

    model = SSMClassifier(2, kind=kind, d_model=16, n_layers=1, d_state=8)
    opt = torch.optim.AdamW(ssm_param_groups(model, lr_ssm=1e-2), lr=2e-2)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny tensors: threads only add contention on a shared box
    try:
        for _ in range(200):  # ~2.5 s; the loss drops between steps 50 and 150
            x, y = batch(64)
            loss = torch.nn.functional.cross_entropy(model(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
    finally:
        torch.set_num_threads(threads)
    x, y = batch(512)
    with torch.no_grad():
        acc = (model(x).argmax(-1) == y).float().mean().item()
    assert acc > 0.9, acc


def test_classifier_bad_arguments():
    with pytest.raises(ValueError, match="kind: expected one of"):
        SSMClassifier(2, kind="lstm")
    with pytest.raises(ValueError, match="vocab_size"):
        SSMClassifier(2, encoder="embedding")


def test_zoo_entries_build_and_run():
    ids = list_models("ssm/*", package="ssm")
    assert {"ssm/s4d_small.sfmnist", "ssm/s5_ptd_small.listops", "ssm/mamba_small.listops",
            "ssm/s4_small.sfmnist", "ssm/mhs_small.sfmnist", "ssm/s4d_tiny.sfmnist"} <= set(ids)
    for model_id in ids:
        entry = get_model_entry(model_id)
        assert entry.protocols[0] in ("sfmnist_test", "sfmnist14_test", "listops_test")
        assert entry.has_pretrained == (model_id in SHIPPED)
        assert entry.has_pretrained or "No weights shipped yet" in entry.description
    m = create_model("ssm/s4d_small.sfmnist", n_layers=1)
    assert m(torch.randn(2, 20, 1)).shape == (2, 10)
    m = create_model("ssm/mamba_small.listops", n_layers=1)
    assert m(torch.randint(0, 18, (2, 12))).shape == (2, 10)
    m = create_model("ssm/mhs_small.sfmnist", n_layers=1, d_model=12, d_state=4)
    assert m(torch.randn(2, 784, 1)).shape == (2, 10)
    for model_id, shipped in SHIPPED.items():
        model = create_model(model_id)
        assert sum(p.numel() for p in model.parameters()) == shipped["num_params"]
    assert sum(p.numel() for p in create_model("ssm/s5_ptd_small.sfmnist").parameters()) * 4 \
        <= 5 * 1024 * 1024


def test_plugin_registers_the_selective_scan_benchmark():
    import subspace_ssm.plugin  # noqa: F401
    from subspace_core.bench.registry import get_kernel_benchmark

    assert get_kernel_benchmark("selective_scan").op == "selective_scan"
