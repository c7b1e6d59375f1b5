import pytest
import torch
from torch import nn

from subspace_peft.models import DecoderConfig, MicroDecoder
from subspace_peft.sst import SSTController, SSTLinear, convert_to_sst, sst_param_groups


@pytest.mark.parametrize("rank", [None, 4])
def test_init_reproduces_dense(rank):
    torch.manual_seed(0)
    dense = nn.Linear(12, 7)
    layer = SSTLinear.from_linear(dense, rank=rank)
    x = torch.randn(5, 3, 12)
    torch.testing.assert_close(layer(x), dense(x), atol=1e-5, rtol=1e-5)
    assert (layer.W_res is None) == (rank is None)


def test_only_sampled_vectors_get_gradients():
    torch.manual_seed(0)
    layer = SSTLinear.from_linear(nn.Linear(16, 10), rank=8, sample_rank=3)
    idx = layer.resample(torch.Generator().manual_seed(0))
    assert idx.numel() == 3 and int(layer.mask.sum()) == 3
    layer(torch.randn(4, 16)).pow(2).sum().backward()
    off = ~layer.mask
    assert torch.all(layer.U.grad[:, off] == 0) and torch.all(layer.Vh.grad[off] == 0)
    assert layer.U.grad[:, layer.mask].abs().sum() > 0
    assert torch.all(layer.S.grad != 0)  # every singular value gets a gradient


def test_sampling_follows_singular_values():
    layer = SSTLinear(8, 8, rank=4, sample_rank=1)
    with torch.no_grad():
        layer.S.copy_(torch.tensor([100.0, 1e-6, 1e-6, 1e-6]))
    g = torch.Generator().manual_seed(0)
    assert all(int(layer.resample(g)) == 0 for _ in range(20))


def test_reorthogonalize_keeps_function_and_orthonormality():
    torch.manual_seed(0)
    layer = SSTLinear.from_linear(nn.Linear(20, 12), rank=6)
    with torch.no_grad():
        layer.U.add_(0.1 * torch.randn_like(layer.U))
        layer.Vh.add_(0.1 * torch.randn_like(layer.Vh))
    x = torch.randn(3, 20)
    before = layer(x).detach()
    layer.reorthogonalize()
    eye = torch.eye(6)
    torch.testing.assert_close(layer.U.T @ layer.U, eye, atol=1e-5, rtol=0)
    torch.testing.assert_close(layer.Vh @ layer.Vh.T, eye, atol=1e-5, rtol=0)
    torch.testing.assert_close(layer(x), before, atol=1e-4, rtol=1e-4)
    assert torch.all(layer.S[:-1] >= layer.S[1:])


def test_convert_and_train_reduces_loss():
    torch.manual_seed(0)
    cfg = DecoderConfig(dim=32, n_layers=2, n_heads=4, hidden_dim=64, max_seq_len=64)
    model = MicroDecoder(cfg)
    replaced = convert_to_sst(model, ("attn", "mlp"), rank=16, sample_rank=8)
    assert len(replaced) == 14
    with pytest.raises(ValueError, match=r"no nn\.Linear"):
        convert_to_sst(model, "nothing_here")
    tokens = torch.arange(20).repeat(200)
    opt = torch.optim.AdamW(sst_param_groups(model, weight_decay=0.01), lr=3e-3)
    ctrl = SSTController(model, opt, resample_every=5, reorth_every=10, seed=0)
    before = [m.U.detach().clone() for m in ctrl.layers]
    losses = []
    for _ in range(30):
        x = tokens[torch.randint(0, 3000, (8,))[:, None] + torch.arange(33)]
        loss = model.loss(x)
        opt.zero_grad()
        loss.backward()
        opt.step()
        ctrl.step()
        losses.append(loss.item())
    assert sum(losses[-5:]) < 0.7 * sum(losses[:5])
    assert all(not torch.equal(b, m.U) for b, m in zip(before, ctrl.layers, strict=True))
