"""``GaLoreAdamW``: AdamW with GaLore / Fira / Q-GaLore gradient-subspace projection.

Parameter groups follow galore-torch: a group with ``"rank"`` projects its (2-D) weights,
a group without it is plain AdamW::

    GaLoreAdamW([
        {"params": other_params},
        {"params": matrices, "rank": 128, "update_proj_gap": 200, "scale": 0.25,
         "proj_type": "std"},
    ], lr=1e-3)

The step of a projected weight is the core's fused op
:func:`subspace_core.ops.projected_adam.projected_adam` (``backend`` group option,
``"auto"`` by default). Group options beyond galore-torch's (defaults in
:data:`GALORE_DEFAULTS`):

* ``fira=True``: Fira (norm-scaled out-of-subspace gradient + norm-growth limiter
  ``fira_gamma``), via the op's ``fira_state``.
* ``reproject_moments=True`` (default; galore-torch has no such option, GaLore#54): when the
  basis changes from ``P_old`` to ``P_new`` the first moment is rotated into the new
  coordinates, ``M ← C M`` (left) / ``M ← M Cᵀ`` (right) with ``C = P_newᵀ P_old`` [r, r].
  The second moment is transformed with the element-wise square of ``C``:
  ``V ← (C∘C) V`` (left) / ``V ← V (C∘C)ᵀ`` (right). This is the exact second moment of
  the rotated coordinates if the old coordinates are uncorrelated (``E[(Σ_j c_ij x_j)²] =
  Σ_j c_ij² E[x_j²]``); it stays non-negative, is exact for permutations/sign flips of the
  basis, keeps the bias-correction step count meaningful (resetting V to 0 while keeping
  the step count would blow the first post-refresh update up), and shrinks V in directions
  that are new to the subspace (rows of ``C∘C`` sum to ``‖P_oldᵀ p_i‖² <= 1``).
  With ``False`` the moments are kept as they are, as galore-torch does.
* ``method``/``iters``/``oversample``/``seed``: how the basis is refreshed
  (:class:`~subspace_peft.optim.projector.SubspaceProjector`).
* Q-GaLore: ``quant_bits=4`` (INT4 group-quantised basis, ``quant_group_size``) and
  ``lazy=True`` (cosine-similarity queue, gap doubling: ``cos_threshold``, ``queue_size``,
  ``gap_growth``).

State: everything in ``optimizer.state`` is a tensor, an int or a dict of those, and the
groups hold only numbers, strings, bools, None and tuples, so ``torch.save(opt.state_dict())``
loads with ``torch.load(..., weights_only=True)``. Moments are kept in float32 whatever
the parameter dtype, and :meth:`GaLoreAdamW.load_state_dict` restores the saved dtypes
(``torch.optim.Optimizer`` would cast them to the parameter's dtype). Refreshes are seeded
from the state, so a resumed run is bit-identical to an uninterrupted one.
"""

from __future__ import annotations

from typing import Any

import torch

from subspace_core.ops.projected_adam import FIRA_GAMMA, projected_adam
from subspace_peft.optim.projector import METHODS, PROJ_TYPES, SubspaceProjector

__all__ = ["GALORE_DEFAULTS", "GaLoreAdamW"]

#: Group options of projected groups and their defaults (``rank=None``: plain AdamW).
GALORE_DEFAULTS: dict[str, Any] = {
    "rank": None,
    "update_proj_gap": 200,
    "scale": 0.25,
    "proj_type": "std",
    "reproject_moments": True,
    "fira": False,
    "fira_gamma": FIRA_GAMMA,
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
    "backend": "auto",
}

_PROJECTOR_KEYS = ("update_proj_gap", "scale", "proj_type", "method", "iters", "oversample",
                   "seed", "quant_bits", "quant_group_size", "lazy", "cos_threshold",
                   "queue_size", "gap_growth")


