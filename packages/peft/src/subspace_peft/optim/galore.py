"""``GaLoreAdamW``: AdamW with GaLore / Fira / Q-GaLore gradient-subspace projection.

Parameter groups follow galore-torch: a group with ``"rank"`` projects its (2-D) weights,
a group without it is plain AdamW::

    GaLoreAdamW([
        {"params": other_params},
        {"params": matrices, "rank": 128, "update_proj_gap": 200, "scale": 0.25,
         "proj_type": "std"},
    ], lr=1e-3)

Plain groups are ``torch.optim.AdamW``'s multi-tensor implementation itself
(``torch.optim.adamw.adamw(..., foreach=True)``): bit-identical to
``torch.optim.AdamW(foreach=True)`` for float32 parameters, with float32 moments (and a
float32 copy of the weight during the step) for lower-precision ones.

The step of a projected weight is the maths of the core op
:func:`subspace_core.ops.projected_adam.projected_adam` (its ``reference.py`` is the spec).
When the group's ``backend`` resolves to Triton (``"auto"`` on CUDA with Triton
installed, or ``"triton"``) the fused op is called per weight. Otherwise (CPU, or
``backend="torch"``) the optimizer runs the same maths batched over the group, tested
against ``projected_adam_ref`` (equal up to float32 rounding; the order of operations
differs):

* the moments of all weights of the group live in two contiguous float32 buffers (the
  state holds views of them, see :meth:`GaLoreAdamW._layout`), so that the Adam moment
  update is one kernel per operation for the whole group; the projection ``R`` is one
  ``torch.mm`` per weight into a third such buffer;
* with ``c = √(1 − β2ᵗ)`` and ``N' = M / (√V + c ε)``, the decoupled weight decay, the
  back-projection and the step size ``lr c / (1 − β1ᵗ)`` are one ``addmm_`` on the weight;
* Fira (orthonormal, i.e. unquantised, basis): ``α back(N') + s φ' ⊙ (G − back(R))`` is
  ``back(α N' − s φ' ⊙ R) + s φ' ⊙ G`` (φ' scales the vectors of the kept dimension, so it
  commutes with ``back``), i.e. the same ``addmm_`` plus one ``addcmul_`` with ``G``; the
  residual norm is ``ν² = Σ_j φ'_j² (‖g_j‖² − ‖R_j‖²)`` (no ``[m, n]`` residual is formed), and
  φ', ν and the limiter are computed once for every run of same-shape weights. With a
  quantised (not orthonormal) basis the residual is formed explicitly, per weight.

The basis is used as stored (float32, no copy) between refreshes; nothing but work buffers
is cached outside the state.

Group options beyond galore-torch's (defaults in :data:`GALORE_DEFAULTS`):

* ``fira=True``: Fira (norm-scaled out-of-subspace gradient + norm-growth limiter
  ``fira_gamma``), the op's ``fira_state``.
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
  ``gap_growth``). The quantised basis is dequantised at every step (nothing cached: the
  memory saving is the point).
* ``state_bits=8``: both Adam moments of every parameter of the group (plain and
  projected) are stored block-wise quantised to 8 bits (:mod:`subspace_peft.optim.blockwise`;
  ``state_block_size`` elements per block, default 256), dequantised for the update and
  re-quantised after it with stochastic rounding seeded from the state. Tensors with fewer
  than ``state_min_size`` (4096) elements keep float32 moments (bitsandbytes'
  ``min_8bit_size``). :class:`GaLoreAdamW8bit` is ``GaLoreAdamW`` with ``state_bits=8``
  by default. An 8-bit plain group is not bit-identical to ``torch.optim.AdamW`` (it runs
  the same maths on the dequantised moments).

State: everything in ``optimizer.state`` is a tensor, an int or a dict of those, and the
groups hold only numbers, strings, bools, None and tuples, so ``torch.save(opt.state_dict())``
loads with ``torch.load(..., weights_only=True)``. Per parameter: ``step`` (plain groups: a
float32 CPU scalar tensor, as ``torch.optim.AdamW``; projected groups: an int),
``exp_avg``/``exp_avg_sq`` (float32; shape of the parameter, or of the projected gradient
``[r, n]``/``[m, r]``; with ``state_bits=8``: ``exp_avg_codes``/``exp_avg_scales``/
``exp_avg_sq_codes``/``exp_avg_sq_scales`` instead), ``projector`` (the projector's state),
``fira_state`` (Fira). :meth:`GaLoreAdamW.load_state_dict` restores the saved dtypes
(``torch.optim.Optimizer`` would cast them to the parameter's dtype). Refreshes and the
stochastic rounding are seeded from the state, so a resumed run is bit-identical to an
uninterrupted one.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch.optim.adamw import adamw as _torch_adamw

from subspace_core.ops import BACKENDS, select_backend
from subspace_core.ops.projected_adam import FIRA_GAMMA, projected_adam
from subspace_core.ops.projected_adam.reference import fira_limiter_scale
from subspace_peft.optim import blockwise
from subspace_peft.optim.base import PROJECTION_DEFAULTS, SubspaceOptimizer
from subspace_peft.optim.qweights import int8_weight_of, rounding_generator
from subspace_peft.optim.tucker import TuckerProjector, tucker_projected_step

__all__ = ["GALORE_DEFAULTS", "GaLoreAdamW", "GaLoreAdamW8bit"]

#: Group options of :class:`GaLoreAdamW` beyond AdamW's and their defaults
#: (``rank=None``: plain AdamW).
GALORE_DEFAULTS: dict[str, Any] = {
    **PROJECTION_DEFAULTS,
    "fira": False,
    "fira_gamma": FIRA_GAMMA,
    "backend": "auto",
    "state_bits": None,
    "state_block_size": blockwise.DEFAULT_BLOCK_SIZE,
    "state_min_size": blockwise.DEFAULT_MIN_SIZE,
    "tucker_modes": None,
}

_FIRA_TINY = 1e-8  # added to ‖R_j‖, as in the core op
_MOMENTS = ("exp_avg", "exp_avg_sq")


class GaLoreAdamW(SubspaceOptimizer):
    """AdamW whose groups with ``rank`` take GaLore/Fira/Q-GaLore projected steps.

    N-d weights (conv kernels ``[out, in, kh, kw]``, ...) in a projected group are projected
    by :class:`~subspace_peft.optim.tucker.TuckerProjector` (GaLore's tensor projection:
    one factor per mode, ``rank`` per mode, modes chosen by the ``tucker_modes`` group
    option; no Fira/Q-GaLore options for them).

    Args:
        params: parameters or galore-torch-style parameter groups.
        lr, betas, eps, weight_decay: AdamW hyper-parameters (decoupled decay, as
            ``torch.optim.AdamW``).
        **galore_defaults: defaults of the options in :data:`GALORE_DEFAULTS` for every
            group (a group's own keys win).

    Raises ValueError (naming the group/parameter) for a rank outside ``[1, min(m, n)]``,
    an unknown ``proj_type`` or ``method``, a non-2-D parameter in a projected group, or a
    ``state_bits`` other than None or 8.
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
            raise TypeError(f"{type(self).__name__}: unknown options {sorted(unknown)}; "
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
        # per group: the buffers and views of _layout (work buffers, not state)
        self._flat_layouts: dict[int, _Layout] = {}
        super().__init__(params, defaults)

    supports_tucker = True

    def _check_group(self, group: dict[str, Any], index: int) -> None:
        if group["backend"] not in BACKENDS:
            raise ValueError(f"param group {index}: backend: expected one of {BACKENDS}, got "
                             f"{group['backend']!r}")
        if group["state_bits"] not in (None, 8):
            raise ValueError(f"param group {index}: state_bits: expected None or 8, got "
                             f"{group['state_bits']!r}")
        if group["state_bits"] is not None:
            blockwise.check_block_size("state_block_size", group["state_block_size"])
            if (isinstance(group["state_min_size"], bool)
                    or not isinstance(group["state_min_size"], int)
                    or group["state_min_size"] < 0):
                raise ValueError(f"param group {index}: state_min_size: expected an int >= 0, "
                                 f"got {group['state_min_size']!r}")

    # ------------------------------------------------------------------- step
    def _step_group(self, group: dict[str, Any], params: list[torch.Tensor],
                    grads: list[torch.Tensor], states: list[dict[str, Any]]) -> None:
        int8 = [i for i, p in enumerate(params) if int8_weight_of(p) is not None]
        if int8:
            for i in int8:
                self._int8_step(group, params[i], grads[i], states[i])
            rest = [i for i in range(len(params)) if i not in set(int8)]
            params, grads, states = ([xs[i] for i in rest] for xs in (params, grads, states))
            if not params:
                return
        self._float_step_group(group, params, grads, states)

    def _int8_step(self, group: dict[str, Any], p: torch.Tensor, g: torch.Tensor,
                   state: dict[str, Any]) -> None:
        """Q-GaLore's INT8 weight step: dequantise, the float32 step, re-quantise the result
        with stochastic rounding (unbiased, so updates below half a quantisation step are
        kept in expectation instead of being rounded away). The rounding noise is seeded
        from ``(seed, step, parameter index)``: resumed runs are bit-exact."""
        qweight = int8_weight_of(p)
        if "int8_stream" not in state:
            state["int8_stream"] = next(i for i, q in enumerate(
                q for grp in self.param_groups for q in grp["params"]) if q is p)
        W = qweight.dequantize(torch.float32)  # transient float copy of this weight only
        self._float_step_group(group, [W], [g], [state])
        step = state["step"]
        step = int(step.item()) if isinstance(step, torch.Tensor) else int(step)
        qweight.quantize(W, rounding_generator(group["seed"], step, state["int8_stream"],
                                               W.device), stochastic=True)

    def _float_step_group(self, group: dict[str, Any], params: list[torch.Tensor],
                          grads: list[torch.Tensor], states: list[dict[str, Any]]) -> None:
        if group["state_bits"] is not None:
            # 8-bit moments: dequantise, the float32 step, re-quantise; one parameter at a
            # time so that only one parameter's float32 moments exist at once.
            for p, g, state in zip(params, grads, states, strict=True):
                with blockwise.dequantized_moments(state, _MOMENTS, group["state_block_size"],
                                                   group["state_min_size"],
                                                   seed=group["seed"]) as work:
                    self._step_group_fp32(group, [p], [g], [work])
            return
        self._step_group_fp32(group, params, grads, states)

    def _step_group_fp32(self, group: dict[str, Any], params: list[torch.Tensor],
                         grads: list[torch.Tensor], states: list[dict[str, Any]]) -> None:
        if group["rank"] is None:
            self._adamw_group(group, params, grads, states)
        else:
            self._projected_group(group, params, grads, states)

    @staticmethod
    def _adamw_group(group: dict[str, Any], params: list[torch.Tensor],
                     grads: list[torch.Tensor], states: list[dict[str, Any]]) -> None:
        """``torch.optim.AdamW(foreach=True)``'s step of a plain group (float32 moments)."""
        weights, fgrads, exp_avgs, exp_avg_sqs, steps, writeback = [], [], [], [], [], []
        for p, g, state in zip(params, grads, states, strict=True):
            if torch.is_complex(p):
                raise TypeError(f"p: complex parameters are not supported, got {p.dtype}")
            if "exp_avg" not in state:
                state["step"] = torch.tensor(0.0, dtype=torch.float32)
                state["exp_avg"] = torch.zeros_like(p, dtype=torch.float32,
                                                    memory_format=torch.preserve_format)
                state["exp_avg_sq"] = torch.zeros_like(state["exp_avg"])
            elif not isinstance(state["step"], torch.Tensor):  # an int step (older states)
                state["step"] = torch.tensor(float(state["step"]), dtype=torch.float32)
            if p.dtype == torch.float32 and g.dtype == torch.float32:
                weights.append(p)
                fgrads.append(g)
            else:
                w = p.float()
                weights.append(w)
                fgrads.append(g.float())
                writeback.append((p, w))
            exp_avgs.append(state["exp_avg"])
            exp_avg_sqs.append(state["exp_avg_sq"])
            steps.append(state["step"])
        beta1, beta2 = group["betas"]
        _torch_adamw(weights, fgrads, exp_avgs, exp_avg_sqs, [], steps, foreach=True,
                     capturable=False, differentiable=False, fused=None, grad_scale=None,
                     found_inf=None, has_complex=False, amsgrad=False, beta1=beta1,
                     beta2=beta2, lr=group["lr"], weight_decay=group["weight_decay"],
                     eps=group["eps"], maximize=False)
        for p, w in writeback:
            p.copy_(w)

    def _use_core_op(self, group: dict[str, Any], p: torch.Tensor, g: torch.Tensor) -> bool:
        backend = group["backend"]
        if backend == "torch" or (backend == "auto" and not p.is_cuda):
            return False
        return select_backend("projected_adam", backend, p, g) == "triton"

    def _projected_group(self, group: dict[str, Any], params: list[torch.Tensor],
                         grads: list[torch.Tensor], states: list[dict[str, Any]]) -> None:
        """GaLore / Fira steps of the weights of a projected group (see the module doc).

        With ``c = √(1 − β2ᵗ)`` and ``N' = M / (√V + c ε)``, the op's normalised update is
        ``N = N' c / (1 − β1ᵗ)``; ``lr c / (1 − β1ᵗ)`` is the step size of the fused
        ``addmm_`` on the weight (and cancels out of Fira's φ and ν).
        """
        lr, eps, wd = group["lr"], group["eps"], group["weight_decay"]
        beta1, beta2 = group["betas"]
        fira = group["fira"]
        backend = group["backend"]
        batch: list[_Item] = []
        for p, g, state in zip(params, grads, states, strict=True):
            if p.dim() > 2:  # Tucker projection of an N-d weight, one at a time
                self._tucker_step(p, g, group, state)
                continue
            P, side = self._projection(p, g, group, state)
            if fira and "fira_state" not in state:
                state["fira_state"] = torch.zeros((), dtype=torch.float32, device=p.device)
            t = state["step"] = state["step"] + 1
            if (backend == "triton" or (backend == "auto" and p.is_cuda)) and self._use_core_op(
                    group, p, g):
                _ensure_moments(state, _moment_shape(p.shape, side, group["rank"]), p.device)
                projected_adam(
                    p, g, P, state["exp_avg"], state["exp_avg_sq"], step=t, side=side, lr=lr,
                    beta1=beta1, beta2=beta2, eps=eps, weight_decay=wd, alpha=group["scale"],
                    fira_state=state["fira_state"] if fira else None,
                    fira_gamma=group["fira_gamma"], backend=group["backend"],
                )
                continue
            batch.append(_Item(p, g if g.dtype == torch.float32 else g.float(), P, side,
                               state, t))
        if not batch:
            return
        # weights of one shape and side are adjacent in the moment buffers ("runs")
        batch.sort(key=lambda b: (b.side, tuple(b.p.shape)))
        lay = self._layout(group, batch)
        scalars: dict[int, tuple[float, float]] = {}  # t -> (c, step size)
        for b, R in zip(batch, lay.Rs, strict=True):
            b.R = R
            if b.side == "left":
                torch.mm(b.P.T, b.g, out=R)
            else:
                torch.mm(b.g, b.P, out=R)
            cs = scalars.get(b.t)
            if cs is None:
                c = math.sqrt(1.0 - beta2**b.t)
                cs = scalars[b.t] = (c, lr * c / (1.0 - beta1**b.t))
            b.c, b.step_size = cs
        if lay.m_flat is not None and len(scalars) == 1:
            lay.m_flat.lerp_(lay.r_flat, 1.0 - beta1)
            lay.v_flat.mul_(beta2).addcmul_(lay.r_flat, lay.r_flat, value=1.0 - beta2)
            torch.sqrt(lay.v_flat, out=lay.n_flat).add_(batch[0].c * eps)
            torch.div(lay.m_flat, lay.n_flat, out=lay.n_flat)
            for b, N in zip(batch, lay.Ns, strict=True):
                b.N = N
            n_flat = lay.n_flat
        else:
            Ms, Vs, Rs = lay.Ms, lay.Vs, lay.Rs
            torch._foreach_lerp_(Ms, Rs, 1.0 - beta1)
            torch._foreach_mul_(Vs, beta2)
            torch._foreach_addcmul_(Vs, Rs, Rs, value=1.0 - beta2)
            denom = torch._foreach_sqrt(Vs)
            torch._foreach_add_(denom, [b.c * eps for b in batch])
            for b, N in zip(batch, torch._foreach_div(Ms, denom), strict=True):
                b.N = N
            n_flat = None
        r_flat = lay.r_flat
        alpha = group["scale"]
        if fira and group["quant_bits"] is None:
            self._fira_terms(batch, r_flat, n_flat, alpha, group["fira_gamma"])
        decay = 1.0 - lr * wd
        for b in batch:
            w = b.p if b.p.dtype == torch.float32 else b.p.float()
            X, scale = (b.X, 1.0) if b.X is not None else (b.N, alpha)
            if b.side == "left":
                w.addmm_(b.P, X, beta=decay, alpha=-b.step_size * scale)
            else:
                w.addmm_(X, b.P.T, beta=decay, alpha=-b.step_size * scale)
            if b.sphi is not None:
                w.addcmul_(b.g, b.sphi, value=-b.step_size)
            elif fira:
                self._fira_residual(w, b.g, b.P, b.side, b.R, b.N, b.state["fira_state"],
                                    b.step_size, group["fira_gamma"])
            if w is not b.p:
                b.p.copy_(w)

    @staticmethod
    def _tucker_step(p: torch.Tensor, g: torch.Tensor, group: dict[str, Any],
                     state: dict[str, Any]) -> None:
        proj = TuckerProjector.from_group(group, p.shape, state.get("projector"))
        state["projector"] = proj.state
        w = p if p.dtype == torch.float32 else p.float()
        tucker_projected_step(w, g.float(), proj, state, lr=group["lr"], betas=group["betas"],
                              eps=group["eps"], weight_decay=group["weight_decay"],
                              reproject_moments=group["reproject_moments"])
        if w is not p:
            p.copy_(w)

    @staticmethod
    def _fira_terms(batch: list[_Item], r_flat: torch.Tensor, n_flat: torch.Tensor | None,
                    alpha: float, gamma: float) -> None:
        """Fira with an orthonormal basis, batched over runs of same-shape weights.

        The update ``α back(N') + s φ' ⊙ (G − back(R))`` is written
        ``back(α N' − s φ' ⊙ R) + s φ' ⊙ G`` (φ' scales the vectors of the kept dimension,
        so it commutes with ``back``): sets ``b.X = α N' − s φ' ⊙ R`` (back-projected by the
        weight's ``addmm_``) and ``b.sphi = s φ'`` (broadcast over G). The residual norm
        needs no ``[m, n]`` residual either: for an orthonormal ``P``,
        ``‖S_j‖² = ‖g_j‖² − ‖R_j‖²`` per kept vector ``j``, so
        ``ν² = Σ_j φ'_j² (‖g_j‖² − ‖R_j‖²)``; the limiter runs once over all weights.
        """
        runs: list[list[_Item]] = []
        for b in batch:
            if n_flat is not None and runs and (runs[-1][0].side, runs[-1][0].p.shape) == (
                    b.side, b.p.shape):
                runs[-1].append(b)
            else:
                runs.append([b])
        nus, run_views = [], []
        for run in runs:
            k, first = len(run), run[0]
            left = first.side == "left"
            if k == 1:
                R3, N3 = first.R.unsqueeze(0), first.N.unsqueeze(0)
            else:  # adjacent views of one buffer
                start = first.R.storage_offset() - r_flat.storage_offset()
                count = k * first.R.numel()
                R3 = r_flat[start:start + count].view(k, *first.R.shape)
                N3 = n_flat[start:start + count].view(k, *first.N.shape)
            rank_dim = 1 if left else 2
            rn2 = _sq_norms(R3, rank_dim)  # [k, kept]
            phi = _sq_norms(N3, rank_dim).sqrt_().div_(rn2.sqrt().add_(_FIRA_TINY))
            gn2 = torch.stack([_sq_norms(b.g, 0 if left else 1) for b in run])
            res2 = gn2.sub_(rn2).clamp_(min=0.0)
            nus.append(phi.square().mul_(res2).sum(dim=1).sqrt_())
            run_views.append((run, R3, N3, phi))
        nu = torch.cat(nus) if len(nus) > 1 else nus[0]
        fira_states = [b.state["fira_state"] for run in runs for b in run]
        scale = fira_limiter_scale(nu, torch.stack(fira_states), gamma)
        torch._foreach_copy_(fira_states, list((nu * scale).unbind(0)))
        offset = 0
        for run, R3, N3, phi in run_views:
            k = len(run)
            left = run[0].side == "left"
            sphi = phi.mul_(scale[offset:offset + k, None])  # [k, kept]
            offset += k
            sphi3 = sphi[:, None, :] if left else sphi[:, :, None]
            X3 = torch.addcmul(N3 * alpha, R3, sphi3, value=-1.0)
            for i, b in enumerate(run):
                b.X = X3[i]
                b.sphi = sphi3[i]

    @staticmethod
    def _fira_residual(w: torch.Tensor, g: torch.Tensor, P: torch.Tensor, side: str,
                       R: torch.Tensor, N: torch.Tensor, fira_state: torch.Tensor,
                       step_size: float, gamma: float) -> None:
        """Fira's term for any basis (used for quantised ones, which are not orthonormal):
        ``w ← w − step_size · s · φ' ⊙ S`` with the explicit residual ``S = G − back(R)``.

        ``N`` is ``N' = M / (√V + c ε)`` and ``step_size = lr c / (1 − β1ᵗ)``; with the op's
        ``φ = φ' c / (1 − β1ᵗ)`` its ``ν = ‖φ ⊙ S‖ (1 − β1ᵗ) / c`` is ``‖φ' ⊙ S‖``.
        """
        left = side == "left"
        rank_dim = 0 if left else 1
        phi = _sq_norms(N, rank_dim).sqrt_()
        phi.div_(_sq_norms(R, rank_dim).sqrt_().add_(_FIRA_TINY))
        S = torch.addmm(g, P, R, alpha=-1.0) if left else torch.addmm(g, R, P.T, alpha=-1.0)
        S.mul_(phi[None, :] if left else phi[:, None])
        nu = torch.linalg.vector_norm(S)
        scale = fira_limiter_scale(nu, fira_state, gamma)
        fira_state.copy_(nu * scale)
        w.addcmul_(S, scale, value=-step_size)

    def _layout(self, group: dict[str, Any], batch: list[_Item]) -> _Layout:
        """The moments of the batch (allocated if missing) and the step's work buffers.

        When the batch is the whole group (on one device), the moments of all its weights
        are views into two contiguous buffers (``M`` and ``V``), in batch order, so that
        the element-wise moment update is one kernel per operation instead of one per
        weight; the ``state`` dicts still hold one plain tensor per weight (views of the
        buffers; ``torch.save`` stores the shared buffer once). Moments that are not laid
        out so (first step, after ``load_state_dict``) are copied into new buffers once.
        The layout, with two work buffers of the same size for ``R`` and ``N'``, is kept
        (not in the state) and reused while the states hold the same moment tensors.
        Otherwise ``R`` gets a fresh buffer and the moments are updated as lists.
        """
        states = [b.state for b in batch]
        device = batch[0].p.device
        whole = (len(batch) == len(group["params"]) and group["state_bits"] is None
                 and all(b.p.device == device for b in batch))
        shapes = [_moment_shape(b.p.shape, b.side, group["rank"]) for b in batch]
        sizes = [math.prod(s) for s in shapes]
        if not whole:
            for b, shape in zip(batch, shapes, strict=True):
                _ensure_moments(b.state, shape, b.p.device)
            r_flat = torch.empty(sum(sizes), dtype=torch.float32, device=device)
            return _Layout([s["exp_avg"] for s in states], [s["exp_avg_sq"] for s in states],
                           _views(r_flat, shapes, sizes), r_flat)
        lay = self._flat_layouts.get(id(group))
        if (lay is not None and len(lay.Ms) == len(states)
                and all(s.get("exp_avg") is m and s.get("exp_avg_sq") is v
                        for s, m, v in zip(states, lay.Ms, lay.Vs, strict=True))):
            return lay
        flats = {}
        for key in _MOMENTS:
            flat = flats[key] = torch.zeros(sum(sizes), dtype=torch.float32, device=device)
            for state, view in zip(states, _views(flat, shapes, sizes), strict=True):
                if key in state:
                    view.copy_(state[key])
                state[key] = view
        r_flat = torch.empty_like(flats["exp_avg"])
        n_flat = torch.empty_like(flats["exp_avg"])
        lay = self._flat_layouts[id(group)] = _Layout(
            [s["exp_avg"] for s in states], [s["exp_avg_sq"] for s in states],
            _views(r_flat, shapes, sizes), r_flat, flats["exp_avg"], flats["exp_avg_sq"],
            _views(n_flat, shapes, sizes), n_flat)
        return lay

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Load a state dict; keeps the saved dtypes (float32 moments, int codes)."""
        self._flat_layouts.clear()
        super().load_state_dict(state_dict)

    # ---------------------------------------------------------- re-projection
    def _reproject_state(self, state: dict[str, Any], side: str, old: torch.Tensor,
                         new: torch.Tensor, group: dict[str, Any]) -> None:
        if "exp_avg" in state:
            self._reproject(state, side, old, new)

    @staticmethod
    def _reproject(state: dict, side: str, old: torch.Tensor, new: torch.Tensor) -> None:
        """``M ← C M``, ``V ← (C∘C) V`` (left; right: ``M Cᵀ``, ``V (C∘C)ᵀ``), ``C = newᵀ old``."""
        C = new.T @ old  # [r, r]: new coordinates of the old basis vectors
        C2 = C * C
        M, V = state["exp_avg"], state["exp_avg_sq"]
        if side == "left":
            M.copy_(C @ M)
            V.copy_(C2 @ V)
        else:
            M.copy_(M @ C.T)
            V.copy_(V @ C2.T)




class _Item:
    """One weight of a projected group during a step (working values, not state)."""

    __slots__ = ("N", "P", "R", "X", "c", "g", "p", "side", "sphi", "state", "step_size", "t")

    def __init__(self, p: torch.Tensor, g: torch.Tensor, P: torch.Tensor, side: str,
                 state: dict[str, Any], t: int) -> None:
        self.p, self.g, self.P, self.side, self.state, self.t = p, g, P, side, state, t
        self.X: torch.Tensor | None = None
        self.sphi: torch.Tensor | None = None



class _Layout:
    """Moments and work buffers of a projected group's step (see ``GaLoreAdamW._layout``)."""

    __slots__ = ("Ms", "Ns", "Rs", "Vs", "m_flat", "n_flat", "r_flat", "v_flat")

    def __init__(self, Ms: list[torch.Tensor], Vs: list[torch.Tensor], Rs: list[torch.Tensor],
                 r_flat: torch.Tensor, m_flat: torch.Tensor | None = None,
                 v_flat: torch.Tensor | None = None, Ns: list[torch.Tensor] | None = None,
                 n_flat: torch.Tensor | None = None) -> None:
        self.Ms, self.Vs, self.Rs, self.r_flat = Ms, Vs, Rs, r_flat
        self.m_flat, self.v_flat, self.Ns, self.n_flat = m_flat, v_flat, Ns, n_flat


def _views(flat: torch.Tensor, shapes: list[tuple[int, int]], sizes: list[int]
           ) -> list[torch.Tensor]:
    return [x.view(s) for x, s in zip(flat.split(sizes), shapes, strict=True)]


def _sq_norms(x: torch.Tensor, dim: int) -> torch.Tensor:
    """Squared 2-norms of ``x`` along ``dim`` (``vector_norm`` is slow along a non-last
    dimension on CPU, a square-and-sum is not)."""
    if dim in (-1, x.dim() - 1):
        return torch.linalg.vector_norm(x, dim=dim).square_()
    return x.square().sum(dim=dim)


def _moment_shape(shape: torch.Size, side: str, rank: int) -> tuple[int, int]:
    """Shape of the projected gradient of an ``[m, n]`` weight: ``[r, n]`` / ``[m, r]``."""
    m, n = shape
    return (rank, n) if side == "left" else (m, rank)


def _ensure_moments(state: dict[str, Any], shape: tuple[int, int], device: torch.device
                    ) -> None:
    if "exp_avg" not in state:
        state["exp_avg"] = torch.zeros(shape, dtype=torch.float32, device=device)
        state["exp_avg_sq"] = torch.zeros_like(state["exp_avg"])


class GaLoreAdamW8bit(GaLoreAdamW):
    """:class:`GaLoreAdamW` with 8-bit block-wise quantised moments (``state_bits=8``).

    Same arguments as :class:`GaLoreAdamW`; ``state_bits`` defaults to 8 (a group may still
    set ``state_bits=None``). See :mod:`subspace_peft.optim.blockwise` for the format.
    """

    def __init__(self, params, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, weight_decay: float = 0.0, **galore_defaults: Any) -> None:
        galore_defaults.setdefault("state_bits", 8)
        super().__init__(params, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay,
                         **galore_defaults)
