"""Triton kernels of group-wise quantize / dequantize, registered as torch custom ops.

Imported lazily, only when the Triton backend is selected. The maths is the reference's
(:mod:`subspace_core.ops.quantize.reference`); deterministic mode matches it bit for bit:
every step is an IEEE-rounded float32 operation in both (``tl.math.div_rn`` instead of
``/``, which Triton lowers to an approximate division on NVIDIA GPUs; ties to even done by
hand because the interpreter has no ``rint``). Stochastic mode draws its noise from
Triton's Philox (``tl.rand4x`` keyed by ``seed`` and the element's position) rather than
torch's generator, so it matches the reference in distribution, not bit for bit.

Both kernels are memory bound: one pass over the input, one over the output. A program
handles ``BLOCK_G`` whole groups (a ``[BLOCK_G, BLOCK_K]`` tile, ``BLOCK_K`` the group size
rounded up to a power of two), so the group statistics are register-level row reductions
and nothing is read twice.

Custom ops: ``torch.ops.subzoo.quantize`` and ``torch.ops.subzoo.dequantize`` (with fake
implementations, so ``torch.compile`` traces them). Neither is differentiable.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from subspace_core.ops.quantize.reference import (
    INT4_SYMMETRIC_OFFSET,
    MIN_RANGE,
    QuantizedTensor,
    check_quantize_args,
    check_quantized,
)

__all__ = ["dequantize_triton", "quantize_triton"]

#: Elements per program: enough work per program to hide memory latency.
_TILE_ELEMENTS = 4096

# module constants used inside kernels must be constexpr
_MIN_RANGE = tl.constexpr(MIN_RANGE)
_INT4_OFFSET = tl.constexpr(INT4_SYMMETRIC_OFFSET)


def _tiles(group_size: int) -> tuple[int, int]:
    block_k = max(4, triton.next_power_of_2(group_size))  # ≥ 4: noise comes in quads
    return max(1, _TILE_ELEMENTS // block_k), block_k


@triton.jit
def _round_half_even(v):
    # torch.round's rounding (ties to even) from floor: v - floor(v) is exact in float32.
    f = tl.math.floor(v)
    d = v - f
    f_is_odd = (f - 2.0 * tl.math.floor(f * 0.5)) == 1.0
    up = (d > 0.5) | ((d == 0.5) & f_is_odd)
    return tl.where(up, f + 1.0, f)


@triton.jit
def _uniform_tile(seed, rows, BLOCK_G: tl.constexpr, BLOCK_K: tl.constexpr):
    """U[0, 1) noise for a [BLOCK_G, BLOCK_K] tile of whole groups.

    One Philox call yields four numbers (``tl.rand4x``), so each call serves four
    neighbouring elements: a quarter of the integer work of ``tl.rand`` per element, which
    keeps the stochastic kernel memory bound. The counter is the index of the quad
    (``row · BLOCK_K/4 + j``), unique over the whole tensor.
    """
    QUADS: tl.constexpr = BLOCK_K // 4
    quads = rows.to(tl.int64)[:, None] * QUADS + tl.arange(0, QUADS)[None, :]
    u0, u1, u2, u3 = tl.rand4x(seed, quads)
    # [BLOCK_G, QUADS, 2, 2] → [BLOCK_G, BLOCK_K]: each quad's four numbers go to its four
    # elements (the order within a quad is immaterial, they are i.i.d.)
    return tl.reshape(tl.join(tl.join(u0, u1), tl.join(u2, u3)), (BLOCK_G, BLOCK_K))


@triton.jit(do_not_specialize=["seed"])
def _quantize_kernel(
    x_ptr, data_ptr, scales_ptr, zeros_ptr,
    n_groups, group_size, seed,
    BITS: tl.constexpr, SYMMETRIC: tl.constexpr, STOCHASTIC: tl.constexpr,
    BLOCK_G: tl.constexpr, BLOCK_K: tl.constexpr,
):
    # x is contiguous, viewed as [n_groups, group_size]; this program owns BLOCK_G groups.
    rows = tl.program_id(0) * BLOCK_G + tl.arange(0, BLOCK_G)
    cols = tl.arange(0, BLOCK_K)
    row_ok = rows < n_groups
    mask = row_ok[:, None] & (cols < group_size)[None, :]
    # int64 element indices: M·n can exceed 2³¹
    offs = rows.to(tl.int64)[:, None] * group_size + cols[None, :]
    x = tl.load(x_ptr + offs, mask=mask, other=0.0).to(tl.float32)

    if SYMMETRIC:
        QMAX: tl.constexpr = 2 ** (BITS - 1) - 1
        LO: tl.constexpr = -QMAX
        # padding lanes hold 0, which never raises an absmax
        absmax = tl.max(tl.abs(x), axis=1)
        scale = tl.math.div_rn(tl.maximum(absmax, _MIN_RANGE), QMAX * 1.0)
        v = tl.math.div_rn(x, scale[:, None])
    else:
        QMAX: tl.constexpr = 2**BITS - 1
        LO: tl.constexpr = 0
        gmin = tl.min(tl.where(mask, x, float("inf")), axis=1)
        gmax = tl.max(tl.where(mask, x, float("-inf")), axis=1)
        # all-padding rows (past n_groups) would give inf - inf: keep them finite
        gmin = tl.where(row_ok, gmin, 0.0)
        gmax = tl.where(row_ok, gmax, 0.0)
        scale = tl.math.div_rn(tl.maximum(gmax - gmin, _MIN_RANGE), QMAX * 1.0)
        zero = -tl.math.div_rn(gmin, scale)
        tl.store(zeros_ptr + rows, zero, mask=row_ok)
        v = tl.math.div_rn(x - gmin[:, None], scale[:, None])
    tl.store(scales_ptr + rows, scale, mask=row_ok)

    if STOCHASTIC:  # a compile-time branch: only one side is generated
        # floor(v + u), u ~ U[0, 1): rounds up with probability frac(v), so E[q] = v.
        q = tl.math.floor(v + _uniform_tile(seed, rows, BLOCK_G, BLOCK_K))
    else:
        q = _round_half_even(v)
    q = tl.minimum(tl.maximum(q, LO * 1.0), QMAX * 1.0)

    if BITS == 8:
        if SYMMETRIC:
            tl.store(data_ptr + offs, q.to(tl.int8), mask=mask)
        else:
            tl.store(data_ptr + offs, q.to(tl.uint8), mask=mask)
    else:
        if SYMMETRIC:
            q += _INT4_OFFSET  # codes [-7, 7] → nibbles [1, 15]
        nibbles = q.to(tl.uint8)
        # pair up neighbours (2j, 2j+1) of each row: element 2j → low nibble, 2j+1 → high
        even, odd = tl.split(tl.reshape(nibbles, (BLOCK_G, BLOCK_K // 2, 2)))
        packed = even | (odd << 4)
        half = group_size // 2
        pcols = tl.arange(0, BLOCK_K // 2)
        poffs = rows.to(tl.int64)[:, None] * half + pcols[None, :]
        tl.store(data_ptr + poffs, packed, mask=row_ok[:, None] & (pcols < half)[None, :])


@triton.jit
def _dequantize_kernel(
    data_ptr, scales_ptr, zeros_ptr, out_ptr,
    n_groups, group_size,
    BITS: tl.constexpr, SYMMETRIC: tl.constexpr,
    BLOCK_G: tl.constexpr, BLOCK_K: tl.constexpr,
):
    rows = tl.program_id(0) * BLOCK_G + tl.arange(0, BLOCK_G)
    row_ok = rows < n_groups
    if BITS == 8:
        cols = tl.arange(0, BLOCK_K)
        offs = rows.to(tl.int64)[:, None] * group_size + cols[None, :]
        mask = row_ok[:, None] & (cols < group_size)[None, :]
        q = tl.load(data_ptr + offs, mask=mask, other=0).to(tl.float32)
    else:
        # read each byte once and split it into its two codes, then interleave them back
        # into element order (low nibble first)
        half = group_size // 2
        pcols = tl.arange(0, BLOCK_K // 2)
        poffs = rows.to(tl.int64)[:, None] * half + pcols[None, :]
        packed = tl.load(data_ptr + poffs, mask=row_ok[:, None] & (pcols < half)[None, :],
                         other=0)
        even = (packed & 0x0F).to(tl.float32)
        odd = (packed >> 4).to(tl.float32)
        q = tl.reshape(tl.join(even, odd), (BLOCK_G, BLOCK_K))
        if SYMMETRIC:
            q -= _INT4_OFFSET
        cols = tl.arange(0, BLOCK_K)
        offs = rows.to(tl.int64)[:, None] * group_size + cols[None, :]
        mask = row_ok[:, None] & (cols < group_size)[None, :]
    scale = tl.load(scales_ptr + rows, mask=row_ok, other=0.0)
    if SYMMETRIC:
        out = scale[:, None] * q
    else:
        zero = tl.load(zeros_ptr + rows, mask=row_ok, other=0.0)
        out = scale[:, None] * (q - zero[:, None])
    tl.store(out_ptr + offs, out.to(out_ptr.dtype.element_ty), mask=mask)


# --- custom ops ----------------------------------------------------------------------------


def _out_shapes(shape, bits: int, group_size: int):
    *lead, n = shape
    data = (*lead, n // 2) if bits == 4 else (*lead, n)
    return data, (*lead, n // group_size)


def _data_dtype(bits: int, symmetric: bool) -> torch.dtype:
    return torch.int8 if (bits == 8 and symmetric) else torch.uint8


@torch.library.custom_op("subzoo::quantize", mutates_args=())
def _quantize_op(
    x: torch.Tensor, bits: int, group_size: int, symmetric: bool, stochastic: bool, seed: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(data, scales, zeros) of :func:`quantize_triton`; ``zeros`` is empty if symmetric."""
    data_shape, scales_shape = _out_shapes(x.shape, bits, group_size)
    data = torch.empty(data_shape, dtype=_data_dtype(bits, symmetric), device=x.device)
    scales = torch.empty(scales_shape, dtype=torch.float32, device=x.device)
    zeros = torch.empty(0 if symmetric else scales_shape, dtype=torch.float32, device=x.device)
    n_groups = scales.numel()
    if n_groups:
        block_g, block_k = _tiles(group_size)
        _quantize_kernel[(triton.cdiv(n_groups, block_g),)](
            x.contiguous(), data, scales, scales if symmetric else zeros,
            n_groups, group_size, seed,
            BITS=bits, SYMMETRIC=symmetric, STOCHASTIC=stochastic,
            BLOCK_G=block_g, BLOCK_K=block_k,
        )
    return data, scales, zeros


