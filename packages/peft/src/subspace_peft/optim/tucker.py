"""Tucker (HOSVD) gradient projection of N-d weights: GaLore for conv kernels and beyond.

GaLore projects the gradient of a 2-D weight onto a rank-``r`` subspace of one side. For an
N-d weight ``W [n_0, ..., n_{N-1}]`` (a conv kernel ``[out, in, kh, kw]``) the analogue is a
Tucker projection (GaLore's tensor projector does the same with tensorly's Tucker): one
orthonormal factor ``U_k [n_k, r_k]`` per *projected* mode ``k``, and the gradient is
represented by its core::

    project:       C = G ×_0 U_0ᵀ ×_1 U_1ᵀ ... (projected modes only)   [c_0, ..., c_{N-1}]
    project_back:  D = scale · C ×_0 U_0 ×_1 U_1 ...                    [n_0, ..., n_{N-1}]

with ``c_k = r_k`` on projected modes and ``c_k = n_k`` on the others (identity: not
touched at all, so a mode whose rank equals its size costs nothing — e.g. the 3x3 spatial
modes of a conv kernel). ``X ×_k A`` multiplies mode ``k`` of ``X`` by ``A``:
``(X ×_k A)_(k) = A X_(k)``, where ``X_(k) [n_k, ∏_{j≠k} n_j]`` is the mode-``k`` unfolding.

Factors (HOSVD): ``U_k`` = the top-``r_k`` left singular vectors of the mode-``k``
unfolding of the gradient at refresh time, each computed from the full gradient (not the
sequentially truncated one), with the core's linear algebra: warm-started
:func:`subspace_core.linalg.subspace_iteration` (``init`` = the previous ``U_k``; the first
refresh uses :func:`subspace_core.linalg.randomized_svd`), ``"randomized"`` or ``"exact"``
(:func:`subspace_core.linalg.robust_svd`), exactly as :class:`SubspaceProjector`. The
random sketches come from one generator seeded from ``(seed, refresh count)`` and consumed
mode by mode in order, so a refresh is a pure function of the state and the gradient and a
resumed run is bit-exact.

Which modes are projected: ``rank`` is an int (applied to every mode, capped at the mode's
size) or a per-mode tuple. ``modes=None`` projects every mode whose rank is below its size;
``modes=(0, 1)`` restricts the projection to those modes (the others keep their full size,
whatever ``rank`` says); a listed mode whose rank equals its size is still skipped (a full
orthogonal rotation saves nothing and would change Adam, which is not rotation-invariant).
With ``modes=None`` a configuration that projects *no* mode raises (the "projected" update
would silently be plain AdamW); pass ``modes=()`` to allow that on purpose.

Optimizer memory of one ``[n_0, ..., n_{N-1}]`` weight (float32 everywhere)::

    Adam moments   2 · ∏_k c_k             (AdamW: 2 · ∏_k n_k)
    factors        Σ_{k projected} n_k r_k
    bytes          4 · (2 · ∏_k c_k + Σ_{k projected} n_k r_k)   (+ a few ints)

e.g. ``[256, 256, 3, 3]`` at rank 32 on modes 0 and 1: moments 2·32·32·9 = 18,432 floats
and factors 2·256·32 = 16,384 floats, against 2·589,824 for AdamW (34x less).

The module also provides the pieces an optimizer needs:

* :func:`tucker_reproject_moments` — rotate the Adam moments into new factors' coordinates
  after a refresh (``C_k = U_newᵀ U_old`` on mode ``k`` for the first moment, ``C_k ∘ C_k``
  for the second, as ``GaLoreAdamW._reproject`` does for matrices);
* :func:`tucker_adam_step` — one GaLore-Adam step in core space;
* :func:`tucker_projected_step` — the whole per-parameter step (refresh when due, moment
  allocation and re-projection, Adam step) on a GaLoreAdamW-style per-parameter state dict;
* :meth:`TuckerProjector.from_group` — a projector from GaLoreAdamW group options.

Not supported for N-d weights (``from_group`` raises): Q-GaLore's quantised factors
(``quant_bits``), its lazy refresh (``lazy``), and Fira (``fira``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch

from subspace_core.linalg import randomized_svd, robust_svd, subspace_iteration

__all__ = [
    "TUCKER_GROUP_KEYS",
    "TUCKER_METHODS",
    "Factors",
    "TuckerProjector",
    "mode_product",
    "tucker_adam_step",
    "tucker_projected_step",
    "tucker_reproject_moments",
]

#: Refresh algorithms (those of :class:`~subspace_peft.optim.projector.SubspaceProjector`).
TUCKER_METHODS = ("subspace_iteration", "randomized", "exact")
#: GaLoreAdamW group options :meth:`TuckerProjector.from_group` reads (``tucker_modes`` may
#: be absent: None).
TUCKER_GROUP_KEYS = ("rank", "update_proj_gap", "scale", "method", "iters", "oversample",
                     "seed", "tucker_modes")

#: One entry per mode: the factor ``U_k [n_k, r_k]`` of a projected mode, None otherwise.
Factors = tuple[torch.Tensor | None, ...]


def _int(name: str, value: object, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ValueError(f"{name}: expected an int >= {low}, got {value!r}")
    return value


def mode_product(X: torch.Tensor, A: torch.Tensor, mode: int) -> torch.Tensor:
    """``X ×_mode A``: multiply mode ``mode`` of ``X [..., n_k, ...]`` by ``A [p, n_k]``.

    Returns ``[..., p, ...]`` (mode ``mode`` now has size ``p``); ``(X ×_k A)_(k) = A X_(k)``.
    """
    if A.dim() != 2 or A.shape[1] != X.shape[mode]:
        raise ValueError(f"A: expected shape (p, {X.shape[mode]}) to multiply mode {mode} of "
                         f"a tensor of shape {tuple(X.shape)}, got {tuple(A.shape)}")
    return torch.tensordot(A, X, dims=([1], [mode])).movedim(0, mode)


def unfold(X: torch.Tensor, mode: int) -> torch.Tensor:
    """Mode-``mode`` unfolding ``X_(k) [n_k, ∏_{j≠k} n_j]`` (the other modes in order)."""
    return X.movedim(mode, 0).reshape(X.shape[mode], -1)


class TuckerProjector:
    """Tucker projection of the gradient of one N-d weight (see the module docstring).

    Same duck-typed interface as :class:`~subspace_peft.optim.projector.SubspaceProjector`:
    the configuration lives on the object, everything that changes lives in :attr:`state`,
    a dict of plain tensors and ints (``torch.load(weights_only=True)`` loads it).

    Args:
        shape: the weight's shape ``(n_0, ..., n_{N-1})``, ``N >= 1``.
        rank: an int ``>= 1`` (every mode, capped at its size) or a tuple of ``N`` ints with
            ``1 <= r_k <= n_k``.
        modes: None (project every mode whose rank is below its size; raise if that is
            none) or the modes that may be projected (others keep their full size).
        update_proj_gap: steps between refreshes.
        scale: GaLore's α (scale of the back-projected update).
        method: one of :data:`TUCKER_METHODS`.
        iters: iterations of ``subspace_iteration`` / power iterations of ``randomized``.
        oversample: extra sketch columns.
        seed: seed of the random sketches.
        state: an existing state dict (from :meth:`init_state`) to operate on.

    A projected mode's rank must not exceed the other modes' product ``∏_{j≠k} n_j`` (the
    rank of its unfolding), e.g. mode 0 of a ``[64, 3, 3, 3]`` kernel allows at most 27.

    State keys: ``refreshes``, ``next_refresh``, ``gap``, ``has_factors`` (ints) and
    ``factor_<k>`` (float32 ``[n_k, r_k]``) for every projected mode ``k`` once refreshed.
    """

    def __init__(
        self,
        shape: Sequence[int] | torch.Size,
        rank: int | Sequence[int],
        *,
        modes: Sequence[int] | None = None,
        update_proj_gap: int = 200,
        scale: float = 0.25,
        method: str = "subspace_iteration",
        iters: int = 2,
        oversample: int = 8,
        seed: int = 0,
        state: dict | None = None,
    ) -> None:
        shape = tuple(int(n) for n in shape)
        if len(shape) < 1 or any(n < 1 for n in shape):
            raise ValueError(f"shape: expected a non-empty shape of positive sizes, got {shape}")
        self.shape = shape
        ndim = len(shape)
        if isinstance(rank, int) and not isinstance(rank, bool):
            if rank < 1:
                raise ValueError(f"rank: expected an int >= 1 or a tuple of {ndim} ints, "
                                 f"got {rank!r}")
            ranks = tuple(min(rank, n) for n in shape)
        elif isinstance(rank, Sequence) and not isinstance(rank, str):
            ranks = tuple(rank)
            if len(ranks) != ndim or any(
                isinstance(r, bool) or not isinstance(r, int) or not 1 <= r <= n
                for r, n in zip(ranks, shape, strict=False)
            ):
                raise ValueError(f"rank: expected {ndim} ints r_k with 1 <= r_k <= n_k for a "
                                 f"weight of shape {shape}, got {rank!r}")
        else:
            raise ValueError(f"rank: expected an int or a tuple of {ndim} ints, got {rank!r}")
        if modes is None:
            allowed = tuple(range(ndim))
        else:
            allowed = tuple(modes)
            bad = [k for k in allowed
                   if isinstance(k, bool) or not isinstance(k, int) or not 0 <= k < ndim]
            if bad or len(set(allowed)) != len(allowed):
                raise ValueError(f"modes: expected distinct ints in [0, {ndim}) for a weight "
                                 f"of shape {shape}, got {modes!r}")
        self.ranks = ranks
        self.projected_modes = tuple(k for k in sorted(allowed) if ranks[k] < shape[k])
        if modes is None and not self.projected_modes:
            raise ValueError(
                f"rank: {rank!r} projects no mode of a weight of shape {shape} (every mode's "
                "rank equals its size), so the update would be plain AdamW; pass a smaller "
                "rank, or modes=() to accept that on purpose"
            )
        for k in self.projected_modes:
            others = math.prod(shape) // shape[k]
            if ranks[k] > others:
                raise ValueError(
                    f"rank: mode {k} of a weight of shape {shape} has rank {ranks[k]} > "
                    f"{others}, the rank of its unfolding [{shape[k]}, {others}]; use a rank "
                    f"<= {others} for it or leave it out of modes"
                )
        #: Shape of the projected gradient / Adam moments.
        self.core_shape = tuple(ranks[k] if k in self.projected_modes else shape[k]
                                for k in range(ndim))
        self.update_proj_gap = _int("update_proj_gap", update_proj_gap, 1)
        self.scale = float(scale)
        if method not in TUCKER_METHODS:
            raise ValueError(f"method: expected one of {TUCKER_METHODS}, got {method!r}")
        self.method = method
        self.iters = _int("iters", iters, 1)
        self.oversample = _int("oversample", oversample, 0)
        self.seed = int(seed)
        self.state = state if state is not None else self.init_state()

    # --------------------------------------------------------------- building
    @classmethod
    def from_group(cls, group: Mapping[str, Any], shape: Sequence[int] | torch.Size,
                   state: dict | None = None) -> TuckerProjector:
        """A projector from GaLoreAdamW group options (:data:`TUCKER_GROUP_KEYS`).

        ``group["tucker_modes"]`` (absent: None) is ``modes``. Raises ValueError for options
        that have no Tucker version: ``quant_bits`` not None, ``lazy``, ``fira``.
        """
        for key, off in (("quant_bits", None), ("lazy", False), ("fira", False)):
            if group.get(key, off) not in (off,):
                raise ValueError(f"{key}: expected {off!r} for an N-d weight of shape "
                                 f"{tuple(shape)} (Tucker projection has no {key} option), "
                                 f"got {group[key]!r}")
        return cls(shape, group["rank"], modes=group.get("tucker_modes"),
                   update_proj_gap=group.get("update_proj_gap", 200),
                   scale=group.get("scale", 0.25),
                   method=group.get("method", "subspace_iteration"),
                   iters=group.get("iters", 2), oversample=group.get("oversample", 8),
                   seed=group.get("seed", 0), state=state)

    # ------------------------------------------------------------------ state
    def init_state(self) -> dict:
        """A fresh state: no factors yet, refresh due at step 0."""
        return {"refreshes": 0, "next_refresh": 0, "gap": self.update_proj_gap,
                "has_factors": 0}

    def has_basis(self) -> bool:
        """Whether the factors have been computed (always after the first refresh)."""
        return bool(self.state["has_factors"])

    def factors(self, dtype: torch.dtype = torch.float32) -> Factors:
        """The current factors: ``U_k [n_k, r_k]`` for projected modes, None elsewhere."""
        if not self.has_basis():
            raise RuntimeError("TuckerProjector.factors: no factors yet; call refresh(G) first")
        return tuple(self.state[f"factor_{k}"].to(dtype) if k in self.projected_modes
                     else None for k in range(len(self.shape)))

    basis = factors  # SubspaceProjector's name

    def set_factors(self, factors: Sequence[torch.Tensor | None]) -> None:
        """Store ``factors`` (one entry per mode, None for unprojected modes).

        Does not change the schedule; counts as having a basis from now on.
        """
        if len(factors) != len(self.shape):
            raise ValueError(f"factors: expected {len(self.shape)} entries (one per mode), got "
                             f"{len(factors)}")
        for k, U in enumerate(factors):
            if k not in self.projected_modes:
                if U is not None:
                    raise ValueError(f"factors[{k}]: expected None (mode {k} is not projected), "
                                     f"got a tensor of shape {tuple(U.shape)}")
                continue
            expected = (self.shape[k], self.ranks[k])
            if U is None or tuple(U.shape) != expected:
                got = None if U is None else tuple(U.shape)
                raise ValueError(f"factors[{k}]: expected shape {expected}, got {got}")
            if not torch.isfinite(U).all():
                raise ValueError(f"factors[{k}]: contains NaN or Inf")
        for k in self.projected_modes:
            self.state[f"factor_{k}"] = factors[k].detach().float().contiguous().clone()
        self.state["has_factors"] = 1

    set_basis = set_factors

    def due(self, step: int) -> bool:
        """Whether the factors must be refreshed before the 0-based optimizer ``step``."""
        return not self.has_basis() or step >= self.state["next_refresh"]

    def state_numel(self) -> int:
        """Floats of optimizer state of this weight: ``2 ∏ c_k + Σ_{k projected} n_k r_k``."""
        return 2 * math.prod(self.core_shape) + sum(self.shape[k] * self.ranks[k]
                                                    for k in self.projected_modes)

    # ---------------------------------------------------------------- refresh
    def _generator(self, device: torch.device) -> torch.Generator:
        g = torch.Generator(device=device)
        g.manual_seed((self.seed * 1_000_003 + self.state["refreshes"]) % (2**63 - 1))
        return g

    def _check_grad(self, name: str, G: torch.Tensor) -> None:
        if not isinstance(G, torch.Tensor):
            raise TypeError(f"{name}: expected a torch.Tensor, got {type(G).__name__}")
        if tuple(G.shape) != self.shape:
            raise ValueError(f"{name}: expected shape {self.shape}, got {tuple(G.shape)}")

    def compute_factors(self, G: torch.Tensor) -> Factors:
        """HOSVD factors of gradient ``G`` (float32): top-``r_k`` left singular vectors of
        each projected mode's unfolding ``G_(k) [n_k, ∏_{j≠k} n_j]``."""
        self._check_grad("G", G)
        A = G.detach().float()
        if not torch.isfinite(A).all():
            raise ValueError(f"G: the gradient of a {self.shape} weight contains NaN or Inf; "
                             "refusing to compute Tucker factors from it")
        prev = self.factors() if self.has_basis() else None
        gen = None if self.method == "exact" else self._generator(A.device)
        out: list[torch.Tensor | None] = [None] * len(self.shape)
        for k in self.projected_modes:
            Ak, r = unfold(A, k), self.ranks[k]
            init = None if prev is None else prev[k].to(A.device)
            if self.method == "exact":
                U = robust_svd(Ak).U[:, :r]
            elif self.method == "randomized" or init is None:
                U = randomized_svd(Ak, r, oversample=self.oversample, power_iters=self.iters,
                                   init=init, generator=gen).U
            else:
                U = subspace_iteration(Ak, r, init=init, iters=self.iters,
                                       oversample=self.oversample, generator=gen).U
            out[k] = U.contiguous()
        return tuple(out)

    def refresh(self, G: torch.Tensor, step: int | None = None) -> tuple[Factors | None, Factors]:
        """Recompute the factors from gradient ``G``; returns ``(old or None, new)``.

        ``step`` (0-based optimizer step) schedules the next refresh at ``step + gap``.
        """
        s = self.state
        old = self.factors() if self.has_basis() else None
        new = self.compute_factors(G)
        self.set_factors(new)
        s["refreshes"] += 1
        if step is not None:
            s["next_refresh"] = step + s["gap"]
        return old, self.factors()

    # ------------------------------------------------------------- projection
    def project(self, G: torch.Tensor) -> torch.Tensor:
        """Core ``G ×_k U_kᵀ`` (projected modes) of ``G [n_0, ...]``: float32 ``core_shape``."""
        self._check_grad("G", G)
        C = G.float()
        for k, U in enumerate(self.factors()):
            if U is not None:
                C = mode_product(C, U.to(C.device).T, k)
        return C

    def project_back(self, core: torch.Tensor) -> torch.Tensor:
        """``scale · core ×_k U_k`` (projected modes): float32 ``[n_0, ..., n_{N-1}]``."""
        if tuple(core.shape) != self.core_shape:
            raise ValueError(f"core: expected shape {self.core_shape}, got {tuple(core.shape)}")
        D = core.float()
        for k, U in enumerate(self.factors()):
            if U is not None:
                D = mode_product(D, U.to(D.device), k)
        return D * self.scale if self.scale != 1.0 else D


