"""AI-generated-image detector on a truncated ImageNet MobileNetV2, three ways to adapt it.

:class:`FakeDetector` maps greyscale images ``[N, 28, 28]`` (or ``[N, 1, 28, 28]``; uint8
or float in ``[0, 1]``) to a "fake" logit ``[N]``: ImageNet preprocessing at ``size`` px
(default 32: CPU cost), the first ``blocks`` modules of MobileNetV2's ``features``
(default 14 = through stage 4, 96 channels at stride 16; at 32 px one training step at
batch 32 costs ~0.17 s on one loaded CPU thread), global average pooling, a linear head.
Batch norm stays in eval mode with its ImageNet statistics for every method, so the
methods differ only in which weights move.

:func:`adapt` prepares it in one of four modes, the head always trainable:

- ``"effort"`` — every pointwise convolution of the truncated tower is split by SVD
  (:func:`subspace_safety.effort.apply_effort`): the top ``min(out, in) − residual_rank``
  singular components stay frozen, the ``residual_rank`` smallest train, regularised by
  :func:`~subspace_safety.effort.effort_losses` (orthogonality and singular-value
  energy) in :func:`train_detector`;
- ``"lora"`` — the same convolutions get a LoRA update ``(α / r) B A`` (Hu et al. 2022) of
  rank ``residual_rank``, ``B`` zero-initialised;
- ``"full"`` — every parameter of tower and head trains (batch-norm affine included);
- ``"probe"`` — only the head trains (a linear probe of the frozen ImageNet features).

:func:`roc_auc` (rank statistic, ties counted one half) and :func:`accuracy` score it.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from subspace_core.eval import roc_auc as core_roc_auc

__all__ = [
    "MODES",
    "EffortFakeDetector",
    "FakeDetector",
    "LoRAConv1x1",
    "accuracy",
    "adapt",
    "detector_scores",
    "pointwise_convs",
    "roc_auc",
    "train_detector",
    "trainable_parameters",
]

#: Adaptation modes of :func:`adapt`.
MODES = ("effort", "lora", "full", "probe")


def _check_int(name: str, value: object, low: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ValueError(f"{name}: expected an int >= {low}, got {value!r}")
    return value


class FakeDetector(nn.Module):
    """Truncated MobileNetV2 + linear head: images -> fake logit ``[N]``.

    Args:
        blocks: how many modules of ``MobileNetV2.features`` to keep (2..19; stage ends
            are 2, 4, 7, 14, 19).
        size: network input side in pixels (>= 32).
        pretrained: load the ImageNet weights (``False``: random init, for tests).
    """

    def __init__(self, *, blocks: int = 14, size: int = 32, pretrained: bool = True) -> None:
        super().__init__()
        from subspace_core.backbones import load_backbone

        self.blocks = _check_int("blocks", blocks, 2)
        if blocks > 19:
            raise ValueError(f"blocks: expected an int in 2..19, got {blocks!r}")
        self.size = _check_int("size", size, 32)
        tower = load_backbone("mobilenet_v2", pretrained=pretrained)
        self.features = tower.features[:blocks]
        last_conv = [m for m in self.features.modules() if isinstance(m, nn.Conv2d)][-1]
        self.head = nn.Linear(last_conv.out_channels, 1)
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)

    def train(self, mode: bool = True) -> FakeDetector:
        """Keeps the tower's batch norms in eval mode (ImageNet statistics) in every mode."""
        super().train(mode)
        for m in self.features.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.eval()
        return self

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """``images`` ``[N, 28, 28]`` / ``[N, 1, H, W]`` (uint8 or float in [0, 1]) ->
        logits ``[N]`` (positive: fake)."""
        from subspace_core.backbones import preprocess

        device = self.head.weight.device
        x = preprocess(images.to(device), size=self.size)
        return self.head(self.features(x).mean(dim=(2, 3)))[:, 0]


def pointwise_convs(model: nn.Module) -> list[str]:
    """Names of the 1×1, ``groups=1`` convolutions of ``model`` (Effort / LoRA targets)."""
    return [n for n, m in model.named_modules()
            if isinstance(m, nn.Conv2d) and m.kernel_size == (1, 1) and m.groups == 1]


