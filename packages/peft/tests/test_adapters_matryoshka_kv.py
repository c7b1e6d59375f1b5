"""MatryoshkaKV: exactness at full rank, PCA bases, the compressed cache, training, save/load."""

import pytest
import torch
from torch import nn

from subspace_peft.adapters.matryoshka_kv import (
    MatryoshkaKVAttention,
    MatryoshkaKVConfig,
    MatryoshkaKVModel,
    distillation_kl,
    orthogonality_error,
)
from subspace_peft.adapters.zoo import ShippedAdapter

transformers = pytest.importorskip("transformers")

HEAD_DIM = 8


def tiny_llama(seed: int = 0, attn: str = "sdpa") -> nn.Module:
    """LlamaForCausalLM: hidden 32, 2 layers, 4 query / 2 key-value heads of 8."""
    cfg = transformers.LlamaConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                   num_attention_heads=4, num_key_value_heads=2,
                                   head_dim=HEAD_DIM, vocab_size=64, max_position_embeddings=64)
    cfg._attn_implementation = attn
    torch.manual_seed(seed)
    return transformers.LlamaForCausalLM(cfg).eval()


def ids(seed: int = 1, batch: int = 2, length: int = 12) -> torch.Tensor:
    return torch.randint(0, 64, (batch, length), generator=torch.Generator().manual_seed(seed))


def calibrated(model: nn.Module, **config) -> MatryoshkaKVModel:
    kv = MatryoshkaKVModel(model, MatryoshkaKVConfig(**config))
    kv.calibrate(lambda: model(input_ids=ids(seed=7, batch=4, length=16)))
    return kv


@pytest.mark.parametrize("attn", ["eager", "sdpa"])
def test_full_rank_is_the_original_attention(attn):
    model = tiny_llama(attn=attn)
    x = ids()
    reference = model(input_ids=x).logits
    kv = calibrated(model)
    assert torch.allclose(kv(input_ids=x).logits, reference, atol=1e-5)
    kv.set_ranks(3)
    assert not torch.allclose(kv(input_ids=x).logits, reference, atol=1e-3)


def test_wraps_every_attention_and_freezes_the_model():
    model = tiny_llama()
    kv = MatryoshkaKVModel(model)
    assert sorted(kv.attention_layers()) == ["model.layers.0.self_attn",
                                             "model.layers.1.self_attn"]
    trainable = [n for n, p in kv.named_parameters() if p.requires_grad]
    assert all(n.endswith(("key_skew", "value_skew")) for n in trainable) and len(trainable) == 4
    assert kv.num_adapter_parameters() == 2 * 2 * 2 * HEAD_DIM * HEAD_DIM
    assert kv.rank_schedule == tuple(range(1, HEAD_DIM + 1))


def test_pca_bases_keep_the_most_key_energy():
    model = tiny_llama()
    kv = MatryoshkaKVModel(model)
    layer = kv.attention_layers()["model.layers.0.self_attn"]
    from subspace_peft.adapters.matryoshka_kv import KVStatistics
    stats = KVStatistics(layer.kv_heads, HEAD_DIM)
    layer.statistics = stats
    model(input_ids=ids(seed=7, batch=4, length=16))
    layer.statistics = None
    assert stats.tokens == 4 * 16
    layer.init_from_statistics(stats)
    u_k, _ = layer.bases()
    for r in (1, 3, 5):
        kept = torch.einsum("hdr,hde,her->", u_k[..., :r].double(), stats.key,
                            u_k[..., :r].double())
        top = torch.linalg.eigvalsh(stats.key).flip(-1)[:, :r].sum()
        first_coordinates = stats.key.diagonal(dim1=-2, dim2=-1)[:, :r].sum()
        assert torch.isclose(kept, top, rtol=1e-5)
        assert kept >= first_coordinates - 1e-9


def test_cache_holds_the_kept_dimensions_and_matches_the_full_forward():
    model = tiny_llama()
    kv = calibrated(model)
    kv.set_ranks(3, 5)
    x = ids(length=14)
    full = kv(input_ids=x).logits
    cache = transformers.DynamicCache(config=model.config)
    first = kv(input_ids=x[:, :9], cache=cache, use_cache=True)
    second = kv(input_ids=x[:, 9:], cache=first.past_key_values, use_cache=True)
    assert torch.allclose(second.logits, full[:, 9:], atol=1e-5)
    layer0 = second.past_key_values.layers[0]
    assert layer0.keys.shape == (2, 2, 14, 3) and layer0.values.shape == (2, 2, 14, 5)
    assert kv.cache_fraction() == pytest.approx((3 + 5) / (2 * HEAD_DIM))


