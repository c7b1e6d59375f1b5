"""Group-wise INT8 / INT4 quantization (Q-GaLore projectors and INT8 weights).

``quantize(x, bits, group_size, ...)`` → :class:`QuantizedTensor`; ``dequantize(q, dtype)``
→ tensor. The scheme (scales, zero-points, rounding, nibble order) is specified in
:mod:`subspace_core.ops.quantize.reference`.

Backends: ``"torch"`` (the reference), ``"triton"`` (one-pass kernels,
``torch.ops.subzoo.quantize`` / ``torch.ops.subzoo.dequantize``), ``"auto"`` (Triton for
CUDA tensors when it imports and supports the inputs, else the reference).
"""

from __future__ import annotations

import torch

from subspace_core.ops._dispatch import select_backend
from subspace_core.ops.quantize.reference import (
    QuantizedTensor,
    check_quantize_args,
    check_quantized,
    dequantize_ref,
    pack_int4,
    quantize_ref,
    unpack_int4,
)

__all__ = [
    "QuantizedTensor",
    "dequantize",
    "dequantize_ref",
    "pack_int4",
    "quantize",
    "quantize_ref",
    "triton_supports",
    "unpack_int4",
]

#: Float dtypes the kernels read / write.
TRITON_DTYPES = (torch.float16, torch.bfloat16, torch.float32)
#: Largest group the kernels hold in registers (one tile row per group).
TRITON_MAX_GROUP_SIZE = 8192


def triton_supports(dtype: torch.dtype, group_size: int, on_cuda: bool) -> tuple[bool, str]:
    """Whether the kernels handle this float ``dtype`` and ``group_size``, and why not."""
    if dtype not in TRITON_DTYPES:
        return False, f"dtype {dtype} (supported: float16, bfloat16, float32)"
    if dtype == torch.bfloat16 and not on_cuda:
        return False, "bfloat16 is computed wrongly by the Triton CPU interpreter"
    if group_size > TRITON_MAX_GROUP_SIZE:
        return False, f"group_size {group_size} > {TRITON_MAX_GROUP_SIZE}"
    return True, ""


def quantize(
    x: torch.Tensor,
    bits: int = 8,
    group_size: int | None = 256,
    *,
    symmetric: bool = False,
    stochastic: bool = False,
    seed: int | None = None,
    generator: torch.Generator | None = None,
    backend: str = "auto",
) -> QuantizedTensor:
    """Quantize ``x [..., n]`` in groups of ``group_size`` along the last dim.

    Args:
        x: float16 / bfloat16 / float32 (/ float64, reference only) tensor ``[..., n]``.
        bits: 8 (one code per byte) or 4 (two codes per uint8, element ``2j`` in the low
            nibble).
        group_size: a divisor of ``n`` (even for 4 bits); ``None``: one group per row.
        symmetric: absmax scales, signed codes, no zero-point; default False is Q-GaLore's
            min-max scaling with a per-group zero-point.
        stochastic: unbiased stochastic rounding ``floor(v + U[0,1))`` instead of
            round-to-nearest-even.
        seed: seed of the rounding noise; exclusive with ``generator``. The torch backend
            uses torch's generator, the Triton backend Philox: equal in distribution only.
        generator: generator of the rounding noise (or of the Philox seed, Triton).
        backend: ``"auto"``, ``"torch"`` or ``"triton"``.

    Returns:
        :class:`QuantizedTensor` ``(data, scales, zeros, shape, bits, group_size)``.
    """
    size = check_quantize_args(x, bits, group_size, seed, generator)
    supported, reason = triton_supports(x.dtype, size, x.is_cuda)
    chosen = select_backend("quantize", backend, x, supported=supported, reason=reason)
    if chosen == "torch":
        return quantize_ref(x, bits, size, symmetric=symmetric, stochastic=stochastic,
                            seed=seed, generator=generator)
    from subspace_core.ops.quantize import triton as _impl

    return _impl.quantize_triton(x, bits, size, symmetric=symmetric, stochastic=stochastic,
                                 seed=seed, generator=generator)


def dequantize(
    q: QuantizedTensor, dtype: torch.dtype = torch.float32, *, backend: str = "auto"
) -> torch.Tensor:
    """Reconstruct the ``q.shape`` tensor in ``dtype`` (``s·q`` or ``s·(q − z)`` per group)."""
    check_quantized(q)
    tensors = [q.data, q.scales] + ([] if q.zeros is None else [q.zeros])
    supported, reason = triton_supports(dtype, q.group_size, q.data.is_cuda)
    chosen = select_backend("dequantize", backend, *tensors, supported=supported,
                            reason=reason)
    if chosen == "torch":
        return dequantize_ref(q, dtype)
    from subspace_core.ops.quantize import triton as _impl

    return _impl.dequantize_triton(q, dtype)
