"""The safety zoo: protocol ``zero_shot`` and the shipped LiT-style CLIP
``safety/lit_clip_mnv2_minilm.fmnist_mnist``.

**Protocol ``zero_shot``**: zero-shot top-1 accuracy of a CLIP-like model (``encode_image``,
``zero_shot_classifier``) on the Fashion-MNIST test set (10,000 images, 10 classes) and the
MNIST-10k test split (1,000 images, 10 digits). The classifier of each dataset is the
prompt ensemble of its class names (:data:`FMNIST_CLASSES`, :data:`MNIST_CLASSES`) over the
held-out :data:`EVAL_TEMPLATES` (none of them is a training caption template); an image is
assigned the class of highest cosine similarity among its own dataset's 10 classes. Images:
28x28 grey, resized to 96 px and replicated to RGB by the image tower.
"""

from __future__ import annotations

import torch
from torch import nn

from subspace_core.eval import Protocol, protocol_doc, register_protocol
from subspace_core.zoo import PretrainedCfg, register_model
from subspace_safety.lit_clip import LiTClip

__all__ = [
    "EVAL_TEMPLATES",
    "FMNIST_CLASSES",
    "FMNIST_SYNONYMS",
    "MNIST_CLASSES",
    "MNIST_SYNONYMS",
    "SHIPPED",
    "TRAIN_TEMPLATES",
    "ZERO_SHOT",
    "ZERO_SHOT_DATASETS",
    "lit_clip_mnv2_minilm",
    "zero_shot_accuracy",
    "zero_shot_metrics",
]

#: Class names used in prompts, in label order (Fashion-MNIST's "T-shirt/top" and
#: "Trouser" made prompt-friendly).
FMNIST_CLASSES = ("t-shirt", "trousers", "pullover", "dress", "coat", "sandal", "shirt",
                  "sneaker", "bag", "ankle boot")
MNIST_CLASSES = tuple(str(d) for d in range(10))
#: Extra names per class used in TRAINING captions only (the class name is always one of
#: them); a paraphrase test set should avoid these.
FMNIST_SYNONYMS = (("t-shirt", "tee", "top"), ("trousers", "pants"), ("pullover", "sweater"),
                   ("dress",), ("coat", "jacket"), ("sandal",), ("shirt", "blouse"),
                   ("sneaker", "trainer"), ("bag", "handbag"), ("ankle boot", "boot"))
MNIST_SYNONYMS = (("0", "zero"), ("1", "one"), ("2", "two"), ("3", "three"), ("4", "four"),
                  ("5", "five"), ("6", "six"), ("7", "seven"), ("8", "eight"), ("9", "nine"))
#: Caption templates of the training pairs, per dataset.
TRAIN_TEMPLATES = {
    "fashion_mnist": ("a photo of a {}.", "a black and white picture of a {}.", "a {}.",
                      "a low resolution photo of a {}.", "a product photo of a {}.",
                      "an image of a {}, a piece of clothing.", "a grey photo of the {}.",
                      "a small picture of a {}."),
    "mnist_10k": ("the digit {}.", "a handwritten {}.", "a photo of the number {}.",
                  "a black and white picture of a {}.", "a handwritten digit {}.",
                  "the number {}, written by hand.", "a low resolution photo of a {}.",
                  "a scan of the digit {}."),
}
#: Held-out templates of the zero_shot protocol (never seen in training).
EVAL_TEMPLATES = {
    "fashion_mnist": ("a picture of a {}.", "a blurry photo of a {}.",
                      "a cropped photo of the {}.", "an item of clothing: {}."),
    "mnist_10k": ("a picture of the digit {}.", "a blurry photo of the number {}.",
                  "the handwritten number {}.", "a digit: {}."),
}
#: protocol metric -> (dataset, class names) of the zero_shot protocol.
ZERO_SHOT_DATASETS = {"fmnist_top1": ("fashion_mnist", FMNIST_CLASSES),
                      "mnist_top1": ("mnist_10k", MNIST_CLASSES)}


@torch.no_grad()
def zero_shot_accuracy(model: nn.Module, dataset: str, class_names, templates, *,
                       split: str = "test", features: torch.Tensor | None = None,
                       labels: torch.Tensor | None = None) -> float:
    """Top-1 zero-shot accuracy of ``model`` on ``dataset``/``split`` among ``class_names``.

    ``features``/``labels`` (image-tower features ``[N, D]`` and labels ``[N]``) skip the
    image tower; otherwise they come from
    :func:`~subspace_safety.embeddings_cache.image_features` (cached for the default tower).
    """
    if features is None:
        from subspace_safety.embeddings_cache import image_features

        features, labels = image_features(model.image_tower, dataset, split)
    device = model.logit_scale.device
    classifier = model.zero_shot_classifier(class_names, templates)
    image_emb = model.embed_image_features(features.to(device))
    predictions = (image_emb @ classifier.T).argmax(1).cpu()
    return float((predictions == labels.cpu()).float().mean())


