"""``GaLoreAdafactor``: Adafactor (factored second moment) with GaLore gradient projection.

Parameter groups follow galore-torch (and :class:`~subspace_peft.optim.galore.GaLoreAdamW`):
a group with ``"rank"`` projects the gradient of its 2-D weights onto a rank-``r``
subspace (:class:`~subspace_peft.optim.projector.SubspaceProjector`: the same projection
options, refresh methods, Q-GaLore's quantised basis and lazy refresh) and runs Adafactor on
the projected gradient ``R`` (``[r, n]`` for a left basis, ``[m, r]`` for a right one); a
group without it is plain Adafactor::

    GaLoreAdafactor([
        {"params": other_params},
        {"params": matrices, "rank": 128, "update_proj_gap": 200, "scale": 0.25},
    ], lr=1e-2)

Adafactor (Shazeer & Stern, 2018) with ``torch.optim.Adafactor``'s conventions, so that a
plain group with the defaults (``beta1=None``, ``relative_step=True``) is bit-identical to
``torch.optim.Adafactor(foreach=False)`` for float32 parameters. One step ``t`` (1-based)
of a parameter ``W`` with gradient ``G`` (``X = R`` for a projected weight, else ``G``)::

    β2ₜ  = 1 − t^beta2_decay                       (beta2_decay = −0.8)
    ρₜ   = min(lr, 1/√t),  αₜ = max(ε2, RMS(W)) · ρₜ   (relative_step=True)
    αₜ   = lr                                         (relative_step=False)
    W   ← W · (1 − lr · weight_decay)
    matrices (≥ 2-D, factored over the last two dims, X [.., a, b]):
        row ← β2ₜ row + (1 − β2ₜ) mean_b(X²)      [.., a, 1]
        col ← β2ₜ col + (1 − β2ₜ) mean_a(X²)      [.., 1, b]
        V̂   = row col / max(mean_a(row), ε1)      (= rank-1 estimate of E[X²])
    vectors:  v ← β2ₜ v + (1 − β2ₜ) X²,  V̂ = v
    U    = X / √max(V̂, ε1²)
    U   ← U / max(1, RMS(U) / d)                  (update clipping, d = 1)
    M   ← β1 M + (1 − β1) U,  U ← M              (only with beta1; first moment of the
                                                  clipped update, as in the paper's §7)
    W   ← W − αₜ · U                 (plain)
    W   ← W − αₜ · scale · back(U)   (projected: back(U) = P U left, U Pᵀ right)

``ε1`` (``eps[0]``) defaults to the float32 machine epsilon (the moments are float32
whatever the parameter dtype; ``torch.optim.Adafactor`` takes the parameter dtype's).
For a projected weight ``RMS(W)`` is that of the full weight and the clipping acts on the
projected update (as galore-torch's Adafactor does).

Basis change (``reproject_moments=True``): with ``C = P_newᵀ P_old`` the second-moment
estimate is moved as :class:`~subspace_peft.optim.galore.GaLoreAdamW` moves Adam's ``V``,
``V̂ ← (C∘C) V̂`` (left) / ``V̂ (C∘C)ᵀ`` (right), which keeps it rank-1 and so stays
exactly representable by the factors: left basis (``row`` indexes basis coordinates)
``row ← (C∘C) row``, ``col ← col · mean(row_new) / mean(row_old)``; right basis (``col``
indexes them) ``col ← col (C∘C)ᵀ``. The first moment is rotated, ``M ← C M`` /
``M Cᵀ``. With ``False`` the state is kept as it is.

State per parameter (plain tensors and ints: ``torch.load(weights_only=True)`` works, and
refreshes are seeded from the state, so a resumed run is bit-identical): ``step`` (int),
``row_var``/``col_var`` (factored) or ``variance`` (vectors), ``exp_avg`` (with beta1),
``projector`` (projected groups); all float32.
"""

from __future__ import annotations

from typing import Any

import torch

from subspace_peft.optim.base import PROJECTION_DEFAULTS, SubspaceOptimizer

__all__ = ["ADAFACTOR_DEFAULTS", "GaLoreAdafactor"]

#: Group options of :class:`GaLoreAdafactor` beyond Adafactor's and their defaults
#: (``rank=None``: plain Adafactor).
ADAFACTOR_DEFAULTS: dict[str, Any] = {**PROJECTION_DEFAULTS}


