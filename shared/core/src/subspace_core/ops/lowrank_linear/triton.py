"""Triton kernels of ``lowrank_linear`` and ``svd_linear``, registered as torch custom ops.

Imported lazily, only when the Triton backend is selected. One tiled matmul kernel does
all the fusing; it computes::

    Y = (A₁ ⊙ c) B₁ + α · C D + bias          A₁ [M, K], c [K], B₁ [K, N], C [M, R], D [R, N]

with every term optional except ``A₁ B₁``. ``⊙ c`` scales the K columns of ``A₁`` as the
tiles are loaded; the low-rank term is a second, short K-loop (over ``R``) that keeps
accumulating into the *same* fp32 accumulator, as if ``[A₁, αC]`` and ``[B₁; D]`` were one
matmul of depth ``K + R``; the bias is added in the epilogue. So each output tile is
written once, instead of once per term plus once per elementwise add in the composed
reference. Where it is used:

* ``lowrank_linear`` forward: ``H = x A`` (torch matmul; tiny), then
  ``Y = x W + s·H B + b`` in one kernel.
* ``lowrank_linear`` backward: ``∂x = G Wᵀ + P Aᵀ`` (``P = s·G Bᵀ``) in one kernel — the
  same shape of computation as the forward, on transposed views (strides, no copies); the
  weight gradients ``Xᵀ G``, ``Xᵀ P``, ``s·Hᵀ G`` are plain torch matmuls.
* ``svd_linear`` forward: ``H = x U`` (torch), then ``Y = (H ⊙ σ) Vh + b`` in one kernel
  (``diag(σ)`` fused into the tile loads).
* ``svd_linear`` backward: ``T = G Vhᵀ`` (torch), ``∂x = (T ⊙ σ) Uᵀ`` in one kernel when
  ``U`` is frozen (otherwise ``T ⊙ σ`` is needed for ``∂U`` anyway and is formed once);
  ``∂σ = Σ_m H ⊙ T``, ``∂Vh = diag(σ) Hᵀ G``.

The kernel accumulates in fp32 and rounds once on the store. fp32 inputs use IEEE fp32
``tl.dot`` unless ``torch.get_float32_matmul_precision()`` allows TF32 (as torch's matmuls
do). On CUDA the tile sizes are autotuned per (M, N, K, R, dtypes); in the interpreter one
small fixed tile is used.

Custom ops: ``torch.ops.subzoo.lowrank_matmul`` (the kernel, forward only),
``torch.ops.subzoo.lowrank_linear`` and ``torch.ops.subzoo.svd_linear`` (differentiable via
``register_autograd``; their second output is the saved ``H``, not part of the public API).
"""

from __future__ import annotations

import os

import torch
import triton
import triton.language as tl

__all__ = ["lowrank_linear_triton", "lowrank_matmul", "svd_linear_triton"]