def zero_shot_metrics(model: nn.Module, device: torch.device | str = "cpu") -> dict[str, float]:
    """The ``zero_shot`` protocol: ``{"fmnist_top1", "mnist_top1"}`` (see module doc)."""
    model = model.to(device).eval()
    return {metric: zero_shot_accuracy(model, dataset, classes, EVAL_TEMPLATES[dataset])
            for metric, (dataset, classes) in ZERO_SHOT_DATASETS.items()}



ZERO_SHOT = register_protocol(
    Protocol(
        name="zero_shot",
        dataset="fashion_mnist+mnist_10k",
        split="test",
        preprocessing="28x28 grey -> bilinear (antialiased) resize to 96 px, grey -> RGB, "
        "ImageNet mean/std; prompts: class name in 4 held-out templates per dataset, "
        "ensembled",
        metrics=("fmnist_top1", "mnist_top1"),
        higher_is_better=(True, True),
        run=zero_shot_metrics,
        description=protocol_doc(__doc__, "zero_shot"),
    )
)

#: Shipped checkpoints: id -> (sha256, bytes, num_params, metrics of zero_shot).
SHIPPED: dict[str, tuple[str, int, int, dict[str, float]]] = {
    "safety/lit_clip_mnv2_minilm.fmnist_mnist": (
        "bd56101d0287641f7413f1ac5e7bdd2ec807eaa19778954ebc98bc7c0e776285", 1_706_684, 426_497,
        {"fmnist_top1": 0.8812999725341797, "mnist_top1": 0.9459999799728394},
    ),
}
_SHA, _BYTES, _PARAMS, _METRICS = SHIPPED["safety/lit_clip_mnv2_minilm.fmnist_mnist"]


@register_model(
    "safety/lit_clip_mnv2_minilm.fmnist_mnist",
    pretrained_cfg=PretrainedCfg(
        file="lit_clip_mnv2_minilm.fmnist_mnist.safetensors",
        sha256=_SHA,
        num_bytes=_BYTES,
        num_params=_PARAMS,
        license="Apache-2.0 (projections); towers: MobileNetV2 BSD-3-Clause (torchvision), "
        "all-MiniLM-L6-v2 Apache-2.0; data: Fashion-MNIST MIT, MNIST CC BY-SA 3.0",
        paper="Zhai et al. 2022, LiT: Zero-Shot Transfer with Locked-image text Tuning, "
        "CVPR 2022, arXiv:2111.07991; Radford et al. 2021, Learning Transferable Visual "
        "Models From Natural Language Supervision (CLIP), arXiv:2103.00020",
        recipe="subspace_safety.recipes.lit_clip:train",
        metrics={"zero_shot": _METRICS},
        data={"images": "uint8 or [0, 1] float [B, 1|3, H, W], resized to 96 px, grey -> RGB, "
              "ImageNet mean/std", "texts": "list[str], MiniLM WordPiece, <= 64 tokens",
              "train": "fashion_mnist train (18,000 of the first 20,000) + mnist_10k train "
              "(8,000 of 9,000, twice per epoch), one templated caption per image per epoch",
              "embed_dim": 256},
        train_budget="one CPU core (OMP_NUM_THREADS=1) of a busy 2-core machine: image-tower "
        "features of the 29,000 training images computed once and cached (14 min at a "
        "load average of ~10; ~2.6 min at the 5.4 ms per image of a quieter core), then 20 epochs x 34 "
        "steps of the projections on the cached features in 109 s",
        package="subspace_safety.weights",
        notes="Stores only image_proj (1280 -> 256), text_proj (384 -> 256) and logit_scale; "
        "the locked towers (MobileNetV2 ImageNet, all-MiniLM-L6-v2) load from their sources "
        "on first use.",
    ),
    protocols=("zero_shot",),
    description="LiT-style CLIP: locked MobileNetV2 + locked MiniLM, trained linear "
    "projections into a shared 256-d space (Fashion-MNIST + MNIST captions).",
)
def lit_clip_mnv2_minilm(**overrides) -> nn.Module:
    """:class:`~subspace_safety.lit_clip.LiTClip` with the default towers (loaded on first
    use); ``overrides`` are LiTClip keyword arguments (e.g. injected towers)."""
    return LiTClip(**overrides)
