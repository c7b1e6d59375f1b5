"""Embedding-kNN text classification at every (layer, dim) pair of a 2D Matryoshka encoder.

The protocol of the Starbucks MiniLM (:mod:`subspace_ssl.starbucks`): documents are
encoded once (first 128 WordPiece tokens, every layer's mean pool from one forward pass);
for each pair of the grid (layers 1..6 x dims {32, 64, 128, 256, 384}) the test documents'
(layer, dim) embeddings are classified by cosine kNN against the training documents'
(:func:`subspace_ssl.probes.knn_accuracy`: k = 10 nearest neighbours vote with weight
``exp(cos / 0.1)``).

Data: the core text datasets ``newsgroups20`` (20 Newsgroups, 20 classes) and ``reuters``
(Reuters R8, 8 classes), train split = the kNN bank, test split = the queries. To keep an
evaluation within minutes on a CPU (encoding costs ~0.06-0.09 s per document of <= 128
tokens on one loaded core), each uses a fixed subset: ``n_train`` bank and ``n_test`` query
documents drawn without replacement by ``numpy.random.default_rng(seed)`` (kept in file
order).

Registered protocols (``model.encode(texts) -> [L, N, D]`` pooled states, the
:class:`~subspace_ssl.starbucks.StarbucksMiniLM` interface):

=====================  ==============  ============================  =========================
protocol               dataset         documents (bank / queries)    metrics
=====================  ==============  ============================  =========================
``minilm_knn_ng20``    newsgroups20    2,000 train / 1,000 test      knn_full, knn_grid_mean,
                                       (seed 0)                      knn_min, knn_l{l}_d{d}
``minilm_knn_r8``      reuters         2,000 train / 1,000 test      same
                                       (seed 0)
=====================  ==============  ============================  =========================

``knn_full`` is the (6, 384) accuracy (%), ``knn_grid_mean``/``knn_min`` the mean/min over
the 30 grid pairs, ``knn_l{l}_d{d}`` each pair's.

:func:`compare_knn_grids` runs the base model and a Starbucks model on the same documents in
one run (embeddings cached per model), writes the grids as JSON and a PNG, and reports the
issue's targets: Starbucks >= base at every pair, full size within 1 point of the base.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from subspace_core.eval import Protocol, register_protocol
from subspace_ssl.probes import knn_accuracy
from subspace_ssl.starbucks import GRID_DIMS, GRID_LAYERS

__all__ = [
    "DATASET_SHORT",
    "KNN_K",
    "KNN_TEMPERATURE",
    "MINILM_KNN_NG20",
    "MINILM_KNN_R8",
    "KNNTask",
    "compare_knn_grids",
    "encode_task",
    "grid_metrics",
    "knn_grid",
    "load_knn_task",
    "plot_knn_grids",
    "text_knn_protocol",
]

KNN_K = 10
KNN_TEMPERATURE = 0.1
#: Protocol subset sizes (bank, queries) and seed.
N_TRAIN, N_TEST, SUBSET_SEED = 2000, 1000, 0
#: dataset name -> short name used in protocol and file names.
DATASET_SHORT = {"newsgroups20": "ng20", "reuters": "r8"}


@dataclass(frozen=True)
class KNNTask:
    """Bank (train) and query (test) documents of one dataset, with integer labels."""

    dataset: str
    train_texts: list[str]
    train_labels: torch.Tensor
    test_texts: list[str]
    test_labels: torch.Tensor
    classes: tuple[str, ...]
    seed: int


def _subset(n_total: int, n: int | None, rng: np.random.Generator) -> np.ndarray:
    if n is None or n >= n_total:
        return np.arange(n_total)
    if n < 1:
        raise ValueError(f"subset size: expected >= 1 documents (or None for all), got {n}")
    return np.sort(rng.choice(n_total, size=n, replace=False))


def load_knn_task(
    dataset: str, n_train: int | None = N_TRAIN, n_test: int | None = N_TEST, *, seed: int = 0
) -> KNNTask:
    """The kNN task of ``dataset`` (``newsgroups20`` | ``reuters``): ``n_train`` bank and
    ``n_test`` query documents (None = the whole split) drawn with ``default_rng(seed)``."""
    from subspace_core.data.datasets.text import load_text

    if dataset not in DATASET_SHORT:
        raise ValueError(f"dataset: expected one of {list(DATASET_SHORT)}, got {dataset!r}")
    train, test = load_text(dataset, "train"), load_text(dataset, "test")
    rng = np.random.default_rng(seed)
    tr, te = _subset(len(train), n_train, rng), _subset(len(test), n_test, rng)
    return KNNTask(
        dataset=dataset,
        train_texts=[train.texts[i] for i in tr],
        train_labels=torch.as_tensor(train.labels[tr]),
        test_texts=[test.texts[i] for i in te],
        test_labels=torch.as_tensor(test.labels[te]),
        classes=train.classes,
        seed=seed,
    )


@torch.no_grad()
def knn_grid(
    train_pooled: torch.Tensor,
    train_labels: torch.Tensor,
    test_pooled: torch.Tensor,
    test_labels: torch.Tensor,
    *,
    layers: Sequence[int] = GRID_LAYERS,
    dims: Sequence[int] = GRID_DIMS,
    k: int = KNN_K,
    temperature: float = KNN_TEMPERATURE,
    n_classes: int | None = None,
) -> torch.Tensor:
    """kNN accuracy (%) at every (layer, dim): ``[len(layers), len(dims)]`` float64.

    ``train_pooled`` ``[L, N, D]`` / ``test_pooled`` ``[L, M, D]`` are pooled states
    (:meth:`StarbucksMiniLM.encode`); entry ``[i, j]`` classifies the test documents by
    the first ``dims[j]`` coordinates of layer ``layers[i]`` (normalised after truncation).
    """
    if train_pooled.dim() != 3 or test_pooled.dim() != 3:
        raise ValueError(
            f"train_pooled/test_pooled: expected [L, N, D] tensors, got "
            f"{tuple(train_pooled.shape)} and {tuple(test_pooled.shape)}"
        )
    if (train_pooled.shape[0], train_pooled.shape[2]) != (
        test_pooled.shape[0],
        test_pooled.shape[2],
    ):
        raise ValueError(
            f"train_pooled/test_pooled: expected the same L and D, got "
            f"{tuple(train_pooled.shape)} and {tuple(test_pooled.shape)}"
        )
    num_layers, _, hidden = train_pooled.shape
    for layer in layers:
        if not 1 <= layer <= num_layers:
            raise ValueError(f"layers: expected values in [1, {num_layers}], got {list(layers)}")
    for dim in dims:
        if not 1 <= dim <= hidden:
            raise ValueError(f"dims: expected values in [1, {hidden}], got {list(dims)}")
    if n_classes is None:
        n_classes = int(max(train_labels.max(), test_labels.max())) + 1
    grid = torch.zeros(len(layers), len(dims), dtype=torch.float64)
    for i, layer in enumerate(layers):
        for j, dim in enumerate(dims):
            # knn_accuracy L2-normalises the truncated vectors: truncate, then normalise
            grid[i, j] = knn_accuracy(
                train_pooled[layer - 1, :, :dim], train_labels,
                test_pooled[layer - 1, :, :dim], test_labels,
                k=k, temperature=temperature, n_classes=n_classes,
            )  # fmt: skip
    return grid


def grid_metrics(
    grid: torch.Tensor, layers: Sequence[int] = GRID_LAYERS, dims: Sequence[int] = GRID_DIMS
) -> dict[str, float]:
    """Protocol metrics of a grid: ``knn_full`` (largest layer and dim) first, then
    ``knn_grid_mean``, ``knn_min`` and ``knn_l{l}_d{d}`` for every pair."""
    if tuple(grid.shape) != (len(layers), len(dims)):
        raise ValueError(
            f"grid: expected shape {(len(layers), len(dims))}, got {tuple(grid.shape)}"
        )
    out = {
        "knn_full": float(grid[-1, -1]),
        "knn_grid_mean": float(grid.mean()),
        "knn_min": float(grid.min()),
    }
    for i, layer in enumerate(layers):
        for j, dim in enumerate(dims):
            out[f"knn_l{layer}_d{dim}"] = float(grid[i, j])
    return out


def _cache_file(cache_dir: Path, tag: str, task: KNNTask, split: str, n: int, max_length: int):
    short = DATASET_SHORT[task.dataset]
    return cache_dir / f"{tag}_{short}_{split}{n}_s{task.seed}_t{max_length}.safetensors"


def encode_task(
    model: nn.Module,
    task: KNNTask,
    *,
    cache_dir: str | Path | None = None,
    tag: str | None = None,
    max_length: int = 128,
    progress: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Pooled states ``([L, N, D], [L, M, D])`` of the task's bank and query documents.

    With ``cache_dir`` and ``tag`` (a name for *these weights*, e.g. ``base`` or the
    adapter's sha256), each split is read from / written to
    ``cache_dir/<tag>_<ds>_<split><n>_s<seed>_t<max_length>.safetensors``, so a resumed or
    repeated run encodes nothing twice. A wrong tag gives stale embeddings: tag by weights.
    """
    from safetensors.torch import load_file, save_file

    from subspace_core.io import atomic_path

    if (cache_dir is None) != (tag is None):
        raise ValueError("cache_dir, tag: expected both (to cache) or neither")
    out = []
    for split, texts in (("train", task.train_texts), ("test", task.test_texts)):
        path = None
        if cache_dir is not None:
            path = _cache_file(Path(cache_dir), tag, task, split, len(texts), max_length)
            if path.is_file():
                out.append(load_file(str(path))["pooled"])
                continue
        pooled = model.encode(texts, max_length=max_length, progress=progress)
        if path is not None:
            with atomic_path(path) as tmp:
                save_file({"pooled": pooled.contiguous()}, str(tmp))
        out.append(pooled)
    return out[0], out[1]


