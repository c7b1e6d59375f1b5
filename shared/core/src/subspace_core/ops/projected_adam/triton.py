"""Triton backend of ``projected_adam`` (imported lazily, only when this backend is chosen).

One step is one cuBLAS matmul and two Triton launches (three, plus a few scalar torch ops
for the limiter, with Fira); the maths is in ``reference.py``::

    R = project(G)                   torch.mm, float32 output               [r, n] / [m, r]
    _adam_moments_kernel             M, V ← moments; N = m̂/(√v̂+ε); φ     one pass over R, M, V
    _backproject_kernel (NORM)       Σ (φ ⊙ (G − back(R)))² per tile       Fira only
    _backproject_kernel (UPDATE)     W ← W(1 − lr wd) − lr(α back(N) + s φ ⊙ (G − back(R)))

What is fused and why:

* The back-projection is fused with the weight update. At 4096 × 4096, rank 128 the step
  is dominated by the ``m × n`` traffic (read W, write W; for Fira also read G), while the
  rank-r products cost little. The kernel computes each ``[BM, BN]`` tile of ``back(N)``
  (and, for Fira, of ``back(R)``) with ``tl.dot`` over r in registers, reads the W (and G)
  tile once and writes W once, in its own dtype. The reference instead materialises
  ``back(N)``, the residual, its scaled copy and a float32 W in memory.
* The Adam moment update, bias correction, normalisation and Fira's per-vector norms
  ``‖N_j‖``, ``‖R_j‖`` are one elementwise pass (the part between the two matmuls).
* The projection ``R = project(G)`` stays a cuBLAS matmul: it is a long (K = m or n)
  reduction into a small ``r × n`` output, which cuBLAS splits across SMs well; fusing
  the Adam step into its epilogue would need the whole reduction per tile (no split-K) and
  would save only the float32 round trips of R and N (~5 % of the step's bytes at
  4096 × 4096, rank 128, bf16); not worth losing cuBLAS for, without a GPU to measure it.
* Fira's limiter needs the global norm ‖φ ⊙ S‖ before any W tile is written, so Fira runs
  the back-projection kernel twice: first in NORM mode (per-tile partial sums, reduced by
  torch, deterministic), then in UPDATE mode with the limiter factor read from device
  memory (no host synchronisation anywhere in the step).

Precision: everything is upcast to float32 after loading (bf16 must never be computed in
the Triton interpreter). The rank-r products use IEEE float32 ``tl.dot`` for float32
weights (matching the reference) and TF32 for float16/bfloat16 weights, whose own rounding
is coarser than TF32's. For float16/bfloat16 ``G`` with ``P`` of the same dtype on CUDA the
projection runs on tensor cores with a float32 result (``torch.mm(..., out_dtype=float32)``).

The whole step is registered as the custom op ``subzoo::projected_adam`` (mutating ``W``,
``M``, ``V`` and ``fira_state``, returning nothing) with a fake implementation, so
``torch.compile`` traces it as one opaque node. It has no autograd formula.
"""

import math

import torch
import triton
import triton.language as tl

from subspace_core.ops.projected_adam.reference import (
    FIRA_GAMMA,
    bias_corrections,
    fira_limiter_scale,
)

__all__ = ["projected_adam_triton"]

_LOW_PRECISION = (torch.float16, torch.bfloat16)


