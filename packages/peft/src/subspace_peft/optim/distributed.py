"""FSDP2 (``torch.distributed.fsdp.fully_shard``) / DTensor support for ``GaLoreAdamW``.

Under FSDP2 every parameter is a ``DTensor`` (``Shard(0)`` over the data-parallel mesh) and
so is its gradient, already averaged over the ranks (reduce-scatter). Element-wise AdamW
(groups without ``"rank"``) runs on DTensors as it is: the moments become DTensors sharded
like the parameter and nothing is communicated. A projected (GaLore/Fira) step is not
element-wise: the refresh needs the singular vectors of the whole gradient and the
projection mixes rows or columns. This module gives two ways to take that step:

``mode="gather"`` (:func:`full_param`): all-gather the weight and its gradient, run the
    optimizer's own single-process step (``_step_param``: the batched CPU path or the
    fused ``projected_adam`` op) on the full plain tensors, write this rank's shard of the
    result back. Every
    rank computes the identical step from identical inputs, so the GaLore state (basis,
    ``[m, r]``/``[r, n]`` moments, Fira norm) is a full plain tensor, replicated and
    identical on every rank, and laid out exactly as in a single-process run. Works for
    any mesh whose placements are ``Shard``/``Replicate``. Cost per projected weight and
    step: two all-gathers of ``m × n`` and, transiently, the full weight and gradient plus
    the op's full-size float32 temporaries (see *Memory* below).

``mode="sharded"`` (:func:`sharded_projected_step`): for a ``Shard(0)`` weight on a 1-D mesh
    (plain FSDP2), rank ``k`` holding rows ``W_k [m_k, n]``:

    * right side (``P [n, r]``, ``R = G P``): ``R_k = G_k P`` is local, the moments
      ``[m, r]`` are sharded by rows like ``W`` (kept as ``Shard(0)`` DTensors) and the
      update ``N_k Pᵀ`` is local: no communication;
    * left side (``P [m, r]``, ``R = Pᵀ G``): ``R = Σ_k P_kᵀ G_k`` is one all-reduce of an
      ``[r, n]`` matrix, the ``[r, n]`` moments are replicated, the update ``P_k N`` local;
    * Fira: the residual ``G_k − back(R)_k`` and its scaling are local; its global norm is
      one scalar all-reduce;
    * refresh (every ``update_proj_gap`` steps): the gradient, not the weight, is gathered
      and the projector's own refresh runs on it (the single-process refresh, identical
      on every rank); the moments are re-projected by the optimizer's
      ``_reproject_state`` on this rank's rows (right) or the replicated ``[r, n]`` (left).

    The maths is that of ``subspace_core.ops.projected_adam.projected_adam_ref``, arranged
    as ``GaLoreAdamW``'s batched CPU path (the update and weight decay in one in-place
    ``addmm_``); pure PyTorch, the Triton kernel is not used on this path.

Memory: weights are stepped one at a time, so the transient peak is set by the largest
projected weight ``[m, n]``, not by the model. Measured (CPU allocator events of the torch
profiler during ``optimizer.step()``, one float32 ``[1024, 512]`` or ``[512, 1024]`` weight
= 2 MiB, rank 32, 2 ranks; per rank; MiB)::

                         plain step   plain step, Fira   refresh step
    single process          0.38           2.4               3.5
    mode="gather"           6.0            6.4               7.5
    mode="sharded"          0.19-0.38      1.1-1.3           5.5

The gather mode holds the gathered weight and gradient plus DTensor's all-gather buffer
(~3 × the full weight) at every step, whatever the world size. The sharded mode's
per-step temporaries are GaLore-sized (``R``, ``N``) plus, with Fira, one shard-sized
residual (``m n / w`` float32); at a refresh it holds the gathered gradient (one full
weight) on top of the refresh's own work space (the single-process refresh column).

Integration in ``SubspaceOptimizer.step()``: plain groups need nothing (their batched
``torch.optim.adamw`` step runs on DTensors); a projected DTensor parameter is stepped on its
own, in the loop that collects the group's parameters::

    if group["rank"] is not None and is_dtensor(p):
        step_dtensor_param(self, p, group, self.state[p])
        continue

The mode is the group option ``dtensor_mode`` (``"gather"`` when the group has no such key),
or the ``mode`` argument of :func:`step_dtensor_param`.

This module imports ``torch.distributed.tensor`` lazily: :func:`is_dtensor` is free when
DTensor was never imported (then nothing can be a DTensor).
"""

from __future__ import annotations

