"""Compute kernels: each op is a Triton kernel, a pure-PyTorch ``<op>_ref`` and a dispatcher.

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
