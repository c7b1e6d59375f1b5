"""Triton kernels of ``selective_scan``, registered as torch custom ops.

Imported lazily, only when the Triton backend is selected. Layout of the work: one program
per ``(batch, block of BLOCK_D channels)``; its state ``h [BLOCK_D, N]`` lives in registers
for the whole sequence, and the program walks the sequence one step at a time (the
recurrence is elementwise per channel, so there is nothing to reduce across programs in the
forward).

Forward (``subzoo::selective_scan_fwd``): writes ``out``, the final state, and the state at
the start of every chunk of ``chunk`` steps (``checkpoints [b, d, N, n_chunks]``, float32).

Backward (``subzoo::selective_scan_bwd``): a reverse-time scan of the adjoint
``g_{t-1} = exp(Δ_t A) ⊙ (g_t + gy_t C_t)``. The chunks are visited last to first; each is
first recomputed forward from its checkpoint into a per-program scratch buffer (the states
before every step of the chunk), then walked backwards. So the backward costs about two
forward scans and stores O(L / chunk) states, not O(L), like mamba-ssm's kernel.

Determinism: every output element is written by exactly one program, and there are no
atomics. Gradients that sum over channels (B, C) are written as one partial per channel
block, ``[b, n_blocks, N, L]``, and gradients that sum over the batch and time (A, D,
delta_bias) as one partial per batch element; both are reduced with ``torch.sum``
afterwards. Repeated backward runs are therefore bit-identical.

All arithmetic is float32 whatever the input dtype; outputs are rounded once on the store.
"""

from __future__ import annotations

import os

import torch
import triton
import triton.language as tl

__all__ = ["DEFAULT_CHUNK", "selective_scan_triton"]

#: Steps between two forward checkpoints (the backward recomputes one chunk at a time).
DEFAULT_CHUNK = 64
_INTERPRET = os.environ.get("TRITON_INTERPRET") == "1"
#: Largest state size handled (the state of BLOCK_D channels is held in registers).
MAX_N = 256


@triton.jit
def _log1p(e):
    # Kahan's accurate log1p for e >= 0: log(1 + e) loses all digits of e once 1 + e
    # rounds (e < 1e-7), and softplus of a very negative Δ would come out as 0.
    w = 1.0 + e
    return tl.where(w == 1.0, e, tl.log(w) * (e / (w - 1.0)))


@triton.jit
def _softplus(x):
    # max(x, 0) + log1p(exp(-|x|)): never overflows, exact to a few ulps
    return tl.maximum(x, 0.0) + _log1p(tl.exp(-tl.abs(x)))