import math
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import torch

__all__ = [
    "MODES",
    "full_param",
    "is_dtensor",
    "local_shard",
    "local_slices",
    "sharded_projected_step",
    "step_dtensor_param",
]

#: Ways :func:`step_dtensor_param` takes a projected step of a DTensor parameter.
MODES = ("gather", "sharded")

_FIRA_TINY = 1e-8  # as in subspace_core.ops.projected_adam.reference


def is_dtensor(t: object) -> bool:
    """Whether ``t`` is a ``torch.distributed.tensor.DTensor`` (an FSDP2 parameter/gradient).

    Does not import DTensor (slow: it pulls in sympy): if it was never imported, no tensor
    can be one.
    """
    module = sys.modules.get("torch.distributed.tensor")
    return module is not None and isinstance(t, module.DTensor)


def _require_dtensor(name: str, t: object) -> None:
    if not is_dtensor(t):
        raise TypeError(f"{name}: expected a DTensor (e.g. a parameter sharded by FSDP2's "
                        f"fully_shard), got {type(t).__name__}")


def local_slices(global_shape: tuple[int, ...] | torch.Size, mesh, placements
                 ) -> tuple[slice, ...]:
    """This rank's index range, per dimension, of a tensor of ``global_shape``.

    ``placements`` (one per mesh dimension) may be ``Shard(d)`` or ``Replicate()``;
    ``Shard`` follows DTensor's (and FSDP2's) ``torch.chunk`` convention: chunks of
    ``ceil(size / ranks)``, the last ones shorter or empty. Several ``Shard`` on the same
    dimension split it left to right. Raises ValueError for ``Partial`` or any other
    placement (e.g. the strided shards of FSDP2 combined with tensor parallelism).
    """
    from torch.distributed.tensor import Replicate, Shard

    coord = mesh.get_coordinate()
    if coord is None:
        raise ValueError("mesh: this rank is not part of the parameter's device mesh")
    bounds = [[0, int(s)] for s in global_shape]
    for dim, placement in enumerate(placements):
        if isinstance(placement, Replicate):
            continue
        if type(placement) is not Shard:  # _StridedShard subclasses Shard: refuse it too
            raise ValueError(f"placements: mesh dimension {dim} has {placement!r}; only "
                             "Shard(d) and Replicate() are supported")
        d = placement.dim if placement.dim >= 0 else placement.dim + len(global_shape)
        start, stop = bounds[d]
        size, ranks = stop - start, mesh.size(dim)
        chunk = -(-size // ranks) if size else 0
        lo = min(coord[dim] * chunk, size)
        hi = min(lo + chunk, size)
        bounds[d] = [start + lo, start + hi]
    return tuple(slice(lo, hi) for lo, hi in bounds)


def local_shard(full: torch.Tensor, like) -> torch.Tensor:
    """This rank's piece of the plain tensor ``full``, laid out as the DTensor ``like``.

    ``full`` has ``like``'s global shape; the result is a view of ``full`` with the shape of
    ``like.to_local()`` (checked: a mismatch raises RuntimeError rather than writing a
    wrong slice).
    """
    _require_dtensor("like", like)
    if tuple(full.shape) != tuple(like.shape):
        raise ValueError(f"full: expected the global shape {tuple(like.shape)}, got "
                         f"{tuple(full.shape)}")
    piece = full[local_slices(like.shape, like.device_mesh, like.placements)]
    local = like.to_local()
    if piece.shape != local.shape:
        raise RuntimeError(
            f"local_shard: computed a local shard of shape {tuple(piece.shape)} for "
            f"placements {like.placements}, but this rank holds {tuple(local.shape)}; "
            "the tensor is not sharded with torch.chunk's convention"
        )
    return piece


@contextmanager
def full_param(p) -> Iterator[torch.Tensor]:
    """Gather a DTensor parameter into a plain full tensor; write this rank's shard back.

    Yields a plain tensor with ``p``'s global shape and dtype whose ``.grad`` is the full
    gradient (both all-gathered; a ``Partial`` gradient is all-reduced). Update it in
    place (e.g. with the single-process optimizer step); on a normal exit this rank's
    shard of it is copied into ``p``'s local tensor. On an exception nothing is written.
    Collective: every rank of ``p``'s mesh must enter it for the same parameters in the
    same order.

    Raises TypeError if ``p`` or its gradient is not a DTensor, ValueError if ``p`` has no
    gradient or a placement other than ``Shard``/``Replicate``.
    """
    _require_dtensor("p", p)
    if p.grad is None:
        raise ValueError("p: has no gradient (.grad is None); nothing to step")
    _require_dtensor("p.grad", p.grad)
    local_slices(p.shape, p.device_mesh, p.placements)  # validate before communicating
    with torch.no_grad():
        full = p.full_tensor()
        full.grad = p.grad.full_tensor()
    yield full
    with torch.no_grad():
        p.to_local().copy_(local_shard(full, p))
    full.grad = None


def step_dtensor_param(
    optimizer,
    p,
    group: dict[str, Any],
    state: dict[str, Any],
    *,
    mode: str | None = None,
    step_fn: Callable[[torch.Tensor, dict[str, Any], dict[str, Any]], None] | None = None,
) -> None:
    """One optimizer step of the DTensor parameter ``p`` (``state`` is ``optimizer.state[p]``).

    * plain group (``group["rank"] is None``): ``step_fn`` on ``p`` itself — element-wise
      AdamW runs on DTensors, its moments become DTensors sharded like ``p``;
    * projected group, mode ``"gather"``: ``step_fn`` on the gathered full tensor
      (:func:`full_param`), GaLore state replicated as full plain tensors;
    * projected group, mode ``"sharded"``: :func:`sharded_projected_step`.

    ``mode`` defaults to the group's ``dtensor_mode`` option, else ``"gather"``.
    ``step_fn(tensor, group, state)`` takes the step of a tensor whose ``.grad`` is set
    (default: ``optimizer._step_param``). Collective for projected groups: every rank
    must call it for the same parameters in the same order.
    """
    if mode is None:
        mode = group.get("dtensor_mode", "gather")
    if mode not in MODES:
        raise ValueError(f"mode: expected one of {MODES}, got {mode!r}")
    if step_fn is None:
        step_fn = getattr(optimizer, "_step_param", None)
        if step_fn is None:
            raise TypeError(f"optimizer: {type(optimizer).__name__} has no _step_param(p, "
                            "group, state); pass step_fn")
    if group["rank"] is None:
        step_fn(p, group, state)
    elif mode == "sharded":
        sharded_projected_step(optimizer, p, group, state)
    else:
        with full_param(p) as full:
            step_fn(full, group, state)


def _check_sharded(p) -> None:
    from torch.distributed.tensor import Shard

    _require_dtensor("p", p)
    if (p.device_mesh.ndim != 1 or len(p.placements) != 1 or type(p.placements[0]) is not Shard
            or p.placements[0].dim not in (0, -2)):
        raise NotImplementedError(
            f"sharded_projected_step: supports a 2-D weight sharded Shard(0) over a 1-D mesh "
            f"(plain FSDP2); got placements {p.placements} on a {p.device_mesh.ndim}-D mesh. "
            "Use mode='gather' (full_param), which handles any Shard/Replicate layout."
        )
    if p.grad is None:
        raise ValueError("p: has no gradient (.grad is None); nothing to step")
    _require_dtensor("p.grad", p.grad)
    if tuple(p.grad.placements) != tuple(p.placements):
        raise NotImplementedError(f"sharded_projected_step: the gradient's placements "
                                  f"{p.grad.placements} differ from the weight's {p.placements}")


def _all_reduce(t: torch.Tensor, mesh) -> torch.Tensor:
    import torch.distributed as dist

    dist.all_reduce(t, op=dist.ReduceOp.SUM, group=mesh.get_group(0))
    return t


def sharded_projected_step(optimizer, p, group: dict[str, Any], state: dict[str, Any]) -> None:
    """A GaLore/Fira AdamW step of a ``Shard(0)`` DTensor weight without gathering it.

    Same maths, schedule and refresh as ``GaLoreAdamW``'s projected step (see the module
    docstring for what is communicated). ``state`` is ``optimizer.state[p]``; it holds the
    replicated projector state (basis etc.), ``step``, the Fira norm, and the moments:
    ``Shard(0)`` DTensors of global shape ``[m, r]`` for the right side, replicated plain
    ``[r, n]`` tensors for the left side. The gather mode keeps full plain moments
    instead, so do not switch modes within a run. Collective over ``p``'s mesh.

    Raises NotImplementedError for other layouts (use ``mode="gather"``).
    """
    from torch.distributed.tensor import DTensor

    from subspace_core.ops.projected_adam.reference import fira_limiter_scale
    from subspace_peft.optim.galore import GaLoreAdamW

    _check_sharded(p)
    if not isinstance(optimizer, GaLoreAdamW):
        raise NotImplementedError(f"sharded_projected_step: implements GaLoreAdamW's step, got "
                                  f"{type(optimizer).__name__}; use mode='gather'")
    if group.get("state_bits") is not None:
        raise NotImplementedError("sharded_projected_step: 8-bit moments (state_bits) are "
                                  "not supported; use mode='gather'")
    mesh = p.device_mesh
    m, n = p.shape
    r = group["rank"]
    W, G = p.to_local(), p.grad.to_local()
    rows = local_slices(p.shape, mesh, p.placements)[0]
    if "projector" not in state:
        state["step"] = 0
        state["projector"] = optimizer._projector(group, p.shape, None).state
    proj = optimizer._projector(group, p.shape, state["projector"])
    left = proj.side == "left"
    t = state["step"]

    def moments() -> tuple[torch.Tensor, torch.Tensor]:
        M, V = state["exp_avg"], state["exp_avg_sq"]
        return (M.to_local(), V.to_local()) if is_dtensor(M) else (M, V)

    if proj.due(t):
        with torch.no_grad():
            G_full = p.grad.full_tensor()
        old, new = proj.refresh(G_full, t)
        del G_full
        if old is not None and group["reproject_moments"] and "exp_avg" in state:
            M, V = moments()  # this rank's rows (right side) or the replicated [r, n]
            optimizer._reproject_state({"exp_avg": M, "exp_avg_sq": V}, proj.side,
                                       old.to(W.device), new.to(W.device), group)
    if "exp_avg" not in state:
        if left:
            state["exp_avg"] = torch.zeros((r, n), dtype=torch.float32, device=W.device)
            state["exp_avg_sq"] = torch.zeros_like(state["exp_avg"])
        else:
            for key in ("exp_avg", "exp_avg_sq"):
                local = torch.zeros((W.shape[0], r), dtype=torch.float32, device=W.device)
                state[key] = DTensor.from_local(local, mesh, p.placements, run_check=False,
                                                shape=torch.Size((m, r)), stride=(r, 1))
    if group["fira"] and "fira_state" not in state:
        state["fira_state"] = torch.zeros((), dtype=torch.float32, device=W.device)
    state["step"] = t = t + 1
    M, V = moments()
    beta1, beta2 = group["betas"]
    P = proj.basis().to(W.device)
    g = G.float()
    if left:
        Pk = P[rows]  # this rank's rows of the basis
        R = _all_reduce(Pk.T @ g, mesh)  # [r, n] = Pᵀ G, summed over the row shards
    else:
        R = g @ P  # [m_k, r]: this rank's rows of G P
    M.lerp_(R, 1.0 - beta1)
    V.mul_(beta2).addcmul_(R, R, value=1.0 - beta2)
    bc1 = 1.0 - beta1**t
    sqrt_bc2 = math.sqrt(1.0 - beta2**t)
    # N' = M / (√V / √bc2 + ε) = bc1 · N; the 1 / bc1 goes into the step sizes
    N = M / (V.sqrt().div_(sqrt_bc2).add_(group["eps"]))
    lr, decay = group["lr"], 1.0 - group["lr"] * group["weight_decay"]
    w = W if W.dtype == torch.float32 else W.float()
    # W ← decay · W − lr · α · back(N), in place (no weight-sized temporary)
    if left:
        w.addmm_(Pk, N, beta=decay, alpha=-lr * group["scale"] / bc1)
    else:
        w.addmm_(N, P.T, beta=decay, alpha=-lr * group["scale"] / bc1)
    if group["fira"]:
        # S = φ ⊙ (G − back(R)) for this rank's rows; ν needs the norm over all rows
        S = torch.addmm(g, Pk, R, alpha=-1.0) if left else torch.addmm(g, R, P.T, alpha=-1.0)
        rank_dim = 0 if left else 1
        phi = torch.linalg.vector_norm(N, dim=rank_dim)
        phi.div_(torch.linalg.vector_norm(R, dim=rank_dim).add_(_FIRA_TINY))
        S.mul_(phi[None, :] if left else phi[:, None])
        local_sq = torch.linalg.vector_norm(S).square().reshape(1)
        nu = _all_reduce(local_sq, mesh)[0].sqrt().div_(sqrt_bc2)
        fira_state = state["fira_state"]
        s = fira_limiter_scale(nu, fira_state, group["fira_gamma"])
        fira_state.copy_(nu * s)
        w.addcmul_(S, s, value=-lr / bc1)
    if w is not W:
        W.copy_(w)
