"""FLoRA layer: a frozen linear / conv whose weight update is a low-rank Tucker tensor.

Method (FLoRA, Si et al. 2024, arXiv:2405.14739, "Low-Rank Core Space for N-dimension").
For an N-d weight ``W0 [n_0, ..., n_{N-1}]`` — a conv kernel ``[out, in/groups, k_1, ...,
k_m]`` or a linear ``[out, in]`` — the update is a Tucker tensor with a small core::

    ΔW = s · G ×_0 U_0 ×_1 U_1 ... ×_{N-1} U_{N-1},     G [r_0, ..., r_{N-1}],  U_k [n_k, r_k]

where ``X ×_k A`` multiplies mode ``k`` of ``X`` by ``A``
(:func:`subspace_peft.optim.tucker.mode_product`), i.e. elementwise
``ΔW[i_0, ..., i_{N-1}] = s Σ_{a_0..a_{N-1}} G[a_0, ..., a_{N-1}] Π_k U_k[i_k, a_k]``.
The core ``G`` and all factors ``U_k`` are trained; ``W0`` stays frozen. For a linear this is
``ΔW = s U_0 G U_1ᵀ`` (a LoRA with a trainable ``r_0 x r_1`` middle matrix).

Why not LoRA on the flattened kernel: peft's conv LoRA (and any LoRA on the ``[out, in k_1
... k_m]`` unfolding) writes ``ΔW`` as ``B A`` with ``A`` acting on the flattened
``in · k_1 ··· k_m`` axis, which mixes channels and kernel positions in one factor and costs
``r (out + in k_1 ··· k_m)`` scalars. FLoRA keeps every mode separate; its core keeps the
kernel's spatial layout (``r_j = k_j`` by default). For a ``3x3`` conv ``64 -> 64`` at
``r = 8``: flattened LoRA ``8 · (64 + 576) = 5,120`` scalars, FLoRA
``8·8·3·3 + 8·64 + 8·64 + 3·3 + 3·3 = 1,618`` (:func:`flora_parameter_count`).

Initialisation (that of the reference implementation): ``G = 0`` (so the adapted layer's
output at init equals the original's, exactly) and every ``U_k`` Kaiming-normal with
``a = √3`` on its ``[n_k, r_k]`` shape (``std = 1 / sqrt(2 r_k)``). As with LoRA's zero
``B``, only ``G`` receives a gradient on the very first step.

Forward:

* conv: ``ΔW`` is composed once per call (mode products applied in increasing order of
  expansion ``n_k / r_k``, so the intermediate tensors stay small; at most
  ``≈ |W| · r_max`` multiply-adds, negligible next to a convolution over a batch of images)
  and the base convolution runs once on ``W0 + ΔW`` through the module's own
  ``_conv_forward`` (so stride, padding, ``padding_mode``, dilation and groups are honoured);
* linear: like SVFit, whichever is cheaper for the call's number of rows: the factored path
  ``x W0ᵀ + s ((x U_1) Gᵀ) U_0ᵀ`` or one matmul with the composed ``W0 + ΔW``. Both give the
  same values and gradients.

FLoRA's reference layers also have an input dropout on the update path; it is not offered
here because it would need a second convolution (the update is merged into one weight).

LoRA form: a linear target reports ``B = s U_0 G [out, r_1]``, ``A = U_1ᵀ [r_1, in]``
(exact, so it exports to Hugging Face ``peft``). A conv target has no LoRA form here:
:meth:`FLoRALayer.lora_factors` raises, and conv adapters are not exported to ``peft``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from subspace_peft.adapters.base import AdapterLayer
from subspace_peft.optim.tucker import mode_product

__all__ = ["FLORA_TARGET_TYPES", "FLoRALayer", "flora_parameter_count", "flora_ranks",
           "tucker_compose"]

#: Module types FLoRA can adapt (transposed convolutions are not: their weight is
#: ``[in, out/groups, ...]`` and their forward differs).
FLORA_TARGET_TYPES: tuple[type[nn.Module], ...] = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)


def flora_ranks(shape: Sequence[int], rank: int, kernel_rank: int | None = None
                ) -> tuple[int, ...]:
    """Core shape for a weight of ``shape`` ``[out, in/groups, k_1, ..., k_m]`` (``m >= 0``):
    ``(min(rank, out), min(rank, in/groups), s_1, ..., s_m)`` with ``s_j = k_j`` when
    ``kernel_rank`` is None, else ``min(kernel_rank, k_j)``."""
    shape = tuple(int(n) for n in shape)
    if len(shape) < 2:
        raise ValueError(f"shape: expected at least 2 modes [out, in, ...], got {shape}")
    spatial = shape[2:] if kernel_rank is None else tuple(min(kernel_rank, k) for k in shape[2:])
    return (min(rank, shape[0]), min(rank, shape[1]), *spatial)


def flora_parameter_count(shape: Sequence[int], ranks: Sequence[int]) -> int:
    """Trainable scalars of one FLoRA layer: ``∏_k r_k + Σ_k n_k r_k`` (core + factors)."""
    return math.prod(ranks) + sum(int(n) * int(r) for n, r in zip(shape, ranks, strict=True))


def tucker_compose(core: torch.Tensor, factors: Sequence[torch.Tensor]) -> torch.Tensor:
    """``core ×_0 U_0 ×_1 U_1 ... ×_{N-1} U_{N-1}`` for ``core [r_0, ..., r_{N-1}]`` and
    ``U_k [n_k, r_k]``; returns ``[n_0, ..., n_{N-1}]`` (differentiable).

    The mode products commute; they are applied in increasing order of ``n_k / r_k`` so that
    the intermediate tensors grow as late as possible.
    """
    if core.dim() != len(factors):
        raise ValueError(f"factors: expected {core.dim()} factors for a core of shape "
                         f"{tuple(core.shape)}, got {len(factors)}")
    order = sorted(range(core.dim()), key=lambda k: factors[k].shape[0] / factors[k].shape[1])
    out = core
    for k in order:
        out = mode_product(out, factors[k], k)
    return out


class FLoRALayer(AdapterLayer):
    """A frozen ``nn.Linear`` / ``nn.Conv{1,2,3}d`` plus a Tucker update (see the module doc).

    Args:
        base_layer: the pretrained module (frozen, kept as is).
        ranks: core shape ``(r_0, ..., r_{N-1})``, one rank per mode of the weight, with
            ``1 <= r_k <= n_k`` (e.g. from :func:`flora_ranks`).
        scale: ``s`` in ``ΔW = s · G ×_k U_k``.

    Tensors (all trainable, all saved): ``core [r_0, ..., r_{N-1}]`` (zero at init) and
    ``factor_k [n_k, r_k]`` for ``k = 0..N-1``. Attributes ``in_features`` /
    ``out_features`` hold the channel counts of a conv (``in_channels``, ``out_channels``).
    """

    rebuild_names = ()
    target_types = FLORA_TARGET_TYPES

    def __init__(self, base_layer: nn.Module, ranks: Sequence[int], scale: float = 1.0
                 ) -> None:
        super().__init__(base_layer)
        self.is_conv = not isinstance(base_layer, nn.Linear)
        W = base_layer.weight
        shape = tuple(W.shape)
        ranks = tuple(ranks)
        if len(ranks) != len(shape) or any(
                isinstance(r, bool) or not isinstance(r, int) or not 1 <= r <= n
                for r, n in zip(ranks, shape, strict=False)):
            raise ValueError(f"ranks: expected {len(shape)} ints r_k with 1 <= r_k <= n_k for "
                             f"a weight of shape {shape}, got {ranks!r}")
        self.weight_shape = shape
        self.ranks = ranks
        self.scale = float(scale)
        kw = {"dtype": W.dtype, "device": W.device}
        self.core = nn.Parameter(torch.zeros(ranks, **kw))
        for k, (n, r) in enumerate(zip(shape, ranks, strict=True)):
            U = torch.empty(n, r, **kw)
            # Reference init: kaiming_normal_(a=sqrt(3)) with fan_in = r -> std 1/sqrt(2 r).
            nn.init.kaiming_normal_(U, a=math.sqrt(3))
            setattr(self, f"factor_{k}", nn.Parameter(U))
        # The number of factors depends on the weight's order, so the names are per instance.
        self.trainable_names = ("core", *(f"factor_{k}" for k in range(len(shape))))

    # ------------------------------------------------------------------ tensors
    def factors(self) -> tuple[torch.Tensor, ...]:
        """``(U_0 [n_0, r_0], ..., U_{N-1} [n_{N-1}, r_{N-1}])`` (the trainable parameters)."""
        return tuple(getattr(self, f"factor_{k}") for k in range(len(self.weight_shape)))

    def delta_weight(self) -> torch.Tensor:
        """``ΔW = s · G ×_0 U_0 ... [n_0, ..., n_{N-1}]`` (differentiable, weight's shape)."""
        return self.scale * tucker_compose(self.core, self.factors())

    @property
    def rank(self) -> int:
        """Rank of the LoRA form of a linear target (``r_1``); for a conv, the output-channel
        rank ``r_0``."""
        return self.ranks[0] if self.is_conv else self.ranks[1]

    def num_parameters(self) -> int:
        """Trainable scalars: :func:`flora_parameter_count` of this layer."""
        return flora_parameter_count(self.weight_shape, self.ranks)

    # ------------------------------------------------------------------ forward
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        base = self.base_layer
        if self.is_conv:
            return base._conv_forward(x, base.weight + self.delta_weight(), base.bias)
        W, b = base.weight, base.bias
        rows = x.numel() // self.in_features
        if rows * (self.in_features + self.out_features) > self.in_features * self.out_features:
            return F.linear(x, W + self.delta_weight(), b)
        U0, U1 = self.factor_0, self.factor_1
        low = F.linear(F.linear(F.linear(x, U1.T), self.core), U0)
        return F.linear(x, W, b) + self.scale * low

    # ------------------------------------------------------------------ merge / export
    def original_weight(self) -> torch.Tensor:
        return self.base_layer.weight.detach()

    def lora_factors(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Linear targets: ``B = s U_0 G [out, r_1]``, ``A = U_1ᵀ [r_1, in]`` (``ΔW = B A``).

        Raises:
            TypeError: for a conv target (its Tucker update is not exported in LoRA form).
        """
        if self.is_conv:
            raise TypeError(f"FLoRALayer: a {type(self.base_layer).__name__} target has no "
                            "LoRA form (its update is a Tucker tensor of shape "
                            f"{self.weight_shape}); use merged_weight() or delta_weight()")
        B = self.scale * (self.factor_0 @ self.core)
        return B.detach(), self.factor_1.detach().T.contiguous()

    @torch.no_grad()
    def merged_weight(self) -> torch.Tensor:
        """``W0 + ΔW`` in the weight's shape (float64 sum, base dtype; no grad)."""
        w = self.original_weight().to(torch.float64)
        core = self.core.to(torch.float64)
        delta = self.scale * tucker_compose(core, [U.to(torch.float64) for U in self.factors()])
        return (w + delta).to(self.base_layer.weight.dtype)

    def extra_metadata(self) -> dict[str, Any]:
        return {"rank": self.rank, "ranks": list(self.ranks), "scale": self.scale,
                "weight_shape": list(self.weight_shape),
                "module_type": type(self.base_layer).__name__}

    def extra_repr(self) -> str:
        return f"{type(self.base_layer).__name__}, weight_shape={self.weight_shape}, " \
               f"ranks={self.ranks}, scale={self.scale}"
