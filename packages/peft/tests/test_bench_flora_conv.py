"""peft/flora_conv measures what it claims: every method, analytic parameter counts, frozen
base weights, FLoRA's identity at initialisation (tiny nets, tiny data)."""

import json
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from torch import nn

from subspace_core.bench import BenchContext
from subspace_peft.benchmarks.flora_conv import (
    CASE,
    FLORA_CONV_BENCH,
    QUICK,
    ConvNet,
    FLoRAConvConfig,
    adapt,
    analytic_trainable,
    build_method,
    pretrain,
    run_flora_conv,
    with_new_head,
)

# Two convs (1 -> 4 -> 6 channels), a few steps on small subsets.
TINY = replace(QUICK, channels=(4, 6), pretrain_steps=3, steps=3, batch_size=8,
               pretrain_size=64, train_size=64, val_size=32, test_size=48,
               lrs_flora=(1e-3, 1e-2), lora_ranks=(2, 3), flora_ranks=(2, 3))


def _random_data(n: int = 48, seed: int = 0) -> dict[str, torch.Tensor]:
    """Random images in the layout of ``load_flora_conv_data`` (no dataset read)."""
    g = torch.Generator().manual_seed(seed)
    out = {}
    for part in ("pre", "pre_test", "train", "val", "test"):
        out[f"{part}_x"] = torch.rand(n, 1, 28, 28, generator=g)
        out[f"{part}_y"] = torch.randint(0, 10, (n,), generator=g)
    return out


def _hand_count(method: str, rank: int | None = None) -> int:
    """TINY's trainable scalars written out (convs 1->4 and 4->6, 3x3; head 6 -> 10)."""
    head = 6 * 10 + 10
    if method == "head":
        return head
    if method == "full":
        return (4 * 1 * 9 + 4) + (6 * 4 * 9 + 6) + head
    if method == "lora":  # r (out + in k^2) per conv
        return rank * (4 + 1 * 9) + rank * (6 + 4 * 9) + head
    # FLoRA: core [min(r,out), min(r,in), 3, 3] + factors out*r0 + in*r1 + 3*3 + 3*3
    cores = [(min(rank, 4), 1), (min(rank, 6), min(rank, 4))]
    total = head
    for (r0, r1), (out, inp) in zip(cores, [(4, 1), (6, 4)], strict=True):
        total += r0 * r1 * 9 + out * r0 + inp * r1 + 9 + 9
    return total


def test_run_reports_every_method_with_analytic_parameter_counts(tmp_path: Path):
    ctx = BenchContext(quick=True, device=torch.device("cpu"), out_dir=tmp_path)
    rows = run_flora_conv(ctx, TINY)
    labels = {"head only (linear probe)": ("head", None), "full fine-tuning": ("full", None),
              "LoRA (HF peft)": ("lora", 2), "LoRA r=3 (HF peft)": ("lora", 3),
              "FLoRA": ("flora", 2), "FLoRA r=3": ("flora", 3)}
    assert {r.method for r in rows} == set(labels)
    assert {r.case for r in rows} == {CASE}
    # the runner needs the registered method and baselines among the rows
    assert {FLORA_CONV_BENCH.method, *FLORA_CONV_BENCH.baselines} <= set(labels)
    table = {(r.method, r.metric): r for r in rows}
    assert len(table) == len(rows) == 3 * len(labels)
    for label, (method, rank) in labels.items():
        assert table[label, "trainable_params"].value == _hand_count(method, rank)
        assert 0.0 <= table[label, "test_accuracy"].value <= 100.0
        assert table[label, "train_seconds"].value > 0
        assert not table[label, "trainable_params"].higher_is_better
    summary = json.loads((tmp_path / "peft_flora_conv.json").read_text())
    for label, run in summary["runs"].items():
        sweep = run["sweep"]
        assert len(sweep) == len(TINY.lrs(labels[label][0]))
        if len(sweep) > 1:  # the kept rate is the best on validation (first on ties)
            vals = [v["val_accuracy"] for v in sweep.values()]
            assert float(run["lr"]) == float(list(sweep)[vals.index(max(vals))])
        assert run["test_accuracy"] * 100 == pytest.approx(table[label, "test_accuracy"].value)


@pytest.mark.parametrize(("method", "rank"), [("head", None), ("full", None), ("lora", 3),
                                              ("flora", 2), ("flora", 8)])
def test_analytic_count_matches_the_built_model(method, rank):
    net = ConvNet((4, 6))
    model = build_method(method, net, TINY, rank)
    measured = sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert measured == analytic_trainable(method, (4, 6), rank) == _hand_count(method, rank)


def test_flora_kernel_rank_count():
    # kernel_rank=1: spatial core modes 1 -> core r0*r1, factors out*r0 + in*r1 + 3 + 3
    cfg = replace(TINY, kernel_rank=1)
    model = build_method("flora", ConvNet((4, 6)), cfg, 2)
    measured = sum(p.numel() for p in model.parameters() if p.requires_grad)
    expected = 70 + (2 * 1 + 4 * 2 + 1 * 1 + 6) + (2 * 2 + 6 * 2 + 4 * 2 + 6)
    assert measured == analytic_trainable("flora", (4, 6), 2, kernel_rank=1) == expected


