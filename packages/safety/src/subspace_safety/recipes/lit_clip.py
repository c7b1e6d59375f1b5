"""Recipe of ``safety/lit_clip_mnv2_minilm.fmnist_mnist``: LiT-style contrastive training of
the projections.

Data: the first 20,000 of the 60,000 Fashion-MNIST training images (``TRAIN_LIMIT``, to bound
the one-off image-tower cost: 5 ms per image on an idle core, up to 40 ms on a shared one)
and all 9,000 MNIST-10k training digits, ``VAL_PER_DATASET`` random images (seed 1) of
each held out for a validation log (not used to select anything). Each image is
paired, freshly each epoch, with one caption drawn uniformly from
``TRAIN_TEMPLATES[dataset] x synonyms of its class`` (:mod:`subspace_safety.zoo`); MNIST is
repeated ``MNIST_REPEAT`` times per epoch so both datasets weigh about the same. The locked
towers' features are computed once: image features from
:func:`~subspace_safety.embeddings_cache.image_features` (MobileNetV2, 96 px, cached on
disk), caption features as MiniLM mean-pooled hidden states (every caption once; since
``text_proj`` is affine this is exactly the model's token pooling).

Training: :class:`~subspace_safety.lit_clip.LiTClip` heads only (``Linear(1280, 256)``,
``Linear(384, 256)``, ``logit_scale``), AdamW (lr ``LR``, weight decay ``WEIGHT_DECAY``, no
decay on the logit scale), cosine decay to 0 over ``EPOCHS`` epochs of batches of
``BATCH_SIZE``, loss :func:`~subspace_safety.lit_clip.info_nce_loss` with the 20 global
class ids as labels (same-class pairs are positives: with 20 classes a batch of 1,024 has
~50 pairs per class). Seeded (``torch.manual_seed(0)``, a seeded generator for the order and
captions), one torch thread: bit-reproducible on one machine/torch build.

Budget (one core): feature extraction of the 29,000 training images 3-12 min once,
depending on the load (cached), training ~1 min.
``quick`` uses the first 4,000 images of each training set and 2 epochs (a smoke test).
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import torch

__all__ = ["BATCH_SIZE", "EPOCHS", "FILE", "LR", "MODEL_ID", "captions", "train"]

MODEL_ID = "safety/lit_clip_mnv2_minilm.fmnist_mnist"
FILE = "lit_clip_mnv2_minilm.fmnist_mnist.safetensors"
EPOCHS = 20
BATCH_SIZE = 1024
LR = 2e-3
WEIGHT_DECAY = 1e-4
MNIST_REPEAT = 2
VAL_PER_DATASET = {"fashion_mnist": 2000, "mnist_10k": 1000}
TRAIN_LIMIT = {"fashion_mnist": 20_000, "mnist_10k": None}
QUICK_LIMIT = 4000


def captions() -> tuple[list[str], torch.Tensor]:
    """All training captions and their global class ids (Fashion-MNIST 0..9, MNIST
    10..19): ``TRAIN_TEMPLATES x synonyms`` per class."""
    from subspace_safety.zoo import FMNIST_SYNONYMS, MNIST_SYNONYMS, TRAIN_TEMPLATES

    texts, ids = [], []
    for offset, (dataset, synonyms) in enumerate(
            (("fashion_mnist", FMNIST_SYNONYMS), ("mnist_10k", MNIST_SYNONYMS))):
        for label, names in enumerate(synonyms):
            for name in names:
                for template in TRAIN_TEMPLATES[dataset]:
                    texts.append(template.format(name))
                    ids.append(10 * offset + label)
    return texts, torch.tensor(ids)


@torch.no_grad()
def _caption_features(model, texts: list[str]) -> torch.Tensor:
    from subspace_core.text_encoders import mean_pool

    out = []
    for start in range(0, len(texts), 128):
        hidden, mask = model.text_tower(texts[start:start + 128])
        out.append(mean_pool(hidden, mask.long()))
    return torch.cat(out)


def _split(features, labels, n_val, offset):
    # a seeded random subset: MNIST-10k's train split is sorted by class, so its last
    # examples would all be nines
    perm = torch.randperm(len(features), generator=torch.Generator().manual_seed(1))
    tr, va = perm[n_val:].sort().values, perm[:n_val].sort().values
    return (features[tr], labels[tr] + offset), (features[va], labels[va] + offset)


def train(out_dir: str | Path, *, quick: bool = False, progress: bool = True) -> Path:
    """Train the projections; returns ``out_dir/lit_clip_mnv2_minilm.fmnist_mnist.safetensors``
    (written atomically, with a ``.sha256`` sidecar)."""
    from subspace_safety.embeddings_cache import image_features
    from subspace_safety.lit_clip import LiTClip, info_nce_loss

    out_dir = Path(out_dir)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        torch.manual_seed(0)
        model = LiTClip()
        start = time.perf_counter()
        parts, val = [], []
        for offset, dataset in enumerate(("fashion_mnist", "mnist_10k")):
            limit = QUICK_LIMIT if quick else TRAIN_LIMIT[dataset]
            feats, labels = image_features(model.image_tower, dataset, "train", limit=limit,
                                           progress=progress)
            n_val = 500 if quick else VAL_PER_DATASET[dataset]
            tr, va = _split(feats, labels, n_val, 10 * offset)
            repeat = MNIST_REPEAT if dataset == "mnist_10k" else 1
            parts.append((tr[0].repeat(repeat, 1), tr[1].repeat(repeat)))
            val.append(va)
        x = torch.cat([p[0] for p in parts])
        y = torch.cat([p[1] for p in parts])
        texts, text_ids = captions()
        text_feats = _caption_features(model, texts)
        # captions of each class, as index lists into text_feats
        by_class = [torch.nonzero(text_ids == c).flatten() for c in range(20)]
        counts = torch.tensor([len(b) for b in by_class])
        table = torch.nn.utils.rnn.pad_sequence(by_class, batch_first=True)
        if progress:
            print(f"features ready: {len(x)} images, {len(texts)} captions, "
                  f"{time.perf_counter() - start:.1f} s", flush=True)

        epochs = 2 if quick else EPOCHS
        steps = epochs * math.ceil(len(x) / BATCH_SIZE)
        decay = [model.image_proj.weight, model.text_proj.weight]
        rest = [model.image_proj.bias, model.text_proj.bias, model.logit_scale]
        opt = torch.optim.AdamW([{"params": decay, "weight_decay": WEIGHT_DECAY},
                                 {"params": rest, "weight_decay": 0.0}], lr=LR)
        sched = torch.optim.lr_scheduler.LambdaLR(
            opt, lambda s: 0.5 * (1 + math.cos(math.pi * min(s, steps) / steps)))
        gen = torch.Generator().manual_seed(0)
        train_start = time.perf_counter()
        for epoch in range(epochs):
            order = torch.randperm(len(x), generator=gen)
            pick = (torch.rand(len(x), generator=gen) * counts[y]).long()
            caption = table[y, pick]
            total = 0.0
            for idx in order.split(BATCH_SIZE):
                img = model.embed_image_features(x[idx])
                txt = model.embed_text_features(text_feats[caption[idx]])
                loss = info_nce_loss(img, txt, model.logit_scale, labels=y[idx])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
                model.clamp_logit_scale()
                total += loss.item() * len(idx)
            if progress:
                print(f"epoch {epoch + 1}/{epochs}: loss {total / len(x):.4f}, "
                      f"T {math.exp(-model.logit_scale.item()):.4f}, "
                      f"val top-1 {_val_accuracy(model, val, text_feats, text_ids)}", flush=True)
        train_seconds = time.perf_counter() - train_start
    finally:
        torch.set_num_threads(threads)
    path = out_dir / FILE
    model.save_projections(path, metadata={
        "model_id": MODEL_ID, "quick": quick, "epochs": epochs, "batch_size": BATCH_SIZE,
        "lr": LR, "weight_decay": WEIGHT_DECAY, "mnist_repeat": MNIST_REPEAT,
        "image_tower": "mobilenet_v2@96px", "text_tower": "all-MiniLM-L6-v2"})
    if progress:
        print(f"training {train_seconds:.1f} s; wrote {path}", flush=True)
    return path


@torch.no_grad()
def _val_accuracy(model, val, text_feats, text_ids) -> str:
    """Validation top-1 per dataset against the class means of the TRAINING captions."""
    out = []
    for offset, (feats, labels) in enumerate(val):
        classes = torch.arange(10 * offset, 10 * offset + 10)
        txt = model.embed_text_features(text_feats)
        weights = torch.stack([txt[text_ids == c].mean(0) for c in classes])
        pred = (model.embed_image_features(feats) @ weights.T).argmax(1) + 10 * offset
        out.append(f"{float((pred == labels).float().mean()):.4f}")
    return "/".join(out)
