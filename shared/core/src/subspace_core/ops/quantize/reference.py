"""Group-wise INT8 / INT4 quantization: the pure-PyTorch reference (the spec).

Scheme (Q-GaLore's, see below for the two deliberate differences)
-----------------------------------------------------------------

``x`` has shape ``[..., n]``. Its last dim is cut into ``n // group_size`` groups of
``group_size`` contiguous elements; every group ``g`` gets its own fp32 scale ``s_g`` (and,
asymmetric, its own fp32 zero-point ``z_g``). With ``qmax = 2**(bits-1) - 1`` (symmetric)
or ``qmax = 2**bits - 1`` (asymmetric), all arithmetic in float32:

* symmetric (absmax):   ``s = max(absmax(x_g), tiny) / qmax``,  ``v = x / s``,
  code ``q ∈ [-qmax, qmax]``,  ``dequant = s · q``.
* asymmetric (min-max): ``s = max(max(x_g) - min(x_g), tiny) / qmax``,
  ``z = -min(x_g) / s``,  ``v = (x - min(x_g)) / s``,  code ``q ∈ [0, qmax]``,
  ``dequant = s · (q - z)``.

Rounding of ``v`` to the code ``q``:

* deterministic: round half to even (``torch.round``), so ``|dequant - x| ≤ s/2``;
* stochastic: ``q = floor(v + u)``, ``u ~ U[0, 1)``, so ``P(q = ⌈v⌉) = v - ⌊v⌋`` and
  ``E[dequant(quant(x))] = x`` (unbiased).

Both clamp ``q`` to the code range; since ``v`` lies in that range already (the scale comes
from the group's own extremes), the clamp only guards against a one-ulp overshoot.

Storage (:class:`QuantizedTensor`)
----------------------------------

* ``bits=8``, symmetric: ``data`` int8 ``[..., n]`` (codes in ``[-127, 127]``).
* ``bits=8``, asymmetric: ``data`` uint8 ``[..., n]`` (codes in ``[0, 255]``).
* ``bits=4``: ``data`` uint8 ``[..., n // 2]``, two 4-bit *nibbles* per byte. Element
  ``2j`` goes into the **low** nibble and element ``2j + 1`` into the **high** nibble:
  ``byte = c[2j] | (c[2j+1] << 4)``. Nibble ``c`` is the code itself (asymmetric,
  ``[0, 15]``) or the code plus 8 (symmetric, codes ``[-7, 7]`` stored as ``[1, 15]``).
* ``scales`` (and ``zeros`` when asymmetric) float32 ``[..., n // group_size]``;
  ``zeros is None`` for symmetric.

Differences from Q-GaLore's ``_quantize`` (``q_galore_torch``), both on purpose:

1. Q-GaLore rounds the zero-point and clamps it to ``[0, qmax]``; a group whose values
   are all positive (or all negative) then saturates, e.g. every value of a group lying in
   ``[10, 11]`` dequantizes to ``255 · s = 1``. Here ``z = -min/s`` is kept unrounded, so
   every group uses its whole code range, and stochastic rounding stays unbiased at the
   group's extremes (a rounded zero-point pushes ``v`` up to half a code outside the range
   there, where the clamp biases it). The dequant formula ``s · (q - z)`` is unchanged.
2. The range is clamped at ``tiny = 1e-30`` instead of ``1e-5``, so groups of tiny values
   (gradients, small projector entries) keep their 8 / 4 bits of resolution.

Q-GaLore groups the *flattened* tensor (``w.reshape(-1, group_size)``); for a tensor whose
last dim is not a multiple of ``group_size``, pass ``x.reshape(-1, group_size)`` to get the
same groups, and reshape the dequantized result back.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

__all__ = [
    "INT4_SYMMETRIC_OFFSET",
    "MIN_RANGE",
    "QuantizedTensor",
    "check_quantize_args",
    "check_quantized",
    "code_range",
    "dequantize_ref",
    "pack_int4",
    "quantize_ref",
    "unpack_int4",
]

#: Smallest group range (absmax, or max - min) used to compute a scale: keeps scales
#: finite and normal for all-zero / constant groups.
MIN_RANGE = 1e-30

#: Symmetric 4-bit codes ``[-7, 7]`` are stored as nibbles ``code + 8`` in ``[1, 15]``.
INT4_SYMMETRIC_OFFSET = 8

FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


@dataclass(frozen=True, eq=False)  # eq=False: fields are tensors
class QuantizedTensor:
    """A group-wise quantized tensor (see the module docstring for the exact scheme).

    Attributes:
        data: codes; int8 ``[..., n]`` (8-bit symmetric), uint8 ``[..., n]`` (8-bit
            asymmetric) or uint8 ``[..., n // 2]`` (4-bit, two nibbles per byte, element
            ``2j`` in the low nibble).
        scales: float32 ``[..., n // group_size]``.
        zeros: float32 ``[..., n // group_size]`` zero-points in code units (asymmetric),
            ``None`` (symmetric).
        shape: shape of the original tensor ``[..., n]``.
        bits: 8 or 4.
        group_size: elements per group along the last dim.
    """

    data: torch.Tensor
    scales: torch.Tensor
    zeros: torch.Tensor | None
    shape: tuple[int, ...]
    bits: int
    group_size: int

    @property
    def symmetric(self) -> bool:
        return self.zeros is None

    @property
    def device(self) -> torch.device:
        return self.data.device

    @property
    def nbytes(self) -> int:
        """Bytes of storage: codes plus scales (plus zero-points)."""
        tensors = [self.data, self.scales] + ([] if self.zeros is None else [self.zeros])
        return sum(t.numel() * t.element_size() for t in tensors)


def check_quantize_args(
    x: torch.Tensor, bits: int, group_size: int | None, seed: int | None = None,
    generator: torch.Generator | None = None,
) -> int:
    """Validate :func:`quantize_ref` arguments; return the resolved group size."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"x: expected a torch.Tensor, got {type(x).__name__}")
    if x.dtype not in FLOAT_DTYPES:
        raise TypeError(f"x: expected a floating dtype {[str(d) for d in FLOAT_DTYPES]}, "
                        f"got {x.dtype}")
    if x.dim() < 1 or x.shape[-1] == 0:
        raise ValueError(f"x: expected shape [..., n] with n >= 1, got {tuple(x.shape)}")
    if isinstance(bits, bool) or bits not in (4, 8):
        raise ValueError(f"bits: expected 4 or 8, got {bits!r}")
    n = x.shape[-1]
    if group_size is None:
        group_size = n
    if isinstance(group_size, bool) or not isinstance(group_size, int) or group_size < 1:
        raise ValueError(f"group_size: expected a positive int or None, got {group_size!r}")
    if n % group_size:
        raise ValueError(
            f"group_size: expected a divisor of the last dim of x ({n}), got {group_size} "
            f"(use group_size=None for one group per row, or quantize "
            f"x.reshape(-1, group_size) to group the flattened tensor)"
        )
    if bits == 4 and group_size % 2:
        raise ValueError(f"group_size: expected an even size for bits=4 (two codes per byte), "
                         f"got {group_size}")
    if seed is not None and generator is not None:
        raise ValueError("seed, generator: expected at most one of them, got both")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int) or seed < 0):
        raise ValueError(f"seed: expected a non-negative int, got {seed!r}")
    return group_size


