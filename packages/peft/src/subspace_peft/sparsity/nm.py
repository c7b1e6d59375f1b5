"""N:M sparse training with straight-through estimators and progressive gradient flow.

**N:M sparsity**: in every group of ``M`` consecutive input columns of each output row of a
weight ``W [out, in]``, at most ``N`` entries are non-zero (``2:4`` runs on sparse tensor
cores; ``1:8`` is the "high-sparsity" regime of Bambhaniya et al.). The mask ``P`` keeps the
``N`` largest ``|W|`` of each group and is *recomputed from the dense weights at every
forward* (:func:`subspace_peft.adapters.compress.pruning_mask` with ``n_m=(N, M)``, ties broken
by column order), so weights can enter and leave the kept set during training.

**Estimator.** :class:`NMSparseLinear` keeps the dense weight ``W`` as its parameter and uses

    forward:   W̃ = W ⊙ P + α · W ⊙ (1 − P)
    backward:  ∂L/∂W = g ⊙ P + (β · g + λ_W · W) ⊙ (1 − P),      g = ∂L/∂W̃

where ``α`` (forward factor of the pruned weights), ``β`` (fraction of the dense gradient
passed to the pruned weights) and ``λ_W`` (SR-STE's decay of the pruned weights) come from an
:class:`NMSchedule` at the current step (:class:`NMStepState`). The recipes:

* ``"ste"``: ``α = 0, β = 1, λ_W = 0`` — the plain straight-through estimator (Bengio et al.;
  the dense weights get the full gradient evaluated at the sparse weights).
* ``"srste"``: ``α = 0, β = 1, λ_W = 2e-4`` — SR-STE (Zhou et al. 2021, "Learning N:M
  Fine-grained Structured Sparse Neural Networks From Scratch"): the pruned weights are
  additionally decayed, ``W ← W − γ (g + λ_W (1 − P) ⊙ W)``, the baseline of the paper.
* ``"masked"``: ``α = 0, β = 0`` — no gradient reaches the pruned weights.
* ``"mdgf"`` — mask-decay gradient flow (Bambhaniya et al. 2024, arXiv:2402.04744, MDGF): the
  pruned weights are not cut but multiplied by a decaying mask value ``α = f(t)``; the
  gradient is the exact derivative of the decayed-mask forward, so the pruned weights receive
  ``β = f(t)`` of the gradient — a gradient flow that decays progressively from dense (``1``)
  to masked training (``0``). ``straight_through=True`` gives the reference implementation's
  backward instead (``β = 1``: full gradient to the pruned weights while ``α`` decays).
* ``"dgf"`` — decaying gradient flow with a strict N:M forward from the first sparse step:
  ``α = 0``, ``β = f(t)`` (the gradient-side half of MDGF; the forward is exactly N:M at every
  step).
* ``"sdgf"`` — structure-decay gradient flow (Bambhaniya et al., SDGF): strict masks
  (``α = 0``, ``β = 1``) whose pattern gets progressively sparser over equal frames of the
  sparse phase: ``"stepwise"``: ``(M−1):M → (M/2):M → (M/4):M → … → N:M`` (1:8:
  7:8, 4:8, 2:8, 1:8); ``"geometric"``: ``8N:8M → 4N:4M → 2N:2M → N:M`` (1:8: 8:64, 4:32,
  2:16, 1:8; needs ``8M | in``).

The decay function of ``mdgf`` / ``dgf`` at step ``t`` (counted from the end of the optional
dense warm-up of ``dense_steps`` steps, ``t' = t − dense_steps``) is the reference code's

    linear:       f(t) = max(0, 1 − κ t')
    exponential:  f(t) = exp(−κ t')

with ``κ = decay_coef``. Steps before ``dense_steps`` train dense (``P = 1``; the reference
code's "dense epochs"). Any recipe accepts an explicit ``srste_decay`` (``λ_W``; default 2e-4
for ``"srste"``, 0 otherwise). The reference code's last "fine-tune epochs" (binary mask,
plain STE) are not a separate phase here: a decay that reaches ``f ≈ 0`` before the end gives
a strict-mask final phase (with ``β ≈ 0`` for the chain-rule MDGF / DGF, i.e. only the kept
weights train; chain a second ``"ste"`` run for the reference's variant).

:func:`apply_nm_sparsity` swaps the selected ``nn.Linear`` layers for :class:`NMSparseLinear`
(same parameter objects, same state-dict keys) and returns an :class:`NMSparsity` handle whose
:meth:`~NMSparsity.step` advances the schedule after every optimizer step and whose
:meth:`~NMSparsity.finalize` writes ``W ⊙ P`` (target pattern) and restores plain linears:
the result is exactly N:M and computes what the strict masked forward computed.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from subspace_peft.adapters.base import find_targets
from subspace_peft.adapters.compress import pruning_mask

__all__ = [
    "DECAY_FUNCTIONS",
    "RECIPES",
    "SDGF_KINDS",
    "NMSchedule",
    "NMSparseLinear",
    "NMSparsity",
    "NMStepState",
    "apply_nm_sparsity",
    "is_nm_sparse",
    "nm_group_nonzeros",
    "nm_mask",
    "nm_weight",
]

#: :attr:`NMSchedule.recipe` values (see the module doc).
RECIPES = ("ste", "srste", "masked", "mdgf", "dgf", "sdgf")
#: :attr:`NMSchedule.decay_fn` values.
DECAY_FUNCTIONS = ("linear", "exp")
#: :attr:`NMSchedule.sdgf_kind` values.
SDGF_KINDS = ("stepwise", "geometric")
#: SR-STE's default ``λ_W`` (Zhou et al. 2021; the reference code's ``decay=0.0002``).
SRSTE_DECAY = 2e-4


def _check_nm(n: Any, m: Any) -> tuple[int, int]:
    if isinstance(n, bool) or isinstance(m, bool) or not isinstance(n, int) \
            or not isinstance(m, int) or not 0 < n <= m:
        raise ValueError(f"n, m: expected ints with 0 < n <= m, got n={n!r}, m={m!r}")
    return n, m


# --------------------------------------------------------------------------- masks
def nm_mask(weight: torch.Tensor, n: int, m: int) -> torch.Tensor:
    """Boolean keep-mask ``[out, in]`` with the ``n`` largest ``|W|`` of every group of ``m``
    consecutive input columns (ties: lower column first); all True when ``n == m``.
    (:func:`~subspace_peft.adapters.compress.pruning_mask` with ``n_m=(n, m)``.)"""
    n, m = _check_nm(n, m)
    if n == m:
        return torch.ones(weight.shape, dtype=torch.bool, device=weight.device)
    return pruning_mask(weight, n_m=(n, m))


def nm_group_nonzeros(weight: torch.Tensor, m: int) -> torch.Tensor:
    """Non-zero count of every group of ``m`` consecutive input columns:
    ``[out, in / m]`` int64 for ``weight [out, in]``."""
    if weight.dim() != 2 or weight.shape[1] % m:
        raise ValueError(f"weight: expected [out, in] with m = {m} dividing in, got shape "
                         f"{tuple(weight.shape)}")
    return (weight.detach() != 0).reshape(weight.shape[0], -1, m).sum(-1)


def is_nm_sparse(weight: torch.Tensor, n: int, m: int) -> bool:
    """Whether every group of ``m`` consecutive input columns of ``weight [out, in]`` holds at
    most ``n`` non-zeros."""
    n, m = _check_nm(n, m)
    return bool((nm_group_nonzeros(weight, m) <= n).all())


# --------------------------------------------------------------------------- schedule
@dataclass(frozen=True)
class NMStepState:
    """What one training step uses (see the module doc).

    Attributes:
        n, m: the pattern of the mask (``n == m``: dense, no mask).
        mask_value: ``α``, forward factor of the pruned weights (0: exactly N:M forward).
        grad_scale: ``β``, fraction of the gradient passed to the pruned weights.
        decay: ``λ_W``, SR-STE decay added to the pruned weights' gradient.
    """

    n: int
    m: int
    mask_value: float
    grad_scale: float
    decay: float

    @property
    def dense(self) -> bool:
        return self.n == self.m


@dataclass(frozen=True)
class NMSchedule:
    """A sparse-training recipe as a function of the step (see the module doc).

    Attributes:
        recipe: one of :data:`RECIPES` (default ``"srste"``).
        decay_fn: ``"linear"`` or ``"exp"`` (``mdgf`` / ``dgf``).
        decay_coef: ``κ`` of the decay function, per step (reference default ``2e-4``).
        dense_steps: dense warm-up steps before the sparse phase.
        total_steps: training length; required by ``"sdgf"`` (its frames split
            ``[dense_steps, total_steps)`` equally).
        sdgf_kind: ``"stepwise"`` or ``"geometric"`` (``"sdgf"``).
        straight_through: ``mdgf`` only: pass the full gradient to the pruned weights
            (``β = 1``, the reference code) instead of the decayed-mask derivative
            (``β = α``).
        srste_decay: ``λ_W``; None = 2e-4 for ``"srste"``, 0 for the other recipes.
    """

    recipe: str = "srste"
    decay_fn: str = "exp"
    decay_coef: float = 2e-4
    dense_steps: int = 0
    total_steps: int | None = None
    sdgf_kind: str = "stepwise"
    straight_through: bool = False
    srste_decay: float | None = None

    def __post_init__(self) -> None:
        if self.recipe not in RECIPES:
            raise ValueError(f"recipe: expected one of {list(RECIPES)}, got {self.recipe!r}")
        if self.decay_fn not in DECAY_FUNCTIONS:
            raise ValueError(f"decay_fn: expected one of {list(DECAY_FUNCTIONS)}, got "
                             f"{self.decay_fn!r}")
        if self.sdgf_kind not in SDGF_KINDS:
            raise ValueError(f"sdgf_kind: expected one of {list(SDGF_KINDS)}, got "
                             f"{self.sdgf_kind!r}")
        if isinstance(self.decay_coef, bool) or not isinstance(self.decay_coef, int | float) \
                or not float(self.decay_coef) >= 0:
            raise ValueError(f"decay_coef: expected a number >= 0, got {self.decay_coef!r}")
        if isinstance(self.dense_steps, bool) or not isinstance(self.dense_steps, int) \
                or self.dense_steps < 0:
            raise ValueError(f"dense_steps: expected an int >= 0, got {self.dense_steps!r}")
        if self.total_steps is not None and (
                isinstance(self.total_steps, bool) or not isinstance(self.total_steps, int)
                or self.total_steps <= self.dense_steps):
            raise ValueError(f"total_steps: expected an int > dense_steps = {self.dense_steps}"
                             f" or None, got {self.total_steps!r}")
        if self.recipe == "sdgf" and self.total_steps is None:
            raise ValueError("total_steps: the 'sdgf' recipe needs the training length to "
                             "split its sparse phase into frames, got None")
        if self.srste_decay is not None and (
                isinstance(self.srste_decay, bool)
                or not isinstance(self.srste_decay, int | float) or self.srste_decay < 0):
            raise ValueError(f"srste_decay: expected a number >= 0 or None, got "
                             f"{self.srste_decay!r}")

    @property
    def decay(self) -> float:
        """``λ_W`` in force (resolves the None default)."""
        if self.srste_decay is not None:
            return float(self.srste_decay)
        return SRSTE_DECAY if self.recipe == "srste" else 0.0

    def factor(self, step: int) -> float:
        """The decay function ``f(t)`` (1 before and at the start of the sparse phase)."""
        t = max(0, int(step) - self.dense_steps)
        if self.decay_fn == "linear":
            return max(0.0, 1.0 - float(self.decay_coef) * t)
        return math.exp(-float(self.decay_coef) * t)

    def patterns(self, n: int, m: int) -> list[tuple[int, int]]:
        """SDGF's sequence of patterns ending at ``n:m`` (one per frame)."""
        n, m = _check_nm(n, m)
        if self.sdgf_kind == "geometric":
            return [(n * 2**k, m * 2**k) for k in (3, 2, 1, 0)]
        seq = [(m - 1, m)] if m - 1 > n else []
        k = m // 2
        while k > n:
            if k < m - 1:
                seq.append((k, m))
            k //= 2
        seq.append((n, m))
        return seq

    def pattern(self, step: int, n: int, m: int) -> tuple[int, int]:
        """The pattern at ``step``: ``m:m`` during the dense warm-up; for ``"sdgf"`` the
        frame's pattern; otherwise ``n:m``."""
        n, m = _check_nm(n, m)
        if step < self.dense_steps:
            return (m, m)
        if self.recipe != "sdgf":
            return (n, m)
        seq = self.patterns(n, m)
        span = self.total_steps - self.dense_steps
        frame = min(len(seq) - 1, (int(step) - self.dense_steps) * len(seq) // span)
        return seq[frame]

    def state(self, step: int, n: int, m: int) -> NMStepState:
        """:class:`NMStepState` at ``step`` (0-based: the step about to be taken)."""
        if isinstance(step, bool) or not isinstance(step, int) or step < 0:
            raise ValueError(f"step: expected an int >= 0, got {step!r}")
        pn, pm = self.pattern(step, n, m)
        if pn == pm:
            return NMStepState(pn, pm, 1.0, 1.0, 0.0)
        lam = self.decay
        if self.recipe in ("ste", "srste", "sdgf"):
            return NMStepState(pn, pm, 0.0, 1.0, lam)
        if self.recipe == "masked":
            return NMStepState(pn, pm, 0.0, 0.0, lam)
        f = self.factor(step)
        if self.recipe == "dgf":
            return NMStepState(pn, pm, 0.0, f, lam)
        return NMStepState(pn, pm, f, 1.0 if self.straight_through else f, lam)  # mdgf

    def max_group(self, m: int) -> int:
        """Largest group size any step uses (``8 m`` for geometric SDGF, else ``m``)."""
        return 8 * m if self.recipe == "sdgf" and self.sdgf_kind == "geometric" else m


# --------------------------------------------------------------------------- estimator
class _NMWeight(torch.autograd.Function):
    """``W̃ = W ⊙ P + α W ⊙ (1 − P)``; backward ``g ⊙ P + (β g + λ W) ⊙ (1 − P)``."""

    @staticmethod
    def forward(ctx, weight, mask, mask_value: float, grad_scale: float, decay: float):
        ctx.grad_scale, ctx.decay = grad_scale, decay
        ctx.save_for_backward(mask, weight if decay else None)
        if mask_value == 0.0:
            return weight.masked_fill(~mask, 0.0)
        return torch.where(mask, weight, weight * mask_value)

    @staticmethod
    def backward(ctx, grad):
        mask, weight = ctx.saved_tensors
        pruned = grad * ctx.grad_scale
        if ctx.decay:
            pruned = pruned + ctx.decay * weight
        return torch.where(mask, grad, pruned), None, None, None, None


def nm_weight(weight: torch.Tensor, state: NMStepState) -> torch.Tensor:
    """The forward weight ``W̃`` of ``weight [out, in]`` under ``state`` (differentiable with
    the estimator's gradient; ``weight`` itself when the state is dense)."""
    if state.dense:
        return weight
    mask = nm_mask(weight.detach(), state.n, state.m)
    return _NMWeight.apply(weight, mask, float(state.mask_value), float(state.grad_scale),
                           float(state.decay))


class NMSparseLinear(nn.Linear):
    """An ``nn.Linear`` trained N:M sparse (see the module doc); build it with
    :meth:`from_linear` (or :func:`apply_nm_sparsity`).

    The parameter ``weight [out, in]`` stays dense; ``forward`` uses ``W̃`` of the schedule's
    state at :attr:`step`. Attributes: ``n``, ``m`` (target pattern), ``schedule``,
    ``step`` (set by :class:`NMSparsity`).
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True, *,
                 n: int, m: int, schedule: NMSchedule | None = None,
                 device: Any = None, dtype: Any = None) -> None:
        super().__init__(in_features, out_features, bias=bias, device=device, dtype=dtype)
        self.n, self.m = _check_nm(n, m)
        self.schedule = schedule if schedule is not None else NMSchedule()
        if not isinstance(self.schedule, NMSchedule):
            raise TypeError(f"schedule: expected NMSchedule, got {type(schedule).__name__}")
        group = self.schedule.max_group(m)
        if in_features % group:
            raise ValueError(f"in_features: {in_features} is not a multiple of the group size "
                             f"{group} the {self.schedule.recipe!r} schedule uses for {n}:{m}")
        self.step = 0

    @classmethod
    def from_linear(cls, linear: nn.Linear, n: int, m: int,
                    schedule: NMSchedule | None = None) -> NMSparseLinear:
        """An :class:`NMSparseLinear` that shares ``linear``'s weight and bias parameters."""
        if not isinstance(linear, nn.Linear):
            raise TypeError(f"linear: expected nn.Linear, got {type(linear).__name__}")
        out = cls(linear.in_features, linear.out_features, bias=linear.bias is not None, n=n,
                  m=m, schedule=schedule, device="meta")
        out.weight = linear.weight
        out.bias = linear.bias
        out.train(linear.training)
        return out

    def state(self) -> NMStepState:
        """The schedule's state at the current step."""
        return self.schedule.state(self.step, self.n, self.m)

    def effective_weight(self) -> torch.Tensor:
        """``W̃ [out, in]`` used by the forward at the current step (differentiable)."""
        return nm_weight(self.weight, self.state())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.effective_weight(), self.bias)

    @torch.no_grad()
    def sparse_weight(self) -> torch.Tensor:
        """``W ⊙ P`` with the *target* ``n:m`` mask (what :meth:`NMSparsity.finalize`
        keeps); detached."""
        return self.weight.detach().masked_fill(~nm_mask(self.weight, self.n, self.m), 0.0)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, n={self.n}, m={self.m}, " \
               f"recipe={self.schedule.recipe!r}, step={self.step}"


