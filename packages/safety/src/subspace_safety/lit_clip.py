"""A CLIP-like model that runs here, assembled LiT-style from two frozen towers.

Zhai et al. 2022, "LiT: Zero-Shot Transfer with Locked-image text Tuning" (CVPR 2022,
arXiv:2111.07991) lock the pretrained image tower and tune the text tower. No CLIP weights are
obtainable here, so both towers are locked and only the two projections into a shared space
and the temperature are trained (contrastively, :func:`info_nce_loss`):

* image tower: ImageNet MobileNetV2 from :mod:`subspace_core.backbones` (images resized to
  ``image_size`` px, grey replicated to RGB, ImageNet-normalised; the pooled 1,280-d
  features), :class:`BackboneImageTower`;
* text tower: all-MiniLM-L6-v2 from :mod:`subspace_core.text_encoders` (last hidden states,
  384-d per WordPiece token), :class:`MiniLMTextTower`;
* heads: ``image_proj`` ``Linear(1280, 256)``, ``text_proj`` ``Linear(384, 256)`` applied to
  every token, a learnable ``logit_scale`` (log of the inverse temperature, CLIP's init
  ``log(1 / 0.07)``, clamped at ``log(100)``).

The text embedding is the L2-normalised masked mean of the projected token embeddings
(:meth:`LiTClip.encode_text_tokens`, :func:`pool_tokens`), so methods that edit tokens
(SAFREE) change the text embedding through the same pooling. Because ``text_proj`` is affine,
this equals ``normalize(text_proj(mean_pool(hidden)))``, which lets training run on cached
mean-pooled MiniLM features (:meth:`LiTClip.embed_text_features`).

The towers are injectable (any module mapping images to ``[B, image_dim]`` and any module
mapping texts to ``([B, T, text_dim], mask [B, T])``) and are NOT part of the state dict: a
checkpoint holds only the projections and the temperature, the towers load from their
packages (lazily, on first use, when none is given).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "EMBED_DIM",
    "BackboneImageTower",
    "LiTClip",
    "MiniLMTextTower",
    "info_nce_loss",
    "pool_tokens",
]

#: Width of the shared image-text space.
EMBED_DIM = 256
#: CLIP's initial temperature 0.07 and its cap on the logit scale (100).
_INIT_LOGIT_SCALE = math.log(1 / 0.07)
_MAX_LOGIT_SCALE = math.log(100.0)


class BackboneImageTower(nn.Module):
    """A frozen ImageNet CNN from :mod:`subspace_core.backbones` as an image tower.

    ``forward(images)``: ``uint8 [B, 1|3, H, W]`` (0..255) or float ``[0, 1]`` images
    (also ``[B, H, W]``) -> pooled features ``float32 [B, 1280]``. Differentiable with respect
    to float images (PGD attacks need input gradients); the network's own parameters are
    frozen and it always runs in eval mode (BatchNorm statistics never move).

    Args:
        name: backbone name (``"mobilenet_v2"`` or ``"efficientnet_lite0"``).
        image_size: side of the network input; 28x28 images are upsampled to it.
        pretrained: load the ImageNet weights (``False``: random init, for tests).
    """

    def __init__(self, name: str = "mobilenet_v2", *, image_size: int = 96,
                 pretrained: bool = True) -> None:
        super().__init__()
        from subspace_core.backbones import load_backbone

        self.name = name
        self.image_size = int(image_size)
        self.pretrained = pretrained
        # channels-last: depthwise convolutions run ~1.5x faster on CPU (oneDNN)
        self.backbone = load_backbone(name, pretrained=pretrained).to(
            memory_format=torch.channels_last)
        self.output_dim = self.backbone.feature_dim

    def train(self, mode: bool = True) -> BackboneImageTower:
        super().train(mode)
        self.backbone.eval()  # locked tower: BatchNorm keeps its ImageNet statistics
        return self

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        from subspace_core.backbones import preprocess

        x = preprocess(images, size=self.image_size)
        x = x.to(next(self.backbone.parameters()).device)
        return self.backbone.pooled(x.contiguous(memory_format=torch.channels_last))

    def cache_key(self) -> dict[str, Any] | None:
        """Everything that determines the features (for the feature cache), or ``None``
        when they are not reproducible from a name (random weights)."""
        if not self.pretrained:
            return None
        from subspace_core.backbones.weights import WEIGHTS
        from subspace_core.data import get_dataset

        dataset, file_name = WEIGHTS[self.name]
        (weights_sha,) = [f.sha256 for f in get_dataset(dataset).files if f.name == file_name]
        return {"tower": self.name, "weights_sha256": weights_sha, "layer": "pooled",
                "image_size": self.image_size, "preprocess": "bilinear-antialias/grey->rgb/"
                "imagenet-mean-std"}


class MiniLMTextTower(nn.Module):
    """The frozen all-MiniLM-L6-v2 encoder (+ tokenizer) as a text tower.

    ``forward(texts)``: ``list[str]`` (``B`` texts) -> ``(hidden float32 [B, T, 384],
    mask bool [B, T])``: last hidden states of the WordPiece tokens ([CLS] and [SEP]
    included, as in sentence-transformers' mean pooling), ``T`` the longest text in the
    batch (at most ``max_length``), ``mask`` False on padding.
    """

    output_dim = 384

    def __init__(self, *, max_length: int = 64) -> None:
        super().__init__()
        from subspace_core.text_encoders import load_minilm, load_minilm_tokenizer

        self.max_length = int(max_length)
        self.tokenizer = load_minilm_tokenizer()
        self.encoder = load_minilm()
        self.encoder.eval()
        self.encoder.requires_grad_(False)

    def train(self, mode: bool = True) -> MiniLMTextTower:
        super().train(mode)
        self.encoder.eval()  # locked tower: no dropout
        return self

    def forward(self, texts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        device = next(self.encoder.parameters()).device
        batch = self.tokenizer(list(texts), padding=True, truncation=True,
                               max_length=self.max_length, return_tensors="pt")
        batch = {k: v.to(device) for k, v in batch.items()}
        hidden = self.encoder(**batch).last_hidden_state
        return hidden, batch["attention_mask"].bool()


def pool_tokens(tokens: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Text embedding from token embeddings: masked mean over ``T``, then L2 normalisation.

    Args:
        tokens: ``[B, T, D]`` (projected) token embeddings.
        mask: ``[B, T]`` bool (or 0/1), True on the tokens to pool; every row needs one.

    Returns:
        ``[B, D]``, unit rows.
    """
    if tokens.dim() != 3 or tuple(mask.shape) != tuple(tokens.shape[:2]):
        raise ValueError(f"tokens, mask: expected [B, T, D] and [B, T], got "
                         f"{list(tokens.shape)} and {list(mask.shape)}")
    weights = mask.to(tokens.dtype).unsqueeze(-1)
    counts = weights.sum(1)
    if bool((counts == 0).any()):
        raise ValueError("mask: every row needs at least one True token, got an empty row")
    return F.normalize((tokens * weights).sum(1) / counts, dim=-1)


def info_nce_loss(image_emb: torch.Tensor, text_emb: torch.Tensor, logit_scale: torch.Tensor,
                  labels: torch.Tensor | None = None) -> torch.Tensor:
    """Symmetric InfoNCE (CLIP's loss) of ``B`` matched image-text pairs.

    ``logits = exp(logit_scale) * image_emb @ text_emb.T`` (``[B, B]``); the loss is the mean
    of the image->text and text->image cross-entropies. Without ``labels`` the target of row
    ``i`` is column ``i``. With ``labels`` (``[B]`` ints, e.g. class ids), every pair with
    the same label is a positive and the target is uniform over them (UniCL, Yang et al.
    2022): with few classes, a batch holds many same-class pairs that plain InfoNCE would
    push apart as negatives.

    Args:
        image_emb, text_emb: ``[B, D]`` (normalised by the caller).
        logit_scale: scalar tensor, the log of the inverse temperature.
        labels: optional ``[B]`` integer tensor.

    Returns:
        scalar loss.
    """
    if image_emb.dim() != 2 or image_emb.shape != text_emb.shape:
        raise ValueError(f"image_emb, text_emb: expected equal shapes [B, D], got "
                         f"{list(image_emb.shape)} and {list(text_emb.shape)}")
    logits = logit_scale.exp() * image_emb @ text_emb.T
    if labels is None:
        target = torch.eye(len(logits), dtype=logits.dtype, device=logits.device)
    else:
        if labels.shape != (len(logits),):
            raise ValueError(f"labels: expected shape [{len(logits)}], got {list(labels.shape)}")
        target = (labels[:, None] == labels[None, :]).to(logits.dtype)
    # the label-equality matrix is symmetric, so one target serves both directions
    target = target / target.sum(1, keepdim=True)
    image_to_text = -(target * logits.log_softmax(1)).sum(1).mean()
    text_to_image = -(target * logits.T.log_softmax(1)).sum(1).mean()
    return (image_to_text + text_to_image) / 2


class LiTClip(nn.Module):
    """CLIP-like dual encoder: locked towers + trained projections and temperature.

    Args:
        image_tower: module ``images -> [B, image_dim]``; default (built on first use)
            ``BackboneImageTower("mobilenet_v2", image_size=96)``.
        text_tower: module ``list[str] -> ([B, T, text_dim], mask [B, T])``; default (built on
            first use) :class:`MiniLMTextTower`.
        image_dim, text_dim: tower widths (1280 and 384 for the defaults).
        embed_dim: width of the shared space (256).
        image_size: input side of the default image tower (96 px; the shipped projections
            were trained on it).

    The state dict holds only ``image_proj.*``, ``text_proj.*`` and ``logit_scale``.
    """

    def __init__(self, image_tower: nn.Module | None = None, text_tower: nn.Module | None = None,
                 *, image_dim: int = 1280, text_dim: int = 384, embed_dim: int = EMBED_DIM,
                 image_size: int = 96) -> None:
        super().__init__()
        for name, value in (("image_dim", image_dim), ("text_dim", text_dim),
                            ("embed_dim", embed_dim)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name}: expected a positive int, got {value!r}")
        self.image_proj = nn.Linear(image_dim, embed_dim)
        self.text_proj = nn.Linear(text_dim, embed_dim)
        self.logit_scale = nn.Parameter(torch.tensor(_INIT_LOGIT_SCALE))
        self.embed_dim = embed_dim
        self.image_size = image_size
        for tower in (image_tower, text_tower):
            if tower is not None:
                _lock(tower)
        # Plain dict, not submodules: the towers stay out of state_dict / parameters().
        self._towers: dict[str, nn.Module | None] = {"image": image_tower, "text": text_tower}

    # -- towers ------------------------------------------------------------------------------
    def _tower(self, kind: str, build: Callable[[], nn.Module]) -> nn.Module:
        tower = self._towers[kind]
        if tower is None:
            tower = _lock(build().to(self.logit_scale.device))
            self._towers[kind] = tower
        return tower

    @property
    def image_tower(self) -> nn.Module:
        """The locked image tower (the default one is loaded on first access)."""
        return self._tower("image", lambda: BackboneImageTower(image_size=self.image_size))

    @property
    def text_tower(self) -> nn.Module:
        """The locked text tower (the default one is loaded on first access)."""
        return self._tower("text", MiniLMTextTower)

    def _apply(self, fn, recurse: bool = True):
        super()._apply(fn, recurse)
        # .to(device) / .float() move the (unregistered) towers along with the heads
        for kind, tower in self._towers.items():
            if tower is not None:
                self._towers[kind] = tower._apply(fn)
        return self

    # -- image side ----------------------------------------------------------------------------
    def embed_image_features(self, features: torch.Tensor) -> torch.Tensor:
        """Normalised image embeddings ``[B, embed_dim]`` from image-tower features
        ``[B, image_dim]`` (e.g. cached ones)."""
        if features.dim() != 2 or features.shape[1] != self.image_proj.in_features:
            raise ValueError(f"features: expected [B, {self.image_proj.in_features}], got "
                             f"{list(features.shape)}")
        return F.normalize(self.image_proj(features), dim=-1)

    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        """Normalised image embeddings ``[B, embed_dim]`` of raw images ``[B, 1|3, H, W]``
        (uint8 0..255 or float in ``[0, 1]``); differentiable in float images."""
        if not isinstance(images, torch.Tensor):
            raise TypeError(f"images: expected a torch.Tensor, got {type(images).__name__}")
        if images.dim() != 4 or images.shape[1] not in (1, 3):
            raise ValueError(f"images: expected [B, 1|3, H, W], got {list(images.shape)}")
        return self.embed_image_features(self.image_tower(images))

    # -- text side ---------------------------------------------------------------------------
    def embed_text_features(self, pooled: torch.Tensor) -> torch.Tensor:
        """Normalised text embeddings ``[B, embed_dim]`` from mean-pooled text-tower features
        ``[B, text_dim]``; equal to :meth:`encode_text` because ``text_proj`` is affine."""
        if pooled.dim() != 2 or pooled.shape[1] != self.text_proj.in_features:
            raise ValueError(f"pooled: expected [B, {self.text_proj.in_features}], got "
                             f"{list(pooled.shape)}")
        return F.normalize(self.text_proj(pooled), dim=-1)

    def encode_text_tokens(self, texts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Projected token embeddings of ``texts`` (``B`` strings).

        Returns:
            ``(tokens [B, T, embed_dim], mask bool [B, T])``: ``text_proj`` of every token's
            last hidden state (not normalised) and the non-padding mask;
            ``encode_text(texts) == pool_tokens(tokens, mask)``.
        """
        texts = _check_texts(texts)
        hidden, mask = self.text_tower(texts)
        return self.text_proj(hidden), mask.bool()

    def encode_text(self, texts: Sequence[str]) -> torch.Tensor:
        """Normalised text embeddings ``[B, embed_dim]``: :func:`pool_tokens` of
        :meth:`encode_text_tokens`."""
        return pool_tokens(*self.encode_text_tokens(texts))

    @torch.no_grad()
    def zero_shot_classifier(self, class_names: Sequence[str],
                             templates: Sequence[str]) -> torch.Tensor:
        """Zero-shot weights ``[C, embed_dim]``: for each class, the normalised mean of the
        embeddings of ``template.format(class_name)`` over ``templates`` (CLIP's prompt
        ensembling). Classify with ``encode_image(x) @ weights.T``."""
        class_names = _check_texts(class_names, "class_names")
        templates = _check_texts(templates, "templates")
        if not all("{}" in t for t in templates):
            raise ValueError(f"templates: expected each to contain '{{}}', got {templates!r}")
        prompts = [t.format(c) for c in class_names for t in templates]
        emb = self.encode_text(prompts).view(len(class_names), len(templates), -1)
        return F.normalize(emb.mean(1), dim=-1)

    def forward(self, images: torch.Tensor, texts: Sequence[str]) -> torch.Tensor:
        """Logits ``[B_images, B_texts]`` = ``exp(logit_scale) * cosine similarity``."""
        return self.logit_scale.exp() * self.encode_image(images) @ self.encode_text(texts).T

    def clamp_logit_scale(self) -> None:
        """Keep the temperature >= 0.01 (CLIP clamps the logit scale at 100)."""
        with torch.no_grad():
            self.logit_scale.clamp_(max=_MAX_LOGIT_SCALE)

    # -- checkpoints ---------------------------------------------------------------------------
    def save_projections(self, path: str | Path, *, metadata: dict | None = None) -> str:
        """Write the projections and temperature (the state dict; no tower weights) as
        safetensors at ``path`` atomically; returns the file's sha256."""
        from subspace_core.zoo import save_state_dict

        return save_state_dict(self.state_dict(), path, metadata=metadata)

    def load_projections(self, path: str | Path, *, sha256: str) -> LiTClip:
        """Load projections saved by :meth:`save_projections`, refusing the file unless it
        hashes to ``sha256``; strict (a missing or extra key raises). Returns ``self``."""
        from subspace_core.zoo import load_state_dict

        self.load_state_dict(load_state_dict(path, sha256=sha256), strict=True)
        return self


def _lock(tower: nn.Module) -> nn.Module:
    """Freeze a tower: no gradients to its weights, eval mode (no dropout, fixed BatchNorm)."""
    if not isinstance(tower, nn.Module):
        raise TypeError(f"tower: expected a torch.nn.Module, got {type(tower).__name__}")
    tower.requires_grad_(False)
    return tower.eval()


def _check_texts(texts: object, name: str = "texts") -> list[str]:
    if isinstance(texts, str) or not isinstance(texts, Sequence):
        raise TypeError(f"{name}: expected a sequence of str, got {type(texts).__name__}")
    texts = list(texts)
    if not texts or not all(isinstance(t, str) for t in texts):
        raise ValueError(f"{name}: expected a non-empty sequence of str, got {str(texts)[:80]}")
    return texts
