"""Rotten Tomatoes data, MiniLM loading and the fine-tuning harness (full / GaLore / LoRA)."""

import numpy as np
import pytest
import torch

from subspace_core.bench import list_benchmarks
from subspace_core.data import get_dataset, load_dataset
from subspace_peft.data import RT_CLASSES, load_rotten_tomatoes, load_text
from subspace_peft.finetune import (
    Encoded,
    FinetuneConfig,
    MiniLMClassifier,
    build_classifier,
    collate,
    encode,
    eval_batches,
    finetune,
    matrix_parameters,
    optimizer_state_bytes,
    prepare_method,
    train_batches,
)

pytest.importorskip("transformers")
pytest.importorskip("peft")

SIZES = {"train": 10_201, "validation": 1_275, "test": 1_275}


def _key(text: str) -> str:
    return " ".join(text.split()).casefold()


# ----------------------------------------------------------------------------- data
def test_rotten_tomatoes_splits():
    splits = {name: load_rotten_tomatoes(name) for name in SIZES}
    for name, split in splits.items():
        assert len(split) == SIZES[name] == len(split.labels)
        assert split.classes == RT_CLASSES == ("rotten", "fresh")
        counts = np.bincount(split.labels, minlength=2)
        assert 0.41 < counts[0] / len(split) < 0.43  # stratified: 5,405 / 12,808 rotten
    keys = {name: {_key(t) for t in s.texts} for name, s in splits.items()}
    assert sum(len(k) for k in keys.values()) == sum(SIZES.values())  # deduplicated
    assert not keys["train"] & keys["test"] and not keys["train"] & keys["validation"]
    assert not keys["validation"] & keys["test"]
    again = load_text("rotten_tomatoes", "test")  # deterministic
    assert again.texts == splits["test"].texts and np.array_equal(again.labels,
                                                                  splits["test"].labels)
    assert splits["test"].texts[0].startswith("Achieves a sort of filmic epiphany")
    with pytest.raises(ValueError, match="split"):
        load_rotten_tomatoes("dev")


def test_rotten_tomatoes_registered_view():
    spec = get_dataset("rotten_tomatoes")
    assert spec.splits == ("train", "validation", "test") and len(spec.files[0].sha256) == 64
    view = load_dataset("rotten_tomatoes", "validation", progress=False)
    assert view.x.shape == (SIZES["validation"], 512) and view.x.dtype == torch.uint8
    first = load_rotten_tomatoes("validation").texts[0].encode()
    assert bytes(view.x[0, : len(first)].tolist()) == first and int(view.x[0, len(first)]) == 0


def test_minilm_files_entry_is_not_a_dataset():
    spec = get_dataset("all_minilm_l6_v2")
    assert {f.name for f in spec.files} >= {"model.safetensors", "config.json", "vocab.txt"}
    assert all(len(f.sha256) == 64 for f in spec.files)
    with pytest.raises(ValueError, match="holds files, not examples"):
        load_dataset("all_minilm_l6_v2", "files", progress=False)


# ----------------------------------------------------------------------------- model
@pytest.fixture(scope="module")
def minilm():
    from subspace_peft.hf import load_minilm, load_minilm_tokenizer

    return load_minilm(), load_minilm_tokenizer()


def test_minilm_sentence_embeddings(minilm):
    from subspace_peft.hf import embed

    encoder, tokenizer = minilm
    assert sum(p.numel() for p in encoder.parameters()) == 22_565_376  # no pooler
    emb = embed(["A man is eating food.", "A man is eating a piece of bread.",
                 "The stock market fell sharply today."], model=encoder, tokenizer=tokenizer)
    assert emb.shape == (3, 384)
    torch.testing.assert_close(emb.norm(dim=1), torch.ones(3))
    sim = emb @ emb.T
    assert sim[0, 1] > 0.6 and sim[0, 2] < 0.2 and sim[1, 2] < 0.2