class GaLoreAdamW(torch.optim.Optimizer):
    """AdamW whose groups with ``rank`` take GaLore/Fira/Q-GaLore projected steps.

    Args:
        params: parameters or galore-torch-style parameter groups.
        lr, betas, eps, weight_decay: AdamW hyper-parameters (decoupled decay, as
            ``torch.optim.AdamW``).
        **galore_defaults: defaults of the options in :data:`GALORE_DEFAULTS` for every
            group (a group's own keys win).

    Raises ValueError (naming the group/parameter) for a rank outside ``[1, min(m, n)]``,
    an unknown ``proj_type`` or ``method``, or a non-2-D parameter in a projected group.
    """

    def __init__(
        self,
        params,
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        **galore_defaults: Any,
    ) -> None:
        unknown = set(galore_defaults) - set(GALORE_DEFAULTS)
        if unknown:
            raise TypeError(f"GaLoreAdamW: unknown options {sorted(unknown)}; "
                            f"known: {sorted(GALORE_DEFAULTS)}")
        if not lr >= 0.0:
            raise ValueError(f"lr: expected >= 0, got {lr!r}")
        if not eps >= 0.0:
            raise ValueError(f"eps: expected >= 0, got {eps!r}")
        for i, b in enumerate(betas):
            if not 0.0 <= b < 1.0:
                raise ValueError(f"betas[{i}]: expected a value in [0, 1), got {b!r}")
        defaults = dict(lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay,
                        **{**GALORE_DEFAULTS, **galore_defaults})
        super().__init__(params, defaults)

    # ------------------------------------------------------------- validation
    def add_param_group(self, param_group: dict[str, Any]) -> None:
        known = set(self.defaults) | {"params"}
        unknown = set(param_group) - known
        if unknown:
            raise ValueError(f"param group: unknown keys {sorted(unknown)}; known: "
                             f"{sorted(known)}")
        super().add_param_group(param_group)
        group = self.param_groups[-1]
        index = len(self.param_groups) - 1
        if group["rank"] is None:
            return
        if group["proj_type"] not in PROJ_TYPES:
            raise ValueError(f"param group {index}: proj_type: expected one of {PROJ_TYPES}, "
                             f"got {group['proj_type']!r}")
        if group["method"] not in METHODS:
            raise ValueError(f"param group {index}: method: expected one of {METHODS}, got "
                             f"{group['method']!r}")
        for j, p in enumerate(group["params"]):
            if p.dim() != 2:
                raise ValueError(
                    f"param group {index}, parameter {j}: a group with 'rank' projects 2-D "
                    f"weights only, got shape {tuple(p.shape)} (put it in a group without "
                    "'rank'; galore_param_groups does this)"
                )
            try:
                self._projector(group, p.shape, None)
            except ValueError as err:
                raise ValueError(f"param group {index}, parameter {j} of shape "
                                 f"{tuple(p.shape)}: {err}") from None

    @staticmethod
    def _projector(group: dict[str, Any], shape, state: dict | None) -> SubspaceProjector:
        return SubspaceProjector(shape, group["rank"], state=state,
                                 **{k: group[k] for k in _PROJECTOR_KEYS})

    def projector(self, p: torch.Tensor) -> SubspaceProjector:
        """The projector of parameter ``p`` (operating on its optimizer state)."""
        for group in self.param_groups:
            if any(q is p for q in group["params"]):
                if group["rank"] is None:
                    raise ValueError("p: belongs to a plain AdamW group (no 'rank')")
                state = self.state[p]
                if "projector" not in state:
                    state["step"] = 0
                    state["projector"] = self._projector(group, p.shape, None).state
                return self._projector(group, p.shape, state["projector"])
        raise ValueError("p: not a parameter of this optimizer")

    # ------------------------------------------------------------------- step
    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                if p.grad.is_sparse:
                    raise RuntimeError("GaLoreAdamW does not support sparse gradients")
                if group["rank"] is None:
                    self._adamw_step(p, group)
                else:
                    self._projected_step(p, group)
        return loss

    def _adamw_step(self, p: torch.Tensor, group: dict[str, Any]) -> None:
        state = self.state[p]
        if "exp_avg" not in state:
            state["step"] = 0
            state["exp_avg"] = torch.zeros_like(p, dtype=torch.float32,
                                                memory_format=torch.preserve_format)
            state["exp_avg_sq"] = torch.zeros_like(state["exp_avg"])
        state["step"] += 1
        t = state["step"]
        beta1, beta2 = group["betas"]
        g = p.grad.float()
        M, V = state["exp_avg"], state["exp_avg_sq"]
        M.lerp_(g, 1.0 - beta1)
        V.mul_(beta2).addcmul_(g, g, value=1.0 - beta2)
        bc1, bc2 = 1.0 - beta1**t, 1.0 - beta2**t
        denom = (V.sqrt() / bc2**0.5).add_(group["eps"])
        w = p.float()
        if group["weight_decay"] != 0.0:
            w.mul_(1.0 - group["lr"] * group["weight_decay"])
        w.addcdiv_(M, denom, value=-group["lr"] / bc1)
        p.copy_(w)

    def _projected_step(self, p: torch.Tensor, group: dict[str, Any]) -> None:
        state = self.state[p]
        if "projector" not in state:
            state["step"] = 0
            state["projector"] = self._projector(group, p.shape, None).state
        proj = self._projector(group, p.shape, state["projector"])
        t = state["step"]
        if proj.due(t):
            old, new = proj.refresh(p.grad, t)
            if old is not None and group["reproject_moments"] and "exp_avg" in state:
                self._reproject(state, proj.side, old.to(p.device), new.to(p.device))
        if "exp_avg" not in state:
            m, n = p.shape
            shape = (group["rank"], n) if proj.side == "left" else (m, group["rank"])
            state["exp_avg"] = torch.zeros(shape, dtype=torch.float32, device=p.device)
            state["exp_avg_sq"] = torch.zeros_like(state["exp_avg"])
        if group["fira"] and "fira_state" not in state:
            state["fira_state"] = torch.zeros((), dtype=torch.float32, device=p.device)
        state["step"] = t + 1
        beta1, beta2 = group["betas"]
        projected_adam(
            p, p.grad, proj.basis().to(p.device), state["exp_avg"], state["exp_avg_sq"],
            step=t + 1, side=proj.side, lr=group["lr"], beta1=beta1, beta2=beta2,
            eps=group["eps"], weight_decay=group["weight_decay"], alpha=group["scale"],
            fira_state=state.get("fira_state") if group["fira"] else None,
            fira_gamma=group["fira_gamma"], backend=group["backend"],
        )

    @staticmethod
    def _reproject(state: dict, side: str, old: torch.Tensor, new: torch.Tensor) -> None:
        C = new.T @ old  # [r, r]: new coordinates of the old basis vectors
        C2 = C * C
        M, V = state["exp_avg"], state["exp_avg_sq"]
        if side == "left":
            M.copy_(C @ M)
            V.copy_(C2 @ V)
        else:
            M.copy_(M @ C.T)
            V.copy_(V @ C2.T)

    # -------------------------------------------------------------- resuming
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Load a state dict; keeps the saved dtypes (float32 moments, int codes)."""
        super().load_state_dict(state_dict)
        params = [p for g in self.param_groups for p in g["params"]]
        ids = [i for g in state_dict["param_groups"] for i in g["params"]]
        for pid, p in zip(ids, params, strict=True):
            saved = state_dict["state"].get(pid)
            if saved is not None:
                self.state[p] = _copy_state(saved, p.device)


def _copy_state(value: Any, device: torch.device) -> Any:
    if isinstance(value, torch.Tensor):
        return value.detach().to(device=device, copy=True)
    if isinstance(value, dict):
        return {k: _copy_state(v, device) for k, v in value.items()}
    return value