@triton.jit
def _adam_moments_kernel(
    R_ptr, M_ptr, V_ptr, N_ptr, phi_ptr,
    n_vec, rank,
    stride_rk, stride_rv,  # R and N (both made by us, same layout)
    stride_mk, stride_mv,
    stride_vk, stride_vv,
    beta1, beta2, bc1, bc2, eps,
    FIRA: tl.constexpr,
    BLOCK_K: tl.constexpr,
    BLOCK_V: tl.constexpr,
):
    """Adam moments and the normalised update of the projected gradient, in place.

    The ``[r, n]`` (left) or ``[m, r]`` (right) tensors are addressed as (k, v): k runs
    over the rank, v over the kept dimension, through the strides, so one kernel serves
    both sides. Each program owns BLOCK_V whole vectors (all r entries), which lets it
    finish Fira's per-vector norms φ_v = ‖N_v‖ / (‖R_v‖ + 1e-8) without a second pass.
    """
    pid = tl.program_id(0)
    offs_v = pid * BLOCK_V + tl.arange(0, BLOCK_V)
    mask_v = offs_v < n_vec
    n_sq = tl.zeros([BLOCK_V], dtype=tl.float32)
    r_sq = tl.zeros([BLOCK_V], dtype=tl.float32)
    for k0 in range(0, rank, BLOCK_K):
        offs_k = k0 + tl.arange(0, BLOCK_K)
        mask = (offs_k < rank)[:, None] & mask_v[None, :]
        r_off = offs_k[:, None] * stride_rk + offs_v[None, :] * stride_rv
        m_off = offs_k[:, None] * stride_mk + offs_v[None, :] * stride_mv
        v_off = offs_k[:, None] * stride_vk + offs_v[None, :] * stride_vv
        # Masked lanes load 0 everywhere, so they contribute 0/(0+eps) = 0 to the sums.
        grad = tl.load(R_ptr + r_off, mask=mask, other=0.0)
        mom1 = tl.load(M_ptr + m_off, mask=mask, other=0.0)
        mom2 = tl.load(V_ptr + v_off, mask=mask, other=0.0)
        # Same association as the reference's M.mul_(β1).add_(R, alpha=1-β1) (and V's).
        mom1 = mom1 * beta1 + (1.0 - beta1) * grad
        mom2 = mom2 * beta2 + (1.0 - beta2) * (grad * grad)
        tl.store(M_ptr + m_off, mom1, mask=mask)
        tl.store(V_ptr + v_off, mom2, mask=mask)
        # IEEE sqrt/div (not the fast approximations) so float32 matches the reference.
        upd = tl.div_rn(mom1 / bc1, tl.sqrt_rn(mom2 / bc2) + eps)
        tl.store(N_ptr + r_off, upd, mask=mask)
        if FIRA:
            n_sq += tl.sum(upd * upd, axis=0)
            r_sq += tl.sum(grad * grad, axis=0)
    if FIRA:
        phi = tl.sqrt_rn(n_sq) / (tl.sqrt_rn(r_sq) + 1e-8)
        tl.store(phi_ptr + offs_v, phi, mask=mask_v)


