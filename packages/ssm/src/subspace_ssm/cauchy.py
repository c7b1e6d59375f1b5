"""Cauchy kernels ``Σ_n v_n / (z_k − w_n)``: S4's generating-function workhorse.

* :func:`cauchy_ref` — the definition, one pole at a time (the spec).
* :func:`cauchy_conj` — the vectorised fast path for conjugate-symmetric poles: the full
  sum over ``w`` and ``w̄`` (with ``v`` and ``v̄``) from the stored half, in one broadcast::

      v/(z − w) + v̄/(z − w̄) = (2 Re(v) z − 2 Re(v w̄)) / (z² − 2 Re(w) z + |w|²)

  half the divisions of the naive sum, and exactly what a real system's kernel needs.
"""

from __future__ import annotations

import torch

__all__ = ["cauchy_conj", "cauchy_ref"]


def cauchy_ref(v: torch.Tensor, z: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """``out[..., k] = Σ_n v[..., n] / (z[k] − w[..., n])``.

    Args:
        v: ``[..., N]`` complex numerators.
        z: ``[..., K]`` evaluation points (leading dims broadcast with v's, e.g. one set of
            points per channel).
        w: ``[..., N]`` poles (broadcastable with v).

    Returns ``[..., K]``.
    """
    out = None
    for n in range(v.shape[-1]):
        term = v[..., n, None] / (z - w[..., n, None])
        out = term if out is None else out + term
    return out


def cauchy_conj(v: torch.Tensor, z: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """:func:`cauchy_ref` of ``cat(v, v̄)``, ``cat(w, w̄)`` given only the halves ``v, w [..., M]``
    (and the same ``z [..., K]``)."""
    z = z[..., None, :]  # [..., 1, K] against [..., M, 1]
    v, w = v[..., None], w[..., None]
    num = 2 * v.real * z - 2 * (v * w.conj()).real
    den = z * z - 2 * w.real * z + w.abs().square()
    return (num / den).sum(-2)