def text_knn_protocol(
    name: str,
    dataset: str,
    *,
    n_train: int | None = N_TRAIN,
    n_test: int | None = N_TEST,
    seed: int = SUBSET_SEED,
    max_length: int = 128,
) -> Protocol:
    """A kNN-grid protocol over ``dataset`` (the registered ones use the defaults)."""

    def run(model: nn.Module, device: torch.device) -> dict[str, float]:
        task = load_knn_task(dataset, n_train, n_test, seed=seed)
        bank, queries = encode_task(model.to(device), task, max_length=max_length)
        grid = knn_grid(bank, task.train_labels, queries, task.test_labels,
                        n_classes=len(task.classes))  # fmt: skip
        return grid_metrics(grid)

    n_tr = "all" if n_train is None else f"{n_train:,}"
    n_te = "all" if n_test is None else f"{n_test:,}"
    pairs = [f"knn_l{layer}_d{dim}" for layer in GRID_LAYERS for dim in GRID_DIMS]
    return Protocol(
        name=name,
        dataset=dataset,
        split="test",
        preprocessing=f"first {max_length} WordPiece tokens; mean pool of each layer's hidden "
        "states; (layer, dim) embedding = first dim coordinates, L2-normalised",
        metrics=("knn_full", "knn_grid_mean", "knn_min", *pairs),
        higher_is_better=(True,) * (3 + len(pairs)),
        run=run,
        description=f"Cosine kNN (k={KNN_K}, weights exp(cos/{KNN_TEMPERATURE})) accuracy (%) "
        f"at every (layer 1-6, dim 32/64/128/256/384) pair: {n_tr} {dataset} train documents as "
        f"the bank, {n_te} test documents as queries (subsets drawn with seed {seed}).",
    )


