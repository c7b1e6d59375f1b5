"""Recipe for ``ssl/mlc_small.fmnist``: MLC clustering of Fashion-MNIST on frozen features.

Input: the pooled features (``[N, 1280]``) of the frozen ImageNet MobileNetV2 of
:mod:`subspace_core.backbones` (28x28 greyscale images resized to 96 px), extracted once per
process (:func:`image_features`) for the 60k training images. The feature source is a
name in :data:`FEATURE_SOURCES`; :func:`register_feature_source` plugs in another encoder
(e.g. the package's Barlow Twins encoder) — the model's ``input_dim`` follows its width.

Model: :class:`subspace_ssl.mcr2.MLC` (trunk 1280-512-512, feature and cluster heads of
width 64 with linear skips, 1.15 M parameters, 4.6 MB in float32), input standardised with
the training set's statistics, skips started at the top-64 principal directions, one-shot
initialisation (cluster head = copy of the feature head). Training: the MLC objective
(``ε = 0.3``, Sinkhorn ``η = 0.2``, 10 rounds, entropy weight ``γ = 0.1``), mini-batches of
1024, 4 epochs of SGD (momentum 0.9; lr 3e-3 for trunk + feature head, 2e-3 for the
cluster head; weight decay 1e-4 / 5e-3) with cosine decay — the authors' optimiser settings.

Budget on 2 CPU cores: feature extraction of the 60k training images dominates (about 5 min
with 2 threads, 10 min with 1), the 4 epochs take 3-6 min. The state is saved after every
epoch (``out_dir/training_state.safetensors``) and a re-run resumes from it (features are
re-extracted: they are not stored). ``quick`` trains 1 epoch on 2048 images (a smoke test of
the path, not a reproduction).

:func:`evaluate` is the clustering protocol on the 10k test images: ACC / NMI / ARI of MLC
(spectral clustering of the membership ``Γ`` over the whole test set, as in the paper),
with, measured in the same run, k-means on the same input features (raw, and standardised +
L2-normalised as the model sees them), k-means on raw pixels, the untrained MLC network
(random init + one-shot copy) through the same pipeline, and k-means on the features of a
randomly initialised MobileNetV2.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from subspace_core.console import progress_bar
from subspace_core.train import TRAINING_STATE, load_training_state, save_training_state
from subspace_core.zoo import save_state_dict

__all__ = [
    "CHECKPOINT_FILE",
    "FEATURE_SOURCES",
    "MODEL_ID",
    "QUICK",
    "RecipeConfig",
    "build_model",
    "evaluate",
    "image_features",
    "register_feature_source",
    "train",
]

logger = logging.getLogger(__name__)

MODEL_ID = "ssl/mlc_small.fmnist"
CHECKPOINT_FILE = "mlc_small.fmnist.safetensors"
NUM_CLASSES = 10

#: A feature source maps uint8 images [N, 28, 28] to float32 features [N, D].
FeatureSource = Callable[[torch.Tensor], torch.Tensor]


def _mobilenet_v2(images: torch.Tensor) -> torch.Tensor:
    from subspace_core.backbones import pretrained_features

    return pretrained_features("mobilenet_v2", images)


def _pixels(images: torch.Tensor) -> torch.Tensor:
    return images.reshape(len(images), -1).float() / 255.0


#: name → feature source. "mobilenet_v2": frozen ImageNet MobileNetV2, pooled (1280-d);
#: "pixels": the flattened image in [0, 1] (784-d).
FEATURE_SOURCES: dict[str, FeatureSource] = {"mobilenet_v2": _mobilenet_v2, "pixels": _pixels}
# (source, dataset split, number of images) → features, filled by image_features.
_CACHE: dict[tuple[str, str, int], torch.Tensor] = {}


def register_feature_source(name: str, source: FeatureSource) -> None:
    """Make ``source`` (uint8 images [N, 28, 28] → float features [N, D]) usable as
    ``features=name`` in :func:`train` and :func:`evaluate`."""
    if not isinstance(name, str) or not name:
        raise ValueError(f"name: expected a non-empty string, got {name!r}")
    if not callable(source):
        raise TypeError(f"source: expected a callable, got {type(source).__name__}")
    FEATURE_SOURCES[name] = source
    for key in [k for k in _CACHE if k[0] == name]:
        del _CACHE[key]


def image_features(
    source: str,
    split: str,
    *,
    limit: int | None = None,
    device: str | torch.device = "cpu",
    progress: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(features float32 [N, D] on CPU, labels int64 [N])`` of the first ``limit`` (all
    when None) Fashion-MNIST ``split`` images, computed on ``device`` once per process.

    MobileNetV2 features of all 70k images take ~10 min on one CPU thread, so they are
    cached in memory for the life of the process (not on disk).
    """
    from subspace_ssl.data import load_images

    if source not in FEATURE_SOURCES:
        raise ValueError(f"source: expected one of {sorted(FEATURE_SOURCES)}, got {source!r}")
    images, labels = load_images("fmnist", split)
    n = len(images) if limit is None else min(limit, len(images))
    key = (source, split, n)
    if key not in _CACHE:
        fn = FEATURE_SOURCES[source]
        chunks = images[:n].split(2048)
        parts = []
        with progress_bar(enabled=progress) as bar:
            task = bar.add_task(f"{source} features ({split})", total=len(chunks))
            for chunk in chunks:
                parts.append(fn(chunk.to(device)).float().cpu())
                bar.advance(task)
        feats = torch.cat(parts)
        if feats.ndim != 2 or len(feats) != n or not bool(torch.isfinite(feats).all()):
            raise ValueError(
                f"feature source {source!r}: expected finite float features "
                f"[{n}, D], got shape {tuple(feats.shape)}"
            )
        _CACHE[key] = feats
    return _CACHE[key], labels[:n]