@triton.jit
def _lowrank_matmul_kernel(
    a_ptr, b_ptr, c_ptr, d_ptr, colscale_ptr, bias_ptr, y_ptr,
    M, N, K, R,
    stride_am, stride_ak, stride_bk, stride_bn,
    stride_cm, stride_cr, stride_dr, stride_dn,
    stride_ym, stride_yn,
    alpha,
    HAS_LOWRANK: tl.constexpr, HAS_COLSCALE: tl.constexpr, HAS_BIAS: tl.constexpr,
    INPUT_PRECISION: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
    BLOCK_R: tl.constexpr, GROUP_M: tl.constexpr,
):
    # Grouped program order: GROUP_M consecutive programs walk down a column of output
    # tiles, so the B₁ tiles they share are still in L2 when the next row needs them.
    pid = tl.program_id(0)
    num_m = tl.cdiv(M, BLOCK_M)
    num_n = tl.cdiv(N, BLOCK_N)
    per_group = GROUP_M * num_n
    first_m = (pid // per_group) * GROUP_M
    group_rows = tl.minimum(num_m - first_m, GROUP_M)
    pid_m = first_m + (pid % per_group) % group_rows
    pid_n = (pid % per_group) // group_rows

    # int64 row/column indices: M·K can exceed 2³¹ for long token batches
    rm = (pid_m * BLOCK_M + tl.arange(0, BLOCK_M)).to(tl.int64)
    rn = (pid_n * BLOCK_N + tl.arange(0, BLOCK_N)).to(tl.int64)
    m_ok = rm < M
    n_ok = rn < N

    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)

    # main loop: A₁ B₁ (K deep), with A₁'s columns scaled by c on the fly
    rk = tl.arange(0, BLOCK_K)
    for k0 in range(0, K, BLOCK_K):
        kk = k0 + rk
        k_ok = kk < K
        a = tl.load(a_ptr + rm[:, None] * stride_am + kk[None, :] * stride_ak,
                    mask=m_ok[:, None] & k_ok[None, :], other=0.0)
        b = tl.load(b_ptr + kk[:, None] * stride_bk + rn[None, :] * stride_bn,
                    mask=k_ok[:, None] & n_ok[None, :], other=0.0)
        if HAS_COLSCALE:
            c_k = tl.load(colscale_ptr + kk, mask=k_ok, other=0.0).to(tl.float32)
            a = (a.to(tl.float32) * c_k[None, :]).to(b.dtype)
        acc = tl.dot(a, b, acc, input_precision=INPUT_PRECISION)

    # low-rank tail: α·C D (R deep, usually a single iteration) into the same accumulator
    if HAS_LOWRANK:
        rr = tl.arange(0, BLOCK_R)
        for r0 in range(0, R, BLOCK_R):
            kr = r0 + rr
            r_ok = kr < R
            c = tl.load(c_ptr + rm[:, None] * stride_cm + kr[None, :] * stride_cr,
                        mask=m_ok[:, None] & r_ok[None, :], other=0.0)
            d = tl.load(d_ptr + kr[:, None] * stride_dr + rn[None, :] * stride_dn,
                        mask=r_ok[:, None] & n_ok[None, :], other=0.0)
            # α goes on the thin [BLOCK_M, BLOCK_R] operand, the cheapest place for it
            c = (c.to(tl.float32) * alpha).to(d.dtype)
            acc = tl.dot(c, d, acc, input_precision=INPUT_PRECISION)

    if HAS_BIAS:
        bias = tl.load(bias_ptr + rn, mask=n_ok, other=0.0).to(tl.float32)
        acc += bias[None, :]

    tl.store(y_ptr + rm[:, None] * stride_ym + rn[None, :] * stride_yn,
             acc.to(y_ptr.dtype.element_ty), mask=m_ok[:, None] & n_ok[None, :])


def _configs() -> list[triton.Config]:
    shapes = [  # (BLOCK_M, BLOCK_N, BLOCK_K, num_warps, num_stages)
        (128, 256, 64, 8, 3), (256, 128, 64, 8, 3), (128, 128, 64, 4, 4),
        (128, 128, 32, 4, 4), (128, 64, 64, 4, 4), (64, 128, 64, 4, 4),
        (64, 64, 64, 4, 4), (64, 64, 32, 2, 5),
    ]
    return [triton.Config({"BLOCK_M": m, "BLOCK_N": n, "BLOCK_K": k, "GROUP_M": 8},
                          num_warps=w, num_stages=s) for m, n, k, w, s in shapes]


_INTERPRET = os.environ.get("TRITON_INTERPRET") == "1"
#: Tiles used by the CPU interpreter (autotuning there would only cost time).
_INTERPRETER_TILES = {"BLOCK_M": 32, "BLOCK_N": 32, "BLOCK_K": 32, "GROUP_M": 4}

_autotuned_kernel = triton.autotune(
    configs=_configs(),
    key=["M", "N", "K", "R", "HAS_LOWRANK", "HAS_COLSCALE", "HAS_BIAS", "INPUT_PRECISION"],
)(_lowrank_matmul_kernel)


def _input_precision(dtype: torch.dtype) -> str:
    # fp32 follows torch's own matmul policy: TF32 only when the user allowed it. 16-bit
    # operands ignore the setting; "tf32" is Triton's default there.
    if dtype == torch.float32 and torch.get_float32_matmul_precision() == "highest":
        return "ieee"
    return "tf32"


def _check_matmul_operands(a, b, c, d, colscale, bias) -> None:
    """Shapes and dtypes of ``lowrank_matmul``'s operands (the kernel trusts them)."""
    if a.dim() != 2 or b.dim() != 2 or b.shape[0] != a.shape[1]:
        raise ValueError(f"a, b: expected shapes (M, K), (K, N), got {tuple(a.shape)}, "
                         f"{tuple(b.shape)}")
    (M, K), N = a.shape, b.shape[1]
    if (c is None) != (d is None):
        raise ValueError("c, d: expected both or neither")
    R = None if c is None else c.shape[-1]
    expected = {"c": (M, R), "d": (R, N), "colscale": (K,), "bias": (N,)}
    for name, t in (("b", b), ("c", c), ("d", d), ("colscale", colscale), ("bias", bias)):
        if t is None:
            continue
        if name != "b" and tuple(t.shape) != expected[name]:
            raise ValueError(f"{name}: expected shape {expected[name]}, got {tuple(t.shape)}")
        if t.dtype != a.dtype or t.device != a.device:
            raise ValueError(f"{name}: expected {a.dtype} on {a.device} (as a), "
                             f"got {t.dtype} on {t.device}")