@triton.jit
def _backproject_kernel(
    W_ptr, G_ptr, P_ptr, N_ptr, R_ptr, phi_ptr, scale_ptr, partial_ptr,
    m, n, rank,
    stride_wm, stride_wn,
    stride_gm, stride_gn,
    stride_p0, stride_p1,
    stride_c0, stride_c1,  # N and R (same layout)
    lr, alpha, decay,
    LEFT: tl.constexpr,
    FIRA: tl.constexpr,
    NORM_ONLY: tl.constexpr,
    DOT_PRECISION: tl.constexpr,
    BM: tl.constexpr,
    BN: tl.constexpr,
    BK: tl.constexpr,
):
    """One ``[BM, BN]`` tile of W: back-project N (and R for Fira) and update W in place.

    LEFT: back(X) = P X with P ``[m, r]`` and X ``[r, n]``; RIGHT: back(X) = X Pᵀ with
    X ``[m, r]`` and P ``[n, r]`` read transposed through its strides. The basis tile is
    loaded once per k-block and shared by both products (N and R).

    NORM_ONLY (Fira's first pass) writes this tile's Σ (φ ⊙ S)² to ``partial_ptr`` and
    leaves W alone; otherwise W ← W·decay − lr·(α back(N) + s φ ⊙ S), s read from
    ``scale_ptr`` (the limiter factor computed between the passes).
    """
    pid_m = tl.program_id(0)
    pid_n = tl.program_id(1)
    offs_m = pid_m * BM + tl.arange(0, BM)
    offs_n = pid_n * BN + tl.arange(0, BN)
    mask_m = offs_m < m
    mask_n = offs_n < n
    upd = tl.zeros([BM, BN], dtype=tl.float32)
    proj = tl.zeros([BM, BN], dtype=tl.float32)
    for k0 in range(0, rank, BK):
        offs_k = k0 + tl.arange(0, BK)
        mask_k = offs_k < rank
        # Zero-filled out-of-range rows/cols/ranks keep the dots exact on the edges.
        if LEFT:
            basis = tl.load(
                P_ptr + offs_m[:, None] * stride_p0 + offs_k[None, :] * stride_p1,
                mask=mask_m[:, None] & mask_k[None, :], other=0.0,
            ).to(tl.float32)
            c_off = offs_k[:, None] * stride_c0 + offs_n[None, :] * stride_c1
            c_mask = mask_k[:, None] & mask_n[None, :]
            if not NORM_ONLY:
                coef = tl.load(N_ptr + c_off, mask=c_mask, other=0.0)
                upd = tl.dot(basis, coef, upd, input_precision=DOT_PRECISION)
            if FIRA:
                coef_r = tl.load(R_ptr + c_off, mask=c_mask, other=0.0)
                proj = tl.dot(basis, coef_r, proj, input_precision=DOT_PRECISION)
        else:
            basis_t = tl.load(
                P_ptr + offs_k[:, None] * stride_p1 + offs_n[None, :] * stride_p0,
                mask=mask_k[:, None] & mask_n[None, :], other=0.0,
            ).to(tl.float32)
            c_off = offs_m[:, None] * stride_c0 + offs_k[None, :] * stride_c1
            c_mask = mask_m[:, None] & mask_k[None, :]
            if not NORM_ONLY:
                coef = tl.load(N_ptr + c_off, mask=c_mask, other=0.0)
                upd = tl.dot(coef, basis_t, upd, input_precision=DOT_PRECISION)
            if FIRA:
                coef_r = tl.load(R_ptr + c_off, mask=c_mask, other=0.0)
                proj = tl.dot(coef_r, basis_t, proj, input_precision=DOT_PRECISION)

    tile_mask = mask_m[:, None] & mask_n[None, :]
    direction = alpha * upd
    if FIRA:
        grad = tl.load(
            G_ptr + offs_m[:, None] * stride_gm + offs_n[None, :] * stride_gn,
            mask=tile_mask, other=0.0,
        ).to(tl.float32)
        # φ scales the vectors of the kept dimension: columns (left) or rows (right).
        if LEFT:
            phi = tl.load(phi_ptr + offs_n, mask=mask_n, other=0.0)[None, :]
        else:
            phi = tl.load(phi_ptr + offs_m, mask=mask_m, other=0.0)[:, None]
        scaled = (grad - proj) * phi  # 0 outside the tile: grad, proj and phi are 0 there
        if NORM_ONLY:
            tl.store(partial_ptr + pid_m * tl.num_programs(1) + pid_n, tl.sum(scaled * scaled))
        else:
            direction += tl.load(scale_ptr) * scaled
    if not NORM_ONLY:
        w_ptrs = W_ptr + offs_m[:, None] * stride_wm + offs_n[None, :] * stride_wn
        w = tl.load(w_ptrs, mask=tile_mask, other=0.0).to(tl.float32)
        w = w * decay - lr * direction
        tl.store(w_ptrs, w.to(W_ptr.dtype.element_ty), mask=tile_mask)


def _project(G: torch.Tensor, P: torch.Tensor, left: bool) -> torch.Tensor:
    """R = Pᵀ G (left) or G P (right) as a contiguous float32 tensor."""
    if G.is_cuda and G.dtype in _LOW_PRECISION and P.dtype == G.dtype:
        # Tensor-core matmul with a float32 result: no upcast copy of G, no rounding of R.
        try:
            if left:
                return torch.mm(P.T, G, out_dtype=torch.float32)
            return torch.mm(G, P, out_dtype=torch.float32)
        except (TypeError, RuntimeError):  # torch without mm(out_dtype=)
            pass
    g, p = G.float(), P.float()
    return (p.T @ g if left else g @ p).contiguous()


def _tile_sizes(rank: int, fira: bool) -> tuple[int, int, int]:
    """(BM, BN, BK) of the back-projection; Fira keeps two accumulators, so smaller tiles.

    Not autotuned (no GPU was available when this was written); tl.dot needs >= 16.
    """
    bk = 16 if rank <= 16 else 32
    return (64, 64, bk) if fira else (64, 128, bk)