@_quantize_op.register_fake
def _(x, bits, group_size, symmetric, stochastic, seed):
    data_shape, scales_shape = _out_shapes(x.shape, bits, group_size)
    return (
        x.new_empty(data_shape, dtype=_data_dtype(bits, symmetric)),
        x.new_empty(scales_shape, dtype=torch.float32),
        x.new_empty(0 if symmetric else scales_shape, dtype=torch.float32),
    )


@torch.library.custom_op("subzoo::dequantize", mutates_args=())
def _dequantize_op(
    data: torch.Tensor, scales: torch.Tensor, zeros: torch.Tensor | None, bits: int,
    group_size: int, dtype: torch.dtype,
) -> torch.Tensor:
    """``[..., n]`` in ``dtype`` from the codes ``data`` and ``scales`` (``zeros``)."""
    out = torch.empty(_dequant_shape(data, bits), dtype=dtype, device=data.device)
    n_groups = scales.numel()
    if n_groups:
        block_g, block_k = _tiles(group_size)
        _dequantize_kernel[(triton.cdiv(n_groups, block_g),)](
            data.contiguous(), scales.contiguous(),
            scales if zeros is None else zeros.contiguous(), out,
            n_groups, group_size,
            BITS=bits, SYMMETRIC=zeros is None, BLOCK_G=block_g, BLOCK_K=block_k,
        )
    return out


