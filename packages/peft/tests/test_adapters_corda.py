"""CorDA: the context-oriented decomposition identities, kpm/ipm selection, init, gradients,
save/load, and agreement with Hugging Face peft's own CorDA initialisation."""

import copy
import dataclasses
import sys
import types

import pytest
import torch
from torch import nn

from subspace_peft.adapters import (
    CorDAConfig,
    CorDALinear,
    CorDAModel,
    InputCovariance,
    collect_input_covariance,
    corda_decompose,
    load_adapter,
)
from subspace_peft.finetune.methods import ENCODER_LINEARS

transformers = pytest.importorskip("transformers")

TOL = {"atol": 1e-5, "rtol": 1e-5}
GEN = torch.Generator().manual_seed(3)
IDS = [torch.randint(0, 100, (2, 11), generator=GEN) for _ in range(3)]



def mlp(seed: int = 0) -> nn.Sequential:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(12, 20), nn.GELU(), nn.Linear(20, 7))


def calibrate(model: nn.Module, batches):
    return lambda: [model(b) for b in batches]


def anisotropic(n: int, dim: int, seed: int = 0) -> torch.Tensor:
    """Inputs with a strongly non-uniform covariance (so C matters)."""
    g = torch.Generator().manual_seed(seed)
    scales = torch.logspace(0, -2, dim)
    mix = torch.linalg.qr(torch.randn(dim, dim, generator=g))[0]
    return (torch.randn(n, dim, generator=g) * scales) @ mix.T


# ------------------------------------------------------------------------ decomposition
@pytest.mark.parametrize("samples", [200, 5])  # full-rank C, and C of rank 5 < in = 12
def test_decomposition_reconstructs_the_weight(samples):
    W = torch.randn(20, 12, dtype=torch.float64, generator=GEN)
    X = anisotropic(samples, 12).double()
    C = X.T @ X
    dec = corda_decompose(W, C)
    n = 12
    Cd = C + dec.ridge * torch.eye(n, dtype=torch.float64)
    assert dec.ridge == pytest.approx(0.01 * float(torch.diagonal(C).mean()))
    # W C_λ = U diag(S) Vh, and (U diag(S) Vh) C_λ⁻¹ = W even when C itself is singular
    torch.testing.assert_close((dec.U * dec.S) @ dec.Vh, W @ Cd, atol=1e-10, rtol=1e-10)
    torch.testing.assert_close(dec.A, dec.Vh @ torch.linalg.inv(Cd), atol=1e-9, rtol=1e-9)
    torch.testing.assert_close(dec.reconstruct(), W, atol=1e-10, rtol=0)
    assert torch.all(dec.S[:-1] >= dec.S[1:])
    if samples < n:  # the undamped pseudo-inverse would lose W on the null space of C
        lossy = W @ C @ torch.linalg.pinv(C)
        assert (lossy - W).abs().max() > 1e-2


def test_decomposition_input_errors():
    with pytest.raises(ValueError, match="covariance: expected shape"):
        corda_decompose(torch.randn(4, 3), torch.eye(4))
    with pytest.raises(ValueError, match="mean diagonal"):
        corda_decompose(torch.randn(4, 3), torch.zeros(3, 3))
    with pytest.raises(ValueError, match="NaN"):
        corda_decompose(torch.randn(4, 3), torch.full((3, 3), float("nan")))