@dataclass(frozen=True)
class RecipeConfig:
    """Hyper-parameters of one run (model shape, MLC objective and optimiser)."""

    features: str = "mobilenet_v2"
    hidden_dim: int = 512
    z_dim: int = 64
    eps: float = 0.3
    eta: float = 0.2
    gamma: float = 0.1
    sinkhorn_iters: int = 10
    batch_size: int = 1024
    epochs: int = 4
    pca_init: bool = True
    warmup_steps: int = 0
    lr: float = 3e-3
    lr_cluster: float = 2e-3
    momentum: float = 0.9
    weight_decay: float = 1e-4
    weight_decay_cluster: float = 5e-3
    cosine: bool = True
    seed: int = 0
    train_subset: int | None = None  # None: all 60,000 training images

    def mlc(self):
        """The :class:`~subspace_ssl.mcr2.MLCConfig` part of this config."""
        from subspace_ssl.mcr2 import MLCConfig

        fields = MLCConfig.__dataclass_fields__
        return MLCConfig(**{k: v for k, v in asdict(self).items() if k in fields})


#: the smoke-test overrides of ``quick=True`` (checks the path, reproduces nothing).
QUICK: dict[str, Any] = {"epochs": 1, "train_subset": 2048, "batch_size": 256}


def build_model(input_dim: int = 1280, cfg: RecipeConfig | None = None):
    """A fresh :class:`~subspace_ssl.mcr2.MLC` of ``cfg``'s shape (default: the shipped one)."""
    from subspace_ssl.mcr2 import MLC

    cfg = cfg or RecipeConfig()
    return MLC(
        input_dim=input_dim,
        hidden_dim=cfg.hidden_dim,
        z_dim=cfg.z_dim,
        num_clusters=NUM_CLASSES,
        eta=cfg.eta,
    )


def _check_resume_config(out_dir: Path, config: dict[str, Any]) -> None:
    """Refuse to resume ``out_dir``'s training state if it was written with another config."""
    path = out_dir / TRAINING_STATE
    if not path.is_file():
        return
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as fh:
        saved = json.loads(fh.metadata().get("extra", "{}")).get("config")
    if saved is not None and saved != json.loads(json.dumps(config)):
        changed = sorted(k for k in set(saved) | set(config) if saved.get(k) != config.get(k))
        raise ValueError(
            f"out_dir: {path} holds a run with a different config (fields "
            f"{changed}); use a fresh out_dir or the same settings"
        )


def train(
    out_dir: str | Path, *, quick: bool = False, progress: bool = True, **overrides: Any
) -> Path:
    """Train (or resume in ``out_dir``) the MLC model; returns the checkpoint path.

    ``overrides`` replace :class:`RecipeConfig` fields (after :data:`QUICK`'s when
    ``quick``). Writes ``out_dir/mlc_small.fmnist.safetensors`` (the model's state dict,
    config and per-epoch objective terms as metadata) atomically with a ``.sha256`` sidecar.
    """
    from subspace_ssl.mcr2 import build_mlc_optimizer, train_mlc_epoch, warmup_mlc

    cfg = RecipeConfig()
    if quick:
        cfg = replace(cfg, **QUICK)
    unknown = set(overrides) - set(asdict(cfg))
    if unknown:
        raise ValueError(f"overrides: expected RecipeConfig fields, got unknown {sorted(unknown)}")
    cfg = replace(cfg, **overrides)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    _check_resume_config(out_dir, asdict(cfg))

    x, _ = image_features(cfg.features, "train", limit=cfg.train_subset, progress=progress)
    mlc_cfg = cfg.mlc()
    torch.manual_seed(cfg.seed)
    model = build_model(x.shape[1], cfg)
    optimizer = build_mlc_optimizer(model, mlc_cfg)
    resumed = load_training_state(out_dir, model, optimizer)
    start, history = (0, []) if resumed is None else (resumed[0], resumed[1]["history"])
    if start == 0:
        model.fit_input_normalization(x, pca=cfg.pca_init)
        warmup_mlc(model, x, mlc_cfg, optimizer)
    else:
        logger.info("resuming %s at epoch %d/%d", MODEL_ID, start, cfg.epochs)
    steps = max(1, math.floor(len(x) / cfg.batch_size + 0.5))
    with progress_bar(enabled=progress) as bar:
        task = bar.add_task(MODEL_ID, total=cfg.epochs * steps, completed=start * steps)
        for epoch in range(start, cfg.epochs):
            means = train_mlc_epoch(
                model, x, mlc_cfg, optimizer, epoch, on_step=lambda _: bar.advance(task)
            )
            history.append({"epoch": epoch + 1, **{k: round(v, 5) for k, v in means.items()}})
            logger.info("%s epoch %d: %s", MODEL_ID, epoch + 1, history[-1])
            save_training_state(
                out_dir,
                model,
                optimizer,
                epoch=epoch + 1,
                extra={"history": history, "config": asdict(cfg)},
            )
    path = out_dir / CHECKPOINT_FILE
    save_state_dict(
        model.state_dict(),
        path,
        metadata={
            "model_id": MODEL_ID,
            "recipe": __name__,
            "quick": quick,
            "config": asdict(cfg),
            "history": history,
            "input": f"{cfg.features} features [N, {x.shape[1]}] of Fashion-MNIST 28x28 images",
        },
    )
    return path