@torch.library.custom_op("subzoo::lowrank_matmul", mutates_args=())
def lowrank_matmul(
    a: torch.Tensor, b: torch.Tensor, c: torch.Tensor | None, d: torch.Tensor | None,
    colscale: torch.Tensor | None, bias: torch.Tensor | None, alpha: float,
) -> torch.Tensor:
    """``(a ⊙ colscale) b + alpha · c d + bias`` for 2-D ``a [M, K]``, ``b [K, N]``,
    ``c [M, R]``, ``d [R, N]``, ``colscale [K]``, ``bias [N]`` (all optional but a, b).

    Any strides (transposed views are read in place); output ``[M, N]`` contiguous in the
    dtype of ``a``. Not differentiable by itself: the differentiable ops built on it are
    ``subzoo::lowrank_linear`` and ``subzoo::svd_linear``.
    """
    _check_matmul_operands(a, b, c, d, colscale, bias)
    M, K = a.shape
    N = b.shape[1]
    R = 0 if c is None else c.shape[1]
    y = torch.empty((M, N), dtype=a.dtype, device=a.device)
    if M == 0 or N == 0:
        return y
    has_lowrank = c is not None and R > 0
    block_r = max(16, min(64, triton.next_power_of_2(max(R, 1))))
    cc = c if has_lowrank else a  # any tensor: pointers of absent operands are never read
    dd = d if has_lowrank else b
    args = (
        a, b, cc, dd, a if colscale is None else colscale, a if bias is None else bias, y,
        M, N, K, R,
        a.stride(0), a.stride(1), b.stride(0), b.stride(1),
        cc.stride(0), cc.stride(1), dd.stride(0), dd.stride(1),
        y.stride(0), y.stride(1),
        float(alpha),
    )
    flags = {"HAS_LOWRANK": has_lowrank, "HAS_COLSCALE": colscale is not None,
             "HAS_BIAS": bias is not None, "INPUT_PRECISION": _input_precision(a.dtype),
             "BLOCK_R": block_r}
    if _INTERPRET:
        tiles = _INTERPRETER_TILES
        grid = (triton.cdiv(M, tiles["BLOCK_M"]) * triton.cdiv(N, tiles["BLOCK_N"]),)
        _lowrank_matmul_kernel[grid](*args, **flags, **tiles)
    else:
        def grid(meta):
            return (triton.cdiv(M, meta["BLOCK_M"]) * triton.cdiv(N, meta["BLOCK_N"]),)

        _autotuned_kernel[grid](*args, **flags)
    return y


@lowrank_matmul.register_fake
def _(a, b, c, d, colscale, bias, alpha):
    return a.new_empty((a.shape[0], b.shape[1]))


# --- lowrank_linear: y = x W + s (x A) B + b -----------------------------------------------


