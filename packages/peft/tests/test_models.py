import math

import pytest
import torch
import torch.nn.functional as F

from subspace_core.eval import get_protocol
from subspace_core.zoo import create_model, get_model_entry
from subspace_peft.models import (
    DecoderConfig,
    MicroDecoder,
    count_params,
    eval_windows,
    perplexity,
    sample_batch,
    train_decoder,
)
from subspace_peft.models.zoo import LLAMA_MICRO, LLAMA_MINI

TINY = DecoderConfig(dim=32, n_layers=2, n_heads=4, n_kv_heads=2, hidden_dim=64, max_seq_len=64)


def test_forward_shapes_and_causality():
    torch.manual_seed(0)
    model = MicroDecoder(TINY).eval()
    x = torch.randint(0, 257, (2, 20))
    y = model(x)
    assert y.shape == (2, 20, 257)
    x2 = x.clone()
    x2[:, 12:] = torch.randint(0, 257, (2, 8))
    y2 = model(x2)
    torch.testing.assert_close(y[:, :12], y2[:, :12])
    assert not torch.allclose(y[:, 12:], y2[:, 12:])


def test_sizes_and_module_names():
    micro, mini = MicroDecoder(LLAMA_MICRO), MicroDecoder(LLAMA_MINI)
    assert count_params(micro) == 1_220_352 and count_params(micro) * 4 <= 5 * 10**6
    assert count_params(mini) == 2_263_296 and count_params(mini) * 2 <= 5 * 10**6
    names = [n for n, _ in micro.named_parameters()]
    assert "layers.0.attn.q_proj.weight" in names and "layers.5.mlp.down_proj.weight" in names
    assert micro.embed.weight is micro.lm_head_weight


def test_zoo_entries():
    entry = get_model_entry("peft/llama_micro.text")
    assert entry.pretrained_cfg is None
    model = create_model("peft/llama_micro.text")
    assert count_params(model) == 1_220_352


def test_bad_input():
    model = MicroDecoder(TINY)
    with pytest.raises(ValueError, match="max_seq_len"):
        model(torch.zeros(1, 65, dtype=torch.long))
    with pytest.raises(ValueError, match="n_heads"):
        DecoderConfig(dim=30, n_heads=4)


def _toy_tokens(n=4000):
    g = torch.Generator().manual_seed(1)
    pattern = torch.randint(0, 20, (37,), generator=g)
    return pattern.repeat(n // 37 + 1)[:n]


def test_training_reduces_loss_and_resumes(tmp_path):
    tokens = _toy_tokens()
    torch.manual_seed(0)
    model = MicroDecoder(TINY)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses = train_decoder(model, tokens, opt, steps=30, batch=8, context=32, seed=0)
    assert sum(losses[-5:]) / 5 < 0.7 * sum(losses[:5]) / 5

    def run(steps, out):
        torch.manual_seed(0)
        m = MicroDecoder(TINY)
        o = torch.optim.AdamW(m.parameters(), lr=3e-3)
        train_decoder(m, tokens, o, steps=steps, batch=4, context=16, seed=3, out_dir=out,
                      save_every=2)
        return m, o

    full, _ = run(6, tmp_path / "a")
    run(4, tmp_path / "b")  # "interrupted" after 4 steps
    resumed, _ = run(6, tmp_path / "b")
    for a, b in zip(full.parameters(), resumed.parameters(), strict=True):
        assert torch.equal(a, b)


def test_sample_batch_deterministic():
    tokens = torch.arange(1000)
    a, b = sample_batch(tokens, 4, 10, 0, 5), sample_batch(tokens, 4, 10, 0, 5)
    assert torch.equal(a, b) and a.shape == (4, 11)
    assert torch.equal(a[:, 1:] - a[:, :-1], torch.ones(4, 10, dtype=torch.long))


def test_perplexity_matches_cross_entropy():
    torch.manual_seed(0)
    model = MicroDecoder(TINY)
    tokens = torch.randint(0, 257, (5000,))
    windows = eval_windows(tokens, 32, 10)
    assert windows.shape == (10, 33)
    with torch.no_grad():
        logits = model(windows[:, :-1])
        ce = F.cross_entropy(logits.reshape(-1, 257), windows[:, 1:].reshape(-1)).item()
    out = perplexity(model, tokens, context=32, num_windows=10, batch=3)
    assert out["loss"] == pytest.approx(ce, rel=1e-5)
    assert out["ppl"] == pytest.approx(math.exp(ce), rel=1e-5)
    assert out["bits_per_token"] == pytest.approx(ce / math.log(2), rel=1e-5)


def test_protocol_registered():
    protocol = get_protocol("text_val_ppl")
    assert protocol.metrics[0] == "ppl" and protocol.higher_is_better == (False, False, False)
