"""Tokenised text classification data and the batch orders shared by every method.

:class:`Encoded` holds a split tokenised once (``max_length`` tokens, right-padded); batches
are index tensors into it, and :func:`collate` trims each batch to its longest row, so the
cost of a step follows the real lengths. Training batches are *bucketed*: each epoch the
examples are shuffled (seeded ``torch.Generator``), cut into pools of ``bucket`` batches,
each pool is sorted by length and cut into batches, and the batch order is shuffled again
(the classic bucket iterator: little padding, still random). Evaluation batches are sorted
by length (deterministic; order does not change an accuracy).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch

__all__ = ["Encoded", "collate", "encode", "eval_batches", "subset", "train_batches"]


@dataclass(frozen=True)
class Encoded:
    """A tokenised split: ``input_ids``/``attention_mask`` ``[N, max_length]`` int64,
    ``lengths`` ``[N]`` (tokens incl. [CLS]/[SEP]), ``labels`` ``[N]`` int64."""

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    lengths: torch.Tensor
    labels: torch.Tensor

    def __len__(self) -> int:
        return int(self.labels.shape[0])


def encode(texts: Sequence[str], labels, tokenizer, *, max_length: int = 64) -> Encoded:
    """Tokenise ``texts`` (truncated to ``max_length`` tokens) with their ``labels``."""
    if isinstance(texts, str):
        raise TypeError("texts: expected a sequence of strings, got a single str")
    labels = torch.as_tensor(np.asarray(labels), dtype=torch.int64)
    if labels.dim() != 1 or labels.shape[0] != len(texts):
        raise ValueError(f"labels: expected shape [{len(texts)}], got {tuple(labels.shape)}")
    if max_length < 2:
        raise ValueError(f"max_length: expected >= 2, got {max_length}")
    batch = tokenizer(list(texts), padding="max_length", truncation=True,
                      max_length=max_length, return_tensors="pt")
    mask = batch["attention_mask"].to(torch.int64)
    return Encoded(batch["input_ids"].to(torch.int64), mask, mask.sum(1), labels)


def subset(data: Encoded, n: int | None, seed: int = 0) -> Encoded:
    """``n`` examples of ``data`` drawn without replacement with ``seed`` (all when None or
    ``n >= len(data)``), in their original order."""
    if n is None or n >= len(data):
        return data
    if n < 1:
        raise ValueError(f"n: expected >= 1, got {n}")
    g = torch.Generator().manual_seed(seed)
    idx = torch.randperm(len(data), generator=g)[:n].sort().values
    return Encoded(data.input_ids[idx], data.attention_mask[idx], data.lengths[idx],
                   data.labels[idx])


def train_batches(data: Encoded, batch_size: int, generator: torch.Generator, *,
                  bucket: int = 50) -> list[torch.Tensor]:
    """One epoch of bucketed, shuffled training batches (index tensors; last may be short)."""
    if batch_size < 1:
        raise ValueError(f"batch_size: expected >= 1, got {batch_size}")
    order = torch.randperm(len(data), generator=generator)
    pool = batch_size * max(1, bucket)
    batches: list[torch.Tensor] = []
    for start in range(0, len(order), pool):
        chunk = order[start:start + pool]
        chunk = chunk[torch.argsort(data.lengths[chunk], stable=True)]
        batches += list(chunk.split(batch_size))
    perm = torch.randperm(len(batches), generator=generator).tolist()
    return [batches[i] for i in perm]


def eval_batches(data: Encoded, batch_size: int) -> Iterator[torch.Tensor]:
    """Batches of indices sorted by length (every example exactly once)."""
    order = torch.argsort(data.lengths, stable=True)
    yield from order.split(batch_size)


def collate(data: Encoded, idx: torch.Tensor, device: torch.device | str = "cpu"
            ) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """Model inputs (trimmed to the batch's longest row) and labels for rows ``idx``."""
    width = int(data.lengths[idx].max())
    inputs = {"input_ids": data.input_ids[idx, :width].to(device),
              "attention_mask": data.attention_mask[idx, :width].to(device)}
    return inputs, data.labels[idx].to(device)
