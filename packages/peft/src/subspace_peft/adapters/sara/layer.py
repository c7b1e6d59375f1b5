"""SaRA layer: a frozen linear / conv whose smallest-magnitude weights get a sparse update.

Method (SaRA, Hu et al. 2024, arXiv:2409.06633, "High-Efficient Diffusion Model Fine-tuning
with Progressive Sparse Low-Rank Adaptation"). The pretrained weights of smallest magnitude
contribute little to a model's output; SaRA re-uses exactly those as the trainable set. For a
weight ``W0`` (``[out, in]``, or a conv kernel ``[out, in/groups, k_1, ...]``) with the
boolean trainable mask ``P`` (:func:`select_small_weights`), the effective weight is::

    W = W0 + ΔW,        ΔW = scatter(values at P)  (zero outside P)

and the training objective adds the nuclear norm of the (unfolded) update,
``L = L_task + λ ||ΔW||_*`` (:func:`nuclear_norm`; the paper's "low-rank sparse training",
which keeps the sparse update from over-fitting). A conv update is unfolded to
``[out, in/groups · k_1 ···]`` for the nuclear norm.

Implementation choices:

* **Unstructured backpropagation** (the paper's memory point): the trainable tensor is the
  1-D vector ``values [k]`` of the update at the ``k`` selected positions, with their flat
  indices ``indices [k]`` (int64, sorted) as a buffer; ``ΔW`` is rebuilt by a scatter in
  every forward, and autograd of the scatter returns ``∂L/∂values = (∂L/∂W).flatten()[indices]``.
  The optimizer therefore holds states for ``k`` scalars, not for the whole matrix, and no
  dense gradient of ``W0`` is kept (the weight's gradient exists only transiently inside the
  backward of the matmul). ``values = 0`` at init, so the adapted layer's output equals the
  original one bit for bit (``W0 + 0``).
* **Selection** (:func:`select_small_weights`): with ``fraction = f`` the ``k = floor(f ·
  numel)`` entries of smallest ``|W0|`` of the layer (stable sort: ties keep the lower flat
  index), and the threshold ``t`` is the smallest magnitude *not* selected (``+inf`` when
  everything is); with an absolute ``threshold = t`` every entry with ``|W0| < t``
  (the reference code's rule).
* **Progressive parameter adjustment** (:meth:`SaRALayer.reselect`): the paper observes that
  part of the trained small weights quickly leave the "ineffective" band while the others stay
  in it, and re-selects, after a part of training, the weights that are *still* below the
  threshold (the reference implementation recomputes ``|W| < t`` on the current weights at
  iteration ``progressive_iter`` and restarts its optimizer). Here: the entries whose current
  magnitude ``|W0 + ΔW|`` reached ``t`` are frozen at their trained value (moved to the
  buffers ``frozen_indices`` / ``frozen_values``), the others keep training from their current
  value. The layer's map does not change, the trainable vector shrinks, and since the
  parameter object changes the optimizer has to be told
  (:meth:`~subspace_peft.adapters.sara.model.SaRAModel.reselect` swaps it in place and drops
  its state, as the reference restarts its optimizer).
* **Nuclear norm**: ``sum(svdvals(ΔW))`` computed in float32 at least; its gradient is
  ``U Vᵀ`` of the thin SVD (every singular value gets weight 1). At ``ΔW = 0`` the nuclear norm
  has no gradient (its subdifferential is the unit ball of the spectral norm); the function
  returns the minimal-norm subgradient 0 there instead of the arbitrary ``U Vᵀ`` of an
  all-zero SVD.
* **No exact LoRA form**: a sparse update is generically full-rank. :meth:`lora_factors`
  raises; :meth:`lowrank_factors` gives the best rank-``r`` approximation (truncated SVD)
  when explicitly asked, with its relative error.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from subspace_core.linalg import robust_svd
from subspace_peft.adapters.base import AdapterLayer

__all__ = ["SARA_TARGET_TYPES", "SaRALayer", "nuclear_norm", "select_small_weights"]

#: Module types SaRA can adapt (its update lives in the weight's own shape).
SARA_TARGET_TYPES: tuple[type[nn.Module], ...] = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)


@torch.no_grad()
def select_small_weights(weight: torch.Tensor, fraction: float | None = None,
                         threshold: float | None = None) -> tuple[torch.Tensor, float]:
    """Flat indices of the small-magnitude entries of ``weight`` (any shape) and the
    threshold ``t`` that defines them.

    Args:
        weight: the pretrained weight (``numel`` entries).
        fraction: select the ``floor(fraction · numel)`` entries of smallest ``|w|`` (stable
            sort, ties keep the lower flat index); ``t`` = the smallest magnitude not
            selected (``inf`` when all are).
        threshold: alternatively select every entry with ``|w| < threshold`` (``t`` = it).

    Returns:
        ``(indices [k] int64 sorted ascending, t)``.
    """
    if (fraction is None) == (threshold is None):
        raise ValueError(f"select_small_weights: give exactly one of fraction and threshold "
                         f"(got fraction={fraction!r}, threshold={threshold!r})")
    if not isinstance(weight, torch.Tensor) or not weight.is_floating_point() \
            or weight.numel() == 0:
        raise ValueError(f"weight: expected a non-empty floating tensor, got "
                         f"{getattr(weight, 'dtype', type(weight))}")
    mag = weight.detach().abs().flatten().to(torch.float64)
    if not bool(torch.isfinite(mag).all()):
        raise ValueError("weight: contains NaN or inf")
    if threshold is not None:
        if not float(threshold) > 0:
            raise ValueError(f"threshold: expected a positive number, got {threshold!r}")
        idx = torch.nonzero(mag < float(threshold)).flatten()
        return idx, float(threshold)
    if not 0.0 < float(fraction) <= 1.0:
        raise ValueError(f"fraction: expected a number in (0, 1], got {fraction!r}")
    k = math.floor(float(fraction) * mag.numel())
    order = torch.sort(mag, stable=True).indices
    t = float(mag[order[k]]) if k < mag.numel() else math.inf
    return torch.sort(order[:k]).values, t


def nuclear_norm(matrix: torch.Tensor) -> torch.Tensor:
    """``||X||_* = Σ σ_i(X)`` of ``X`` (a matrix, or a tensor unfolded to ``[shape[0], -1]``);
    differentiable, computed in float32 at least, returned in ``X``'s dtype.

    The gradient is ``U Vᵀ`` (thin SVD). At ``X = 0`` the value is 0 and the returned gradient
    is the minimal-norm subgradient 0 (not the arbitrary ``U Vᵀ`` of a zero matrix).
    """
    if not isinstance(matrix, torch.Tensor) or matrix.dim() < 2:
        raise ValueError(f"matrix: expected a tensor with >= 2 dims, got "
                         f"{getattr(matrix, 'shape', type(matrix))}")
    X = matrix.reshape(matrix.shape[0], -1)
    work = X if X.dtype in (torch.float32, torch.float64) else X.to(torch.float32)
    if not bool(work.detach().any()):
        return (work * 0).sum().to(matrix.dtype)
    return torch.linalg.svdvals(work).sum().to(matrix.dtype)


def _check_flat_indices(name: str, idx: torch.Tensor, numel: int) -> None:
    if idx.dtype != torch.int64 or idx.dim() != 1:
        raise ValueError(f"{name}: expected a 1-D int64 tensor, got {idx.dtype} of shape "
                         f"{tuple(idx.shape)}")
    if idx.numel() and (int(idx.min()) < 0 or int(idx.max()) >= numel):
        raise ValueError(f"{name}: indices must lie in [0, {numel}), got range "
                         f"[{int(idx.min())}, {int(idx.max())}]")
    if idx.numel() > 1 and not bool((idx[1:] > idx[:-1]).all()):
        raise ValueError(f"{name}: expected strictly increasing (sorted, unique) indices")


class SaRALayer(AdapterLayer):
    """A frozen ``nn.Linear`` / ``nn.Conv{1,2,3}d`` plus a sparse update on its smallest
    weights (see the module doc).

    Args:
        base_layer: the pretrained module (frozen, kept as is).
        fraction: per-layer fraction of entries trained (:func:`select_small_weights`).
        threshold: absolute threshold instead.

    Tensors: ``values [k]`` (trainable, zero at init), ``indices [k]`` (int64 flat positions
    in the weight), ``frozen_indices [j]`` / ``frozen_values [j]`` (update entries fixed by
    :meth:`reselect`; empty at first). All four are saved with the adapter.
    Attributes: ``threshold`` (``t``), ``weight_shape``, ``reselections`` (count).
    """

    trainable_names = ("values",)
    rebuild_names = ("indices", "frozen_indices", "frozen_values")
    target_types = SARA_TARGET_TYPES

    def __init__(self, base_layer: nn.Module, fraction: float | None = None,
                 threshold: float | None = None) -> None:
        super().__init__(base_layer)
        W = base_layer.weight
        self.is_conv = not isinstance(base_layer, nn.Linear)
        self.weight_shape = tuple(W.shape)
        idx, t = select_small_weights(W, fraction, threshold)
        self.threshold = t
        self.reselections = 0
        kw = {"dtype": W.dtype, "device": W.device}
        self.register_buffer("indices", idx.to(W.device))
        self.register_buffer("frozen_indices", torch.zeros(0, dtype=torch.int64,
                                                           device=W.device))
        self.register_buffer("frozen_values", torch.zeros(0, **kw))
        self.values = nn.Parameter(torch.zeros(idx.numel(), **kw))

    # ------------------------------------------------------------------ tensors
    @property
    def num_trainable(self) -> int:
        """``k``: entries currently trained."""
        return int(self.values.numel())

    @property
    def rank(self) -> int:
        """Upper bound of the rank of ``ΔW`` (``min`` of the unfolded shape): a sparse update
        has no fixed low rank (see :meth:`lowrank_factors`)."""
        return min(self.weight_shape[0], math.prod(self.weight_shape[1:]))

    def trainable_mask(self) -> torch.Tensor:
        """Boolean mask in the weight's shape, True at the entries now trained."""
        mask = torch.zeros(math.prod(self.weight_shape), dtype=torch.bool,
                           device=self.indices.device)
        mask[self.indices] = True
        return mask.view(self.weight_shape)

    def delta_weight(self) -> torch.Tensor:
        """``ΔW`` in the weight's shape: the frozen and the trainable sparse entries scattered
        into zeros (differentiable w.r.t. ``values`` only)."""
        n = math.prod(self.weight_shape)
        flat = torch.zeros(n, dtype=self.values.dtype, device=self.values.device)
        if self.frozen_indices.numel():
            flat = flat.scatter(0, self.frozen_indices, self.frozen_values)
        return flat.scatter(0, self.indices, self.values).view(self.weight_shape)

    def nuclear_norm(self, target: str = "delta") -> torch.Tensor:
        """``||ΔW||_*`` (``target="delta"``) or ``||(W0 + ΔW) ⊙ P||_*`` (``"masked_weight"``,
        with ``P`` the current trainable mask: the reference code's penalty)."""
        delta = self.delta_weight()
        if target == "delta":
            return nuclear_norm(delta)
        if target == "masked_weight":
            masked = (self.base_layer.weight + delta) * self.trainable_mask()
            return nuclear_norm(masked)
        raise ValueError(f"target: expected 'delta' or 'masked_weight', got {target!r}")

    # ------------------------------------------------------------------ forward
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        base = self.base_layer
        weight = base.weight + self.delta_weight()
        if self.is_conv:
            return base._conv_forward(x, weight, base.bias)
        return F.linear(x, weight, base.bias)

    # ------------------------------------------------------------------ progressive
    @torch.no_grad()
    def reselect(self) -> tuple[nn.Parameter, nn.Parameter]:
        """Progressive parameter adjustment: keep training the entries whose current
        magnitude ``|W0 + ΔW|`` is still ``< threshold``; freeze the others at their value.

        The layer's output is unchanged. Returns ``(old values parameter, new values
        parameter)`` so that an optimizer can be updated (see ``SaRAModel.reselect``).
        """
        w = self.base_layer.weight.detach().flatten()[self.indices] + self.values.detach()
        keep = w.abs().to(torch.float64) < self.threshold
        old = self.values
        moved = ~keep
        if bool(moved.any()):
            fi = torch.cat([self.frozen_indices, self.indices[moved]])
            fv = torch.cat([self.frozen_values, old.detach()[moved]])
            order = torch.argsort(fi)
            self.frozen_indices = fi[order].contiguous()
            self.frozen_values = fv[order].contiguous()
        self.indices = self.indices[keep].contiguous()
        self.values = nn.Parameter(old.detach()[keep].clone())
        self.reselections += 1
        return old, self.values

    # ------------------------------------------------------------------ merge / export
    def original_weight(self) -> torch.Tensor:
        return self.base_layer.weight.detach()

    @torch.no_grad()
    def merged_weight(self) -> torch.Tensor:
        """``W0 + ΔW`` in the weight's shape (float64 sum, base dtype; no grad)."""
        w = self.original_weight().to(torch.float64) + self.delta_weight().to(torch.float64)
        return w.to(self.base_layer.weight.dtype)

    def lora_factors(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Not defined: raises (a sparse update has no exact low-rank form).

        Raises:
            TypeError: always; use :meth:`lowrank_factors` for an explicit approximation.
        """
        raise TypeError("SaRALayer: a sparse update ΔW has no exact LoRA form (it is full-rank "
                        "in general); call lowrank_factors(rank) for a truncated-SVD "
                        "approximation, or merge_and_unload() for the exact merged weights")

    @torch.no_grad()
    def lowrank_factors(self, rank: int) -> tuple[torch.Tensor, torch.Tensor, float]:
        """Best rank-``rank`` approximation of the unfolded update (truncated SVD, float64):
        ``(B [out, r], A [r, in·k...], relative_error)`` with ``B A ≈ ΔW`` and
        ``relative_error = ||ΔW − B A||_F / ||ΔW||_F`` (0 for a zero update)."""
        if isinstance(rank, bool) or not isinstance(rank, int) or rank < 1:
            raise ValueError(f"rank: expected an int >= 1, got {rank!r}")
        delta = self.delta_weight().detach().to(torch.float64)
        D = delta.reshape(self.weight_shape[0], -1)
        U, S, Vh = robust_svd(D)
        r = min(rank, S.numel())
        B = U[:, :r] * S[:r]
        A = Vh[:r]
        total = float(D.norm())
        err = float((D - B @ A).norm()) / total if total > 0 else 0.0
        dtype = self.base_layer.weight.dtype
        return B.to(dtype), A.to(dtype), err

    # ------------------------------------------------------------------ save / load
    @torch.no_grad()
    def load_adapter_state(self, state: Mapping[str, torch.Tensor]) -> None:
        """Load the saved sparse update (its index sets are authoritative: a re-selected
        adapter trains fewer entries than a fresh selection)."""
        expected = set(self.trainable_names + self.rebuild_names)
        if set(state) != expected:
            raise ValueError(f"SaRALayer: expected tensors {sorted(expected)}, got "
                             f"{sorted(state)}")
        n = math.prod(self.weight_shape)
        idx, fidx = state["indices"], state["frozen_indices"]
        _check_flat_indices("indices", idx, n)
        _check_flat_indices("frozen_indices", fidx, n)
        if state["values"].shape != idx.shape or state["frozen_values"].shape != fidx.shape:
            raise ValueError("SaRALayer: values / frozen_values must have one entry per index "
                             f"(got {tuple(state['values'].shape)} for {idx.numel()} indices, "
                             f"{tuple(state['frozen_values'].shape)} for {fidx.numel()})")
        if idx.numel() and fidx.numel() and bool(torch.isin(idx, fidx).any()):
            raise ValueError("SaRALayer: trainable and frozen indices overlap")
        W = self.base_layer.weight
        self.indices = idx.to(W.device).clone()
        self.frozen_indices = fidx.to(W.device).clone()
        self.frozen_values = state["frozen_values"].to(W.device, W.dtype).clone()
        self.values = nn.Parameter(state["values"].to(W.device, W.dtype).clone())

    def extra_metadata(self) -> dict[str, Any]:
        # JSON has no infinity: a layer whose every entry is trained stores None
        t = None if math.isinf(self.threshold) else self.threshold
        return {"rank": self.rank, "threshold": t,
                "weight_shape": list(self.weight_shape),
                "module_type": type(self.base_layer).__name__,
                "trainable": self.num_trainable,
                "frozen": int(self.frozen_indices.numel()),
                "reselections": self.reselections}

    def extra_repr(self) -> str:
        return f"{type(self.base_layer).__name__}, weight_shape={self.weight_shape}, " \
               f"trainable={self.num_trainable}, frozen={int(self.frozen_indices.numel())}, " \
               f"threshold={self.threshold:.3g}"