# -------------------------------------------------------------------- moments
@torch.no_grad()
def tucker_reproject_moments(
    M: torch.Tensor,
    V: torch.Tensor,
    old_factors: Sequence[torch.Tensor | None],
    new_factors: Sequence[torch.Tensor | None],
) -> None:
    """Rotate Adam moments ``M``, ``V`` (core shape) from old to new factors, in place.

    For every mode ``k`` with factors (None entries are skipped; both lists must agree), with
    ``C_k = U_new,kᵀ U_old,k [r_k, r_k]`` (new coordinates of the old basis vectors)::

        M ← M ×_k C_k          V ← V ×_k (C_k ∘ C_k)

    Exact for permutations / sign flips of the factors; the second-moment rule is the exact
    one for uncorrelated old coordinates, stays non-negative and shrinks V along directions
    new to the subspace (see ``GaLoreAdamW``'s docstring for the 2-D case).
    """
    if len(old_factors) != M.dim() or len(new_factors) != M.dim():
        raise ValueError(f"old_factors, new_factors: expected {M.dim()} entries each (one per "
                         f"mode of M, shape {tuple(M.shape)}), got {len(old_factors)} and "
                         f"{len(new_factors)}")
    if V.shape != M.shape:
        raise ValueError(f"V: expected shape {tuple(M.shape)} (that of M), got {tuple(V.shape)}")
    m, v = M, V
    for k, (old, new) in enumerate(zip(old_factors, new_factors, strict=True)):
        if old is None and new is None:
            continue
        if old is None or new is None or old.shape != new.shape or old.shape[1] != M.shape[k]:
            raise ValueError(
                f"old_factors[{k}], new_factors[{k}]: expected two [n_{k}, {M.shape[k]}] "
                f"factors (or two None), got "
                f"{None if old is None else tuple(old.shape)} and "
                f"{None if new is None else tuple(new.shape)}"
            )
        C = new.to(M.device, torch.float32).T @ old.to(M.device, torch.float32)
        m = mode_product(m, C, k)
        v = mode_product(v, C * C, k)
    if m is not M:
        M.copy_(m)
        V.copy_(v)