def _dequant_shape(data: torch.Tensor, bits: int) -> tuple[int, ...]:
    *lead, m = data.shape
    return (*lead, 2 * m if bits == 4 else m)


@_dequantize_op.register_fake
def _(data, scales, zeros, bits, group_size, dtype):
    return data.new_empty(_dequant_shape(data, bits), dtype=dtype)


# --- public entry points (called by the dispatcher) ----------------------------------------


def _draw_seed(generator: torch.Generator | None) -> int:
    """A Philox seed drawn from ``generator`` (the global CPU RNG when None)."""
    device = generator.device if generator is not None else "cpu"
    return int(torch.randint(0, 2**31 - 1, (), generator=generator, device=device))


def quantize_triton(
    x: torch.Tensor, bits: int = 8, group_size: int | None = 256, *, symmetric: bool = False,
    stochastic: bool = False, seed: int | None = None,
    generator: torch.Generator | None = None,
) -> QuantizedTensor:
    """Triton :func:`~subspace_core.ops.quantize.reference.quantize_ref` (same arguments).

    Stochastic noise comes from Philox seeded by ``seed``, or by a seed drawn from
    ``generator`` / the global RNG, so it is reproducible under ``torch.manual_seed``.
    """
    group_size = check_quantize_args(x, bits, group_size, seed, generator)
    if stochastic and seed is None:
        seed = _draw_seed(generator)
    data, scales, zeros = torch.ops.subzoo.quantize(
        x.detach(), bits, group_size, symmetric, stochastic, 0 if seed is None else seed
    )
    return QuantizedTensor(data=data, scales=scales, zeros=None if symmetric else zeros,
                           shape=tuple(x.shape), bits=bits, group_size=group_size)


def dequantize_triton(q: QuantizedTensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Triton :func:`~subspace_core.ops.quantize.reference.dequantize_ref`."""
    check_quantized(q)
    return torch.ops.subzoo.dequantize(q.data, q.scales, q.zeros, q.bits, q.group_size, dtype)
