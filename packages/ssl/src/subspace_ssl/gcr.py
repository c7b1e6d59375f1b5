"""Grassmann Class Representation (GCR): every class is a linear subspace, not a vector.

Wang, Li & Zhang, "Get the Best of Both Worlds: Improving Accuracy and Transferability by
Grassmann Class Representation", ICCV 2023 (reference code: github.com/innerlee/GCR).

Class ``c`` is a ``k``-dimensional subspace of the feature space, stored as an orthonormal
frame ``S_c`` [D, k] (a point of the Grassmannian ``Gr(D, k)``). The logit of a feature ``x``
is the length of its orthogonal projection onto that subspace,

    logit_c(x) = γ · ‖S_cᵀ x̂‖₂,    x̂ = x / ‖x‖₂,

with the feature L2-normalised and a fixed scale ``γ`` (the reference head's ``gamma``,
25 in every published config, with ``k = 8``). ``‖S_cᵀ x̂‖ = cos θ_c`` where ``θ_c`` is the
angle between ``x`` and the class subspace, so ``k = 1`` is a cosine-softmax (normalised
weights and features) whose logit is ``|cos|``. The frames are trained on the manifold with
Riemannian SGD (the paper) — here :class:`subspace_core.linalg.GrassmannSGD` /
:class:`~subspace_core.linalg.GrassmannAdam`: Euclidean gradient projected on the tangent
space, then a QR retraction, so the columns stay orthonormal after every step. Ordinary
parameters keep their usual optimizer (:func:`build_optimizers` builds the pair).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from subspace_core.linalg import GrassmannAdam, GrassmannSGD, orthonormal_basis

__all__ = [
    "GCRClassifier",
    "GrassmannClassHead",
    "LinearClassifier",
    "OptimizerPair",
    "build_classifier",
    "build_optimizers",
    "grassmann_parameters",
]


class GrassmannClassHead(nn.Module):
    """Subspace logits ``γ · ‖S_cᵀ x̂‖`` for ``n_classes`` class subspaces of dimension ``k``.

    Args:
        in_dim: feature dimension ``D``.
        n_classes: number of classes ``C``.
        subspace_dim: ``k``, the dimension of every class subspace (``1 <= k <= D``).
        scale: ``γ``, multiplies the projection norms (a softmax temperature ``1/γ``).
        normalize: L2-normalise the features first (the paper's head does).
        seed: seed of the initial frames (QR of a standard Gaussian), for reproducibility.

    Attributes:
        frames: ``nn.Parameter`` [C, D, k] with orthonormal columns per class
            (``frames[c].T @ frames[c] = I_k``). Train it with :func:`build_optimizers`, never
            with a Euclidean optimizer (a plain step leaves the manifold; weight decay
            shrinks the frame).

    Shapes: ``x`` [N, D] → logits [N, C]; :meth:`projections` gives ``S_cᵀ x̂`` [N, C, k].
    """

    def __init__(
        self,
        in_dim: int,
        n_classes: int,
        subspace_dim: int = 8,
        *,
        scale: float = 25.0,
        normalize: bool = True,
        seed: int | None = None,
    ):
        super().__init__()
        in_dim, n_classes, subspace_dim = int(in_dim), int(n_classes), int(subspace_dim)
        if in_dim < 1 or n_classes < 1:
            raise ValueError(
                f"in_dim/n_classes: expected positive integers, got {in_dim}, {n_classes}"
            )
        if not 1 <= subspace_dim <= in_dim:
            raise ValueError(
                f"subspace_dim: expected an integer in [1, in_dim = {in_dim}], got {subspace_dim}"
            )
        if not scale > 0:
            raise ValueError(f"scale: expected a positive number, got {scale}")
        generator = None if seed is None else torch.Generator().manual_seed(int(seed))
        gaussian = torch.randn(n_classes, in_dim, subspace_dim, generator=generator)
        # QR of a Gaussian matrix gives a Haar-distributed frame, i.e. a uniformly random
        # subspace (the reference head initialises the same way).
        self.frames = nn.Parameter(orthonormal_basis(gaussian))
        self.in_dim, self.n_classes, self.subspace_dim = in_dim, n_classes, subspace_dim
        self.scale, self.normalize = float(scale), bool(normalize)

    def extra_repr(self) -> str:
        return (
            f"in_dim={self.in_dim}, n_classes={self.n_classes}, "
            f"subspace_dim={self.subspace_dim}, scale={self.scale}, normalize={self.normalize}"
        )

    def projections(self, x: torch.Tensor) -> torch.Tensor:
        """Coordinates ``S_cᵀ x̂`` of the (normalised) features in every class frame: [N, C, k]."""
        if x.ndim != 2 or x.shape[1] != self.in_dim:
            raise ValueError(f"x: expected features [N, {self.in_dim}], got {tuple(x.shape)}")
        if self.normalize:
            x = F.normalize(x, dim=1)
        n_classes, in_dim, k = self.frames.shape
        # one [N, D] × [D, C·k] matmul instead of C small ones
        flat = self.frames.permute(1, 0, 2).reshape(in_dim, n_classes * k)
        return (x @ flat).view(x.shape[0], n_classes, k)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.scale * torch.linalg.vector_norm(self.projections(x), dim=-1)

    @torch.no_grad()
    def orthonormality_error(self) -> float:
        """``max_c max |S_cᵀ S_c − I|``: how far the frames are from the manifold."""
        eye = torch.eye(self.subspace_dim, dtype=self.frames.dtype, device=self.frames.device)
        return (self.frames.mT @ self.frames - eye).abs().amax().item()


class GCRClassifier(nn.Module):
    """Encoder + :class:`GrassmannClassHead`.

    Shapes: ``model(x)``: images [N, 1, 28, 28] float (``subspace_ssl.data.to_input``) →
    logits [N, C]; ``model.features(x)`` → the encoder's GAP embedding [N, D].
    """

    def __init__(self, encoder: nn.Module, head: GrassmannClassHead):
        super().__init__()
        embed_dim = getattr(encoder, "embed_dim", None)
        if embed_dim is not None and embed_dim != head.in_dim:
            raise ValueError(
                f"head: expected in_dim = encoder.embed_dim = {embed_dim}, got {head.in_dim}"
            )
        self.encoder, self.head = encoder, head

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder(x))


class LinearClassifier(nn.Module):
    """Encoder + a plain linear softmax head (with bias): the vector-class baseline of GCR.

    Shapes: ``model(x)``: images [N, 1, 28, 28] → logits [N, C]; ``model.features(x)`` →
    the encoder's GAP embedding [N, D].
    """

    def __init__(self, encoder: nn.Module, n_classes: int, in_dim: int | None = None):
        super().__init__()
        in_dim = getattr(encoder, "embed_dim", None) if in_dim is None else int(in_dim)
        if in_dim is None:
            raise ValueError("in_dim: expected an integer (the encoder has no embed_dim), got None")
        if int(n_classes) < 1:
            raise ValueError(f"n_classes: expected a positive integer, got {n_classes}")
        self.encoder = encoder
        self.head = nn.Linear(in_dim, int(n_classes))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder(x))


def build_classifier(
    head: str = "gcr",
    *,
    encoder_size: str = "tiny",
    n_classes: int = 10,
    subspace_dim: int = 8,
    scale: float = 25.0,
    seed: int | None = None,
) -> GCRClassifier | LinearClassifier:
    """A :class:`GCRClassifier` (``head="gcr"``) or :class:`LinearClassifier` (``"softmax"``)
    on ``subspace_ssl.encoders.build_encoder(encoder_size)``; ``seed`` fixes the initial weights.
    """
    from subspace_ssl.encoders import build_encoder

    if head not in ("gcr", "softmax"):
        raise ValueError(f"head: expected 'gcr' or 'softmax', got {head!r}")
    with torch.random.fork_rng(devices=[], enabled=seed is not None):
        if seed is not None:
            torch.manual_seed(seed)
        encoder = build_encoder(encoder_size)
        if head == "softmax":
            return LinearClassifier(encoder, n_classes)
        frames_seed = None if seed is None else seed + 1
        return GCRClassifier(
            encoder,
            GrassmannClassHead(
                encoder.embed_dim, n_classes, subspace_dim, scale=scale, seed=frames_seed
            ),
        )


# --------------------------------------------------------------------------- optimizers


def grassmann_parameters(model: nn.Module) -> list[nn.Parameter]:
    """The ``frames`` of every :class:`GrassmannClassHead` inside ``model`` (each once)."""
    seen: dict[int, nn.Parameter] = {}
    for module in model.modules():
        if isinstance(module, GrassmannClassHead):
            seen.setdefault(id(module.frames), module.frames)
    return list(seen.values())


class OptimizerPair:
    """A Euclidean optimizer and a Grassmann one driven as one (``step``, ``zero_grad``, state).

    Either may be None (a model without Grassmann heads, or a bare head), not both.

    ``param_groups`` lists the groups of both (Euclidean first), so a schedule that scales
    ``group["lr"]`` reaches the frames too; ``state_dict`` / ``load_state_dict`` nest both,
    which :func:`subspace_core.train.save_training_state` stores without pickling.
    """

    def __init__(
        self,
        euclidean: torch.optim.Optimizer | None,
        grassmann: torch.optim.Optimizer | None = None,
    ):
        if euclidean is None and grassmann is None:
            raise ValueError("euclidean/grassmann: expected at least one optimizer, got two None")
        self.euclidean, self.grassmann = euclidean, grassmann

    def _optimizers(self) -> Iterator[torch.optim.Optimizer]:
        for opt in (self.euclidean, self.grassmann):
            if opt is not None:
                yield opt

    @property
    def param_groups(self) -> list[dict[str, Any]]:
        return [group for opt in self._optimizers() for group in opt.param_groups]

    def zero_grad(self, set_to_none: bool = True) -> None:
        for opt in self._optimizers():
            opt.zero_grad(set_to_none=set_to_none)

    def step(self) -> None:
        for opt in self._optimizers():
            opt.step()

    def state_dict(self) -> dict[str, Any]:
        return {
            name: None if opt is None else opt.state_dict()
            for name, opt in (("euclidean", self.euclidean), ("grassmann", self.grassmann))
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for name, opt in (("euclidean", self.euclidean), ("grassmann", self.grassmann)):
            if (state.get(name) is None) != (opt is None):
                raise ValueError(
                    f"state: expected a {name} optimizer state exactly when this "
                    f"pair has a {name} optimizer ({opt is not None}), got the "
                    "opposite"
                )
            if opt is not None:
                opt.load_state_dict(state[name])


def build_optimizers(
    model: nn.Module,
    *,
    lr: float,
    optimizer: str = "sgd",
    momentum: float = 0.9,
    weight_decay: float = 5e-4,
    frame_lr: float | None = None,
    nesterov: bool = True,
    step_map: str = "retraction",
) -> OptimizerPair:
    """Optimizers for a model with Grassmann heads: frames on the manifold, the rest as usual.

    * every ``GrassmannClassHead.frames`` → :class:`~subspace_core.linalg.GrassmannSGD`
      (``optimizer="sgd"``, same momentum, Nesterov as asked) or
      :class:`~subspace_core.linalg.GrassmannAdam` (``"adamw"``), at ``frame_lr``
      (default ``lr``, as the reference code uses one learning rate for all), no weight decay,
      moving along ``step_map``: ``"retraction"`` (QR, one QR per step) or ``"exp"`` (the
      exponential map of the reference code's RSGD, one SVD per step);
    * all other trainable parameters → ``torch.optim.SGD`` / ``AdamW`` with ``weight_decay``
      on weight matrices and kernels only (biases and BatchNorm affine parameters are not
      decayed, the usual practice).

    Each ``param_groups`` entry gets ``base_lr`` (the lr a schedule multiplies). Raises if a
    trainable parameter would go to neither optimizer (no silent skips).
    """
    if optimizer not in ("sgd", "adamw"):
        raise ValueError(f"optimizer: expected 'sgd' or 'adamw', got {optimizer!r}")
    if not lr > 0:
        raise ValueError(f"lr: expected a positive number, got {lr}")
    frames = grassmann_parameters(model)
    frame_ids = {id(p) for p in frames}
    decay, no_decay = [], []
    for param in model.parameters():
        if not param.requires_grad or id(param) in frame_ids:
            continue
        (decay if param.ndim >= 2 else no_decay).append(param)
    groups = [
        g
        for g in (
            {"params": decay, "weight_decay": weight_decay},
            {"params": no_decay, "weight_decay": 0.0},
        )
        if g["params"]
    ]
    trainable_frames = [p for p in frames if p.requires_grad]
    if not groups and not trainable_frames:
        raise ValueError("model: expected trainable parameters, got none")
    euclidean = grassmann = None
    if groups and optimizer == "sgd":
        euclidean = torch.optim.SGD(
            groups, lr=lr, momentum=momentum, nesterov=nesterov and momentum > 0
        )
    elif groups:
        euclidean = torch.optim.AdamW(groups, lr=lr)
    if trainable_frames:
        flr = lr if frame_lr is None else float(frame_lr)
        if optimizer == "sgd":
            grassmann = GrassmannSGD(
                trainable_frames,
                lr=flr,
                momentum=momentum,
                nesterov=nesterov and momentum > 0,
                step_map=step_map,
            )
        else:
            grassmann = GrassmannAdam(trainable_frames, lr=flr, step_map=step_map)
    pair = OptimizerPair(euclidean, grassmann)
    covered = {id(p) for group in pair.param_groups for p in group["params"]}
    missing = [
        name for name, p in model.named_parameters() if p.requires_grad and id(p) not in covered
    ]
    if missing:  # cannot happen by construction; guards future edits of the split above
        raise RuntimeError(f"build_optimizers: parameters left out of both optimizers: {missing}")
    for group in pair.param_groups:
        group["base_lr"] = group["lr"]
    return pair
