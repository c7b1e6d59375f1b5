"""Compute kernels: each op is a Triton kernel, a pure-PyTorch ``<op>_ref`` and a dispatcher.

One subpackage per op, imported by its own name (the subpackage and its public function
share the name, so they are not re-exported here, where the function would shadow the
subpackage)::

    from subspace_core.ops.projected_adam import projected_adam   # fused GaLore/Fira step
    from subspace_core.ops.quantize import quantize, dequantize   # int8 / packed int4
    from subspace_core.ops.lowrank_linear import lowrank_linear, svd_linear
    from subspace_core.ops.selective_scan import selective_scan   # Mamba-1 scan, fwd + bwd

Each takes ``backend="auto" | "triton" | "torch"`` (see :mod:`subspace_core.ops._dispatch`).
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

__all__ = [
    "BACKENDS",
    "BackendUnavailable",
    "interpreter_enabled",
    "select_backend",
    "triton_available",
]
