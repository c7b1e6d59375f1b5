"""SVFit adapter and the shared adapter base: SVD identities, init, gradients, save/load."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from subspace_core.io import ChecksumError
from subspace_peft.adapters import (
    AdapterModel,
    SVFitConfig,
    SVFitLinear,
    SVFitModel,
    find_targets,
    load_adapter,
    select_rank,
)
from subspace_peft.finetune.methods import ENCODER_LINEARS

transformers = pytest.importorskip("transformers")

TOL = {"atol": 1e-5, "rtol": 1e-5}



def mlp(seed: int = 0) -> nn.Sequential:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(12, 20), nn.GELU(), nn.Linear(20, 7), nn.Tanh(),
                         nn.Linear(7, 5))


class Classifier(nn.Module):
    """MiniLMClassifier-shaped wrapper: ``encoder`` (a BertModel) and a ``head``."""

    def __init__(self, encoder: nn.Module) -> None:
        super().__init__()
        self.encoder = encoder
        self.head = nn.Linear(32, 2)

    def forward(self, input_ids):
        return self.head(self.encoder(input_ids).last_hidden_state.mean(1))


IDS = torch.randint(0, 100, (3, 9), generator=torch.Generator().manual_seed(1))


# ------------------------------------------------------------------------ target selection
def test_encoder_linears_pattern_selects_the_encoder_matrices(tiny_bert):
    bert = tiny_bert()
    names = find_targets(bert, ENCODER_LINEARS)
    assert len(names) == 12 and all(n.startswith("encoder.layer.") for n in names)
    assert "pooler.dense" not in names
    wrapped = find_targets(Classifier(tiny_bert()), ENCODER_LINEARS)  # one level deeper, as MiniLM's
    assert wrapped == ["encoder." + n for n in names]
    assert find_targets(mlp(), r"0|2|4") == ["0", "2", "4"]
    assert find_targets(bert, "query") == [f"encoder.layer.{i}.attention.self.query"
                                           for i in range(2)]


def test_target_errors_are_clear():
    with pytest.raises(ValueError, match=r"matched no nn\.Linear"):
        find_targets(mlp(), "nothing_here")
    with pytest.raises(TypeError, match="matched a GELU"):
        find_targets(mlp(), r"\d+")  # selects the GELU "1" too
    with pytest.raises(ValueError, match="valid regular expression"):
        find_targets(mlp(), "(")
    adapted = SVFitModel(mlp(), SVFitConfig(target_modules="0"))
    with pytest.raises(TypeError, match="already an adapter"):
        find_targets(adapted.model, "0")
    with pytest.raises(ValueError, match="rank or energy"):
        SVFitConfig(target_modules="0", rank=2, energy=0.9)
    with pytest.raises(ValueError, match="rank"):
        SVFitConfig(target_modules="0", rank=0)
    with pytest.raises(ValueError, match="modules_to_save"):
        SVFitModel(mlp(), SVFitConfig(target_modules="0", modules_to_save=("absent",)))
    with pytest.raises(ValueError, match="either adapted or saved"):
        SVFitModel(mlp(), SVFitConfig(target_modules="0", modules_to_save=("0",)))


# ------------------------------------------------------------------------ SVD identities
def test_full_rank_factors_reconstruct_the_weight():
    lin = mlp()[0]
    layer = SVFitLinear(lin)
    assert layer.rank == min(lin.weight.shape) == 12
    recon = (layer.U_r.double() * layer.singular_values.double()) @ layer.Vh_r.double()
    torch.testing.assert_close(recon, lin.weight.double(), atol=1e-6, rtol=0)
    torch.testing.assert_close(layer.U_r.T @ layer.U_r, torch.eye(12), **TOL)
    torch.testing.assert_close(layer.Vh_r @ layer.Vh_r.T, torch.eye(12), **TOL)
    s = torch.linalg.svdvals(lin.weight.double())
    torch.testing.assert_close(layer.singular_values.double(), s, atol=1e-6, rtol=0)


def test_top_r_split_leaves_the_rest_as_the_frozen_remainder():
    lin = mlp()[0]
    r = 5
    layer = SVFitLinear(lin, rank=r)
    W = lin.weight.double()
    W_r = (layer.U_r.double() * layer.singular_values.double()) @ layer.Vh_r.double()
    W_e = W - W_r
    s = torch.linalg.svdvals(W)
    # W_e is the best-approximation error: its spectrum is the tail s[r:], orthogonal to U_r
    torch.testing.assert_close(torch.linalg.svdvals(W_e)[: 12 - r], s[r:], atol=1e-6, rtol=0)
    torch.testing.assert_close(layer.U_r.double().T @ W_e, torch.zeros(r, 12, dtype=W.dtype),
                               atol=1e-6, rtol=0)


def test_merged_weight_after_a_change_of_s_is_u_diag_s_prime_vt():
    lin = mlp()[2]  # 7 x 20: k = 7
    r = 4
    layer = SVFitLinear(lin, rank=r)
    delta = torch.tensor([0.3, -0.2, 0.15, 0.05])
    with torch.no_grad():
        layer.delta_s.copy_(delta)
    # Independent float64 SVD in the test (signs may differ: U diag(s) Vh is invariant)
    U, S, Vh = torch.linalg.svd(lin.weight.double(), full_matrices=False)
    s_new = S.clone()
    s_new[:r] += delta.double()
    expected = (U * s_new) @ Vh
    torch.testing.assert_close(layer.merged_weight().double(), expected, atol=1e-6, rtol=0)
    torch.testing.assert_close(layer.effective_singular_values().double(), s_new[:r],
                               atol=1e-6, rtol=0)
    # the frozen singular values do not move: the spectrum of the merged weight is s'
    torch.testing.assert_close(torch.linalg.svdvals(expected),
                               torch.sort(s_new.abs(), descending=True).values, atol=1e-6,
                               rtol=0)
    merged = layer.merge()
    x = torch.randn(6, 20)
    torch.testing.assert_close(merged(x), layer(x), **TOL)
    B, A = layer.lora_factors()
    torch.testing.assert_close(lin.weight + B @ A, merged.weight, **TOL)


def test_select_rank_by_energy_matches_the_formula(tiny_bert):
    s = torch.tensor([4.0, 2.0, 1.0, 0.5])  # energies 16, 4, 1, .25 of 21.25
    assert select_rank(s, energy=16 / 21.25) == 1
    assert select_rank(s, energy=0.9) == 2  # 20/21.25 = .941
    assert select_rank(s, energy=0.99) == 4  # 21/21.25 = .988 < .99
    assert select_rank(s, energy=1.0) == 4
    assert select_rank(s, rank=9) == 4 and select_rank(s) == 4
    bert = tiny_bert()
    adapted = SVFitModel(bert, SVFitConfig(target_modules=ENCODER_LINEARS, energy=0.9))
    for name, layer in adapted.adapter_layers().items():
        sv = torch.linalg.svdvals(layer.base_layer.weight.double())
        assert layer.rank == select_rank(sv, energy=0.9), name


# ------------------------------------------------------------------------ init and training
@pytest.mark.parametrize("options", [{}, {"rank": 3}, {"energy": 0.8}])
def test_init_leaves_outputs_unchanged(options, tiny_bert):
    bert = tiny_bert()
    ref = bert(IDS)
    adapted = SVFitModel(bert, SVFitConfig(target_modules=ENCODER_LINEARS, **options))
    out = adapted(IDS)
    assert torch.equal(out.last_hidden_state, ref.last_hidden_state)
    assert torch.equal(out.pooler_output, ref.pooler_output)
    seq = mlp()
    x = torch.randn(4, 12)
    ref = seq(x)
    assert torch.equal(SVFitModel(seq, SVFitConfig(target_modules=r"0|2|4", **options))(x), ref)


def test_forward_paths_agree_with_the_formula_in_value_and_gradient():
    lin = nn.Linear(10, 6)
    layer = SVFitLinear(lin, rank=4)
    with torch.no_grad():
        layer.delta_s.copy_(torch.tensor([0.5, -0.3, 0.2, 0.1]))
    for rows in (2, 50):  # 2 * 16 < 60: low-rank path; 50 * 16 > 60: rebuilt weight
        x = torch.randn(rows, 10)
        delta = layer.delta_s.detach().clone().requires_grad_(True)
        W = lin.weight + (layer.U_r * delta) @ layer.Vh_r
        want = F.linear(x, W, lin.bias)
        want.square().sum().backward()
        layer.delta_s.grad = None
        got = layer(x)
        got.square().sum().backward()
        torch.testing.assert_close(got, want, **TOL)
        torch.testing.assert_close(layer.delta_s.grad, delta.grad, **TOL)


def test_only_singular_values_and_saved_modules_train(tiny_bert):
    model = Classifier(tiny_bert())
    adapted = SVFitModel(model, SVFitConfig(target_modules=ENCODER_LINEARS, rank=5,
                                            modules_to_save=("head",)))
    adapter_params = adapted.adapter_parameters()
    assert len(adapter_params) == 12 and all(p.shape == (5,) for p in adapter_params)
    assert adapted.num_adapter_parameters() == 12 * 5
    assert adapted.num_trainable_parameters() == 12 * 5 + 32 * 2 + 2
    trainable = {n for n, p in adapted.named_parameters() if p.requires_grad}
    assert trainable == {n for n, _ in adapted.named_parameters()
                         if n.endswith(".delta_s") or ".head." in n}
    adapted(IDS).square().sum().backward()
    for name, p in adapted.named_parameters():
        if p.requires_grad:
            assert p.grad is not None and p.grad.abs().sum() > 0, name
        else:
            assert p.grad is None, name


def _train(adapted: AdapterModel, steps: int = 3, lr: float = 0.05) -> None:
    opt = torch.optim.Adam([p for p in adapted.parameters() if p.requires_grad], lr=lr)
    for _ in range(steps):
        opt.zero_grad()
        out = adapted(IDS)
        loss = out.last_hidden_state.square().mean() + out.pooler_output.sum()
        loss.backward()
        opt.step()


def test_save_load_round_trip(tmp_path, tiny_bert):
    bert = tiny_bert()
    ref = bert(IDS).last_hidden_state.detach()
    adapted = SVFitModel(bert, SVFitConfig(target_modules=ENCODER_LINEARS, energy=0.9,
                                           modules_to_save=(r"pooler\.dense",)))
    _train(adapted)
    trained = adapted(IDS)
    assert (trained.last_hidden_state - ref).abs().max() > 1e-3  # the steps changed it
    path = tmp_path / "svfit.safetensors"
    digest = adapted.save_adapter(path, metadata={"note": "test"})
    state = adapted.adapter_state_dict()
    # only delta_s and s_r per layer (r each) + the pooler: no singular vectors stored
    ranks = adapted.ranks()
    layer_keys = [k for k in state if not k.startswith("modules_to_save.")]
    assert sorted(layer_keys) == sorted([f"{n}.delta_s" for n in ranks]
                                        + [f"{n}.singular_values" for n in ranks])
    assert sum(state[k].numel() for k in layer_keys) == 2 * sum(ranks.values())
    loaded = load_adapter(tiny_bert(), path, sha256=digest)
    assert isinstance(loaded, SVFitModel) and loaded.ranks() == ranks
    again = loaded(IDS)
    torch.testing.assert_close(again.last_hidden_state, trained.last_hidden_state, **TOL)
    torch.testing.assert_close(again.pooler_output, trained.pooler_output, **TOL)
    assert loaded.num_trainable_parameters() == adapted.num_trainable_parameters()
    with pytest.raises(ValueError, match="differs from the one the adapter was made for"):
        load_adapter(tiny_bert(seed=1), path)  # other base weights
    data = bytearray(path.read_bytes())
    data[-3] ^= 1
    path.write_bytes(bytes(data))
    with pytest.raises(ChecksumError):
        load_adapter(tiny_bert(), path)


def test_merge_and_unload_give_plain_linears(tiny_bert):
    bert = tiny_bert()
    ref = bert(IDS).last_hidden_state.detach()
    flags = {n: p.requires_grad for n, p in bert.named_parameters()}
    adapted = SVFitModel(bert, SVFitConfig(target_modules=ENCODER_LINEARS, rank=4))
    _train(adapted)
    trained = adapted(IDS).last_hidden_state.detach()
    merged = adapted.merge_and_unload()
    assert merged is bert
    assert all(type(m) is nn.Linear for n, m in merged.named_modules() if "dense" in n
               or n.endswith(("query", "key", "value")))
    torch.testing.assert_close(merged(IDS).last_hidden_state, trained, **TOL)
    assert {n: p.requires_grad for n, p in merged.named_parameters()} == flags
    with pytest.raises(RuntimeError, match="merged or unloaded"):
        adapted(IDS)
    bert2 = tiny_bert()
    adapted2 = SVFitModel(bert2, SVFitConfig(target_modules=ENCODER_LINEARS, rank=4))
    _train(adapted2)
    torch.testing.assert_close(adapted2.unload()(IDS).last_hidden_state, ref, **TOL)