def _projected_adam_impl(
    W: torch.Tensor, G: torch.Tensor, P: torch.Tensor, M: torch.Tensor, V: torch.Tensor,
    fira_state: torch.Tensor | None, step: int, side: str, lr: float, beta1: float,
    beta2: float, eps: float, weight_decay: float, alpha: float, fira_gamma: float,
) -> None:
    left = side == "left"
    fira = fira_state is not None
    m, n = W.shape
    rank = P.shape[1]
    n_vec = n if left else m
    bc1, bc2 = bias_corrections(step, beta1, beta2)

    R = _project(G, P, left)
    N = torch.empty_like(R)
    phi = torch.empty(n_vec if fira else 1, device=W.device, dtype=torch.float32)

    def k_v(t: torch.Tensor) -> tuple[int, int]:
        """(rank stride, kept-vector stride) of an [r, n] (left) or [m, r] (right) tensor."""
        return (t.stride(0), t.stride(1)) if left else (t.stride(1), t.stride(0))

    block_v = 64
    block_k = min(32, triton.next_power_of_2(rank))
    _adam_moments_kernel[(triton.cdiv(n_vec, block_v),)](
        R, M, V, N, phi, n_vec, rank, *k_v(R), *k_v(M), *k_v(V),
        beta1, beta2, bc1, bc2, eps,
        FIRA=fira, BLOCK_K=block_k, BLOCK_V=block_v,
    )

    bm, bn, bk = _tile_sizes(rank, fira)
    grid = (triton.cdiv(m, bm), triton.cdiv(n, bn))
    precision = "ieee" if W.dtype == torch.float32 else "tf32"
    # Without Fira the limiter factor is never read: pass any float32 pointer (phi).
    args = (
        W, G, P, N, R, phi, phi, None,
        m, n, rank, W.stride(0), W.stride(1), G.stride(0), G.stride(1),
        P.stride(0), P.stride(1), R.stride(0), R.stride(1),
        lr, alpha, 1.0 - lr * weight_decay,
    )
    meta = {"LEFT": left, "FIRA": fira, "DOT_PRECISION": precision, "BM": bm, "BN": bn,
            "BK": bk, "num_warps": 4}
    if fira:
        partial = torch.empty(grid[0] * grid[1], device=W.device, dtype=torch.float32)
        _backproject_kernel[grid](*args[:7], partial, *args[8:], NORM_ONLY=True, **meta)
        # ν = ‖φ ⊙ S‖ without Adam's bias correction c_t (see reference.py), then the
        # limiter factor s on device; ν_prev ← s ν.
        nu = partial.sum().sqrt() / (math.sqrt(bc2) / bc1)
        scale = fira_limiter_scale(nu, fira_state, fira_gamma)
        fira_state.copy_(nu * scale)
        args = (*args[:6], scale, *args[7:])
    _backproject_kernel[grid](*args, NORM_ONLY=False, **meta)


@torch.library.custom_op("subzoo::projected_adam", mutates_args=("W", "M", "V", "fira_state"))
def _projected_adam_op(
    W: torch.Tensor, G: torch.Tensor, P: torch.Tensor, M: torch.Tensor, V: torch.Tensor,
    fira_state: torch.Tensor | None, step: int, side: str, lr: float, beta1: float,
    beta2: float, eps: float, weight_decay: float, alpha: float, fira_gamma: float,
) -> None:
    _projected_adam_impl(W, G, P, M, V, fira_state, step, side, lr, beta1, beta2, eps,
                         weight_decay, alpha, fira_gamma)


@_projected_adam_op.register_fake
def _projected_adam_fake(W, G, P, M, V, fira_state, step, side, lr, beta1, beta2, eps,
                         weight_decay, alpha, fira_gamma) -> None:
    # Only mutates its inputs in place: nothing to allocate, nothing to return.
    return None


def projected_adam_triton(
    W: torch.Tensor,
    G: torch.Tensor,
    P: torch.Tensor,
    M: torch.Tensor,
    V: torch.Tensor,
    *,
    step: int,
    side: str,
    lr: float = 1e-3,
    beta1: float = 0.9,
    beta2: float = 0.999,
    eps: float = 1e-8,
    weight_decay: float = 0.0,
    alpha: float = 1.0,
    fira_state: torch.Tensor | None = None,
    fira_gamma: float = FIRA_GAMMA,
) -> None:
    """Triton ``projected_adam`` (same arguments and semantics as ``projected_adam_ref``).

    Inputs are not validated here; :func:`subspace_core.ops.projected_adam.projected_adam`
    does that before dispatching.
    """
    torch.ops.subzoo.projected_adam(W, G, P, M, V, fira_state, step, side, float(lr),
                                    float(beta1), float(beta2), float(eps),
                                    float(weight_decay), float(alpha), float(fira_gamma))
