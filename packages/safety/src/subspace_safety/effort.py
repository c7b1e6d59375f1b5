"""Effort: SVD split of frozen pretrained layers into a fixed principal part and a trainable
orthogonal residual (Yan et al., "Orthogonal Subspace Decomposition for Generalizable
AI-Generated Image Detection", ICML 2025, arXiv:2411.15633).

Each chosen layer's weight ``W`` [out, in] (a 1×1 convolution is the same matrix applied at
every pixel) is factorised ``W = U S Vᵀ``, ``k = min(out, in)``:

- the top ``r = rank_keep`` components ``W_r = U_r S_r V_rᵀ`` are frozen buffers — the
  pretrained semantic subspace the detector must not forget;
- the remaining ``k − r`` components ``U_res`` [out, k−r], ``S_res`` [k−r], ``V_res``
  [k−r, in] become the trainable parameters, and the layer computes with
  ``W_r + U_res diag(S_res) V_resᵀ``, which equals ``W`` exactly at initialisation.

Two regularisers keep the residual an SVD-like complement of the principal part:

- :meth:`EffortLayer.orthogonality_loss` ``½‖[U_r U_res]ᵀ[U_r U_res] − I‖_F +
  ½‖[V_r V_res]ᵀ[V_r V_res] − I‖_F``: zero iff the residual factors are orthonormal *and*
  orthogonal to the frozen principal factors. The reference code forms the ``out × out``
  outer products ``U Uᵀ`` instead, which equal ``I`` only for square weights; the ``k × k``
  Gram form used here is zero at initialisation for every shape and identical otherwise
  in what it penalises.
- :meth:`EffortLayer.singular_value_loss` ``|‖W_r + W_res‖_F² − ‖W‖_F²|``: the total
  energy ``Σ σ_i²`` of the layer stays that of the pretrained weight.

:func:`apply_effort` swaps chosen ``nn.Linear`` / 1×1 ``nn.Conv2d`` modules of a model
in place and freezes everything else; :func:`effort_losses` sums the regularisers.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "EffortConv1x1",
    "EffortLayer",
    "EffortLinear",
    "EffortLosses",
    "apply_effort",
    "effort_layers",
    "effort_losses",
]


def _check_rank_keep(rank_keep: object, full_rank: int, where: str) -> int:
    if isinstance(rank_keep, bool) or not isinstance(rank_keep, int) or rank_keep < 0:
        raise ValueError(f"rank_keep: expected a non-negative int, got {rank_keep!r}")
    if rank_keep >= full_rank:
        raise ValueError(f"rank_keep: expected < {full_rank} (the rank of {where}), got "
                         f"{rank_keep}; nothing would be left to train")
    return rank_keep


class EffortLayer(nn.Module):
    """Common part of :class:`EffortLinear` and :class:`EffortConv1x1`.

    Buffers (frozen): ``weight_main`` [out, in] ``= U_r diag(S_r) V_rᵀ``, ``U_r`` [out, r],
    ``S_r`` [r], ``V_r`` [in, r], ``bias`` [out] or None, ``weight_fnorm2`` (``‖W‖_F²``).
    Parameters (trainable): ``U_res`` [out, k−r], ``S_res`` [k−r], ``V_res`` [in, k−r].
    ``V`` factors are stored column-wise (``W = U S Vᵀ``), unlike the reference's ``Vh``.
    """

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None, rank_keep: int,
                 where: str) -> None:
        super().__init__()
        out_features, in_features = weight.shape
        self.rank_keep = _check_rank_keep(rank_keep, min(out_features, in_features), where)
        w = weight.detach()
        # factorise in float64 so the split reproduces W to the rounding of its own dtype
        U, S, Vh = torch.linalg.svd(w.to(torch.float64), full_matrices=False)
        r = self.rank_keep
        dtype = w.dtype
        self.register_buffer("U_r", U[:, :r].to(dtype).contiguous())
        self.register_buffer("S_r", S[:r].to(dtype).contiguous())
        self.register_buffer("V_r", Vh[:r].mT.to(dtype).contiguous())
        self.register_buffer("weight_main", ((U[:, :r] * S[:r]) @ Vh[:r]).to(dtype))
        self.register_buffer("weight_fnorm2", (S**2).sum().to(dtype))
        self.register_buffer("bias", None if bias is None else bias.detach().clone())
        self.U_res = nn.Parameter(U[:, r:].to(dtype).contiguous())
        self.S_res = nn.Parameter(S[r:].to(dtype).contiguous())
        self.V_res = nn.Parameter(Vh[r:].mT.to(dtype).contiguous())

    @property
    def residual_rank(self) -> int:
        """``k − r``: the number of trainable singular components."""
        return self.S_res.numel()

    def residual_weight(self) -> torch.Tensor:
        """``U_res diag(S_res) V_resᵀ`` [out, in]."""
        return (self.U_res * self.S_res) @ self.V_res.mT

    def weight(self) -> torch.Tensor:
        """The effective weight ``W_r + W_res`` [out, in]."""
        return self.weight_main + self.residual_weight()

    def orthogonality_loss(self) -> torch.Tensor:
        """``½‖[U_r U_res]ᵀ[U_r U_res] − I‖_F + ½‖[V_r V_res]ᵀ[V_r V_res] − I‖_F`` (scalar)."""
        total = self.S_r.new_zeros(())
        for frozen, trained in ((self.U_r, self.U_res), (self.V_r, self.V_res)):
            Q = torch.cat([frozen, trained], dim=1)
            eye = torch.eye(Q.shape[1], dtype=Q.dtype, device=Q.device)
            total = total + 0.5 * torch.linalg.matrix_norm(Q.mT @ Q - eye)
        return total

    def singular_value_loss(self) -> torch.Tensor:
        """``|‖W_r + W_res‖_F² − ‖W‖_F²|`` (scalar): keeps the layer's spectral energy."""
        return (self.weight().pow(2).sum() - self.weight_fnorm2).abs()


