"""Projections onto subspaces and growing bases by captured energy (GPM-style).

Conventions. ``U`` [..., m, k] has orthonormal columns (``Uᴴ U = I_k``); use
:func:`~subspace_core.linalg.bases.orthonormal_basis` to get one from any spanning set.
``side`` says which dimension of ``X`` lives in ``R^m``:

* ``side="left"`` — the columns of ``X`` [..., m, n] are the vectors:
  coordinates ``Uᴴ X`` [..., k, n], projection ``U Uᴴ X``;
* ``side="right"`` — the rows of ``X`` [..., n, m] are the vectors (e.g. a gradient
  ``g`` [out, in] projected on an input-space basis, as in GPM's ``g ← g − g U Uᵀ``):
  coordinates ``X U`` [..., n, k], projection ``X U Uᴴ``.

A 1-D ``X`` [m] is a single vector on either side. Products run in the promoted dtype of
``X`` and ``U`` and come back in ``X``'s dtype, so a float32 basis projects a bfloat16
gradient without rounding the basis first.
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from subspace_core.linalg.bases import (
    check_matrix,
    common_rank,
    qr_positive,
    working_dtype,
)
from subspace_core.linalg.svd import robust_svd

__all__ = [
    "EnergyBasisUpdate",
    "basis_union",
    "coordinates",
    "extend_basis_by_energy",
    "project",
    "project_out",
    "select_by_energy",
]

_SIDES = ("left", "right")


def _operands(X: torch.Tensor, U: torch.Tensor, side: str, check_orthonormal: bool
              ) -> tuple[torch.Tensor, torch.Tensor, bool]:
    """Validate; return (X as a matrix in the compute dtype, U in it, whether X was 1-D)."""
    if side not in _SIDES:
        raise ValueError(f"side: expected one of {_SIDES}, got {side!r}")
    check_matrix("X", X, min_ndim=1)
    check_matrix("U", U)
    vector = X.ndim == 1
    if vector:
        X = X.unsqueeze(-1) if side == "left" else X.unsqueeze(-2)
    dim = -2 if side == "left" else -1
    if X.shape[dim] != U.shape[-2]:
        where = "rows" if side == "left" else "columns"
        raise ValueError(
            f"X: with side={side!r} its {where} must match U's {U.shape[-2]} rows "
            f"(U is [..., m, k]); got X of shape {tuple(X.shape)}, U of shape {tuple(U.shape)}"
        )
    dtype = working_dtype(torch.promote_types(X.dtype, U.dtype))
    U = U.to(dtype)
    if check_orthonormal:
        _assert_orthonormal(U)
    return X.to(dtype), U, vector


def _assert_orthonormal(U: torch.Tensor) -> None:
    k = U.shape[-1]
    gram = U.mH @ U
    err = float(torch.linalg.matrix_norm(gram - torch.eye(k, dtype=U.dtype, device=U.device)).max())
    tol = 100 * max(U.shape[-2], 1) * torch.finfo(gram.real.dtype).eps
    if err > tol:
        raise ValueError(f"U: expected orthonormal columns (‖UᴴU − I‖_F <= {tol:.2g}), got "
                         f"‖UᴴU − I‖_F = {err:.3g}; orthonormalise it with orthonormal_basis")


def _finish(Y: torch.Tensor, like: torch.Tensor, vector: bool, side: str) -> torch.Tensor:
    if vector:
        Y = Y.squeeze(-1) if side == "left" else Y.squeeze(-2)
    return Y.to(like.dtype)


def coordinates(X: torch.Tensor, U: torch.Tensor, *, side: str = "left",
                check_orthonormal: bool = False) -> torch.Tensor:
    """Coordinates of ``X`` in the basis ``U``: ``Uᴴ X`` (left) or ``X U`` (right).

    Shapes: left ``X`` [..., m, n] → [..., k, n]; right ``X`` [..., n, m] → [..., n, k];
    ``X`` [m] → [k]. ``check_orthonormal=True`` raises unless ``Uᴴ U ≈ I`` (costs a Gram).
    """
    Xm, Um, vector = _operands(X, U, side, check_orthonormal)
    Y = Um.mH @ Xm if side == "left" else Xm @ Um
    return _finish(Y, X, vector, side)


def project(X: torch.Tensor, U: torch.Tensor, *, side: str = "left",
            check_orthonormal: bool = False) -> torch.Tensor:
    """Orthogonal projection of ``X`` onto ``span(U)``: ``U Uᴴ X`` (left) or ``X U Uᴴ`` (right).

    ``P = U Uᴴ`` is the orthogonal projector when ``Uᴴ U = I``: ``P² = P``, ``Pᴴ = P``. Computed
    as ``U (Uᴴ X)`` — two thin products, never the m×m projector. Same shape as ``X``.
    """
    Xm, Um, vector = _operands(X, U, side, check_orthonormal)
    Y = Um @ (Um.mH @ Xm) if side == "left" else (Xm @ Um) @ Um.mH
    return _finish(Y, X, vector, side)


def project_out(X: torch.Tensor, U: torch.Tensor, *, side: str = "left",
                check_orthonormal: bool = False) -> torch.Tensor:
    """Component of ``X`` orthogonal to ``span(U)``: ``X − U Uᴴ X`` (left), ``X − X U Uᴴ`` (right).

    ``I − U Uᴴ`` is the projector on the orthogonal complement; GPM applies it to gradients
    (right side for row-vector gradients ``g`` [out, in] with an input-space basis) so that
    updates do not interfere with directions earlier tasks rely on. Same shape as ``X``.
    """
    Xm, Um, vector = _operands(X, U, side, check_orthonormal)
    Y = Xm - Um @ (Um.mH @ Xm) if side == "left" else Xm - (Xm @ Um) @ Um.mH
    return _finish(Y, X, vector, side)


def _check_threshold(threshold: float) -> float:
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) \
            or not 0 < threshold <= 1:
        raise ValueError(f"threshold: expected a float in (0, 1], got {threshold!r}")
    return float(threshold)


def _count_to_energy(energies: torch.Tensor, target: float) -> int:
    """Smallest k with ``sum(energies[:k]) >= target`` (energies descending, 1-D, float64).

    A relative slack of 1e-12 absorbs round-off, so ``threshold=1`` stops at the last
    non-zero direction instead of running past it; never more than the non-zero count.
    """
    cumulative = torch.cumsum(energies, dim=0)
    reached = cumulative >= target * (1 - 1e-12)
    nonzero = int((energies > 0).sum())
    k = int(reached.to(torch.int64).argmax()) + 1 if bool(reached.any()) else nonzero
    return min(k, nonzero)


def select_by_energy(S: torch.Tensor, threshold: float) -> int:
    """GPM's energy criterion: the smallest ``k`` with ``Σ_{i<k} σ_i² >= threshold · Σ_i σ_i²``.

    Args:
        S: singular values [k_max], non-negative, in descending order (as SVDs return them).
        threshold: fraction of energy to keep, in ``(0, 1]`` (GPM uses 0.97–0.99).

    Returns:
        ``k`` (0 only for an all-zero spectrum).
    """
    check_matrix("S", S, min_ndim=1)
    if S.ndim != 1:
        raise ValueError(f"S: expected a 1-D vector of singular values, got shape {tuple(S.shape)}")
    _check_threshold(threshold)
    if bool((S < 0).any()) or bool((S[1:] > S[:-1]).any()):
        raise ValueError("S: expected non-negative singular values in descending order")
    energies = S.detach().to(torch.float64) ** 2
    return _count_to_energy(energies, threshold * float(energies.sum()))


class EnergyBasisUpdate(NamedTuple):
    """Result of :func:`extend_basis_by_energy`.

    Attributes:
        basis: ``[U, U_new]`` [m, k + k_new], orthonormal columns (``U`` unchanged first).
        new: the added directions ``U_new`` [m, k_new].
        captured: fraction of ``‖R‖_F²`` captured by ``basis`` (in ``[0, 1]``).
    """

    basis: torch.Tensor
    new: torch.Tensor
    captured: float


def extend_basis_by_energy(R: torch.Tensor, threshold: float,
                           basis: torch.Tensor | None = None) -> EnergyBasisUpdate:
    """Grow an orthonormal ``basis`` until it captures ``threshold`` of ``R``'s energy (GPM).

    Gradient Projection Memory (Saha, Garg & Roy, ICLR 2021), for a layer's representation
    matrix ``R`` [m, n] (columns are activations) and the basis ``U`` [m, k] kept so far:

    * no basis yet: ``R = Û Σ̂ V̂ᵀ`` and ``U_new = Û[:, :k']`` with ``k' = select_by_energy(σ̂, t)``;
    * otherwise: the residual ``R̂ = R − U Uᵀ R`` (what ``U`` misses), ``R̂ = Û Σ̂ V̂ᵀ``, and the
      smallest ``k'`` with ``‖Uᵀ R‖_F² + Σ_{i<k'} σ̂_i² >= t · ‖R‖_F²`` — the energy ``U``
      already captures counts towards the threshold, so nothing is added when
      ``‖Uᵀ R‖_F² >= t ‖R‖_F²``.

    Note: GPM's reference code counts one direction fewer (it tests the threshold after
    adding a direction and stops before keeping it); this follows the paper's definition.
    ``U_new`` is re-orthogonalised against ``U`` (it is orthogonal only in exact arithmetic)
    and directions that then vanish are dropped.

    Args:
        R: representation matrix [m, n] (one layer, 2-D).
        threshold: energy fraction ``t`` in ``(0, 1]``.
        basis: existing orthonormal basis [m, k], or None.

    Returns:
        :class:`EnergyBasisUpdate` ``(basis [m, k + k'], new [m, k'], captured)``.
    """
    check_matrix("R", R)
    if R.ndim != 2:
        raise ValueError(f"R: expected a 2-D representation matrix [m, n], got shape "
                         f"{tuple(R.shape)}")
    _check_threshold(threshold)
    dtype = working_dtype(R.dtype)
    Rw = R.to(dtype)
    m = R.shape[0]
    if basis is None:
        basis_w = Rw.new_zeros(m, 0)
    else:
        check_matrix("basis", basis)
        if basis.ndim != 2 or basis.shape[0] != m:
            raise ValueError(f"basis: expected [{m}, k] (R has {m} rows), got shape "
                             f"{tuple(basis.shape)}")
        basis_w = basis.to(dtype)
    total = float(torch.linalg.matrix_norm(Rw).double() ** 2)
    if total == 0.0:
        return EnergyBasisUpdate(basis_w.to(R.dtype), Rw.new_zeros(m, 0).to(R.dtype), 1.0)

    residual = Rw - basis_w @ (basis_w.mH @ Rw)
    captured_before = max(total - float(torch.linalg.matrix_norm(residual).double() ** 2), 0.0)
    U_hat, S_hat, _ = robust_svd(residual)
    energies = S_hat.to(torch.float64) ** 2
    room = m - basis_w.shape[1]
    k_new = min(_count_to_energy(energies, threshold * total - captured_before), room) \
        if captured_before < threshold * total else 0
    new = U_hat[:, :k_new]
    if k_new:
        # Drop directions that collapse once re-orthogonalised: they were numerically
        # inside span(basis) (tiny-σ̂ singular vectors carry that round-off).
        new = _orthogonalise_against(basis_w, new)
        norms = torch.linalg.vector_norm(new, dim=0)
        new = new[:, norms > 0.5]
        if new.shape[1]:
            new = qr_positive(new)
    grown = torch.cat([basis_w, new], dim=1)
    captured = float(torch.linalg.matrix_norm(grown.mH @ Rw).double() ** 2) / total
    return EnergyBasisUpdate(grown.to(R.dtype), new.to(R.dtype), min(captured, 1.0))


def basis_union(U: torch.Tensor, V: torch.Tensor, tol: float | None = None) -> torch.Tensor:
    """Orthonormal basis of ``span(U) + span(V)``: ``[U, W]`` with dependent directions dropped.

    ``U`` [..., m, k] must have orthonormal columns and is kept as the first ``k`` columns
    (so a basis that projections already rely on does not rotate). ``V`` [..., m, l] is any
    spanning set. ``W`` spans what ``V`` adds: ``V⊥ = (I − U Uᴴ) V`` (applied twice for
    numerical orthogonality), then the rank-revealing basis of ``V⊥`` keeps the directions
    whose singular values exceed ``tol · σ_max(V)``. For orthonormal ``V`` those singular
    values are the sines of the principal angles between ``span(V)`` and ``span(U)``, so
    ``tol`` is the smallest angle's sine that still counts as a new direction.

    Args:
        U: [..., m, k] orthonormal columns.
        V: [..., m, l] any columns (same batch shape as ``U``).
        tol: relative cut-off; default ``sqrt(eps)`` of the compute dtype (about 3e-4 in
            float32, 1.5e-8 in float64), far above the round-off that ``U``'s own
            directions leave in ``V⊥``.

    Returns:
        [..., m, k + j] orthonormal columns, ``0 <= j <= min(l, m − k)``; every batch element
        must add the same ``j`` (otherwise ValueError).
    """
    check_matrix("U", U)
    check_matrix("V", V)
    if U.shape[:-1] != V.shape[:-1]:
        raise ValueError(f"V: expected shape [..., {U.shape[-2]}, l] with U's batch shape "
                         f"{tuple(U.shape[:-2])}, got {tuple(V.shape)}")
    if tol is not None and not tol >= 0:
        raise ValueError(f"tol: expected a non-negative float, got {tol!r}")
    dtype = working_dtype(torch.promote_types(U.dtype, V.dtype))
    Uw, Vw = U.to(dtype), V.to(dtype)
    if tol is None:
        tol = torch.finfo(dtype).eps ** 0.5
    scale = torch.linalg.matrix_norm(Vw, ord=2)  # σ_max(V), per batch element
    if bool((scale == 0).all()) or V.shape[-1] == 0:
        return U
    rest = _orthogonalise_against(Uw, Vw)
    W, sigma, _ = robust_svd(rest)
    keep = common_rank((sigma > tol * scale[..., None]).sum(dim=-1), "V")
    keep = min(keep, U.shape[-2] - U.shape[-1])
    if keep == 0:
        return U
    # Singular vectors of V⊥ with small σ inherit round-off of order eps/σ along span(U);
    # one more projection and a QR restore orthogonality to working precision.
    W = qr_positive(_orthogonalise_against(Uw, W[..., :keep]))
    return torch.cat([Uw, W], dim=-1).to(U.dtype)


def _orthogonalise_against(U: torch.Tensor, X: torch.Tensor) -> torch.Tensor:
    """``(I − U Uᴴ)`` applied twice to ``X``: classical Gram–Schmidt with reorthogonalisation
    ("twice is enough", Kahan/Parlett) keeps the result orthogonal to ``U`` to working
    precision even when ``X`` lies almost inside ``span(U)``."""
    for _ in range(2):
        X = X - U @ (U.mH @ X)
    return X