class LoRAConv1x1(nn.Module):
    """A frozen pointwise conv plus a low-rank update: ``W + (alpha / rank) B A`` with
    ``A`` [rank, in] (Kaiming-uniform init) and ``B`` [out, rank] (zeros), so the layer
    equals the original at initialisation. ``[N, in, H, W] -> [N, out, H', W']``."""

    def __init__(self, conv: nn.Conv2d, rank: int, alpha: float | None = None) -> None:
        super().__init__()
        if not isinstance(conv, nn.Conv2d) or conv.kernel_size != (1, 1) or conv.groups != 1:
            raise TypeError(f"conv: expected a pointwise nn.Conv2d, got {conv!r}")
        self.rank = _check_int("rank", rank)
        self.scale = (alpha if alpha is not None else rank) / rank
        self.base = conv.requires_grad_(False)
        self.A = nn.Parameter(torch.empty(rank, conv.in_channels))
        nn.init.kaiming_uniform_(self.A, a=math.sqrt(5))
        self.B = nn.Parameter(torch.zeros(conv.out_channels, rank))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight = self.base.weight + self.scale * (self.B @ self.A)[:, :, None, None]
        b = self.base
        return F.conv2d(x, weight, b.bias, b.stride, b.padding, b.dilation)


def _replace(model: nn.Module, name: str, module: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent_name) if parent_name else model, child, module)


def adapt(detector: FakeDetector, mode: str, *, residual_rank: int = 4) -> list[str]:
    """Prepare ``detector`` (in place) for training in ``mode`` (see the module docstring).

    Args:
        detector: a fresh :class:`FakeDetector`.
        mode: one of :data:`MODES`.
        residual_rank: Effort's trained singular components per layer, and the LoRA rank
            (same budget of directions per layer); must be below every target layer's
            ``min(out, in)`` for Effort.

    Returns:
        The names of the adapted tower layers (empty for ``"full"`` and ``"probe"``).
    """
    if not isinstance(detector, FakeDetector):
        raise TypeError(f"detector: expected a FakeDetector, got {type(detector).__name__}")
    if mode not in MODES:
        raise ValueError(f"mode: expected one of {MODES}, got {mode!r}")
    _check_int("residual_rank", residual_rank)
    targets = pointwise_convs(detector.features)
    detector.requires_grad_(mode == "full")
    adapted: list[str] = []
    if mode == "effort":
        from subspace_safety.effort import apply_effort

        for name in targets:
            conv = detector.features.get_submodule(name)
            k = min(conv.in_channels, conv.out_channels)
            if residual_rank >= k:
                raise ValueError(f"residual_rank: expected < {k} (min(out, in) of "
                                 f"features.{name}), got {residual_rank}")
            adapted += apply_effort(detector.features, name, k - residual_rank)
    elif mode == "lora":
        for name in targets:
            _replace(detector.features, name,
                     LoRAConv1x1(detector.features.get_submodule(name), residual_rank))
            adapted.append(name)
    detector.head.requires_grad_(True)
    return [f"features.{n}" for n in adapted]


class EffortFakeDetector(FakeDetector):
    """A :class:`FakeDetector` adapted by Effort (:func:`adapt` ``mode="effort"``) whose ``state_dict`` holds
    only what training changes: the residual factors of every Effort layer and the head.

    Loading (strict or not) accepts exactly those keys; the frozen tower and principal
    factors come from the ImageNet weights (``pretrained=True``) at construction.
    ``forward``: images ``[N, 28, 28]`` / ``[N, 1, H, W]`` -> fake logits ``[N]``.

    Args:
        residual_rank: trained singular components per pointwise convolution.
        blocks, size, pretrained: as :class:`FakeDetector`.
    """

    def __init__(self, *, residual_rank: int = 4, blocks: int = 14, size: int = 32,
                 pretrained: bool = True) -> None:
        super().__init__(blocks=blocks, size=size, pretrained=pretrained)
        adapt(self, "effort", residual_rank=residual_rank)
        self.residual_rank = residual_rank
        self._delta_names = frozenset(n for n, p in self.named_parameters() if p.requires_grad)
        self._frozen_names = frozenset(self.state_dict(keep_vars=True)) - self._delta_names
        self.register_state_dict_post_hook(_drop_frozen)
        self.register_load_state_dict_post_hook(_forgive_frozen)

    @property
    def delta_names(self) -> frozenset[str]:
        """Names of the stored tensors (trainable parameters)."""
        return self._delta_names


def _drop_frozen(module: EffortFakeDetector, state: dict, prefix: str, _meta) -> None:
    # the frozen weights are rebuilt from ImageNet at construction: storing them would
    # ship a copy of MobileNetV2 in every detector
    for name in module._frozen_names:
        state.pop(prefix + name, None)


def _forgive_frozen(module: EffortFakeDetector, incompatible) -> None:
    incompatible.missing_keys[:] = [
        k for k in incompatible.missing_keys
        if not any(k == n or k.endswith("." + n) for n in module._frozen_names)]