# ----------------------------------------------------------------------- step
@torch.no_grad()
def tucker_adam_step(
    p: torch.Tensor,
    grad: torch.Tensor,
    projector: TuckerProjector,
    exp_avg: torch.Tensor,
    exp_avg_sq: torch.Tensor,
    *,
    step: int,
    lr: float,
    beta1: float = 0.9,
    beta2: float = 0.999,
    eps: float = 1e-8,
    weight_decay: float = 0.0,
) -> None:
    """One GaLore-Adam step of an N-d weight in Tucker-core space, in place. Returns None.

    Args:
        p: the weight ``[n_0, ..., n_{N-1}]`` (any float dtype; computed in float32).
        grad: its gradient, same shape.
        projector: a :class:`TuckerProjector` with factors (refresh it first when due).
        exp_avg, exp_avg_sq: float32 Adam moments of shape ``projector.core_shape``.
        step: 1-based step count ``t`` of these moments (bias correction).
        lr, beta1, beta2, eps, weight_decay: ``torch.optim.AdamW``'s (decoupled decay).

    Maths (that of :func:`subspace_core.ops.projected_adam.projected_adam_ref`)::

        R = project(grad)                       core, float32
        M ← β1 M + (1 − β1) R;   V ← β2 V + (1 − β2) R²
        N = (M / (√V / √(1 − β2ᵗ) + ε)) / (1 − β1ᵗ)
        W ← W · (1 − lr · wd) − lr · project_back(N)       (project_back applies α)

    With every mode unprojected and α = 1 this is exactly ``torch.optim.AdamW``.
    """
    if isinstance(step, bool) or not isinstance(step, int) or step < 1:
        raise ValueError(f"step: expected an int >= 1 (1-based, for bias correction), got "
                         f"{step!r}")
    for name, beta in (("beta1", beta1), ("beta2", beta2)):
        if not 0.0 <= beta < 1.0:
            raise ValueError(f"{name}: expected a value in [0, 1), got {beta!r}")
    if tuple(p.shape) != projector.shape:
        raise ValueError(f"p: expected shape {projector.shape} (the projector's), got "
                         f"{tuple(p.shape)}")
    for name, t in (("exp_avg", exp_avg), ("exp_avg_sq", exp_avg_sq)):
        if tuple(t.shape) != projector.core_shape or t.dtype != torch.float32:
            raise ValueError(f"{name}: expected a float32 tensor of the core shape "
                             f"{projector.core_shape}, got {t.dtype} {tuple(t.shape)}")
    R = projector.project(grad)
    exp_avg.mul_(beta1).add_(R, alpha=1.0 - beta1)
    exp_avg_sq.mul_(beta2).addcmul_(R, R, value=1.0 - beta2)
    bc1, bc2 = 1.0 - beta1**step, 1.0 - beta2**step
    denom = (exp_avg_sq.sqrt() / math.sqrt(bc2)).add_(eps)
    N = (exp_avg / denom).div_(bc1)
    update = projector.project_back(N)
    w = p.float()
    if weight_decay != 0.0:
        w.mul_(1.0 - lr * weight_decay)
    w.add_(update, alpha=-lr)
    p.copy_(w)