# --------------------------------------------------------------------------- model level
class NMSparsity:
    """Handle of the N:M layers of a model (returned by :func:`apply_nm_sparsity`).

    Call :meth:`step` once after every optimizer step. :meth:`state_dict` /
    :meth:`load_state_dict` save and restore the step count (the weights live in the model's
    own state dict, under the original keys).
    """

    def __init__(self, model: nn.Module, layers: dict[str, NMSparseLinear], n: int, m: int,
                 schedule: NMSchedule) -> None:
        self.model = model
        self.layers = layers
        self.n, self.m = n, m
        self.schedule = schedule
        self._step = 0
        self._finalized = False

    @property
    def step_count(self) -> int:
        """Optimizer steps taken so far (the schedule's ``t``)."""
        return self._step

    def _check_live(self) -> None:
        if self._finalized:
            raise RuntimeError("NMSparsity: already finalized; the model holds plain linears")

    def set_step(self, step: int) -> None:
        """Set the schedule's step on every layer (e.g. when resuming)."""
        self._check_live()
        if isinstance(step, bool) or not isinstance(step, int) or step < 0:
            raise ValueError(f"step: expected an int >= 0, got {step!r}")
        self._step = step
        for layer in self.layers.values():
            layer.step = step

    def step(self) -> None:
        """Advance the schedule by one optimizer step."""
        self.set_step(self._step + 1)

    def state(self) -> NMStepState:
        """The schedule's state at the current step."""
        return self.schedule.state(self._step, self.n, self.m)

    def state_dict(self) -> dict[str, int]:
        return {"step": self._step}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.set_step(int(state["step"]))

    def sparse_weights(self) -> dict[str, torch.Tensor]:
        """``{name: W ⊙ P}`` with the target ``n:m`` masks (detached)."""
        self._check_live()
        return {name: layer.sparse_weight() for name, layer in self.layers.items()}

    @torch.no_grad()
    def finalize(self) -> nn.Module:
        """Write ``W ⊙ P`` (target ``n:m``) into every layer and put plain ``nn.Linear``
        modules (same parameter objects) back; returns the model, which is exactly N:M on the
        targets and computes what the strict masked forward computed.

        Raises:
            RuntimeError: a finalized weight is not N:M (cannot happen unless the weights are
                modified concurrently).
        """
        self._check_live()
        for name, layer in self.layers.items():
            w = layer.sparse_weight()
            layer.weight.copy_(w)
            linear = nn.Linear(layer.in_features, layer.out_features,
                               bias=layer.bias is not None, device="meta")
            linear.weight = layer.weight
            linear.bias = layer.bias
            linear.train(layer.training)
            if not is_nm_sparse(linear.weight, self.n, self.m):  # pragma: no cover
                raise RuntimeError(f"finalize: {name!r} is not {self.n}:{self.m} sparse")
            self.model.set_submodule(name, linear)
        self._finalized = True
        return self.model