@pytest.mark.parametrize("mode", ["kpm", "ipm"])
def test_modes_select_the_smallest_or_largest_components(mode):
    W = torch.randn(20, 12, dtype=torch.float64, generator=GEN)
    X = anisotropic(300, 12).double()
    C = X.T @ X
    dec = corda_decompose(W, C)
    Cd = C + dec.ridge * torch.eye(12, dtype=torch.float64)
    r = 3
    B0, A0 = dec.factors(r, mode)
    assert B0.shape == (20, r) and A0.shape == (r, 12)
    picked = dec.S[dec.indices(r, mode)]
    expected = dec.S[-r:] if mode == "kpm" else dec.S[:r]
    torch.testing.assert_close(picked, expected)
    # The adapter's part, seen through C_λ, has exactly the selected singular values; the
    # frozen residual keeps the others.
    torch.testing.assert_close(torch.linalg.svdvals(B0 @ A0 @ Cd)[:r], expected, atol=1e-9,
                               rtol=1e-9)
    rest = dec.S[:-r] if mode == "kpm" else dec.S[r:]
    torch.testing.assert_close(torch.linalg.svdvals((W - B0 @ A0) @ Cd)[: 12 - r], rest,
                               atol=1e-9, rtol=1e-9)
    # LoRA factor balance: B0 = U_r sqrt(S_r), A0 = sqrt(S_r) V_rᵀ C⁻¹
    torch.testing.assert_close(B0.norm(dim=0), expected.sqrt(), atol=1e-9, rtol=1e-9)
    # scaling c: c · B0' A0' is the same part
    B1, A1 = dec.factors(r, mode, scaling=2.0)
    torch.testing.assert_close(2.0 * B1 @ A1, B0 @ A0, atol=1e-10, rtol=0)
    with pytest.raises(ValueError, match="rank"):
        dec.factors(13, mode)


def test_collected_covariance_is_xtx():
    seq = mlp()
    batches = [torch.randn(2, 5, 12, generator=GEN) for _ in range(3)]
    stats = collect_input_covariance(seq, "0|2", calibrate(seq, batches))
    X = torch.cat([b.reshape(-1, 12) for b in batches]).double()
    torch.testing.assert_close(stats["0"].xtx, X.T @ X)
    assert stats["0"].calls == 3 and stats["0"].rows == 30
    H = torch.cat([seq[1](seq[0](b)).reshape(-1, 20) for b in batches]).double()
    torch.testing.assert_close(stats["2"].xtx, H.T @ H, atol=1e-5, rtol=1e-5)
    normed = collect_input_covariance(seq, "0", calibrate(seq, batches), normalize=True)
    want = sum((b.reshape(-1, 12).double() / b.abs().max()).T
               @ (b.reshape(-1, 12).double() / b.abs().max()) for b in batches)
    torch.testing.assert_close(normed["0"].xtx, want)
    torch.testing.assert_close(normed["0"].mean_per_call(), want / 3)
    with pytest.raises(RuntimeError, match="never called"):
        collect_input_covariance(seq, "0|2", lambda: None)


# ------------------------------------------------------------------------ the layer / model
@pytest.mark.parametrize("mode", ["kpm", "ipm"])
def test_init_leaves_outputs_unchanged_on_bert(mode, tiny_bert):
    bert = tiny_bert()
    x = torch.randint(0, 100, (3, 9), generator=GEN)
    ref = bert(x)
    adapted = CorDAModel.calibrate(bert, CorDAConfig(target_modules=ENCODER_LINEARS, rank=4,
                                                     mode=mode), calibrate(bert, IDS))
    assert len(adapted.adapter_layers()) == 12
    out = adapted(x)
    torch.testing.assert_close(out.last_hidden_state, ref.last_hidden_state, **TOL)
    torch.testing.assert_close(out.pooler_output, ref.pooler_output, **TOL)
    for layer in adapted.adapter_layers().values():  # the base weight really is a residual
        assert (layer.base_layer.weight - layer.original_weight()).abs().max() > 1e-4


def test_init_leaves_outputs_unchanged_on_sequential_and_with_alpha():
    seq = mlp()
    x = torch.randn(6, 12)
    ref = seq(x)
    batches = [anisotropic(40, 12, seed=i) for i in range(2)]
    adapted = CorDAModel.calibrate(seq, CorDAConfig(target_modules="0|2", rank=3, alpha=12.0),
                                   calibrate(seq, batches))
    torch.testing.assert_close(adapted(x), ref, **TOL)
    layer = adapted.adapter_layers()["0"]
    assert layer.scaling == 4.0
    torch.testing.assert_close(layer.merged_weight(), layer.original_weight(), **TOL)