class EffortLinear(EffortLayer):
    """Effort version of an ``nn.Linear``: ``[..., in] -> [..., out]``."""

    def __init__(self, linear: nn.Linear, rank_keep: int) -> None:
        if not isinstance(linear, nn.Linear):
            raise TypeError(f"linear: expected nn.Linear, got {type(linear).__name__}")
        super().__init__(linear.weight, linear.bias, rank_keep,
                         f"Linear({linear.in_features}, {linear.out_features})")
        self.in_features, self.out_features = linear.in_features, linear.out_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight(), self.bias)

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"rank_keep={self.rank_keep}, residual_rank={self.residual_rank}")


class EffortConv1x1(EffortLayer):
    """Effort version of a pointwise ``nn.Conv2d`` (1×1 kernel, ``groups=1``):
    ``[N, in, H, W] -> [N, out, H', W']`` with the original stride/padding/dilation."""

    def __init__(self, conv: nn.Conv2d, rank_keep: int) -> None:
        if not isinstance(conv, nn.Conv2d):
            raise TypeError(f"conv: expected nn.Conv2d, got {type(conv).__name__}")
        if conv.kernel_size != (1, 1) or conv.groups != 1 or conv.padding_mode != "zeros" \
                or isinstance(conv.padding, str):
            raise ValueError(f"conv: expected a pointwise Conv2d (kernel 1x1, groups=1, numeric "
                             f"zero padding), got kernel {conv.kernel_size}, groups "
                             f"{conv.groups}, padding {conv.padding!r} ({conv.padding_mode})")
        super().__init__(conv.weight[:, :, 0, 0], conv.bias, rank_keep,
                         f"Conv2d({conv.in_channels}, {conv.out_channels}, 1x1)")
        self.in_channels, self.out_channels = conv.in_channels, conv.out_channels
        self.stride, self.padding, self.dilation = conv.stride, conv.padding, conv.dilation

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        kernel = self.weight()[:, :, None, None]
        return F.conv2d(x, kernel, self.bias, self.stride, self.padding, self.dilation)

    def extra_repr(self) -> str:
        return (f"in_channels={self.in_channels}, out_channels={self.out_channels}, "
                f"stride={self.stride}, rank_keep={self.rank_keep}, "
                f"residual_rank={self.residual_rank}")


