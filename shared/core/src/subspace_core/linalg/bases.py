"""Orthonormal bases of column spans: deterministic QR and a rank-revealing variant.

Every function here is batched over leading dimensions (``A`` is ``[..., m, n]``) and
returns tensors on the input's device in the input's dtype. Half-precision inputs
(float16/bfloat16) are factorised in float32 because LAPACK/cuSOLVER have no half
kernels and because orthogonality in half precision is too coarse to be useful.

The helpers outside ``__all__`` (``check_matrix``, ``working_dtype``, ``qr_positive``, ...) are
shared by the other ``subspace_core.linalg`` modules so they validate and factorise alike.
"""

from __future__ import annotations

import torch

__all__ = ["orthonormal_basis"]

_HALF_DTYPES = (torch.float16, torch.bfloat16)


def check_matrix(name: str, value: object, *, min_ndim: int = 2) -> torch.Tensor:
    """Raise a clear error unless ``value`` is a floating/complex tensor of ``min_ndim``+ dims.

    Shared by the ``subspace_core.linalg`` modules so every entry point words its errors the
    same way (argument, expected, actual).
    """
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"{name}: expected a torch.Tensor, got {type(value).__name__}")
    if not (value.dtype.is_floating_point or value.dtype.is_complex):
        raise TypeError(f"{name}: expected a floating-point or complex tensor, got {value.dtype}")
    if value.ndim < min_ndim:
        kind = "a matrix [..., m, n]" if min_ndim == 2 else f"a tensor with >= {min_ndim} dims"
        raise ValueError(f"{name}: expected {kind}, got shape {tuple(value.shape)}")
    return value


def working_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype factorisations run in: float32 for half inputs, the dtype itself otherwise."""
    return torch.float32 if dtype in _HALF_DTYPES else dtype


def default_rank_tol(shape: torch.Size, dtype: torch.dtype) -> float:
    """``max(m, n) · eps(dtype)``: the LAPACK/NumPy ``matrix_rank`` default relative tolerance.

    ``eps`` is that of the *input* dtype, because that is the precision the data carries.
    """
    real = torch.float64 if dtype == torch.complex128 else (
        torch.float32 if dtype == torch.complex64 else dtype)
    return max(shape[-2], shape[-1]) * torch.finfo(real).eps


def qr_positive(A: torch.Tensor) -> torch.Tensor:
    """Reduced QR ``A = Q R`` with the unique sign choice ``diag(R) >= 0``; returns ``Q``.

    Householder QR fixes each column of ``Q`` only up to a unit scalar (±1, or a phase for
    complex input). Multiplying column ``j`` by the phase of ``R_jj`` (and row ``j`` of ``R``
    by its inverse) makes ``diag(R)`` real and non-negative, which makes ``Q`` a deterministic
    function of ``A`` when ``A`` has full column rank. Runs in ``A``'s dtype (no upcast).
    """
    Q, R = torch.linalg.qr(A, mode="reduced")
    diag = torch.diagonal(R, dim1=-2, dim2=-1)
    magnitude = diag.abs()
    # A zero pivot has no sign to copy; keep the column as LAPACK returned it.
    phase = torch.where(magnitude > 0, diag / magnitude.clamp_min(torch.finfo(magnitude.dtype).tiny),
                        torch.ones_like(diag))
    return Q * phase.unsqueeze(-2)


def flip_signs_by_largest_entry(U: torch.Tensor) -> torch.Tensor:
    """Flip each column of ``U`` [..., m, k] so its largest-magnitude entry is positive.

    Singular vectors are only defined up to sign; this (scikit-learn's ``svd_flip``) picks one
    so that the result does not depend on the LAPACK driver. Real tensors only.
    """
    if U.shape[-1] == 0:
        return U
    index = U.abs().argmax(dim=-2, keepdim=True)
    sign = torch.gather(U, -2, index).sign()
    return U * torch.where(sign == 0, torch.ones_like(sign), sign)


def common_rank(counts: torch.Tensor, what: str) -> int:
    """The single rank shared by every batch element, or a ValueError listing the ranks found."""
    values = counts.reshape(-1).tolist()
    if not values:
        return 0
    if min(values) != max(values):
        raise ValueError(
            f"{what}: numerical ranks differ across the batch ({sorted(set(values))}); a batched "
            "result needs one rank; pass rank=..., or call it per matrix"
        )
    return int(values[0])


def orthonormal_basis(
    A: torch.Tensor,
    rank: int | None = None,
    *,
    rank_revealing: bool = False,
    tol: float | None = None,
) -> torch.Tensor:
    """Orthonormal basis ``Q`` [..., m, r] of the column span of ``A`` [..., m, n].

    Default (``rank_revealing=False``): reduced Householder QR ``A = Q R`` with the sign fix
    ``diag(R) >= 0`` (see :func:`qr_positive`), so ``Q`` is unique for full-column-rank ``A``
    and the first ``j`` columns of ``Q`` span the first ``j`` columns of ``A``. Returns the
    first ``r = rank`` columns (all ``min(m, n)`` when ``rank`` is None). Columns of ``A``
    that are linearly dependent still get a (meaningless) orthonormal column here; use the
    rank-revealing mode to drop them.

    ``rank_revealing=True``: thin SVD ``A = U Σ Vᴴ`` and ``Q = U[:, :k]`` where
    ``k = #{i : σ_i > tol · σ_0}`` (capped at ``rank``), i.e. the principal directions of the
    column space, dependent directions dropped. Unpivoted QR cannot do this reliably (a
    zero pivot leaves an arbitrary column that can swallow a later independent one); the SVD
    can. Each column's sign is fixed so its largest-magnitude entry is positive. In a batch
    every matrix must have the same numerical rank (otherwise ValueError), because the
    result is one tensor.

    Args:
        A: [..., m, n] real or complex floating tensor (half inputs computed in float32).
        rank: keep at most this many columns; ``1 <= rank <= min(m, n)``.
        rank_revealing: drop numerically dependent directions (SVD based, see above).
        tol: relative singular-value cut-off for ``rank_revealing``; default
            ``max(m, n) · eps(A.dtype)``.

    Returns:
        ``Q`` [..., m, r] with ``Qᴴ Q = I_r``, same dtype and device as ``A``.
    """
    check_matrix("A", A)
    m, n = A.shape[-2], A.shape[-1]
    if rank is not None and (isinstance(rank, bool) or not isinstance(rank, int)
                             or not 1 <= rank <= min(m, n)):
        raise ValueError(f"rank: expected an int in [1, min(m, n) = {min(m, n)}], got {rank!r}")
    if tol is not None and not tol >= 0:
        raise ValueError(f"tol: expected a non-negative float, got {tol!r}")
    if tol is not None and not rank_revealing:
        raise ValueError("tol: only used with rank_revealing=True; got rank_revealing=False")
    work = A.to(working_dtype(A.dtype))

    if not rank_revealing:
        Q = qr_positive(work)
        return Q[..., :rank].to(A.dtype) if rank is not None else Q.to(A.dtype)

    if A.dtype.is_complex:
        raise TypeError("A: rank_revealing=True supports real tensors only, got complex")
    # Deferred import: svd.py orthonormalises with this module's QR helpers.
    from subspace_core.linalg.svd import robust_svd

    U, sigma, _ = robust_svd(work)
    cutoff = (default_rank_tol(A.shape, A.dtype) if tol is None else tol) * sigma[..., :1]
    k = common_rank((sigma > cutoff).sum(dim=-1), "A")
    if rank is not None:
        k = min(k, rank)
    return flip_signs_by_largest_entry(U[..., :k]).to(A.dtype)