def test_only_lora_pairs_train_with_r_times_in_plus_out_parameters(tiny_bert):
    bert = tiny_bert()
    r = 4
    adapted = CorDAModel.calibrate(bert, CorDAConfig(target_modules=ENCODER_LINEARS, rank=r),
                                   calibrate(bert, IDS))
    for name, layer in adapted.adapter_layers().items():
        n = sum(p.numel() for p in layer.parameters() if p.requires_grad)
        assert n == r * (layer.in_features + layer.out_features), name
        assert layer.lora_A.shape == (r, layer.in_features)
        assert layer.lora_B.shape == (layer.out_features, r)
    assert adapted.num_trainable_parameters() == adapted.num_adapter_parameters() == sum(
        r * (la.in_features + la.out_features) for la in adapted.adapter_layers().values())
    adapted(IDS[0]).last_hidden_state.square().sum().backward()
    for name, p in adapted.named_parameters():
        if p.requires_grad:
            assert name.endswith(("lora_A", "lora_B")) and p.grad.abs().sum() > 0, name
        else:
            assert p.grad is None, name


def test_rank_and_covariance_errors():
    seq = mlp()
    with pytest.raises(ValueError, match="exceeds min"):
        CorDAModel.calibrate(seq, CorDAConfig(target_modules="0|2", rank=8),
                             calibrate(seq, [torch.randn(5, 12)]))
    with pytest.raises(ValueError, match="no entry for targets"):
        CorDAModel(mlp(), CorDAConfig(target_modules="0|2"), {"0": torch.eye(12)})
    with pytest.raises(ValueError, match="mode"):
        CorDAConfig(target_modules="0", mode="middle")
    with pytest.raises(ValueError, match="A0"):
        CorDALinear(nn.Linear(4, 3), torch.zeros(2, 5), torch.zeros(3, 2))


def test_save_load_round_trip(tmp_path, tiny_bert):
    bert = tiny_bert()
    cfg = CorDAConfig(target_modules=ENCODER_LINEARS, rank=3, mode="ipm",
                      modules_to_save=(r"pooler\.dense",))
    adapted = CorDAModel.calibrate(bert, cfg, calibrate(bert, IDS))
    before = adapted(IDS[0]).last_hidden_state.detach()
    opt = torch.optim.Adam([p for p in adapted.parameters() if p.requires_grad], lr=0.02)
    for _ in range(3):
        opt.zero_grad()
        out = adapted(IDS[0])
        (out.last_hidden_state.square().mean() + out.pooler_output.sum()).backward()
        opt.step()
    trained = adapted(IDS[1])
    assert (adapted(IDS[0]).last_hidden_state - before).abs().max() > 1e-3
    path = tmp_path / "corda.safetensors"
    adapted.save_adapter(path)
    keys = set(adapted.adapter_state_dict())
    name = "encoder.layer.0.attention.self.query"
    assert {f"{name}.{t}" for t in ("lora_A", "lora_B", "lora_A0", "lora_B0")} <= keys
    assert not any(k.endswith("weight") and not k.startswith("modules_to_save.") for k in keys)
    loaded = load_adapter(tiny_bert(), path)  # no calibration needed to rebuild
    assert isinstance(loaded, CorDAModel)
    again = loaded(IDS[1])
    torch.testing.assert_close(again.last_hidden_state, trained.last_hidden_state, **TOL)
    torch.testing.assert_close(again.pooler_output, trained.pooler_output, **TOL)
    layer, twin = loaded.adapter_layers()[name], adapted.adapter_layers()[name]
    torch.testing.assert_close(layer.base_layer.weight, twin.base_layer.weight, **TOL)