def _wrap(name: str, module: nn.Module, rank_keep: int) -> EffortLayer:
    if isinstance(module, nn.Linear):
        return EffortLinear(module, rank_keep)
    if isinstance(module, nn.Conv2d) and module.kernel_size == (1, 1) and module.groups == 1:
        return EffortConv1x1(module, rank_keep)
    raise TypeError(f"target_modules: {name!r} is a {type(module).__name__}"
                    f"{getattr(module, 'kernel_size', '')}; Effort supports nn.Linear and "
                    f"pointwise nn.Conv2d (1x1 kernel, groups=1) only")


def apply_effort(
    model: nn.Module,
    target_modules: str | Iterable[str],
    rank_keep: int,
    *,
    freeze_others: bool = True,
) -> list[str]:
    """Replace the chosen layers of ``model`` (in place) by Effort layers.

    Args:
        model: a (pretrained) network.
        target_modules: module names as in ``model.named_modules()``, or ``fnmatch`` patterns
            (``"features.*.conv.3"``); every name/pattern must match at least one module, and
            every matched module must be an ``nn.Linear`` or a pointwise ``nn.Conv2d``.
        rank_keep: number ``r`` of top singular components frozen in each layer; must be
            below each layer's ``min(out, in)``.
        freeze_others: set ``requires_grad=False`` on every parameter that is not a residual
            factor (as in the paper, only ``U_res, S_res, V_res`` train; unfreeze a new
            classification head yourself).

    Returns:
        The names of the replaced modules, in ``named_modules`` order.

    Raises:
        ValueError: a name/pattern matches nothing, or ``rank_keep`` leaves nothing to train.
        TypeError: a matched module is of another kind.
    """
    patterns = [target_modules] if isinstance(target_modules, str) else list(target_modules)
    if not patterns or not all(isinstance(p, str) and p for p in patterns):
        raise ValueError(f"target_modules: expected module names/patterns (non-empty str), got "
                         f"{target_modules!r}")
    names = [name for name, _ in model.named_modules() if name]
    matched: list[str] = []
    for pattern in patterns:
        hits = [n for n in names if n == pattern or fnmatch.fnmatchcase(n, pattern)]
        if not hits:
            raise ValueError(f"target_modules: {pattern!r} matches no module of "
                             f"{type(model).__name__}")
        matched += [n for n in hits if n not in matched]
    modules = dict(model.named_modules())
    replacements = {n: _wrap(n, modules[n], rank_keep) for n in matched}  # validate all first
    for name, layer in replacements.items():
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, child, layer)  # built from the weight, so already on its device
    if freeze_others:
        for name, param in model.named_parameters():
            param.requires_grad_(name.rsplit(".", 1)[-1] in ("U_res", "S_res", "V_res"))
    return [n for n in names if n in replacements]


def effort_layers(model: nn.Module) -> list[EffortLayer]:
    """All :class:`EffortLayer` modules of ``model``."""
    return [m for m in model.modules() if isinstance(m, EffortLayer)]


class EffortLosses(NamedTuple):
    """Regularisers summed over a model's Effort layers (scalars)."""

    orthogonality: torch.Tensor
    singular_value: torch.Tensor


def effort_losses(model: nn.Module) -> EffortLosses:
    """Sum of :meth:`EffortLayer.orthogonality_loss` and of
    :meth:`EffortLayer.singular_value_loss` over ``model``'s Effort layers.

    Raises ``ValueError`` when the model has none (a silently-zero regulariser would hide a
    forgotten :func:`apply_effort`).
    """
    layers = effort_layers(model)
    if not layers:
        raise ValueError(f"model: expected Effort layers (call apply_effort first), "
                         f"{type(model).__name__} has none")
    orth = torch.stack([layer.orthogonality_loss() for layer in layers]).sum()
    keep = torch.stack([layer.singular_value_loss() for layer in layers]).sum()
    return EffortLosses(orth, keep)