def _scores(prefix: str, labels: torch.Tensor, pred: np.ndarray) -> dict[str, float]:
    from subspace_ssl.clustering import cluster_scores

    return {f"{prefix}{k}": v for k, v in cluster_scores(labels, pred).items()}


def evaluate(
    model: torch.nn.Module,
    device: str | torch.device = "cpu",
    *,
    features: str = "mobilenet_v2",
    seed: int = 0,
    random_backbone: bool = True,
    limit: int | None = None,
) -> dict[str, float]:
    """Clustering ACC / NMI / ARI on the 10k Fashion-MNIST test images, with baselines.

    ``model`` is an :class:`~subspace_ssl.mcr2.MLC` taking ``features`` features. Keys:

    * ``acc``, ``nmi``, ``ari`` — MLC: spectral clustering of ``Γ`` over the test set;
    * ``mlc_kmeans_*`` — k-means on the cluster-head embedding ``c``;
    * ``kmeans_*`` — k-means on the same input features, raw;
    * ``kmeans_std_l2_*`` — k-means on them standardised (the model's statistics) and
      L2-normalised, the model's own view of its input;
    * ``pixels_kmeans_*`` — k-means on raw pixels in [0, 1];
    * ``random_mlc_*`` — the same architecture untrained (seeded random init, the model's
      input statistics, one-shot copy, no PCA start) through the same spectral pipeline;
    * ``random_backbone_kmeans_*`` — k-means on the pooled features of a randomly
      initialised MobileNetV2 (only for ``features="mobilenet_v2"`` and
      ``random_backbone``; it costs another feature pass).

    All k-means runs use :func:`~subspace_ssl.clustering.kmeans_labels` (k = 10, seed
    ``seed``, 10 restarts). About 3-5 minutes on one CPU thread, most of it feature
    extraction. ``limit`` keeps the first ``limit`` test images (smoke tests only: the
    protocol is the full 10k).
    """
    from subspace_ssl.clustering import kmeans_labels
    from subspace_ssl.data import load_images
    from subspace_ssl.mcr2 import MLC

    if not isinstance(model, MLC):
        raise TypeError(f"model: expected an MLC, got {type(model).__name__}")
    device = torch.device(device)
    x, y = image_features(features, "test", limit=limit, device=device)
    if x.shape[1] != model.input_dim:
        raise ValueError(
            f"features: {features!r} gives {x.shape[1]}-d features, the model "
            f"expects {model.input_dim}"
        )
    model = model.to(device).eval()
    k = NUM_CLASSES
    xd = x.to(device)
    out = _scores("", y, model.predict(xd, k, seed=seed))
    _, c = model.embed(xd)
    out |= _scores("mlc_kmeans_", y, kmeans_labels(c.cpu(), k, seed))
    out |= _scores("kmeans_", y, kmeans_labels(x, k, seed))
    mean, std = model.input_mean.cpu(), model.input_std.cpu()
    out |= _scores(
        "kmeans_std_l2_", y, kmeans_labels(F.normalize((x - mean) / std, dim=1), k, seed)
    )
    images = load_images("fmnist", "test")[0][: len(y)]
    out |= _scores("pixels_kmeans_", y, kmeans_labels(_pixels(images), k, seed))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        untrained = MLC(
            model.input_dim, model.hidden_dim, model.z_dim, model.num_clusters, model.eta
        ).to(device)
    with torch.no_grad():
        untrained.input_mean.copy_(model.input_mean)
        untrained.input_std.copy_(model.input_std)
    # Its skips start at zero (no PCA start): the random MLP branch alone is the network.
    untrained.one_shot_init()
    out |= _scores("random_mlc_", y, untrained.predict(xd, k, seed=seed))
    if random_backbone and features == "mobilenet_v2":
        from subspace_core.backbones import load_backbone, pretrained_features

        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            net = load_backbone("mobilenet_v2", pretrained=False).to(device)
        feats = torch.cat(
            [pretrained_features(net, chunk.to(device)).cpu() for chunk in images.split(2048)]
        )
        out |= _scores("random_backbone_kmeans_", y, kmeans_labels(feats, k, seed))
    return out
