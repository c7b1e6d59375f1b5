"""Gradient-subspace projector of one 2-D weight (GaLore / Q-GaLore).

A :class:`SubspaceProjector` holds the *configuration* of the projection of one weight
``W [m, n]`` (side, rank, refresh gap, scale, SVD method, INT4 quantisation, lazy refresh)
and operates on a ``state`` dict that contains only plain values — tensors, ints and
floats — so that the optimizer that owns it can be saved with ``torch.save`` and loaded
with ``torch.load(weights_only=True)`` (galore-torch keeps pickled projector objects in its
optimizer state, which ``weights_only`` refuses).

Basis conventions (those of :func:`subspace_core.ops.projected_adam.projected_adam`)::

    side     basis P   projected gradient   top-r singular vectors of
    "left"   [m, r]    Pᵀ G   [r, n]        G   (left singular vectors)
    "right"  [n, r]    G P    [m, r]        Gᵀ  (right singular vectors of G)

Refresh methods (``method``):

* ``"subspace_iteration"`` (default): the core's warm-started block power iteration
  :func:`subspace_core.linalg.subspace_iteration` with ``init`` = the previous basis; the
  first refresh (no previous basis) uses :func:`subspace_core.linalg.randomized_svd`.
* ``"randomized"``: :func:`subspace_core.linalg.randomized_svd`, warm-started from the
  previous basis as well.
* ``"exact"``: :func:`subspace_core.linalg.robust_svd` (what GaLore computes, but with
  retries and a warning instead of silently zeroed factors, GaLore#58).

The random sketches are drawn from a generator seeded from ``(seed, refresh count)``, so a
refresh is a pure function of the state and the gradient: resumed runs are bit-exact.
Non-finite gradients raise (the core refuses NaN/Inf) instead of producing a zero basis.

Q-GaLore options: ``quant_bits=4`` (or 8) stores the basis group-wise quantised with
:func:`subspace_core.ops.quantize.quantize` (stochastic rounding off: a projector is
used, not accumulated); ``lazy=True`` keeps a queue of the similarity of successive
bases (mean cosine of their principal angles — invariant to sign flips and rotations
inside the subspace; Q-GaLore compares the first basis vector only) and multiplies the
layer's refresh gap by ``gap_growth`` (2) whenever the queue is full and its mean is
``>= cos_threshold`` (0.4), after which the queue restarts.
"""

from __future__ import annotations

import torch

from subspace_core.linalg import (
    principal_angles,
    randomized_svd,
    robust_svd,
    subspace_iteration,
)
from subspace_core.ops.projected_adam import projection_side
from subspace_core.ops.quantize import QuantizedTensor, dequantize, quantize

__all__ = ["METHODS", "PROJ_TYPES", "SubspaceProjector", "resolve_side"]

#: galore-torch ``proj_type`` values accepted (``"std"`` = by shape, as GaLore).
PROJ_TYPES = ("std", "reverse_std", "left", "right", "auto")
#: Refresh algorithms.
METHODS = ("subspace_iteration", "randomized", "exact")


def resolve_side(proj_type: str, shape: tuple[int, ...] | torch.Size) -> str:
    """``"left"`` or ``"right"`` for a galore-torch ``proj_type`` and a weight shape."""
    if proj_type not in PROJ_TYPES:
        raise ValueError(f"proj_type: expected one of {PROJ_TYPES}, got {proj_type!r}")
    std = projection_side(shape)
    if proj_type in ("std", "auto"):
        return std
    if proj_type == "reverse_std":
        return "left" if std == "right" else "right"
    return proj_type