MINILM_KNN_NG20 = register_protocol(text_knn_protocol("minilm_knn_ng20", "newsgroups20"))
MINILM_KNN_R8 = register_protocol(text_knn_protocol("minilm_knn_r8", "reuters"))


def plot_knn_grids(results: dict[str, Any], path: str | Path) -> Path:
    """PNG of the grids in ``results`` (as :func:`compare_knn_grids` returns): one row per
    dataset, columns base / Starbucks / Starbucks - base, accuracy in each cell."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from subspace_core.io import atomic_path

    datasets = list(results["datasets"])
    layers, dims = results["layers"], results["dims"]
    fig, axes = plt.subplots(len(datasets), 3, figsize=(13, 3.6 * len(datasets)), squeeze=False)
    for row, name in enumerate(datasets):
        res = results["datasets"][name]
        base, star = np.array(res["base"]), np.array(res["starbucks"])
        lo, hi = min(base.min(), star.min()), max(base.max(), star.max())
        diff = star - base
        span = max(1.0, float(np.abs(diff).max()))
        panels = (("base MiniLM", base, "viridis", lo, hi),
                  ("Starbucks MiniLM", star, "viridis", lo, hi),
                  ("Starbucks - base (points)", diff, "RdBu", -span, span))  # fmt: skip
        for col, (title, values, cmap, vmin, vmax) in enumerate(panels):
            ax = axes[row, col]
            ax.imshow(values, cmap=cmap, vmin=vmin, vmax=vmax, origin="lower", aspect="auto")
            for i in range(len(layers)):
                for j in range(len(dims)):
                    text = f"{values[i, j]:+.1f}" if col == 2 else f"{values[i, j]:.1f}"
                    ax.text(j, i, text, ha="center", va="center", fontsize=8)
            ax.set_xticks(range(len(dims)), [str(d) for d in dims])
            ax.set_yticks(range(len(layers)), [str(layer) for layer in layers])
            ax.set_xlabel("dims")
            ax.set_ylabel("layers")
            ax.set_title(f"{name}: {title}", fontsize=10)
    fig.suptitle(f"kNN accuracy (%) per (layer, dim), k={results['k']}: "
                 f"{results.get('model', 'Starbucks')} vs base")  # fmt: skip
    fig.tight_layout()
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
    return path


def compare_knn_grids(
    base: nn.Module,
    model: nn.Module,
    out_dir: str | Path,
    *,
    model_tag: str,
    datasets: Sequence[str] = ("newsgroups20", "reuters"),
    n_train: int | None = N_TRAIN,
    n_test: int | None = N_TEST,
    seed: int = SUBSET_SEED,
    max_length: int = 128,
    cache: bool = True,
    progress: bool = False,
) -> dict[str, Any]:
    """kNN grids of ``base`` and ``model`` on the same documents, written as
    ``out_dir/knn_grids.json`` and ``out_dir/knn_grids.png``; returns the JSON's dict.

    Per dataset: ``base``/``starbucks`` grids ``[layers][dims]`` (%), ``min_gain`` (the
    smallest Starbucks - base over the grid), ``full_gap`` (Starbucks - base at the full
    size), and the issue's targets ``beats_base_everywhere`` (min_gain >= 0) and
    ``full_within_1pt`` (full_gap >= -1). Embeddings are cached under
    ``out_dir/embeddings`` (tags ``base`` and ``model_tag``) unless ``cache=False``.
    """
    from subspace_core.io import atomic_path

    out_dir = Path(out_dir)
    cache_dir = out_dir / "embeddings" if cache else None
    results: dict[str, Any] = {
        "layers": list(GRID_LAYERS), "dims": list(GRID_DIMS), "k": KNN_K,
        "temperature": KNN_TEMPERATURE, "n_train": n_train, "n_test": n_test, "seed": seed,
        "max_length": max_length, "model": model_tag, "datasets": {},
    }  # fmt: skip
    for dataset in datasets:
        task = load_knn_task(dataset, n_train, n_test, seed=seed)
        grids = {}
        for label, net, tag in (("base", base, "base"), ("starbucks", model, model_tag)):
            bank, queries = encode_task(
                net, task, cache_dir=cache_dir, tag=tag if cache else None,
                max_length=max_length, progress=progress,
            )  # fmt: skip
            grids[label] = knn_grid(bank, task.train_labels, queries, task.test_labels,
                                    n_classes=len(task.classes))  # fmt: skip
        diff = grids["starbucks"] - grids["base"]
        results["datasets"][dataset] = {
            "n_bank": len(task.train_texts),
            "n_queries": len(task.test_texts),
            "base": grids["base"].tolist(),
            "starbucks": grids["starbucks"].tolist(),
            "min_gain": float(diff.min()),
            "full_gap": float(diff[-1, -1]),
            "beats_base_everywhere": bool(diff.min() >= 0),
            "full_within_1pt": bool(diff[-1, -1] >= -1.0),
        }
    out_dir.mkdir(parents=True, exist_ok=True)
    with atomic_path(out_dir / "knn_grids.json") as tmp:
        tmp.write_text(json.dumps(results, indent=2))
    plot_knn_grids(results, out_dir / "knn_grids.png")
    return results
