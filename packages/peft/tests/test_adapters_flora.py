"""FLoRA: the Tucker update against the explicit mode-product formula, init, parameter count,
gradients, structure, merge / save / load, and a few training steps on a conv task.

Why FLoRA rather than LoRA on a flattened kernel (documented, not asserted): a ``3x3`` conv
``16 -> 32`` at rank 4 costs ``4 · (32 + 16·3·3) = 704`` trainable scalars as a LoRA of the
``[32, 144]`` unfolding (peft's conv LoRA), and ``4·4·3·3 + 32·4 + 16·4 + 3·3 + 3·3 = 354``
as FLoRA, whose core keeps the ``3x3`` layout instead of mixing it into the input axis.
"""

import copy
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from subspace_peft.adapters.base import load_adapter
from subspace_peft.adapters.flora import (
    FLoRAConfig,
    FLoRALayer,
    FLoRAModel,
    find_flora_targets,
    flora_parameter_count,
    flora_ranks,
    tucker_compose,
)

GEN = torch.Generator().manual_seed(0)


class ConvNet(nn.Module):
    """Two 3x3 convs (one strided, one grouped with reflect padding) and a linear head."""

    def __init__(self, seed: int = 0) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.conv1 = nn.Conv2d(3, 16, 3, padding=1)
        self.conv2 = nn.Conv2d(16, 32, 3, stride=2, padding=1, groups=2,
                               padding_mode="reflect")
        self.fc = nn.Linear(32, 5)

    def forward(self, x):
        h = F.relu(self.conv1(x))
        h = F.relu(self.conv2(h))
        return self.fc(h.mean((2, 3)))