def _int(name: str, value: object, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ValueError(f"{name}: expected an int >= {low}, got {value!r}")
    return value


class SubspaceProjector:
    """Projection of the gradient of one ``[m, n]`` weight onto a rank-``r`` subspace.

    Args:
        shape: ``(m, n)`` of the weight.
        rank: ``r``, ``1 <= r <= min(m, n)``.
        proj_type: ``"std"``/``"auto"`` (GaLore's rule by shape), ``"reverse_std"``,
            ``"left"`` or ``"right"``.
        update_proj_gap: steps between refreshes (the initial gap with ``lazy``).
        scale: GaLore's α (scale of the back-projected update).
        method: one of :data:`METHODS`.
        iters: iterations of ``subspace_iteration`` / power iterations of ``randomized``.
        oversample: extra sketch columns.
        seed: seed of the random sketches.
        quant_bits: None, 4 or 8: store the basis quantised (Q-GaLore).
        quant_group_size: elements per quantisation group of the flattened basis (default
            256, Q-GaLore's); when it does not divide ``rows * r``, one group per basis row.
        lazy, cos_threshold, queue_size, gap_growth: Q-GaLore's lazy layer-adaptive refresh.
        state: an existing state dict (from :meth:`init_state`) to operate on.
    """

    def __init__(
        self,
        shape: tuple[int, ...] | torch.Size,
        rank: int,
        *,
        proj_type: str = "std",
        update_proj_gap: int = 200,
        scale: float = 0.25,
        method: str = "subspace_iteration",
        iters: int = 2,
        oversample: int = 8,
        seed: int = 0,
        quant_bits: int | None = None,
        quant_group_size: int | None = None,
        lazy: bool = False,
        cos_threshold: float = 0.4,
        queue_size: int = 5,
        gap_growth: int = 2,
        state: dict | None = None,
    ) -> None:
        shape = tuple(shape)
        if len(shape) != 2:
            raise ValueError(f"shape: expected a 2-D weight shape (m, n), got {shape}")
        self.shape = shape
        self.side = resolve_side(proj_type, shape)
        m, n = shape
        limit = min(m, n)
        if isinstance(rank, bool) or not isinstance(rank, int) or not 1 <= rank <= limit:
            raise ValueError(
                f"rank: expected an int in [1, min(m, n) = {limit}] for a weight of shape "
                f"{shape}, got {rank!r}"
            )
        self.rank = rank
        self.update_proj_gap = _int("update_proj_gap", update_proj_gap, 1)
        self.scale = float(scale)
        if method not in METHODS:
            raise ValueError(f"method: expected one of {METHODS}, got {method!r}")
        self.method = method
        self.iters = _int("iters", iters, 1)
        self.oversample = _int("oversample", oversample, 0)
        self.seed = int(seed)
        if quant_bits not in (None, 4, 8):
            raise ValueError(f"quant_bits: expected None, 4 or 8, got {quant_bits!r}")
        self.quant_bits = quant_bits
        self.quant_group_size = quant_group_size
        self.lazy = bool(lazy)
        if not 0.0 <= cos_threshold <= 1.0:
            raise ValueError(f"cos_threshold: expected a value in [0, 1], got {cos_threshold!r}")
        self.cos_threshold = float(cos_threshold)
        self.queue_size = _int("queue_size", queue_size, 1)
        self.gap_growth = _int("gap_growth", gap_growth, 1)
        self.state = state if state is not None else self.init_state()

    # ------------------------------------------------------------------ state
    @property
    def basis_rows(self) -> int:
        return self.shape[0] if self.side == "left" else self.shape[1]

    def init_state(self) -> dict:
        """A fresh state: no basis yet, refresh due at step 0."""
        return {
            "refreshes": 0,
            "next_refresh": 0,
            "gap": self.update_proj_gap,
            "cos_queue": torch.zeros(self.queue_size, dtype=torch.float32),
            "cos_count": 0,
        }

    def has_basis(self) -> bool:
        return "basis" in self.state or "basis_codes" in self.state

    def basis(self, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """The current orthonormal basis ``P`` (dequantised when stored quantised)."""
        s = self.state
        if "basis" in s:
            return s["basis"].to(dtype)
        if "basis_codes" in s:
            q = QuantizedTensor(
                data=s["basis_codes"], scales=s["basis_scales"],
                zeros=s.get("basis_zeros"), shape=tuple(s["basis_shape"].tolist()),
                bits=self.quant_bits, group_size=int(s["basis_group_size"]),
            )
            return dequantize(q, torch.float32).reshape(self.basis_rows, self.rank).to(dtype)
        raise RuntimeError("SubspaceProjector.basis: no basis yet; call refresh(G) first")

    def install_basis(self, P: torch.Tensor, step: int = 0) -> None:
        """Use basis ``P`` (``[m, r]`` left / ``[n, r]`` right) from 0-based ``step`` on.

        E.g. a warm start or a fixed basis; the next refresh is due at ``step + gap``.
        """
        self.set_basis(P)
        self.state["next_refresh"] = step + self.state["gap"]

    def set_basis(self, P: torch.Tensor) -> None:
        """Store basis ``P`` (quantised if configured); does not change the schedule."""
        expected = (self.basis_rows, self.rank)
        if tuple(P.shape) != expected:
            raise ValueError(f"P: expected shape {expected} for side={self.side!r}, "
                             f"got {tuple(P.shape)}")
        if not torch.isfinite(P).all():
            raise ValueError("P: contains NaN or Inf")
        for key in ("basis", "basis_codes", "basis_scales", "basis_zeros", "basis_shape",
                    "basis_group_size"):
            self.state.pop(key, None)
        P = P.detach().float().contiguous()
        if self.quant_bits is None:
            self.state["basis"] = P.clone()
            return
        flat = P.reshape(-1)
        group = self.quant_group_size or 256
        if flat.numel() % group == 0:
            x = flat.reshape(-1, group)
        elif self.quant_bits == 8 or self.rank % 2 == 0:
            x, group = P, self.rank  # one group per basis row
        else:
            raise ValueError(
                f"quant_group_size: {group} does not divide the {flat.numel()} entries of the "
                f"{tuple(P.shape)} basis and rank {self.rank} is odd (INT4 packs pairs); pick "
                "an even rank or a group size that divides rows * rank"
            )
        q = quantize(x, bits=self.quant_bits, group_size=group)
        self.state["basis_codes"] = q.data
        self.state["basis_scales"] = q.scales
        if q.zeros is not None:
            self.state["basis_zeros"] = q.zeros
        self.state["basis_shape"] = torch.tensor(tuple(x.shape), dtype=torch.int64)
        self.state["basis_group_size"] = group

    def due(self, step: int) -> bool:
        """Whether the basis must be refreshed before the 0-based optimizer ``step``."""
        return not self.has_basis() or step >= self.state["next_refresh"]

    # ---------------------------------------------------------------- refresh
    def _generator(self, device: torch.device) -> torch.Generator:
        g = torch.Generator(device=device)
        g.manual_seed((self.seed * 1_000_003 + self.state["refreshes"]) % (2**63 - 1))
        return g

    def compute_basis(self, G: torch.Tensor) -> torch.Tensor:
        """Top-``r`` singular vectors of ``G`` on this projector's side (float32)."""
        if tuple(G.shape) != self.shape:
            raise ValueError(f"G: expected shape {self.shape}, got {tuple(G.shape)}")
        A = G.detach().float()
        if self.side == "right":
            A = A.T
        if not torch.isfinite(A).all():
            raise ValueError(
                f"G: the gradient of a {self.shape} weight contains NaN or Inf; refusing "
                "to compute a projector from it"
            )
        prev = self.basis() if self.has_basis() else None
        if self.method == "exact":
            return robust_svd(A).U[:, : self.rank].contiguous()
        gen = self._generator(A.device)
        if self.method == "randomized" or prev is None:
            return randomized_svd(A, self.rank, oversample=self.oversample,
                                  power_iters=self.iters, init=prev, generator=gen).U
        return subspace_iteration(A, self.rank, init=prev.to(A.device), iters=self.iters,
                                  oversample=self.oversample, generator=gen).U

    def refresh(self, G: torch.Tensor, step: int | None = None
                ) -> tuple[torch.Tensor | None, torch.Tensor]:
        """Recompute the basis from gradient ``G``; returns ``(P_old or None, P_new)``.

        ``step`` (0-based optimizer step) schedules the next refresh at ``step + gap``.
        """
        s = self.state
        old = self.basis() if self.has_basis() else None
        new = self.compute_basis(G)
        self.set_basis(new)
        new = self.basis()  # what will actually be used (after quantisation)
        s["refreshes"] += 1
        if self.lazy and old is not None:
            cos = principal_angles(old, new).cos().mean().float().cpu()
            queue = s["cos_queue"]
            queue[s["cos_count"] % self.queue_size] = cos
            s["cos_count"] += 1
            if s["cos_count"] >= self.queue_size and float(queue.mean()) >= self.cos_threshold:
                s["gap"] = s["gap"] * self.gap_growth
                s["cos_count"] = 0
                queue.zero_()
        if step is not None:
            s["next_refresh"] = step + s["gap"]
        return old, new

    # ------------------------------------------------------------- projection
    def project(self, G: torch.Tensor) -> torch.Tensor:
        P = self.basis().to(G.device)
        g = G.float()
        return P.T @ g if self.side == "left" else g @ P

    def project_back(self, R: torch.Tensor) -> torch.Tensor:
        P = self.basis().to(R.device)
        out = P @ R if self.side == "left" else R @ P.T
        return out * self.scale
