"""Compute kernels: each op is a Triton kernel, a pure-PyTorch ``<op>_ref`` and a dispatcher.

Ops: :func:`projected_adam` (fused GaLore/Fira step), :func:`quantize` /
:func:`dequantize` (int8 / packed int4, group-wise, stochastic rounding),
:func:`lowrank_linear` and :func:`svd_linear` (forward and backward). Each takes
``backend="auto" | "triton" | "torch"``; see :mod:`subspace_core.ops._dispatch`.

This is the only package that imports ``triton``, and only lazily (when a Triton backend
is actually selected).
"""

from subspace_core.ops._dispatch import (
    BACKENDS,
    BackendUnavailable,
    interpreter_enabled,
    select_backend,
    triton_available,
)
from subspace_core.ops.lowrank_linear import (
    lowrank_linear,
    lowrank_linear_ref,
    svd_linear,
    svd_linear_ref,
)
from subspace_core.ops.projected_adam import projected_adam, projected_adam_ref, projection_side
from subspace_core.ops.quantize import (
    QuantizedTensor,
    dequantize,
    dequantize_ref,
    quantize,
    quantize_ref,
)

__all__ = [
    "BACKENDS",
    "BackendUnavailable",
    "QuantizedTensor",
    "dequantize",
    "dequantize_ref",
    "interpreter_enabled",
    "lowrank_linear",
    "lowrank_linear_ref",
    "projected_adam",
    "projected_adam_ref",
    "projection_side",
    "quantize",
    "quantize_ref",
    "select_backend",
    "svd_linear",
    "svd_linear_ref",
    "triton_available",
]