def test_distillation_trains_the_bases_and_keeps_them_orthogonal():
    model = tiny_llama()
    kv = calibrated(model, rank_schedule=(2, 4))
    x = ids(seed=3, batch=4, length=16)
    frozen = {n: p.detach().clone() for n, p in model.named_parameters()
              if not n.endswith(("key_skew", "value_skew"))}
    optimizer = torch.optim.Adam(kv.adapter_parameters(), lr=3e-2)

    def fixed_rank_kl() -> float:
        with torch.no_grad(), kv.ranks(HEAD_DIM):
            teacher = kv(input_ids=x).logits
        with torch.no_grad(), kv.ranks(2):
            return float(distillation_kl(teacher, kv(input_ids=x).logits))

    before = fixed_rank_kl()
    generator = torch.Generator().manual_seed(0)
    for _ in range(30):
        loss = kv.distillation_loss(x, generator=generator)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    after = fixed_rank_kl()
    assert after < 0.8 * before
    assert orthogonality_error(kv) < 1e-5
    for n, p in model.named_parameters():
        if n in frozen:
            assert torch.equal(p, frozen[n]), n


def test_distillation_loss_is_zero_when_only_full_rank_is_drawn():
    model = tiny_llama()
    kv = calibrated(model, rank_schedule=(HEAD_DIM,))
    assert kv.distillation_loss(ids()).item() < 1e-9


def test_distillation_kl_matches_torch():
    t, s = torch.randn(3, 5, 11), torch.randn(3, 5, 11)
    expected = nn.functional.kl_div(s.log_softmax(-1), t.log_softmax(-1), log_target=True,
                                    reduction="none").sum(-1).mean()
    assert torch.isclose(distillation_kl(t, s), expected, atol=1e-6)
    mask = torch.zeros(3, 5)
    mask[0] = 1
    expected0 = distillation_kl(t[0], s[0])
    assert torch.isclose(distillation_kl(t, s, mask), expected0, atol=1e-6)


def test_ranks_context_restores_and_sampling_uses_the_schedule():
    kv = calibrated(tiny_llama(), rank_schedule=(2, 6))
    kv.set_ranks(4)
    with kv.ranks(1):
        assert set(kv.current_ranks().values()) == {(1, 1)}
    assert set(kv.current_ranks().values()) == {(4, 4)}
    kv.sample_ranks(torch.Generator().manual_seed(0))
    assert {r for pair in kv.current_ranks().values() for r in pair} <= {2, 6}


def test_save_and_load_round_trip(tmp_path):
    model = tiny_llama()
    kv = calibrated(model)
    with torch.no_grad():
        for p in kv.adapter_parameters():
            p.normal_(std=0.1)
    kv.set_ranks(3)
    x = ids()
    expected = kv(input_ids=x).logits
    sha = kv.save_adapter(tmp_path / "kv.safetensors")
    loaded = MatryoshkaKVModel.from_file(tiny_llama(), tmp_path / "kv.safetensors", sha256=sha)
    loaded.set_ranks(3)
    assert torch.allclose(loaded(input_ids=x).logits, expected, atol=1e-5)
    with pytest.raises(ValueError, match=r"fingerprint|weights"):
        MatryoshkaKVModel.from_file(tiny_llama(seed=5), tmp_path / "kv.safetensors")
    with pytest.raises(ValueError, match="sha256"):
        MatryoshkaKVModel.from_file(tiny_llama(), tmp_path / "kv.safetensors", sha256="0" * 64)


def test_shipped_adapter_state_is_the_bases_only():
    kv = calibrated(tiny_llama())
    state = ShippedAdapter(kv).state_dict()
    assert sorted(state) == sorted(f"model.layers.{i}.self_attn.{t}" for i in (0, 1)
                                   for t in ("key_basis", "value_basis"))
    other = ShippedAdapter(MatryoshkaKVModel(tiny_llama()))
    other.load_state_dict(state)
    x = ids()
    kv.set_ranks(2)
    other.adapter.set_ranks(2)
    assert torch.allclose(other(input_ids=x).logits, kv(input_ids=x).logits, atol=1e-5)