def randomize(layer: FLoRALayer, seed: int = 1) -> None:
    """Non-zero core and factors (the init has a zero core, which hides most mistakes)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for n in layer.trainable_names:
            p = getattr(layer, n)
            p.copy_(torch.randn(p.shape, generator=g) * 0.3)


X = torch.randn(4, 3, 12, 12, generator=GEN)


# ------------------------------------------------------------------------------ init
def test_output_unchanged_at_init_on_a_conv_net():
    net = ConvNet()
    ref = net(X)
    adapted = FLoRAModel(net, FLoRAConfig(target_modules=("conv1", "conv2", "fc"), rank=4))
    assert all(isinstance(m, FLoRALayer) for m in adapted.adapter_layers().values())
    # W0 + 0 is W0 bit for bit, so the convolutions see the same weights
    torch.testing.assert_close(adapted(X), ref, atol=0, rtol=0)
    for layer in adapted.adapter_layers().values():
        assert float(layer.core.detach().abs().max()) == 0.0
        for U, r in zip(layer.factors(), layer.ranks, strict=True):
            assert float(U.detach().abs().max()) > 0  # factors random, core zero (reference init)
            assert U.shape[1] == r


# --------------------------------------------------------------------------- formula
@pytest.mark.parametrize("module,spec", [
    (nn.Conv2d(6, 10, (3, 5), padding=1), "abcd,ia,jb,kc,ld->ijkl"),
    (nn.Conv1d(4, 6, 3, dilation=2), "abc,ia,jb,kc->ijk"),
    (nn.Conv3d(2, 4, (2, 3, 2), groups=2), "abcde,ia,jb,kc,ld,me->ijklm"),
    (nn.Linear(9, 7), "ab,ia,jb->ij"),
])
def test_delta_weight_equals_the_mode_product_formula(module, spec):
    ranks = tuple(min(3, n) for n in module.weight.shape)
    layer = FLoRALayer(copy.deepcopy(module), ranks, scale=0.7)
    randomize(layer)
    expected = 0.7 * torch.einsum(spec, layer.core, *layer.factors())
    assert layer.delta_weight().shape == module.weight.shape  # kernel structure kept
    torch.testing.assert_close(layer.delta_weight(), expected, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(layer.merged_weight(), module.weight + expected, atol=1e-6,
                               rtol=1e-5)
    # the forward is the base op on W0 + ΔW
    if isinstance(module, nn.Linear):
        for rows in (1, 50):  # factored path and composed path
            x = torch.randn(rows, 9, generator=GEN)
            torch.testing.assert_close(layer(x), F.linear(x, module.weight + expected,
                                                          module.bias), atol=1e-5, rtol=1e-5)
    else:
        x = torch.randn((2, module.in_channels) + (7,) * (module.weight.dim() - 2),
                        generator=GEN)
        merged = copy.deepcopy(module)
        with torch.no_grad():
            merged.weight += expected
        torch.testing.assert_close(layer(x), merged(x), atol=1e-5, rtol=1e-5)


def test_tucker_unfoldings_have_the_core_ranks():
    """Structure: the mode-k unfolding of ΔW has rank r_k (the Tucker ranks), not the rank
    of a flattened matrix factorisation."""
    layer = FLoRALayer(nn.Conv2d(12, 10, 3).double(), (4, 2, 3, 1))
    randomize(layer, seed=3)
    dw = layer.delta_weight().detach()
    for k, r in enumerate((4, 2, 3, 1)):
        unfolded = dw.movedim(k, 0).reshape(dw.shape[k], -1)
        assert int(torch.linalg.matrix_rank(unfolded)) == r


def test_tucker_compose_rejects_a_wrong_number_of_factors():
    with pytest.raises(ValueError, match="expected 2 factors"):
        tucker_compose(torch.zeros(2, 2), [torch.zeros(3, 2)])


# ------------------------------------------------------------------------ parameters
def test_trainable_parameter_count_equals_the_formula():
    net = ConvNet()
    adapted = FLoRAModel(net, FLoRAConfig(target_modules=("conv1", "conv2", "fc"), rank=4))
    ranks = adapted.ranks()
    assert ranks == {"conv1": (4, 3, 3, 3), "conv2": (4, 4, 3, 3), "fc": (4, 4)}
    # by hand: conv2 weight [32, 8, 3, 3] (groups=2); conv1 [16, 3, 3, 3]; fc [5, 32]
    conv1 = 4 * 3 * 3 * 3 + 16 * 4 + 3 * 3 + 3 * 3 + 3 * 3
    conv2 = 4 * 4 * 3 * 3 + 32 * 4 + 8 * 4 + 3 * 3 + 3 * 3
    fc = 4 * 4 + 5 * 4 + 32 * 4
    assert adapted.num_trainable_parameters() == conv1 + conv2 + fc == 685
    for name, layer in adapted.adapter_layers().items():
        assert layer.num_parameters() == flora_parameter_count(layer.weight_shape, ranks[name])
    # kernel_rank compresses the spatial modes too
    assert flora_ranks((32, 8, 5, 5), 4, kernel_rank=2) == (4, 4, 2, 2)
    assert flora_ranks((32, 8, 5, 5), 64) == (32, 8, 5, 5)


def test_gradients_reach_only_the_adapter_and_saved_modules():
    net = ConvNet()
    adapted = FLoRAModel(net, FLoRAConfig(target_modules=("conv1", "conv2"), rank=4,
                                          modules_to_save=("fc",)))
    trainable = {n for n, p in adapted.named_parameters() if p.requires_grad}
    assert trainable == {f"model.{c}.{t}" for c in ("conv1", "conv2")
                         for t in ("core", "factor_0", "factor_1", "factor_2", "factor_3")} \
        | {"model.fc.weight", "model.fc.bias"}
    adapted(X).square().sum().backward()
    for n, p in adapted.named_parameters():
        if "base_layer" in n:
            assert p.grad is None, n
    for layer in adapted.adapter_layers().values():
        assert float(layer.core.grad.abs().max()) > 0
        # with G = 0 the factors get no gradient on the first step (as LoRA's A with B = 0)
        assert all(float(U.grad.abs().max()) == 0 for U in layer.factors())
    assert float(net.fc.weight.grad.abs().max()) > 0


# ----------------------------------------------------------------- training / merge / io
def conv_task(steps: int = 40):
    """Student = FLoRA on ConvNet(0); teacher = ConvNet(0) with perturbed conv kernels."""
    teacher = ConvNet()
    g = torch.Generator().manual_seed(5)
    with torch.no_grad():
        for conv in (teacher.conv1, teacher.conv2):
            conv.weight += 0.15 * torch.randn(conv.weight.shape, generator=g)
    xs = torch.randn(64, 3, 12, 12, generator=g)
    with torch.no_grad():
        ys = teacher(xs)
    adapted = FLoRAModel(ConvNet(), FLoRAConfig(target_modules=("conv1", "conv2"), rank=4))
    opt = torch.optim.Adam(adapted.adapter_parameters(), lr=1e-2)
    losses = []
    for _ in range(steps):
        opt.zero_grad()
        loss = F.mse_loss(adapted(xs), ys)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return adapted, xs, losses


def test_adam_steps_reduce_the_loss_of_a_conv_task():
    _, _, losses = conv_task()
    assert losses[-1] < 0.2 * losses[0], losses[::8]


def test_merge_and_unload_give_plain_modules():
    adapted, xs, _ = conv_task(steps=5)
    out = adapted(xs)
    merged = copy.deepcopy(adapted).merge_and_unload()
    assert type(merged.conv1) is nn.Conv2d and merged.conv2.padding_mode == "reflect"
    torch.testing.assert_close(merged(xs), out, atol=1e-5, rtol=1e-5)
    original = adapted.unload()
    torch.testing.assert_close(original(xs), ConvNet()(xs), atol=0, rtol=0)
    assert all(p.requires_grad for p in original.parameters())  # flags restored


def test_save_load_round_trip(tmp_path):
    adapted, xs, _ = conv_task(steps=5)
    out = adapted(xs)
    path = tmp_path / "flora.safetensors"
    adapted.save_adapter(path)
    loaded = load_adapter(ConvNet(), path)
    assert isinstance(loaded, FLoRAModel) and loaded.ranks() == adapted.ranks()
    torch.testing.assert_close(loaded(xs), out, atol=0, rtol=0)
    for name, layer in loaded.adapter_layers().items():
        torch.testing.assert_close(layer.delta_weight(),
                                   adapted.adapter_layers()[name].delta_weight())
    with pytest.raises(ValueError, match="differs from the one the adapter was made for"):
        load_adapter(ConvNet(seed=1), path)


# ---------------------------------------------------------------------- linear targets
def test_linear_targets_have_an_exact_lora_form_and_conv_targets_refuse():
    torch.manual_seed(0)
    mlp = nn.Sequential(nn.Linear(10, 12), nn.Tanh(), nn.Linear(12, 3))
    adapted = FLoRAModel(mlp, FLoRAConfig(target_modules=("0", "2"), rank=4, scale=2.0))
    for layer in adapted.adapter_layers().values():
        randomize(layer)
    for name, (B, A) in adapted.lora_factors().items():
        layer = adapted.adapter_layers()[name]
        assert B.shape == (layer.out_features, layer.ranks[1])
        assert A.shape == (layer.ranks[1], layer.in_features)
        torch.testing.assert_close(B @ A, layer.merged_weight() - layer.original_weight(),
                                   atol=1e-5, rtol=1e-5)
    conv = FLoRAModel(ConvNet(), FLoRAConfig(target_modules="conv1"))
    with pytest.raises(TypeError, match="no LoRA form"):
        conv.lora_factors()


def test_linear_adapter_exports_to_peft(tmp_path):
    peft = pytest.importorskip("peft")
    from subspace_peft.adapters.export import export_peft_lora

    def mlp():
        torch.manual_seed(0)
        return nn.Sequential(nn.Linear(10, 12), nn.Tanh(), nn.Linear(12, 3))

    adapted = FLoRAModel(mlp(), FLoRAConfig(target_modules=("0", "2"), rank=4))
    for layer in adapted.adapter_layers().values():
        randomize(layer)
    x = torch.randn(6, 10, generator=GEN)
    folder = export_peft_lora(adapted, tmp_path / "flora_peft")
    loaded = peft.PeftModel.from_pretrained(mlp(), str(folder))
    torch.testing.assert_close(loaded(x), adapted(x), atol=1e-5, rtol=1e-5)


# ------------------------------------------------------------------------ bad input
def test_bad_input_is_refused_with_clear_errors():
    with pytest.raises(TypeError, match="matched a ReLU"):
        find_flora_targets(nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU()), ["0", "1"])
    with pytest.raises(ValueError, match=r"matched no nn\.Linear"):
        find_flora_targets(nn.Sequential(nn.ReLU()), "conv")
    with pytest.raises(TypeError, match="base_layer"):
        FLoRALayer(nn.ConvTranspose2d(2, 2, 3), (1, 1, 3, 3))
    with pytest.raises(ValueError, match="ranks: expected 4 ints"):
        FLoRALayer(nn.Conv2d(2, 4, 3), (4, 4, 3, 3))  # r_1 = 4 > in = 2
    with pytest.raises(ValueError, match="rank: expected an int >= 1"):
        FLoRAConfig(target_modules="conv1", rank=0)
    with pytest.raises(ValueError, match="kernel_rank"):
        FLoRAConfig(target_modules="conv1", kernel_rank=0)
    assert math.isclose(FLoRAConfig(target_modules="c", scale=2).scale, 2.0)