def _tiny(tokenizer, n: int = 8) -> Encoded:
    texts = ["A gorgeous, moving film.", "Dull and lifeless.", "A triumph of acting.",
             "Painfully boring from start to finish.", "Smart, funny and warm.",
             "An incoherent mess.", "One of the year's best.", "I wanted my money back."]
    return encode(texts[:n], [1, 0] * (n // 2), tokenizer, max_length=16)


def test_batches_cover_every_example_once(minilm):
    _, tokenizer = minilm
    data = _tiny(tokenizer)
    assert data.input_ids.shape == (8, 16) and int(data.lengths.max()) <= 16
    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    b1, b2 = train_batches(data, 3, g1, bucket=1), train_batches(data, 3, g2, bucket=1)
    assert [b.tolist() for b in b1] == [b.tolist() for b in b2]
    assert sorted(torch.cat(b1).tolist()) == list(range(8))
    assert sorted(torch.cat(list(eval_batches(data, 5))).tolist()) == list(range(8))
    inputs, labels = collate(data, torch.tensor([0, 1]))
    assert inputs["input_ids"].shape[1] == int(data.lengths[:2].max()) and labels.tolist() == [1, 0]


def test_lora_adapter_param_count(minilm):
    from peft import PeftModel

    encoder, _ = minilm
    model = build_classifier(encoder=encoder)
    prepared = prepare_method("lora", model, 1e-3)
    assert isinstance(prepared.model, PeftModel)
    trainable = {n: p.numel() for n, p in prepared.model.named_parameters() if p.requires_grad}
    lora = {n: c for n, c in trainable.items() if "lora_" in n}
    # 6 layers x (4 x 8*(384+384) + 2 x 8*(384+1536)) = 331,776; head 384*2+2 = 770
    assert len(lora) == 6 * 6 * 2 and sum(lora.values()) == 331_776
    assert sum(trainable.values()) == 331_776 + 770
    assert all("head" in n for n in trainable if "lora_" not in n)


def test_galore_groups_and_state_bytes(minilm):
    encoder, _ = minilm
    galore = prepare_method("galore", build_classifier(encoder=encoder), 1e-4)
    projected = [g for g in galore.optimizer.param_groups if g["rank"] is not None]
    assert len(projected) == 1 and len(projected[0]["params"]) == 36
    assert projected[0]["rank"] == 8 and projected[0]["scale"] == 4.0
    # exact AdamW state: two float32 moments per element and a float32 step per tensor
    layer = torch.nn.Linear(5, 3)
    opt = torch.optim.AdamW(layer.parameters())
    layer(torch.ones(2, 5)).sum().backward()
    opt.step()
    assert optimizer_state_bytes(opt) == 2 * 4 * (15 + 3) + 2 * 4


@pytest.mark.parametrize(("method", "lr"), [("full", 1e-4), ("galore", 2e-4), ("lora", 2e-3)])
def test_few_steps_reduce_training_loss(minilm, method, lr):
    encoder, tokenizer = minilm
    data = _tiny(tokenizer)
    cfg = FinetuneConfig(method, lr, epochs=5, batch_size=8, warmup_ratio=0.0, dropout=0.0)
    result = finetune(cfg, data, test=data, encoder=encoder)
    assert result.steps == 5 and len(result.losses) == 5
    assert result.losses[-1] < result.losses[0] - 0.05, result.losses
    assert result.optimizer_state_bytes > 0 and result.test_accuracy is not None
    full_elems = sum(p.numel() for p in encoder.parameters()) + 384 * 2 + 2
    matrix_elems = 6 * (4 * 384 * 384 + 2 * 384 * 1536)
    if method == "lora":
        assert result.trainable_params == 332_546
        assert result.optimizer_state_bytes < 0.02 * 8 * full_elems
        assert result.matrix_state_bytes == 8 * 331_776 + 4 * 72
    else:
        assert result.trainable_params == full_elems
    if method == "full":
        assert result.matrix_state_bytes == 8 * matrix_elems + 4 * 36
    if method == "galore":  # low-rank moments for the 36 matrices (embeddings stay AdamW)
        assert result.optimizer_state_bytes < 0.6 * 8 * full_elems
        assert result.matrix_state_bytes < 0.03 * 8 * matrix_elems  # 2.2 MB vs 85 MB


@pytest.mark.parametrize(("method", "lr"), [("svfit", 2e-2), ("corda_kpm", 1e-3),
                                          ("corda_ipm", 1e-3)])
def test_subspace_adapters_train_on_the_harness(minilm, method, lr):
    from subspace_peft.adapters import AdapterModel

    encoder, tokenizer = minilm
    data = _tiny(tokenizer)
    model = build_classifier(encoder=encoder, seed=0, dropout=0.0).eval()
    inputs, _ = collate(data, torch.arange(len(data)))
    with torch.no_grad():
        before = model(**inputs)
    calls = []
    prepared = prepare_method(method, model, lr,
                              calibrate=lambda m: calls.append(m(**inputs)))
    assert isinstance(prepared.model, AdapterModel)
    assert len(calls) == (0 if method == "svfit" else 1)
    with torch.no_grad():  # every adapter starts at the pretrained function
        torch.testing.assert_close(prepared.model(**inputs), before, atol=1e-4, rtol=1e-4)
    adapter = sum(p.numel() for p in matrix_parameters(prepared.model))
    # SVFit: every singular value of the 36 matrices (6 x (4 x 384 + 2 x 384)); CorDA: rank 8
    assert adapter == (6 * 6 * 384 if method == "svfit" else 331_776)
    cfg = FinetuneConfig(method, lr, epochs=5, batch_size=8, warmup_ratio=0.0, dropout=0.0)
    result = finetune(cfg, data, test=data, encoder=encoder)
    assert result.losses[-1] < result.losses[0] - 0.05, result.losses
    assert result.trainable_params == adapter + 384 * 2 + 2
    if method.startswith("corda"):  # CorDA without calibration data is an error, not a guess
        with pytest.raises(ValueError, match="calibrate"):
            prepare_method(method, build_classifier(encoder=encoder), lr)


def test_classifier_is_a_fresh_copy(minilm):
    encoder, _ = minilm
    a, b = build_classifier(encoder=encoder, seed=1), build_classifier(encoder=encoder, seed=1)
    assert isinstance(a, MiniLMClassifier) and a.encoder is not encoder
    torch.testing.assert_close(a.head.weight, b.head.weight)
    with pytest.raises(ValueError, match="method"):
        prepare_method("adam", a, 1e-3)


def test_benchmark_registered():
    benches = {b.name: b for b in list_benchmarks(["peft"])}
    bench = benches["peft/minilm_sentiment"]
    assert bench.method.startswith("GaLore") and len(bench.baselines) == 2
    for name in ("peft/minilm_adapters", "peft/minilm_adapters_20ng"):
        adapters = benches[name]
        assert adapters.method.startswith("SVFit") and len(adapters.baselines) == 5
    assert "Rotten Tomatoes" in benches["peft/minilm_adapters"].description
    assert "20 Newsgroups" in benches["peft/minilm_adapters_20ng"].description
    from subspace_peft.benchmarks.finetuning import ADAPTER_METHODS, TUNED_LR

    assert set(ADAPTER_METHODS) <= set(TUNED_LR)


@pytest.mark.slow
def test_benchmark_quick(tmp_path):
    from subspace_core.bench import BenchContext
    from subspace_peft.benchmarks.finetuning import LABELS, run_minilm_sentiment

    rows = run_minilm_sentiment(BenchContext(True, torch.device("cpu"), tmp_path))
    assert {r.method for r in rows} == set(LABELS.values())
    assert (tmp_path / "peft_minilm_sentiment.json").is_file()


def test_sara_trains_on_the_harness_with_its_penalty_and_reselection(minilm):
    from subspace_peft.adapters import SaRAModel

    encoder, tokenizer = minilm
    data = _tiny(tokenizer)
    prepared = prepare_method("sara", build_classifier(encoder=encoder, seed=0), 1e-3)
    assert isinstance(prepared.model, SaRAModel)
    # 10 % of every one of the 36 matrices' entries (floor per matrix), plus the head
    per_layer = 6 * (4 * (384 * 384 // 10) + 2 * (384 * 1536 // 10))
    assert sum(p.numel() for p in matrix_parameters(prepared.model)) == per_layer
    cfg = FinetuneConfig("sara", 1e-3, epochs=4, batch_size=8, warmup_ratio=0.0, dropout=0.0)
    result = finetune(cfg, data, test=data, encoder=encoder)
    assert result.losses[-1] < result.losses[0] - 0.05, result.losses
    assert result.model._reselected_at == round(0.5 * result.steps)
    assert result.trainable_params <= per_layer + 384 * 2 + 2