def test_unload_restores_the_plain_model():
    model = tiny_llama()
    x = ids()
    reference = model(input_ids=x).logits
    kv = calibrated(model)
    kv.set_ranks(2)
    plain = kv.unload()
    assert not any(isinstance(m, MatryoshkaKVAttention) for m in plain.modules())
    assert torch.allclose(plain(input_ids=x).logits, reference)


def test_bad_input_is_refused():
    with pytest.raises(ValueError, match="rank_schedule"):
        MatryoshkaKVConfig(rank_schedule=(0, 4))
    with pytest.raises(ValueError, match="init"):
        MatryoshkaKVConfig(init="random")
    with pytest.raises(ValueError, match="rank_schedule"):
        MatryoshkaKVModel(tiny_llama(), MatryoshkaKVConfig(rank_schedule=(4, 16)))
    kv = MatryoshkaKVModel(tiny_llama())
    with pytest.raises(ValueError, match="key_rank"):
        kv.set_ranks(HEAD_DIM + 1)
    with pytest.raises(ValueError, match="no rank for layer"):
        kv.set_ranks({"model.layers.0.self_attn": 2})
    with pytest.raises(TypeError, match="Llama-family"):
        MatryoshkaKVAttention(nn.Linear(4, 4))
    with pytest.raises(ValueError, match="matched no"):
        MatryoshkaKVModel(tiny_llama(), MatryoshkaKVConfig(target_modules="cross_attn"))


def test_calibrate_init_override():
    model = tiny_llama()
    kv = MatryoshkaKVModel(model, MatryoshkaKVConfig(init="identity"))
    run = lambda: model(input_ids=ids(seed=7, batch=4, length=16))  # noqa: E731
    kv.calibrate(run)
    eye = torch.eye(HEAD_DIM)
    assert all(torch.allclose(u, eye) for layer in kv.attention_layers().values()
               for u in layer.bases()[0])
    kv.calibrate(run, init="pca")
    assert not torch.allclose(kv.attention_layers()["model.layers.0.self_attn"].bases()[0][0],
                              eye)
    with pytest.raises(ValueError, match="init"):
        kv.calibrate(run, init="svd")


def test_benchmark_wiring_on_a_tiny_llama(monkeypatch, tmp_path):
    import json

    import subspace_peft.adapters.matryoshka_kv.protocol as protocol
    import subspace_peft.smollm2 as smollm2
    from subspace_core.bench import BenchContext
    from subspace_peft.benchmarks.matryoshka_kv import (
        IDENTITY,
        METHOD,
        PCA,
        MatryoshkaKVBenchConfig,
        run_matryoshka_kv,
    )

    cfg = transformers.LlamaConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                   num_attention_heads=4, num_key_value_heads=2,
                                   head_dim=HEAD_DIM, vocab_size=64,
                                   max_position_embeddings=512)
    torch.manual_seed(0)
    model = transformers.LlamaForCausalLM(cfg).eval()
    state = {k: v.clone() for k, v in model.state_dict().items()}

    def load(**_):
        fresh = transformers.LlamaForCausalLM(cfg).eval()
        fresh.load_state_dict(state)
        return fresh

    g = torch.Generator().manual_seed(0)
    streams = protocol.KVStreams(torch.randint(0, 64, (4, 256), generator=g),
                                 torch.randint(0, 64, (2000,), generator=g),
                                 torch.randint(0, 64, (1200,), generator=g))
    monkeypatch.setattr(smollm2, "load_smollm2", load)
    monkeypatch.setattr(protocol, "newsgroups_streams", lambda: streams)
    ctx = BenchContext(quick=True, device=torch.device("cpu"), out_dir=tmp_path)
    rows = run_matryoshka_kv(ctx, MatryoshkaKVBenchConfig(ranks=(2, 4), eval_windows=2,
                                                          train_steps=2))
    by = {(r.case.rsplit(" ", 1)[-1], r.method): r.value for r in rows}
    assert {m for _, m in by} == {METHOD, PCA, IDENTITY, "original (full cache)"}
    for r in ("2/8", "4/8"):
        assert by[(r, PCA)] != by[(r, IDENTITY)]
        assert by[(r, METHOD)] != by[(r, PCA)]
    summary = json.loads((tmp_path / "matryoshka_kv.json").read_text())
    assert summary["head_dim"] == HEAD_DIM and set(summary["curves"]) == {METHOD, PCA, IDENTITY}
    assert (tmp_path / "matryoshka_kv_curve.png").stat().st_size > 1000