def code_range(bits: int, symmetric: bool) -> tuple[int, int]:
    """(lowest, highest) code: ``[-qmax, qmax]`` symmetric, ``[0, 2**bits - 1]`` otherwise."""
    if symmetric:
        qmax = 2 ** (bits - 1) - 1
        return -qmax, qmax
    return 0, 2**bits - 1


def pack_int4(codes: torch.Tensor) -> torch.Tensor:
    """Pack nibbles ``[..., n]`` (integers in ``[0, 15]``, n even) into uint8 ``[..., n // 2]``.

    Element ``2j`` goes into the low nibble and element ``2j + 1`` into the high nibble.
    """
    if codes.shape[-1] % 2:
        raise ValueError(f"codes: expected an even last dim, got {tuple(codes.shape)}")
    c = codes.to(torch.uint8)
    return c[..., 0::2] | (c[..., 1::2] << 4)


def unpack_int4(packed: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`pack_int4`: uint8 ``[..., m]`` → uint8 nibbles ``[..., 2m]``."""
    if packed.dtype != torch.uint8:
        raise TypeError(f"packed: expected torch.uint8, got {packed.dtype}")
    low = packed & 0x0F
    high = packed >> 4
    return torch.stack((low, high), dim=-1).flatten(-2)


def _generator_for(x: torch.Tensor, seed: int | None,
                   generator: torch.Generator | None) -> torch.Generator | None:
    if seed is None:
        return generator
    return torch.Generator(device=x.device).manual_seed(seed)


def quantize_ref(
    x: torch.Tensor,
    bits: int = 8,
    group_size: int | None = 256,
    *,
    symmetric: bool = False,
    stochastic: bool = False,
    seed: int | None = None,
    generator: torch.Generator | None = None,
) -> QuantizedTensor:
    """Quantize ``x [..., n]`` group-wise along its last dim (reference implementation).

    Args:
        x: floating tensor ``[..., n]``; computed in float32 whatever its dtype.
        bits: 8 or 4 (4: two codes packed per uint8 byte, element ``2j`` in the low nibble).
        group_size: elements per group, a divisor of ``n`` (even for ``bits=4``);
            ``None``: one group per row (``group_size = n``).
        symmetric: absmax scaling with signed codes (no zero-point) if True; min-max
            scaling with a per-group zero-point (Q-GaLore's scheme) if False.
        stochastic: round ``v`` to ``floor(v + u)``, ``u ~ U[0, 1)`` (unbiased) instead of
            to the nearest code (ties to even).
        seed: seed of the rounding noise (stochastic only); exclusive with ``generator``.
        generator: torch generator of the rounding noise; the global RNG when both
            ``seed`` and ``generator`` are None.

    Returns:
        :class:`QuantizedTensor` with ``data``, ``scales``, ``zeros`` (None if symmetric).
    """
    group_size = check_quantize_args(x, bits, group_size, seed, generator)
    shape = tuple(x.shape)
    lo, hi = code_range(bits, symmetric)
    qmax = float(hi)
    groups = x.detach().float().reshape(*shape[:-1], shape[-1] // group_size, group_size)
    if symmetric:
        absmax = groups.abs().amax(dim=-1, keepdim=True)
        scales = absmax.clamp(min=MIN_RANGE) / qmax
        zeros = None
        v = groups / scales
    else:
        gmin = groups.amin(dim=-1, keepdim=True)
        gmax = groups.amax(dim=-1, keepdim=True)
        scales = (gmax - gmin).clamp(min=MIN_RANGE) / qmax
        zeros = -gmin / scales
        v = (groups - gmin) / scales
    if stochastic:
        noise = torch.rand(v.shape, generator=_generator_for(x, seed, generator),
                           device=v.device, dtype=torch.float32)
        q = torch.floor(v + noise)
    else:
        q = torch.round(v)
    q = q.clamp(lo, hi).reshape(shape)
    if bits == 8:
        data = q.to(torch.int8 if symmetric else torch.uint8)
    else:
        data = pack_int4(q + INT4_SYMMETRIC_OFFSET if symmetric else q)
    return QuantizedTensor(
        data=data,
        scales=scales.squeeze(-1),
        zeros=None if zeros is None else zeros.squeeze(-1),
        shape=shape,
        bits=bits,
        group_size=group_size,
    )


def check_quantized(q: QuantizedTensor) -> None:
    """Validate a :class:`QuantizedTensor`'s fields against each other."""
    if not isinstance(q, QuantizedTensor):
        raise TypeError(f"q: expected a QuantizedTensor, got {type(q).__name__}")
    if q.bits not in (4, 8):
        raise ValueError(f"q.bits: expected 4 or 8, got {q.bits!r}")
    *lead, n = q.shape
    expected_data = (*lead, n // 2) if q.bits == 4 else (*lead, n)
    if tuple(q.data.shape) != expected_data:
        raise ValueError(f"q.data: expected shape {expected_data}, got {tuple(q.data.shape)}")
    want = torch.int8 if (q.bits == 8 and q.symmetric) else torch.uint8
    if q.data.dtype != want:
        raise TypeError(f"q.data: expected {want}, got {q.data.dtype}")
    expected_scales = (*lead, n // q.group_size)
    for name, t in (("scales", q.scales), ("zeros", q.zeros)):
        if t is not None and tuple(t.shape) != expected_scales:
            raise ValueError(f"q.{name}: expected shape {expected_scales}, got {tuple(t.shape)}")


def dequantize_ref(q: QuantizedTensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Reconstruct ``[..., n]`` from ``q``: ``s · q`` (symmetric) or ``s · (q - z)``.

    Computed in float32, then cast to ``dtype``.
    """
    check_quantized(q)
    if q.bits == 8:
        codes = q.data.float()
    else:
        codes = unpack_int4(q.data).float()
        if q.symmetric:
            codes = codes - INT4_SYMMETRIC_OFFSET  # nibble [1, 15] → code [-7, 7]
    *lead, n = q.shape
    codes = codes.reshape(*lead, n // q.group_size, q.group_size)
    scales = q.scales.unsqueeze(-1)
    out = scales * codes if q.zeros is None else scales * (codes - q.zeros.unsqueeze(-1))
    return out.reshape(q.shape).to(dtype)