def apply_nm_sparsity(model: nn.Module, patterns: str | Sequence[str], n: int, m: int,
                      schedule: NMSchedule | None = None) -> NMSparsity:
    """Train the ``nn.Linear`` layers of ``model`` selected by ``patterns`` N:M sparse.

    Each target (selected as in :func:`~subspace_peft.adapters.base.find_targets`: a regex
    matched against qualified names as a whole dotted suffix) is replaced in place by an
    :class:`NMSparseLinear` sharing its weight and bias (an optimizer built before or after
    sees the same parameters; state-dict keys are unchanged).

    Args:
        model: the network (modified in place).
        patterns: regex(es) selecting the linears.
        n, m: the target pattern (``0 < n <= m``; ``m`` must divide every target's
            ``in_features``, ``8 m`` for geometric SDGF).
        schedule: the recipe (default :class:`NMSchedule` = SR-STE).

    Returns:
        The :class:`NMSparsity` handle (``.step()`` after every optimizer step, ``.finalize()``
        at the end).

    Raises:
        ValueError: bad ``n, m``, a target whose ``in_features`` the group size does not
            divide, or a target whose weight is shared with another module.
    """
    n, m = _check_nm(n, m)
    schedule = schedule if schedule is not None else NMSchedule()
    if not isinstance(schedule, NMSchedule):
        raise TypeError(f"schedule: expected NMSchedule, got {type(schedule).__name__}")
    names = find_targets(model, patterns)
    modules = dict(model.named_modules())
    owners: dict[int, int] = {}
    for _, p in model.named_parameters(remove_duplicate=False):
        owners[id(p)] = owners.get(id(p), 0) + 1
    group = schedule.max_group(m)
    for name in names:
        linear = modules[name]
        if owners[id(linear.weight)] > 1:
            raise ValueError(f"patterns: the weight of {name!r} is shared with another module "
                             "(tied); its N:M mask would change that module too")
        if linear.in_features % group:
            raise ValueError(f"patterns: {name!r} has in_features = {linear.in_features}, not a "
                             f"multiple of the group size {group} ({n}:{m}, recipe "
                             f"{schedule.recipe!r})")
    layers = {}
    for name in names:
        layer = NMSparseLinear.from_linear(modules[name], n, m, schedule)
        model.set_submodule(name, layer)
        layers[name] = layer
    return NMSparsity(model, layers, n, m, schedule)
