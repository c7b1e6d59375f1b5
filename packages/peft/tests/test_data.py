"""peft's data module: the core text datasets it re-exports (tested in the core, see
``shared/core/tests/test_data_text.py``) and its own ``load_text`` over them."""

import subspace_core.data.datasets.text as core_text
from subspace_core.data import get_dataset
from subspace_peft import data


def test_reexports_are_the_core_objects():
    moved = ["EOS_ID", "LM_SPLITS", "MAX_BYTES", "NEWSGROUPS20", "ORANGE_TEXT_VERSION",
             "REUTERS", "REUTERS_R52", "TEXT_CORPUS", "VOCAB_SIZE", "TextSplit",
             "decode_bytes", "encode_bytes", "lm_corpus", "load_lm_tokens"]
    for name in moved:
        assert name in data.__all__
        assert getattr(data, name) is getattr(core_text, name), name
    for name in ("newsgroups20", "reuters", "reuters_r52"):
        assert get_dataset(name) is getattr(core_text, name.upper())


def test_peft_registers_only_its_own_datasets():
    assert get_dataset("rotten_tomatoes") is data.ROTTEN_TOMATOES
    assert get_dataset("all_minilm_l6_v2") is data.ALL_MINILM_L6_V2