@torch.library.custom_op("subzoo::lowrank_linear", mutates_args=())
def _lowrank_linear_op(
    x: torch.Tensor, W: torch.Tensor, A: torch.Tensor, B: torch.Tensor,
    bias: torch.Tensor | None, scale: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(y, H) for 2-D ``x [M, d_in]``; ``H = x A [M, r]`` is kept for the backward."""
    H = x @ A
    return torch.ops.subzoo.lowrank_matmul(x, W, H, B, None, bias, scale), H


@_lowrank_linear_op.register_fake
def _(x, W, A, B, bias, scale):
    return x.new_empty((x.shape[0], W.shape[1])), x.new_empty((x.shape[0], A.shape[1]))


def _lowrank_setup(ctx, inputs, output):
    x, W, A, B, _bias, scale = inputs
    ctx.save_for_backward(x, W, A, B, output[1])
    ctx.scale = scale
    ctx.set_materialize_grads(False)  # H's gradient stays None (it is internal)


def _lowrank_backward(ctx, grad_y, grad_h):
    x, W, A, B, H = ctx.saved_tensors
    need_x, need_w, need_a, need_b, need_bias = ctx.needs_input_grad[:5]
    s = ctx.scale
    if grad_y is None:
        grad_y = x.new_zeros((x.shape[0], W.shape[1]))
    dx = dW = dA = dB = dbias = None
    if need_x or need_a:
        P = (grad_y @ B.T) * s  # ∂L/∂H [M, r]
        if grad_h is not None:
            P = P + grad_h
        if need_x:  # G Wᵀ + P Aᵀ in one kernel, on transposed views
            dx = torch.ops.subzoo.lowrank_matmul(grad_y, W.T, P, A.T, None, None, 1.0)
        if need_a:
            dA = x.T @ P
    if need_w:
        dW = x.T @ grad_y
    if need_b:
        dB = (H.T @ grad_y) * s
    if need_bias:
        dbias = grad_y.sum(0)
    return dx, dW, dA, dB, dbias, None


_lowrank_linear_op.register_autograd(_lowrank_backward, setup_context=_lowrank_setup)


# --- svd_linear: y = x U diag(σ) Vh + b ----------------------------------------------------


@torch.library.custom_op("subzoo::svd_linear", mutates_args=())
def _svd_linear_op(
    x: torch.Tensor, U: torch.Tensor, S: torch.Tensor, Vh: torch.Tensor,
    bias: torch.Tensor | None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(y, H) for 2-D ``x [M, d_in]``; ``H = x U [M, k]`` is kept for the backward."""
    H = x @ U
    return torch.ops.subzoo.lowrank_matmul(H, Vh, None, None, S, bias, 1.0), H


@_svd_linear_op.register_fake
def _(x, U, S, Vh, bias):
    return x.new_empty((x.shape[0], Vh.shape[1])), x.new_empty((x.shape[0], U.shape[1]))


def _svd_setup(ctx, inputs, output):
    x, U, S, Vh, _bias = inputs
    ctx.save_for_backward(x, U, S, Vh, output[1])
    ctx.set_materialize_grads(False)


def _svd_backward(ctx, grad_y, grad_h):
    x, U, S, Vh, H = ctx.saved_tensors
    need_x, need_u, need_s, need_vh, need_bias = ctx.needs_input_grad[:5]
    if grad_y is None:
        grad_y = x.new_zeros((x.shape[0], Vh.shape[1]))
    dx = dU = dS = dVh = dbias = None
    if need_x or need_u or need_s:
        T = grad_y @ Vh.T  # [M, k]
        if need_s:
            dS = (H * T).sum(0)
        if need_u or grad_h is not None:
            Q = T * S  # ∂L/∂H
            if grad_h is not None:
                Q = Q + grad_h
            if need_x:
                dx = torch.ops.subzoo.lowrank_matmul(Q, U.T, None, None, None, None, 1.0)
            if need_u:
                dU = x.T @ Q
        elif need_x:  # U frozen: fold diag(σ) into the kernel's tile loads
            dx = torch.ops.subzoo.lowrank_matmul(T, U.T, None, None, S, None, 1.0)
    if need_vh:
        dVh = (H.T @ grad_y) * S[:, None]
    if need_bias:
        dbias = grad_y.sum(0)
    return dx, dU, dS, dVh, dbias


_svd_linear_op.register_autograd(_svd_backward, setup_context=_svd_setup)


# --- public entry points (called by the dispatcher, arguments already validated) ----------


def lowrank_linear_triton(
    x: torch.Tensor, W: torch.Tensor, A: torch.Tensor, B: torch.Tensor,
    bias: torch.Tensor | None = None, scale: float = 1.0,
) -> torch.Tensor:
    """Triton :func:`~subspace_core.ops.lowrank_linear.reference.lowrank_linear_ref`."""
    lead = x.shape[:-1]
    y, _ = torch.ops.subzoo.lowrank_linear(x.reshape(-1, x.shape[-1]), W, A, B, bias,
                                           float(scale))
    return y.reshape(*lead, W.shape[1])


def svd_linear_triton(
    x: torch.Tensor, U: torch.Tensor, S: torch.Tensor, Vh: torch.Tensor,
    bias: torch.Tensor | None = None,
) -> torch.Tensor:
    """Triton :func:`~subspace_core.ops.lowrank_linear.reference.svd_linear_ref`."""
    lead = x.shape[:-1]
    y, _ = torch.ops.subzoo.svd_linear(x.reshape(-1, x.shape[-1]), U, S, Vh, bias)
    return y.reshape(*lead, Vh.shape[1])