class GaLoreAdafactor(SubspaceOptimizer):
    """Adafactor whose groups with ``rank`` take GaLore-projected steps.

    Args:
        params: parameters or galore-torch-style parameter groups.
        lr: learning rate; with ``relative_step`` the cap of the relative step size
            ``min(lr, 1/√t)`` (``torch.optim.Adafactor``'s meaning).
        beta2_decay: exponent of the second-moment decay ``β2ₜ = 1 − t^beta2_decay``, <= 0.
        eps: ``(ε1, ε2)``: floor of the second moment (None: float32 epsilon) and of the
            parameter RMS in the relative step.
        d: update clipping threshold (``>= 1``).
        weight_decay: decoupled weight decay (``W ← W (1 − lr · wd)``).
        beta1: None (no first moment, the default) or a value in ``[0, 1)``.
        relative_step: scale the step by ``max(ε2, RMS(W)) · min(lr, 1/√t)`` (True) or use
            ``lr`` as the step size (False).
        **galore_defaults: defaults of :data:`ADAFACTOR_DEFAULTS` (projection options) for
            every group.

    Raises ValueError naming the argument for out-of-range hyper-parameters, and (naming
    the group/parameter) for a bad rank, ``proj_type``, ``method`` or a non-2-D parameter
    in a projected group.
    """

    def __init__(
        self,
        params,
        lr: float = 1e-2,
        beta2_decay: float = -0.8,
        eps: tuple[float | None, float] = (None, 1e-3),
        d: float = 1.0,
        weight_decay: float = 0.0,
        *,
        beta1: float | None = None,
        relative_step: bool = True,
        **galore_defaults: Any,
    ) -> None:
        unknown = set(galore_defaults) - set(ADAFACTOR_DEFAULTS)
        if unknown:
            raise TypeError(f"GaLoreAdafactor: unknown options {sorted(unknown)}; known: "
                            f"{sorted(ADAFACTOR_DEFAULTS)}")
        defaults = dict(lr=lr, beta2_decay=beta2_decay, eps=tuple(eps), d=d,
                        weight_decay=weight_decay, beta1=beta1, relative_step=relative_step,
                        **{**ADAFACTOR_DEFAULTS, **galore_defaults})
        super().__init__(params, defaults)

    def _check_group(self, group: dict[str, Any], index: int) -> None:
        where = f"param group {index}: "
        if not group["lr"] >= 0.0:
            raise ValueError(f"{where}lr: expected >= 0, got {group['lr']!r}")
        if not group["beta2_decay"] <= 0.0:
            raise ValueError(f"{where}beta2_decay: expected <= 0, got {group['beta2_decay']!r}")
        eps = group["eps"]
        if len(eps) != 2:
            raise ValueError(f"{where}eps: expected a pair (eps1 or None, eps2), got {eps!r}")
        if eps[0] is not None and not eps[0] >= 0.0:
            raise ValueError(f"{where}eps[0]: expected None or >= 0, got {eps[0]!r}")
        if not eps[1] >= 0.0:
            raise ValueError(f"{where}eps[1]: expected >= 0, got {eps[1]!r}")
        if not group["d"] >= 1.0:
            raise ValueError(f"{where}d: expected a clipping threshold >= 1, got {group['d']!r}")
        if not group["weight_decay"] >= 0.0:
            raise ValueError(f"{where}weight_decay: expected >= 0, got "
                             f"{group['weight_decay']!r}")
        beta1 = group["beta1"]
        if beta1 is not None and not 0.0 <= beta1 < 1.0:
            raise ValueError(f"{where}beta1: expected None or a value in [0, 1), got {beta1!r}")
        for j, p in enumerate(group["params"]):
            if torch.is_complex(p):
                raise ValueError(f"{where}parameter {j}: complex parameters are not supported")

    # ------------------------------------------------------------------- step
    def _step_group(self, group: dict[str, Any], params: list[torch.Tensor],
                    grads: list[torch.Tensor], states: list[dict[str, Any]]) -> None:
        for p, g, state in zip(params, grads, states, strict=True):
            if group["rank"] is None:
                self._plain_step(p, g, group, state)
            else:
                self._projected_step(p, g, group, state)

    @staticmethod
    def _init_factors(state: dict[str, Any], shape: tuple[int, ...], device: torch.device,
                      beta1: float | None) -> None:
        if "row_var" in state or "variance" in state:
            return
        if len(shape) > 1:
            state["row_var"] = torch.zeros((*shape[:-1], 1), dtype=torch.float32, device=device)
            state["col_var"] = torch.zeros((*shape[:-2], 1, shape[-1]), dtype=torch.float32,
                                           device=device)
        else:
            state["variance"] = torch.zeros(shape, dtype=torch.float32, device=device)
        if beta1 is not None:
            state["exp_avg"] = torch.zeros(shape, dtype=torch.float32, device=device)

    @staticmethod
    def _schedule(group: dict[str, Any], t: int, w: torch.Tensor) -> tuple[float, float]:
        """``(1 − β2ₜ, αₜ)`` for 1-based step ``t`` and the (float32) weight ``w``."""
        one_minus_beta2_t = float(t) ** group["beta2_decay"]
        if not group["relative_step"]:
            return one_minus_beta2_t, group["lr"]
        rho_t = min(group["lr"], 1 / (float(t) ** 0.5))
        return one_minus_beta2_t, max(group["eps"][1], w.norm(2).item() / (w.numel() ** 0.5)) * rho_t

    @staticmethod
    def _direction(X: torch.Tensor, state: dict[str, Any], group: dict[str, Any],
                   one_minus_beta2_t: float) -> tuple[torch.Tensor, float]:
        """Update the moments with ``X``; return ``(U, divisor)``: the step is
        ``−α · U / divisor`` (``torch.optim.Adafactor``'s operations, in its order).

        Without beta1 ``U = X / √V̂`` and ``divisor = max(1, RMS(U) / d)``; with beta1 ``U``
        is the first moment of the clipped ``X / √V̂`` and ``divisor = 1``.
        """
        eps1 = group["eps"][0]
        if eps1 is None:
            eps1 = torch.finfo(torch.float32).eps
        if X.dim() > 1:
            row_var, col_var = state["row_var"], state["col_var"]
            row_mean = torch.linalg.vector_norm(X, dim=-1, keepdim=True).square_().div_(X.size(-1))
            row_var.lerp_(row_mean, one_minus_beta2_t)
            col_mean = torch.linalg.vector_norm(X, dim=-2, keepdim=True).square_().div_(X.size(-2))
            col_var.lerp_(col_mean, one_minus_beta2_t)
            var_estimate = row_var @ col_var
            var_estimate.div_(row_var.mean(dim=-2, keepdim=True).clamp_(min=eps1))
        else:
            variance = state["variance"]
            variance.lerp_(X * X, one_minus_beta2_t)
            var_estimate = variance.clone()
        update = var_estimate.clamp_(min=eps1 * eps1).rsqrt_()
        update.mul_(X)
        denom = max(1.0, update.norm(2).item() / ((update.numel() ** 0.5) * group["d"]))
        if group["beta1"] is None:
            return update, denom
        M = state["exp_avg"]
        M.lerp_(update.div_(denom), 1.0 - group["beta1"])
        return M, 1.0

    def _plain_step(self, p: torch.Tensor, g: torch.Tensor, group: dict[str, Any],
                    state: dict[str, Any]) -> None:
        w = p if p.dtype == torch.float32 else p.float()
        g = g if g.dtype == torch.float32 else g.float()
        state.setdefault("step", 0)
        self._init_factors(state, tuple(p.shape), p.device, group["beta1"])
        t = state["step"] = state["step"] + 1
        one_minus_beta2_t, alpha = self._schedule(group, t, w)
        if group["weight_decay"] != 0:
            w.mul_(1 - group["lr"] * group["weight_decay"])
        U, divisor = self._direction(g, state, group, one_minus_beta2_t)
        w.add_(U, alpha=-alpha / divisor)
        if w is not p:
            p.copy_(w)

    def _projected_step(self, p: torch.Tensor, g: torch.Tensor, group: dict[str, Any],
                        state: dict[str, Any]) -> None:
        P, side = self._projection(p, g, group, state)
        g32 = g if g.dtype == torch.float32 else g.float()
        R = P.T @ g32 if side == "left" else g32 @ P
        self._init_factors(state, tuple(R.shape), p.device, group["beta1"])
        t = state["step"] = state["step"] + 1
        w = p if p.dtype == torch.float32 else p.float()
        one_minus_beta2_t, alpha = self._schedule(group, t, w)
        U, divisor = self._direction(R, state, group, one_minus_beta2_t)
        decay = 1 - group["lr"] * group["weight_decay"]
        step = -alpha * group["scale"] / divisor
        if side == "left":
            w.addmm_(P, U, beta=decay, alpha=step)
        else:
            w.addmm_(U, P.T, beta=decay, alpha=step)
        if w is not p:
            p.copy_(w)

    # ---------------------------------------------------------- re-projection
    def _reproject_state(self, state: dict[str, Any], side: str, old: torch.Tensor,
                         new: torch.Tensor, group: dict[str, Any]) -> None:
        if "row_var" not in state:
            return
        C = new.T @ old  # [r, r]: new coordinates of the old basis vectors
        C2 = C * C
        row, col = state["row_var"], state["col_var"]
        if side == "left":  # rows of R are basis coordinates
            old_mean = row.mean()
            row.copy_(C2 @ row)
            if float(old_mean) > 0.0:
                col.mul_(row.mean() / old_mean)
            if "exp_avg" in state:
                state["exp_avg"].copy_(C @ state["exp_avg"])
        else:  # columns of R are basis coordinates
            col.copy_(col @ C2.T)
            if "exp_avg" in state:
                state["exp_avg"].copy_(state["exp_avg"] @ C.T)