@torch.no_grad()
def tucker_projected_step(
    p: torch.Tensor,
    grad: torch.Tensor,
    projector: TuckerProjector,
    state: dict,
    *,
    lr: float,
    betas: tuple[float, float] = (0.9, 0.999),
    eps: float = 1e-8,
    weight_decay: float = 0.0,
    reproject_moments: bool = True,
) -> None:
    """The whole GaLore step of one N-d weight on a GaLoreAdamW-style state dict, in place.

    ``state`` holds ``step`` (int, steps taken so far), ``projector`` (must be
    ``projector.state``) and, after the first step, ``exp_avg``/``exp_avg_sq`` (float32,
    ``projector.core_shape``). With ``t = state["step"]`` (0-based):

    1. if ``projector.due(t)``: ``old, new = projector.refresh(grad, t)``; when there were
       old factors, moments and ``reproject_moments``: :func:`tucker_reproject_moments`;
    2. allocate zero moments if missing; ``state["step"] = t + 1``;
    3. :func:`tucker_adam_step` with ``step = t + 1``.

    ``p`` may be any float tensor of the weight's shape, e.g. the dequantised float copy of
    an INT8 weight (:mod:`subspace_peft.optim.qweights`).
    """
    if state.get("projector") is not projector.state:
        raise ValueError("state['projector']: expected the projector's own state dict "
                         "(state['projector'] is projector.state)")
    t = state.setdefault("step", 0)
    if projector.due(t):
        old, new = projector.refresh(grad, t)
        if old is not None and reproject_moments and "exp_avg" in state:
            tucker_reproject_moments(state["exp_avg"], state["exp_avg_sq"], old, new)
    if "exp_avg" not in state:
        state["exp_avg"] = torch.zeros(projector.core_shape, dtype=torch.float32,
                                       device=p.device)
        state["exp_avg_sq"] = torch.zeros_like(state["exp_avg"])
    state["step"] = t + 1
    beta1, beta2 = betas
    tucker_adam_step(p, grad, projector, state["exp_avg"], state["exp_avg_sq"], step=t + 1,
                     lr=lr, beta1=beta1, beta2=beta2, eps=eps, weight_decay=weight_decay)