def test_input_covariance_object_is_used_as_mean_per_call():
    seq = mlp()
    batches = [anisotropic(30, 12, seed=i) for i in range(2)]
    stats = collect_input_covariance(seq, "0|2", calibrate(seq, batches), normalize=True)
    a = CorDAModel(copy.deepcopy(seq), CorDAConfig(target_modules="0|2", rank=2), stats)
    b = CorDAModel(copy.deepcopy(seq), CorDAConfig(target_modules="0|2", rank=2),
                   {n: s.xtx / s.calls for n, s in stats.items()})
    for n in ("0", "2"):
        torch.testing.assert_close(a.adapter_layers()[n].lora_A, b.adapter_layers()[n].lora_A)
    assert isinstance(stats["0"], InputCovariance)


# ------------------------------------------------------------------------ against HF peft
@pytest.mark.parametrize("mode", ["kpm", "ipm"])
def test_matches_hugging_face_peft_corda(mode, monkeypatch):
    peft = pytest.importorskip("peft")
    try:
        import attr  # noqa: F401  (peft's corda module imports attrs' dataclass)
    except ImportError:  # attrs is not installed here: its `dataclass` is a plain dataclass
        monkeypatch.setitem(sys.modules, "attr",
                            types.SimpleNamespace(dataclass=dataclasses.dataclass))
    from peft.tuners.lora.config import CordaConfig
    from peft.tuners.lora.corda import preprocess_corda

    seq = mlp()
    # positive inputs: peft scales by max(x), we by max|x|; they agree when the max is > 0
    batches = [torch.rand(30, 12, generator=GEN) + 0.1 for _ in range(3)]
    theirs = copy.deepcopy(seq)
    cfg = peft.LoraConfig(r=3, lora_alpha=6, target_modules=["0", "2"],
                          init_lora_weights="corda", corda_config=CordaConfig(corda_method=mode))
    preprocess_corda(theirs, cfg, run_model=calibrate(theirs, batches))
    theirs = peft.get_peft_model(theirs, cfg)
    ours = copy.deepcopy(seq)
    mine = CorDAModel.calibrate(ours, CorDAConfig(target_modules="0|2", rank=3, alpha=6,
                                                  mode=mode), calibrate(ours, batches))
    for n in ("0", "2"):
        ref = theirs.base_model.model.get_submodule(n)
        B, A = ref.lora_B["default"].weight, ref.lora_A["default"].weight
        layer = mine.adapter_layers()[n]
        # the product and the column scales are sign-free (an SVD pair may flip jointly)
        torch.testing.assert_close(layer.lora_B @ layer.lora_A, B @ A, atol=2e-5, rtol=1e-4)
        torch.testing.assert_close(layer.lora_B.norm(dim=0), B.norm(dim=0), atol=2e-5,
                                   rtol=1e-4)
        torch.testing.assert_close(layer.base_layer.weight, ref.base_layer.weight, atol=2e-5,
                                   rtol=1e-4)
    x = torch.randn(5, 12)
    torch.testing.assert_close(mine(x), theirs(x), **TOL)


def test_state_loads_onto_a_layer_built_from_another_decomposition():
    # what the zoo does: build the adapter without calibration data (identity covariance),
    # then load the trained state, whose initial factors came from the real covariance
    x = torch.randn(64, 12, generator=torch.Generator().manual_seed(5))
    base = mlp()
    trained = CorDAModel.calibrate(base, CorDAConfig(target_modules=r"0|2", rank=3),
                                   calibrate(base, [x * torch.linspace(0.1, 3, 12)]))
    with torch.no_grad():
        for p in trained.adapter_parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=GEN))
    expected = trained(x)
    eye = {"0": torch.eye(12), "2": torch.eye(20)}
    rebuilt = CorDAModel(mlp(), CorDAConfig(target_modules=r"0|2", rank=3), eye)
    assert not torch.allclose(rebuilt(x), expected, atol=1e-3)
    rebuilt.load_adapter_state_dict(trained.adapter_state_dict())
    torch.testing.assert_close(rebuilt(x), expected, **TOL)
    for name, layer in rebuilt.adapter_layers().items():  # the pretrained weight is kept
        torch.testing.assert_close(layer.original_weight(),
                                   dict(mlp().named_modules())[name].weight, **TOL)