def trainable_parameters(model: nn.Module) -> int:
    """Number of scalars with ``requires_grad``."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def train_detector(
    detector: FakeDetector,
    real: torch.Tensor,
    fake: torch.Tensor,
    *,
    steps: int = 300,
    batch_size: int = 32,
    lr: float = 1e-3,
    seed: int = 0,
    orth_weight: float = 1.0,
    sv_weight: float = 1.0,
) -> list[float]:
    """Adam on binary cross-entropy (fake = 1) with balanced batches (half real, half fake,
    drawn with replacement); Effort layers add ``orth_weight · orthogonality +
    sv_weight · singular_value`` (:func:`~subspace_safety.effort.effort_losses`).

    Args:
        detector: prepared by :func:`adapt`.
        real, fake: images ``[N, 28, 28]`` (uint8 or float in [0, 1]), N >= 1 each.
        steps, batch_size, lr, seed: the budget (``batch_size`` even).

    Returns:
        Per-step classification loss ``[steps]``.
    """
    from subspace_safety.effort import effort_layers, effort_losses

    _check_int("steps", steps)
    if _check_int("batch_size", batch_size, 2) % 2:
        raise ValueError(f"batch_size: expected an even int, got {batch_size}")
    for name, x in (("real", real), ("fake", fake)):
        if not isinstance(x, torch.Tensor) or x.ndim not in (3, 4) or x.shape[0] < 1:
            raise ValueError(f"{name}: expected a non-empty [N, H, W] or [N, 1, H, W] tensor, "
                             f"got {getattr(x, 'shape', type(x).__name__)}")
    params = [p for p in detector.parameters() if p.requires_grad]
    if not params:
        raise ValueError("detector: has no trainable parameter (call adapt first)")
    has_effort = bool(effort_layers(detector))
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(params, lr=lr)
    half = batch_size // 2
    target = torch.cat([torch.zeros(half), torch.ones(half)])
    detector.train()
    history = []
    for _ in range(steps):
        batch = torch.cat([real[torch.randint(0, real.shape[0], (half,), generator=gen)],
                           fake[torch.randint(0, fake.shape[0], (half,), generator=gen)]])
        loss = F.binary_cross_entropy_with_logits(detector(batch),
                                                  target.to(detector.head.weight.device))
        total = loss
        if has_effort:
            reg = effort_losses(detector)
            total = total + orth_weight * reg.orthogonality + sv_weight * reg.singular_value
        opt.zero_grad()
        total.backward()
        opt.step()
        history.append(float(loss.detach()))
    detector.eval()
    return history


@torch.no_grad()
def detector_scores(detector: FakeDetector, images: torch.Tensor, *,
                    batch_size: int = 256) -> torch.Tensor:
    """Fake logits ``float32 [N]`` of ``images``, in eval mode, on CPU."""
    was_training = detector.training
    detector.eval()
    try:
        return torch.cat([detector(chunk).float().cpu() for chunk in images.split(batch_size)])
    finally:
        detector.train(was_training)


def _check_scores(scores: object, labels: object) -> tuple[torch.Tensor, torch.Tensor]:
    s = torch.as_tensor(scores).detach().double().cpu().reshape(-1)
    y = torch.as_tensor(labels).detach().cpu().reshape(-1)
    if s.shape != y.shape:
        raise ValueError(f"labels: expected {s.numel()} labels (one per score), got "
                         f"{y.numel()}")
    if not bool(((y == 0) | (y == 1)).all()):
        raise ValueError("labels: expected only 0 (real) and 1 (fake)")
    if torch.isnan(s).any():
        raise ValueError("scores: expected no NaN")
    return s, y.bool()


def roc_auc(scores: torch.Tensor, labels: torch.Tensor) -> float:
    """Area under the ROC curve = P(score of a random positive > score of a random
    negative) + ½ P(tie), from average ranks (Mann–Whitney U).

    Args:
        scores: ``[N]`` (higher = more likely positive / fake).
        labels: ``[N]`` in {0, 1}, both classes present.
    """
    s, y = _check_scores(scores, labels)
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        raise ValueError(f"labels: expected both classes, got {n_pos} positives and "
                         f"{n_neg} negatives")
    return core_roc_auc(s, y)


def accuracy(scores: torch.Tensor, labels: torch.Tensor, threshold: float = 0.0) -> float:
    """Fraction with ``(score > threshold) == label``; ``scores``, ``labels`` ``[N]``."""
    s, y = _check_scores(scores, labels)
    if s.numel() == 0:
        raise ValueError("scores: expected at least one score")
    return float(((s > threshold) == y).double().mean())
