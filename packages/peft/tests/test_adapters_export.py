"""Export of SVFit / CorDA adapters as Hugging Face peft LoRA folders: the exported adapter,
loaded by ``peft.PeftModel.from_pretrained`` on the ORIGINAL base model, gives the trained
adapted model's outputs."""

import json

import pytest
import torch
from torch import nn

from subspace_peft.adapters import (
    CorDAConfig,
    CorDAModel,
    SVFitConfig,
    SVFitModel,
    export_peft_lora,
)
from subspace_peft.finetune.methods import ENCODER_LINEARS

transformers = pytest.importorskip("transformers")
peft = pytest.importorskip("peft")

ATOL = 1e-5
GEN = torch.Generator().manual_seed(5)
IDS = [torch.randint(0, 100, (2, 10), generator=GEN) for _ in range(3)]



def mlp(seed: int = 0) -> nn.Sequential:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(12, 20), nn.GELU(), nn.Linear(20, 7), nn.Tanh(),
                         nn.Linear(7, 5))


def train_bert(adapted, steps: int = 4, lr: float = 0.03) -> None:
    opt = torch.optim.Adam([p for p in adapted.parameters() if p.requires_grad], lr=lr)
    for i in range(steps):
        opt.zero_grad()
        out = adapted(IDS[i % 2])
        (out.last_hidden_state.square().mean() - out.pooler_output.mean()).backward()
        opt.step()


def build(method: str, bert: nn.Module):
    saved = (r"pooler\.dense",)
    if method == "svfit":
        return SVFitModel(bert, SVFitConfig(target_modules=ENCODER_LINEARS, energy=0.9,
                                            modules_to_save=saved))
    cfg = CorDAConfig(target_modules=ENCODER_LINEARS, rank=3, mode=method.split("_")[1],
                      alpha=6.0, modules_to_save=saved)
    return CorDAModel.calibrate(bert, cfg, lambda: [bert(b) for b in IDS])


@pytest.mark.parametrize("method", ["svfit", "corda_kpm", "corda_ipm"])
def test_exported_adapter_loads_in_peft_with_the_same_outputs(method, tmp_path, tiny_bert):
    bert = tiny_bert()
    probe = IDS[2]
    original = bert(probe)
    adapted = build(method, bert)
    train_bert(adapted)
    trained = adapted(probe)
    # the optimisation really changed the model (else the comparison would be vacuous)
    assert (trained.last_hidden_state - original.last_hidden_state).abs().max() > 1e-3
    assert (trained.pooler_output - original.pooler_output).abs().max() > 1e-3
    # ΔW = B A against the ORIGINAL weight: CorDA's pair is of rank 2r
    factors = adapted.lora_factors()
    for name, layer in adapted.adapter_layers().items():
        B, A = factors[name]
        expect = layer.rank if method == "svfit" else 2 * layer.rank
        assert B.shape == (layer.out_features, expect) and A.shape == (expect, layer.in_features)
        torch.testing.assert_close(layer.original_weight() + B @ A, layer.merged_weight(),
                                   atol=1e-6, rtol=1e-6)

    folder = export_peft_lora(adapted, tmp_path / "peft_adapter")
    assert (folder / "adapter_config.json").is_file()
    assert (folder / "adapter_model.safetensors").is_file()
    config = json.loads((folder / "adapter_config.json").read_text())
    assert config["peft_type"] == "LORA" and config["lora_dropout"] == 0.0
    # the exporter did not touch the adapted model
    torch.testing.assert_close(adapted(probe).last_hidden_state, trained.last_hidden_state)

    loaded = peft.PeftModel.from_pretrained(tiny_bert(), str(folder)).eval()
    got = loaded(probe)
    torch.testing.assert_close(got.last_hidden_state, trained.last_hidden_state, atol=ATOL,
                               rtol=0)
    torch.testing.assert_close(got.pooler_output, trained.pooler_output, atol=ATOL, rtol=0)
    # peft's own merge reproduces our merge
    merged = loaded.merge_and_unload()
    name = "encoder.layer.1.output.dense"
    torch.testing.assert_close(merged.get_submodule(name).weight,
                               adapted.adapter_layers()[name].merged_weight(), atol=1e-6,
                               rtol=1e-6)


def test_export_with_per_layer_ranks_on_a_plain_module(tmp_path):
    seq = mlp()
    x = torch.randn(8, 12, generator=GEN)
    adapted = SVFitModel(seq, SVFitConfig(target_modules="0|2|4", rank=6))
    assert sorted(adapted.ranks().values()) == [5, 6, 6]  # last layer has only 5
    opt = torch.optim.Adam(adapted.adapter_parameters(), lr=0.05)
    for _ in range(3):
        opt.zero_grad()
        adapted(x).square().sum().backward()
        opt.step()
    trained = adapted(x)
    folder = export_peft_lora(adapted, tmp_path / "seq")
    config = json.loads((folder / "adapter_config.json").read_text())
    assert config["r"] == 6 and list(config["rank_pattern"].values()) == [5]
    loaded = peft.PeftModel.from_pretrained(mlp(), str(folder))
    torch.testing.assert_close(loaded(x), trained, atol=ATOL, rtol=0)
    assert (trained - mlp()(x)).abs().max() > 1e-3