@pytest.mark.parametrize(("method", "rank"), [("head", None), ("lora", 2), ("flora", 2)])
def test_frozen_conv_weights_are_unchanged_by_training(method, rank):
    data = _random_data()
    net, _ = pretrain(TINY, data)
    before = {n: p.detach().clone() for n, p in net.named_parameters()}
    res = adapt(method, net, data, replace(TINY, steps=4), lr=1e-2, rank=rank)
    model = res.model
    modules = dict(model.named_modules())
    for name in ("conv1", "conv2"):
        # the trained model's conv module: plain (head only), peft's or FLoRA's wrapper
        conv = next(m for n, m in modules.items() if n.endswith(name))
        base = getattr(conv, "base_layer", conv)
        assert isinstance(base, nn.Conv2d)
        assert torch.equal(base.weight, before[f"{name}.weight"])
        assert torch.equal(base.bias, before[f"{name}.bias"])
    # ...while the trained head did move (so a no-op training could not pass). The net's
    # only linear is the head; peft keeps an untouched copy under "original_module".
    head = [m for n, m in modules.items()
            if isinstance(m, nn.Linear) and "original_module" not in n]
    assert len(head) == 1
    assert not torch.equal(head[0].weight, with_new_head(net, TINY.seed + 1).head.weight)
    # the pretrained net itself was not touched
    for n, p in net.named_parameters():
        assert torch.equal(p, before[n])


def test_full_finetuning_moves_the_conv_weights():
    data = _random_data()
    net, _ = pretrain(TINY, data)
    res = adapt("full", net, data, TINY, lr=1e-2)
    assert not torch.equal(res.model.conv2.weight, net.conv2.weight)


@pytest.mark.parametrize("method", ["flora", "lora", "head", "full"])
def test_every_method_starts_at_the_pretrained_net_with_the_new_head(method):
    torch.manual_seed(0)
    net = ConvNet((4, 6))
    # make the pretrained weights non-trivial (not the init) so that a bug cannot hide
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.1 * torch.randn_like(p))
    reference = with_new_head(net, TINY.seed + 1)
    model = build_method(method, net, TINY, rank=2 if method in ("lora", "flora") else None)
    x = torch.rand(5, 1, 28, 28)
    with torch.no_grad():
        expected = reference(x)
        torch.testing.assert_close(model(x), expected, rtol=0, atol=1e-6)
        # the new head differs from the pretrained one: the logits do change
        assert not torch.allclose(net(x), expected)


@pytest.mark.parametrize("method", ["lora", "flora"])
def test_adapter_init_is_seeded_and_leaves_the_rng_alone(method):
    net = ConvNet((4, 6))
    torch.manual_seed(1)
    first = build_method(method, net, TINY, 2)
    torch.manual_seed(2)
    state = torch.get_rng_state()
    second = build_method(method, net, TINY, 2)
    assert torch.equal(torch.get_rng_state(), state)
    a, b = first.state_dict(), second.state_dict()
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    third = build_method(method, net, replace(TINY, seed=7), 2)
    key = next(k for k in a if "lora_A" in k or "factor_0" in k)
    assert not torch.equal(a[key], third.state_dict()[key])


def test_flora_initial_delta_is_exactly_zero():
    model = build_method("flora", ConvNet((4, 6)), TINY, 2)
    for delta in model.delta_weights().values():
        assert torch.count_nonzero(delta) == 0


def test_with_new_head_is_seeded_and_leaves_the_rng_alone():
    net = ConvNet((4, 6))
    torch.manual_seed(123)
    state = torch.get_rng_state()
    a, b = with_new_head(net, 5), with_new_head(net, 5)
    assert torch.equal(torch.get_rng_state(), state)
    assert torch.equal(a.head.weight, b.head.weight)
    assert not torch.equal(a.head.weight, with_new_head(net, 6).head.weight)


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"channels": ()}, "channels"),
    ({"channels": (4, 0)}, "channels"),
    ({"steps": 0}, "steps"),
    ({"batch_size": 2.5}, "batch_size"),
    ({"lora_ranks": (0,)}, "lora_ranks"),
    ({"flora_ranks": (2, 2)}, "distinct"),
    ({"lrs_flora": ()}, "lrs_flora"),
    ({"lrs_full": (-1e-3,)}, "lrs_full"),
    ({"lrs_lora": (float("inf"),)}, "lrs_lora"),
    ({"kernel_rank": 0}, "kernel_rank"),
    ({"flora_scale": float("nan")}, "flora_scale"),
    ({"pools": 5}, "pools"),
    ({"test_size": 0}, "test_size"),
])
def test_bad_config_values_raise(kwargs, match):
    with pytest.raises(ValueError, match=match):
        FLoRAConvConfig(**kwargs)


def test_bad_arguments_raise():
    net = ConvNet((4, 6))
    with pytest.raises(ValueError, match="method"):
        build_method("dora", net, TINY, 2)
    with pytest.raises(ValueError, match="rank"):
        build_method("flora", net, TINY, None)
    with pytest.raises(ValueError, match="lr"):
        adapt("head", net, _random_data(8), TINY, lr=0.0)
    with pytest.raises(TypeError, match="FLoRAConvConfig"):
        run_flora_conv(BenchContext(True, torch.device("cpu"), Path(".")), {"steps": 1})
