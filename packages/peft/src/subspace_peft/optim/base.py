"""``SubspaceOptimizer``: what every GaLore-style optimizer of this package shares.

Parameter groups follow galore-torch: a group with ``"rank"`` projects the gradients of its
(2-D) weights onto a rank-``r`` subspace refreshed every ``update_proj_gap`` steps
(:class:`~subspace_peft.optim.projector.SubspaceProjector`), a group without it is the
plain inner optimizer. Subclasses (:class:`~subspace_peft.optim.galore.GaLoreAdamW`,
:class:`~subspace_peft.optim.adafactor.GaLoreAdafactor`) implement the inner optimizer
in :meth:`SubspaceOptimizer._step_group` and how their moments follow a basis change in
:meth:`SubspaceOptimizer._reproject_state`; this class does the group validation, the
projector bookkeeping (state creation, refresh when due, the basis used by the step),
``step()`` and the dtype-preserving ``load_state_dict``.

``step()`` collects, per group, the parameters that have a gradient and passes them to
``_step_group`` at once (multi-tensor ``torch._foreach_*`` work over the group);
:meth:`SubspaceOptimizer._step_param` is the same step for one parameter with its state
passed explicitly (the entry point of per-parameter callers, e.g. the DTensor/FSDP2 step
of :mod:`subspace_peft.optim.distributed`, which calls it on a gathered full tensor). A
group stepped parameter by parameter equals the same group stepped at once up to float
rounding (the batched path fuses element-wise work over the group); each path on its own is
deterministic, so resuming is bit-exact.

State: per parameter, tensors, ints and dicts of those only; groups hold numbers, strings,
bools, None and tuples: ``torch.load(..., weights_only=True)`` loads a saved state dict.
"""

from __future__ import annotations

from typing import Any

import torch

from subspace_peft.optim.distributed import MODES as DTENSOR_MODES
from subspace_peft.optim.distributed import is_dtensor, step_dtensor_param
from subspace_peft.optim.projector import METHODS, PROJ_TYPES, SubspaceProjector, resolve_side
from subspace_peft.optim.tucker import TuckerProjector

__all__ = ["PROJECTION_DEFAULTS", "PROJECTOR_KEYS", "SubspaceOptimizer"]

#: Group options of the projection shared by every subspace optimizer (``rank=None``: the
#: group is not projected). See :class:`~subspace_peft.optim.projector.SubspaceProjector`.
PROJECTION_DEFAULTS: dict[str, Any] = {
    "rank": None,
    "update_proj_gap": 200,
    "scale": 0.25,
    "proj_type": "std",
    "reproject_moments": True,
    "method": "subspace_iteration",
    "iters": 2,
    "oversample": 8,
    "seed": 0,
    "quant_bits": None,
    "quant_group_size": 256,
    "lazy": False,
    "cos_threshold": 0.4,
    "queue_size": 5,
    "gap_growth": 2,
    "dtensor_mode": "gather",
}

#: Group options passed on to :class:`SubspaceProjector`.
PROJECTOR_KEYS = ("update_proj_gap", "scale", "proj_type", "method", "iters", "oversample",
                  "seed", "quant_bits", "quant_group_size", "lazy", "cos_threshold",
                  "queue_size", "gap_growth")