@triton.jit
def _selective_scan_fwd_kernel(
    u_ptr, dt_ptr, a_ptr, b_ptr, c_ptr, d_ptr, z_ptr, bias_ptr, h0_ptr,
    out_ptr, hl_ptr, ckpt_ptr,
    DIM, L, N, N_CHUNKS,
    s_u_b, s_u_d, s_u_l, s_dt_b, s_dt_d, s_dt_l, s_a_d, s_a_n,
    s_b_b, s_b_n, s_b_l, s_c_b, s_c_n, s_c_l, s_z_b, s_z_d, s_z_l,
    s_o_b, s_o_d, s_o_l,
    HAS_D: tl.constexpr, HAS_Z: tl.constexpr, HAS_BIAS: tl.constexpr, HAS_H0: tl.constexpr,
    SOFTPLUS: tl.constexpr, CHUNK: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_N: tl.constexpr,
):
    pid_b = tl.program_id(0).to(tl.int64)
    pid_d = tl.program_id(1)
    offs_d = pid_d * BLOCK_D + tl.arange(0, BLOCK_D)
    offs_n = tl.arange(0, BLOCK_N)
    md = offs_d < DIM
    mn = offs_n < N
    mdn = md[:, None] & mn[None, :]
    # padded channels/states: A = 0 (decay 1) and zero input keep their state at 0
    A = tl.load(a_ptr + offs_d[:, None] * s_a_d + offs_n[None, :] * s_a_n, mask=mdn,
                other=0.0).to(tl.float32)
    if HAS_BIAS:
        bias = tl.load(bias_ptr + offs_d, mask=md, other=0.0).to(tl.float32)
    if HAS_D:
        Dv = tl.load(d_ptr + offs_d, mask=md, other=0.0).to(tl.float32)
    # states and checkpoints are contiguous float32: [b, d, N] and [b, d, N, n_chunks]
    state_off = pid_b * DIM * N + offs_d[:, None] * N + offs_n[None, :]
    if HAS_H0:
        h = tl.load(h0_ptr + state_off, mask=mdn, other=0.0).to(tl.float32)
    else:
        h = tl.zeros((BLOCK_D, BLOCK_N), dtype=tl.float32)

    u_base = u_ptr + pid_b * s_u_b + offs_d * s_u_d
    dt_base = dt_ptr + pid_b * s_dt_b + offs_d * s_dt_d
    b_base = b_ptr + pid_b * s_b_b + offs_n * s_b_n
    c_base = c_ptr + pid_b * s_c_b + offs_n * s_c_n
    z_base = z_ptr + pid_b * s_z_b + offs_d * s_z_d
    o_base = out_ptr + pid_b * s_o_b + offs_d * s_o_d
    for t in range(0, L):
        if t % CHUNK == 0:
            tl.store(ckpt_ptr + state_off * N_CHUNKS + t // CHUNK, h, mask=mdn)
        u = tl.load(u_base + t * s_u_l, mask=md, other=0.0).to(tl.float32)
        dt = tl.load(dt_base + t * s_dt_l, mask=md, other=0.0).to(tl.float32)
        if HAS_BIAS:
            dt += bias
        if SOFTPLUS:
            dt = _softplus(dt)
        Bt = tl.load(b_base + t * s_b_l, mask=mn, other=0.0).to(tl.float32)
        Ct = tl.load(c_base + t * s_c_l, mask=mn, other=0.0).to(tl.float32)
        h = tl.exp(dt[:, None] * A) * h + (dt * u)[:, None] * Bt[None, :]
        y = tl.sum(h * Ct[None, :], axis=1)
        if HAS_D:
            y += Dv * u
        if HAS_Z:
            z = tl.load(z_base + t * s_z_l, mask=md, other=0.0).to(tl.float32)
            y = y * (z * tl.sigmoid(z))
        tl.store(o_base + t * s_o_l, y.to(out_ptr.dtype.element_ty), mask=md)
    tl.store(hl_ptr + state_off, h, mask=mdn)


@triton.jit
def _selective_scan_bwd_kernel(
    u_ptr, dt_ptr, a_ptr, b_ptr, c_ptr, d_ptr, z_ptr, bias_ptr, ckpt_ptr, go_ptr, ghl_ptr,
    scratch_ptr,
    du_ptr, ddt_ptr, dz_ptr, db_part_ptr, dc_part_ptr, da_part_ptr, dd_part_ptr, dh0_ptr,
    DIM, L, N, N_CHUNKS, N_DBLK,
    s_u_b, s_u_d, s_u_l, s_dt_b, s_dt_d, s_dt_l, s_a_d, s_a_n,
    s_b_b, s_b_n, s_b_l, s_c_b, s_c_n, s_c_l, s_z_b, s_z_d, s_z_l,
    s_go_b, s_go_d, s_go_l,
    HAS_D: tl.constexpr, HAS_Z: tl.constexpr, HAS_BIAS: tl.constexpr, HAS_GHL: tl.constexpr,
    SOFTPLUS: tl.constexpr, CHUNK: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_N: tl.constexpr,
):
    pid_b = tl.program_id(0).to(tl.int64)
    pid_d = tl.program_id(1)
    offs_d = pid_d * BLOCK_D + tl.arange(0, BLOCK_D)
    offs_n = tl.arange(0, BLOCK_N)
    md = offs_d < DIM
    mn = offs_n < N
    mdn = md[:, None] & mn[None, :]
    A = tl.load(a_ptr + offs_d[:, None] * s_a_d + offs_n[None, :] * s_a_n, mask=mdn,
                other=0.0).to(tl.float32)
    if HAS_BIAS:
        bias = tl.load(bias_ptr + offs_d, mask=md, other=0.0).to(tl.float32)
    if HAS_D:
        Dv = tl.load(d_ptr + offs_d, mask=md, other=0.0).to(tl.float32)
    state_off = pid_b * DIM * N + offs_d[:, None] * N + offs_n[None, :]
    if HAS_GHL:  # gradient flowing into the final state
        g = tl.load(ghl_ptr + state_off, mask=mdn, other=0.0).to(tl.float32)
    else:
        g = tl.zeros((BLOCK_D, BLOCK_N), dtype=tl.float32)
    ga = tl.zeros((BLOCK_D, BLOCK_N), dtype=tl.float32)
    gd = tl.zeros((BLOCK_D,), dtype=tl.float32)

    # this program's private scratch: CHUNK states of [BLOCK_D, BLOCK_N]
    pid_lin = pid_b * N_DBLK + pid_d
    tile = tl.arange(0, BLOCK_D)[:, None] * BLOCK_N + offs_n[None, :]
    scratch = scratch_ptr + pid_lin * (CHUNK * BLOCK_D * BLOCK_N) + tile
    # partials over channel blocks: [b, N_DBLK, N, L]
    part_n = (pid_b * N_DBLK + pid_d) * N * L + offs_n * L

    u_base = u_ptr + pid_b * s_u_b + offs_d * s_u_d
    dt_base = dt_ptr + pid_b * s_dt_b + offs_d * s_dt_d
    b_base = b_ptr + pid_b * s_b_b + offs_n * s_b_n
    c_base = c_ptr + pid_b * s_c_b + offs_n * s_c_n
    z_base = z_ptr + pid_b * s_z_b + offs_d * s_z_d
    go_base = go_ptr + pid_b * s_go_b + offs_d * s_go_d
    # gradients of [b, d, L] inputs are written in the layout of those inputs
    du_base = du_ptr + pid_b * s_u_b + offs_d * s_u_d
    ddt_base = ddt_ptr + pid_b * s_dt_b + offs_d * s_dt_d
    dz_base = dz_ptr + pid_b * s_z_b + offs_d * s_z_d

    for ci in range(0, N_CHUNKS):
        c = N_CHUNKS - 1 - ci
        start = c * CHUNK
        # 1) recompute the states before each step of the chunk from its checkpoint
        h = tl.load(ckpt_ptr + state_off * N_CHUNKS + c, mask=mdn, other=0.0)
        for j in range(0, CHUNK):
            t = start + j
            # vector masks (a scalar `t < L` is a plain bool in the interpreter)
            okd = md & ((offs_d * 0 + t) < L)
            okn = mn & ((offs_n * 0 + t) < L)
            tl.store(scratch + j * (BLOCK_D * BLOCK_N), h)
            u = tl.load(u_base + t * s_u_l, mask=okd, other=0.0).to(tl.float32)
            dt = tl.load(dt_base + t * s_dt_l, mask=okd, other=0.0).to(tl.float32)
            if HAS_BIAS:
                dt += bias
            if SOFTPLUS:
                dt = _softplus(dt)
            # past the end (last chunk): Δ = 0 makes the step the identity
            dt = tl.where(okd, dt, 0.0)
            Bt = tl.load(b_base + t * s_b_l, mask=okn, other=0.0).to(tl.float32)
            decay = tl.exp(dt[:, None] * A)
            h = decay * h + (dt * u)[:, None] * Bt[None, :]
        # scratch is written and read back by this program only; the barrier orders it
        tl.debug_barrier()
        # 2) walk the chunk backwards
        for j in range(0, CHUNK):
            jj = CHUNK - 1 - j
            t = start + jj
            okd = md & ((offs_d * 0 + t) < L)
            okn = mn & ((offs_n * 0 + t) < L)
            h_prev = tl.load(scratch + jj * (BLOCK_D * BLOCK_N))
            u = tl.load(u_base + t * s_u_l, mask=okd, other=0.0).to(tl.float32)
            dt_raw = tl.load(dt_base + t * s_dt_l, mask=okd, other=0.0).to(tl.float32)
            if HAS_BIAS:
                dt_raw += bias
            dt = _softplus(dt_raw) if SOFTPLUS else dt_raw
            # past the end: Δ = 0, so the step is the identity and adds nothing to ∂A
            dt = tl.where(okd, dt, 0.0)
            Bt = tl.load(b_base + t * s_b_l, mask=okn, other=0.0).to(tl.float32)
            Ct = tl.load(c_base + t * s_c_l, mask=okn, other=0.0).to(tl.float32)
            go = tl.load(go_base + t * s_go_l, mask=okd, other=0.0).to(tl.float32)
            decay = tl.exp(dt[:, None] * A)
            h = decay * h_prev + (dt * u)[:, None] * Bt[None, :]
            if HAS_Z:
                z = tl.load(z_base + t * s_z_l, mask=okd, other=0.0).to(tl.float32)
                sig = tl.sigmoid(z)
                y = tl.sum(h * Ct[None, :], axis=1)
                if HAS_D:
                    y += Dv * u
                gy = go * z * sig
                gz = go * y * sig * (1.0 + z * (1.0 - sig))
                tl.store(dz_base + t * s_z_l, gz.to(dz_ptr.dtype.element_ty), mask=okd)
            else:
                gy = go
            if HAS_D:
                gd += gy * u
                gu = gy * Dv
            else:
                gu = tl.zeros((BLOCK_D,), dtype=tl.float32)
            # ∂C_t = Σ_d gy h_t (partial over this channel block)
            tl.store(dc_part_ptr + part_n + t, tl.sum(gy[:, None] * h, axis=0), mask=okn)
            g += gy[:, None] * Ct[None, :]  # g is now ∂L/∂h_t
            # through h_t = decay ⊙ h_{t-1} + Δ u B
            g_decay = g * h_prev * decay  # ∂L/∂(Δ A) elementwise
            gB_row = tl.sum(g * Bt[None, :], axis=1)  # Σ_n g B
            gdt = tl.sum(g_decay * A, axis=1) + gB_row * u
            ga += g_decay * dt[:, None]
            tl.store(db_part_ptr + part_n + t, tl.sum(g * (dt * u)[:, None], axis=0),
                     mask=okn)
            gu += gB_row * dt
            if SOFTPLUS:
                gdt = gdt * tl.sigmoid(dt_raw)
            tl.store(du_base + t * s_u_l, gu.to(du_ptr.dtype.element_ty), mask=okd)
            tl.store(ddt_base + t * s_dt_l, gdt.to(ddt_ptr.dtype.element_ty), mask=okd)
            g = g * decay  # ∂L/∂h_{t-1}
        tl.debug_barrier()  # the next chunk overwrites the scratch
    tl.store(dh0_ptr + state_off, g, mask=mdn)
    tl.store(da_part_ptr + state_off, ga, mask=mdn)
    tl.store(dd_part_ptr + pid_b * DIM + offs_d, gd, mask=md)


# --- launch helpers ---------------------------------------------------------------------------


def _blocks(dim: int, n: int) -> tuple[int, int, int]:
    """(BLOCK_D, BLOCK_N, num_warps): the state tile BLOCK_D × BLOCK_N stays in registers."""
    block_n = max(triton.next_power_of_2(n), 2)
    if _INTERPRET:
        return 4, block_n, 1  # small tiles: the interpreter's cost is per program step
    block_d = max(1, min(64, 2048 // block_n, triton.next_power_of_2(dim)))
    return block_d, block_n, 4


def _strides3(t: torch.Tensor | None) -> tuple[int, int, int]:
    return (0, 0, 0) if t is None else tuple(t.stride())


def _empty_like_bdl(t: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    # keep the input's layout ([b, L, d]-major activations stay so), for coalesced access
    return torch.empty_like(t, dtype=dtype)


@torch.library.custom_op("subzoo::selective_scan_fwd", mutates_args=())
def selective_scan_fwd(
    u: torch.Tensor, delta: torch.Tensor, A: torch.Tensor, B: torch.Tensor, C: torch.Tensor,
    D: torch.Tensor | None, z: torch.Tensor | None, delta_bias: torch.Tensor | None,
    initial_state: torch.Tensor | None, delta_softplus: bool, chunk: int,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(out [b, d, L], final_state [b, d, N] fp32, checkpoints [b, d, N, n_chunks] fp32)``.

    Inputs as in :func:`~subspace_core.ops.selective_scan.reference.selective_scan_ref`
    (already validated); any strides. ``checkpoints[..., c]`` is the state before step
    ``c · chunk``; it is what the backward recomputes from.
    """
    b, d, L = u.shape
    n = A.shape[1]
    n_chunks = max(1, triton.cdiv(L, chunk))
    out = _empty_like_bdl(u, u.dtype)
    final = torch.empty((b, d, n), device=u.device, dtype=torch.float32)
    ckpt = torch.zeros((b, d, n, n_chunks), device=u.device, dtype=torch.float32)
    h0 = None if initial_state is None else initial_state.float().contiguous()
    if b == 0 or d == 0:
        return out, final, ckpt
    block_d, block_n, warps = _blocks(d, n)
    grid = (b, triton.cdiv(d, block_d))
    _selective_scan_fwd_kernel[grid](
        u, delta, A, B, C, A if D is None else D, u if z is None else z,
        A if delta_bias is None else delta_bias, final if h0 is None else h0,
        out, final, ckpt,
        d, L, n, n_chunks,
        *u.stride(), *delta.stride(), *A.stride(), *B.stride(), *C.stride(), *_strides3(z),
        *out.stride(),
        HAS_D=D is not None, HAS_Z=z is not None, HAS_BIAS=delta_bias is not None,
        HAS_H0=h0 is not None, SOFTPLUS=bool(delta_softplus), CHUNK=chunk,
        BLOCK_D=block_d, BLOCK_N=block_n, num_warps=warps,
    )
    return out, final, ckpt


@selective_scan_fwd.register_fake
def _(u, delta, A, B, C, D, z, delta_bias, initial_state, delta_softplus, chunk):
    b, d, L = u.shape
    n = A.shape[1]
    n_chunks = max(1, -(-L // chunk))
    return (torch.empty_like(u), u.new_empty((b, d, n), dtype=torch.float32),
            u.new_empty((b, d, n, n_chunks), dtype=torch.float32))


@torch.library.custom_op("subzoo::selective_scan_bwd", mutates_args=())
def selective_scan_bwd(
    grad_out: torch.Tensor, grad_final_state: torch.Tensor | None,
    u: torch.Tensor, delta: torch.Tensor, A: torch.Tensor, B: torch.Tensor, C: torch.Tensor,
    D: torch.Tensor | None, z: torch.Tensor | None, delta_bias: torch.Tensor | None,
    checkpoints: torch.Tensor, delta_softplus: bool, chunk: int,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor,
           torch.Tensor, torch.Tensor, torch.Tensor]:
    """Gradients ``(du, ddelta, dA, dB, dC, dD, dz, ddelta_bias, dinitial_state)``.

    ``dD``, ``dz`` and ``ddelta_bias`` are zeros of the right shape when the input was None
    (custom ops cannot return None). Deterministic: no atomics (see the module docstring).
    """
    b, d, L = u.shape
    n = A.shape[1]
    n_chunks = checkpoints.shape[-1]
    block_d, block_n, warps = _blocks(d, n)
    n_dblk = triton.cdiv(d, block_d) if d else 0
    f32 = dict(device=u.device, dtype=torch.float32)
    du = _empty_like_bdl(u, u.dtype)
    ddelta = _empty_like_bdl(delta, delta.dtype)
    dz = _empty_like_bdl(z, z.dtype) if z is not None else torch.zeros((b, d, L), **f32)
    db_part = torch.zeros((b, n_dblk, n, L), **f32)
    dc_part = torch.zeros((b, n_dblk, n, L), **f32)
    da_part = torch.zeros((b, d, n), **f32)
    dd_part = torch.zeros((b, d), **f32)
    dh0 = torch.zeros((b, d, n), **f32)
    if b and d and L:
        scratch = torch.empty((b * n_dblk * chunk * block_d * block_n,), **f32)
        ghl = None if grad_final_state is None else grad_final_state.float().contiguous()
        _selective_scan_bwd_kernel[(b, n_dblk)](
            u, delta, A, B, C, A if D is None else D, u if z is None else z,
            A if delta_bias is None else delta_bias, checkpoints, grad_out,
            dh0 if ghl is None else ghl, scratch,
            du, ddelta, dz, db_part, dc_part, da_part, dd_part, dh0,
            d, L, n, n_chunks, n_dblk,
            *u.stride(), *delta.stride(), *A.stride(), *B.stride(), *C.stride(),
            *_strides3(z), *grad_out.stride(),
            HAS_D=D is not None, HAS_Z=z is not None, HAS_BIAS=delta_bias is not None,
            HAS_GHL=ghl is not None, SOFTPLUS=bool(delta_softplus), CHUNK=chunk,
            BLOCK_D=block_d, BLOCK_N=block_n, num_warps=warps,
        )
    elif grad_final_state is not None:  # L == 0: the state passes through unchanged
        dh0 = grad_final_state.float().clone()
    if not L:
        du.zero_()
        ddelta.zero_()
        dz.zero_()
    dB = db_part.sum(1).to(B.dtype)
    dC = dc_part.sum(1).to(C.dtype)
    dA = da_part.sum(0).to(A.dtype)
    dD = dd_part.sum(0).to(D.dtype if D is not None else torch.float32)
    if delta_bias is not None:
        # Σ over batch and time of ∂Δ, in a fixed order (a torch reduction, no atomics)
        dbias = ddelta.float().sum(dim=(0, 2)).to(delta_bias.dtype)
    else:
        dbias = torch.zeros((d,), **f32)
    return du, ddelta, dA, dB, dC, dD, dz, dbias, dh0


@selective_scan_bwd.register_fake
def _(grad_out, grad_final_state, u, delta, A, B, C, D, z, delta_bias, checkpoints,
      delta_softplus, chunk):
    b, d, L = u.shape
    n = A.shape[1]
    f32 = dict(dtype=torch.float32)
    return (torch.empty_like(u), torch.empty_like(delta), torch.empty_like(A),
            torch.empty_like(B), torch.empty_like(C),
            D.new_empty((d,)) if D is not None else u.new_empty((d,), **f32),
            torch.empty_like(z) if z is not None else u.new_empty((b, d, L), **f32),
            delta_bias.new_empty((d,)) if delta_bias is not None else u.new_empty((d,), **f32),
            u.new_empty((b, d, n), **f32))


def _setup(ctx, inputs, output):
    u, delta, A, B, C, D, z, delta_bias, initial_state, delta_softplus, chunk = inputs
    ctx.save_for_backward(u, delta, A, B, C, D, z, delta_bias, output[2])
    ctx.delta_softplus = delta_softplus
    ctx.chunk = chunk
    ctx.has_h0 = initial_state is not None
    ctx.h0_dtype = None if initial_state is None else initial_state.dtype
    ctx.set_materialize_grads(False)


def _backward(ctx, grad_out, grad_final, _grad_ckpt):
    u, delta, A, B, C, D, z, delta_bias, ckpt = ctx.saved_tensors
    if grad_out is None:
        grad_out = torch.zeros_like(u)
    du, ddelta, dA, dB, dC, dD, dz, dbias, dh0 = torch.ops.subzoo.selective_scan_bwd(
        grad_out, grad_final, u, delta, A, B, C, D, z, delta_bias, ckpt,
        ctx.delta_softplus, ctx.chunk)
    return (du, ddelta, dA, dB, dC, dD if D is not None else None,
            dz if z is not None else None, dbias if delta_bias is not None else None,
            dh0.to(ctx.h0_dtype) if ctx.has_h0 else None, None, None)


selective_scan_fwd.register_autograd(_backward, setup_context=_setup)


def selective_scan_triton(
    u: torch.Tensor, delta: torch.Tensor, A: torch.Tensor, B: torch.Tensor, C: torch.Tensor,
    D: torch.Tensor | None = None, z: torch.Tensor | None = None,
    delta_bias: torch.Tensor | None = None, delta_softplus: bool = False,
    initial_state: torch.Tensor | None = None, return_final_state: bool = False,
    *, chunk: int = DEFAULT_CHUNK,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Triton :func:`~subspace_core.ops.selective_scan.reference.selective_scan_ref`.

    ``chunk`` is the backward's recomputation granularity (steps per checkpoint); it does
    not change the result.
    """
    if chunk < 1:
        raise ValueError(f"chunk: expected an int >= 1, got {chunk!r}")
    out, final, _ = torch.ops.subzoo.selective_scan_fwd(
        u, delta, A, B, C, D, z, delta_bias, initial_state, bool(delta_softplus), int(chunk))
    return (out, final) if return_final_state else out