class SubspaceOptimizer(torch.optim.Optimizer):
    """Base class: galore-torch-style groups, projector bookkeeping, batched ``step()``.

    Args:
        params: parameters or parameter groups.
        defaults: every group option with its default (the inner optimizer's
            hyper-parameters and :data:`PROJECTION_DEFAULTS`); a group with a key that is
            not in it is refused.

    Subclasses implement ``_step_group(group, params, grads, states)`` and
    ``_reproject_state(state, side, old, new, group)``; those that set
    ``supports_tucker = True`` also accept N-d (e.g. conv) weights in projected groups,
    projected by :class:`~subspace_peft.optim.tucker.TuckerProjector`.
    """

    #: Whether projected groups may hold N-d weights (Tucker projection).
    supports_tucker = False

    def __init__(self, params, defaults: dict[str, Any]) -> None:
        self._sides: dict[tuple[str, tuple[int, ...]], str] = {}
        super().__init__(params, defaults)

    # ------------------------------------------------------------- validation
    def add_param_group(self, param_group: dict[str, Any]) -> None:
        known = set(self.defaults) | {"params"}
        unknown = set(param_group) - known
        if unknown:
            raise ValueError(f"param group: unknown keys {sorted(unknown)}; known: "
                             f"{sorted(known)}")
        super().add_param_group(param_group)
        try:
            self._validate_group(self.param_groups[-1], len(self.param_groups) - 1)
        except Exception:
            self.param_groups.pop()  # a refused group is not kept
            raise

    def _validate_group(self, group: dict[str, Any], index: int) -> None:
        self._check_group(group, index)
        if group["rank"] is None:
            return
        if group["proj_type"] not in PROJ_TYPES:
            raise ValueError(f"param group {index}: proj_type: expected one of {PROJ_TYPES}, "
                             f"got {group['proj_type']!r}")
        if group["dtensor_mode"] not in DTENSOR_MODES:
            raise ValueError(f"param group {index}: dtensor_mode: expected one of "
                             f"{DTENSOR_MODES}, got {group['dtensor_mode']!r}")
        if group["method"] not in METHODS:
            raise ValueError(f"param group {index}: method: expected one of {METHODS}, got "
                             f"{group['method']!r}")
        for j, p in enumerate(group["params"]):
            if p.dim() > 2 and self.supports_tucker:
                try:
                    TuckerProjector.from_group(group, p.shape)
                except ValueError as err:
                    raise ValueError(f"param group {index}, parameter {j} of shape "
                                     f"{tuple(p.shape)}: {err}") from None
                continue
            if p.dim() != 2:
                also = " (and N-d ones by Tucker projection)" if self.supports_tucker else ""
                raise ValueError(
                    f"param group {index}, parameter {j}: a group with 'rank' projects 2-D "
                    f"weights only{also}, got shape {tuple(p.shape)} (put it in a group "
                    "without 'rank'; galore_param_groups does this)"
                )
            try:
                self._projector(group, p.shape, None)
            except ValueError as err:
                raise ValueError(f"param group {index}, parameter {j} of shape "
                                 f"{tuple(p.shape)}: {err}") from None

    def _check_group(self, group: dict[str, Any], index: int) -> None:
        """Subclass hook: validate the inner optimizer's options of a new group."""

    @staticmethod
    def _projector(group: dict[str, Any], shape, state: dict | None) -> SubspaceProjector:
        return SubspaceProjector(shape, group["rank"], state=state,
                                 **{k: group[k] for k in PROJECTOR_KEYS})

    def projector(self, p: torch.Tensor) -> SubspaceProjector | TuckerProjector:
        """The projector of parameter ``p`` (operating on its optimizer state)."""
        for group in self.param_groups:
            if any(q is p for q in group["params"]):
                if group["rank"] is None:
                    raise ValueError("p: belongs to a plain group (no 'rank')")
                state = self.state[p]
                build = (TuckerProjector.from_group if p.dim() > 2 else self._projector)
                if "projector" not in state:
                    state["step"] = 0
                    state["projector"] = build(group, p.shape, None).state
                return build(group, p.shape, state["projector"])
        raise ValueError("p: not a parameter of this optimizer")

    # ------------------------------------------------------------------- step
    @torch.no_grad()
    def step(self, closure=None):
        """One step of every parameter that has a gradient; returns the closure's loss."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            params, grads, states = [], [], []
            for p in group["params"]:
                if p.grad is None:
                    continue
                if p.grad.is_sparse:
                    raise RuntimeError(f"{type(self).__name__} does not support sparse "
                                       "gradients")
                if group["rank"] is not None and is_dtensor(p):  # FSDP2 / DTensor shards
                    step_dtensor_param(self, p, group, self.state[p])
                    continue
                params.append(p)
                grads.append(p.grad)
                states.append(self.state[p])
            if params:
                self._step_group(group, params, grads, states)
        return loss

    @torch.no_grad()
    def _step_param(self, p: torch.Tensor, group: dict[str, Any], state: dict[str, Any],
                    grad: torch.Tensor | None = None) -> None:
        """The step of one parameter ``p`` of ``group`` on its state dict ``state``.

        ``grad`` defaults to ``p.grad``. ``p`` need not be the registered parameter (e.g.
        a gathered full copy of a sharded one); ``state`` is updated in place.
        """
        grad = p.grad if grad is None else grad
        if grad is None:
            raise ValueError("grad: p has no gradient (.grad is None) and none was given")
        if grad.is_sparse:
            raise RuntimeError(f"{type(self).__name__} does not support sparse gradients")
        self._step_group(group, [p], [grad], [state])

    def _step_group(self, group: dict[str, Any], params: list[torch.Tensor],
                    grads: list[torch.Tensor], states: list[dict[str, Any]]) -> None:
        raise NotImplementedError

    # ------------------------------------------------------------ projection
    def _side(self, group: dict[str, Any], shape: torch.Size) -> str:
        key = (group["proj_type"], tuple(shape))
        side = self._sides.get(key)
        if side is None:
            side = self._sides[key] = resolve_side(*key)
        return side

    def _projection(self, p: torch.Tensor, grad: torch.Tensor, group: dict[str, Any],
                    state: dict[str, Any]) -> tuple[torch.Tensor, str]:
        """The basis ``P`` (float32, on ``p``'s device) and side for this step of ``p``.

        Creates the projector state on first use and refreshes the basis from ``grad``
        when due (re-projecting the moments with :meth:`_reproject_state` when the basis
        changed and ``reproject_moments``). Does not advance ``state["step"]``. The
        steady-state path is a few dict look-ups: no projector object is built and a
        float32 basis is used as stored (no copy).
        """
        pstate = state.get("projector")
        if pstate is None:
            state["step"] = 0
            pstate = state["projector"] = self._projector(group, p.shape, None).state
        t = state["step"]
        basis = pstate.get("basis")
        if (basis is None and "basis_codes" not in pstate) or t >= pstate["next_refresh"]:
            proj = self._projector(group, p.shape, pstate)
            old, new = proj.refresh(grad, t)
            if old is not None and group["reproject_moments"]:
                self._reproject_state(state, proj.side, old.to(p.device), new.to(p.device),
                                      group)
            basis = pstate.get("basis")
        side = self._side(group, p.shape)
        if basis is None:  # quantised (Q-GaLore): dequantised every step, nothing cached
            basis = self._projector(group, p.shape, pstate).basis()
        if basis.device != p.device or basis.dtype != torch.float32:
            basis = basis.to(device=p.device, dtype=torch.float32)
        return basis, side

    def _reproject_state(self, state: dict[str, Any], side: str, old: torch.Tensor,
                         new: torch.Tensor, group: dict[str, Any]) -> None:
        """Move the moments in ``state`` from basis ``old`` to ``new`` (``[rows, r]``)."""
        raise NotImplementedError

    # -------------------------------------------------------------- resuming
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Load a state dict; keeps the saved dtypes (float32 moments, int codes)."""
        super().load_state_dict(state_dict)
        params = [p for g in self.param_groups for p in g["params"]]
        ids = [i for g in state_dict["param_groups"] for i in g["params"]]
        for pid, p in zip(ids, params, strict=True):
            saved = state_dict["state"].get(pid)
            if saved is not None:
                state = self.state[p] = _copy_state(saved, p.device)
                if isinstance(state.get("step"), torch.Tensor):  # torch keeps it on the CPU
                    state["step"] = state["step"].cpu()


def _copy_state(value: Any, device: torch.device) -> Any:
    if isinstance(value, torch.Tensor):
        return value.detach().to(device=device, copy=True)
    if isinstance(value, dict):
        return {k: _copy_state(v, device) for k, v in value.items()}
    return value
