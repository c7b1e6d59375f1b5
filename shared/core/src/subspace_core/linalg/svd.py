"""Singular value decompositions: a robust full SVD, randomized SVD, warm-started iteration.

* :func:`robust_svd` — ``torch.linalg.svd`` that never hands back garbage: it refuses
  NaN/Inf input, retries other drivers/precisions when LAPACK/cuSOLVER does not converge or
  returns non-finite factors, warns when it had to, and raises when nothing worked. (A
  silently zeroed SVD is how GaLore once trained with a zero loss, GaLore issue #58.)
* :func:`randomized_svd` — Halko, Martinsson & Tropp (2011) range finder with power
  iterations, optionally warm-started from a previous basis.
* :func:`subspace_iteration` — block power (orthogonal) iteration with Rayleigh–Ritz
  extraction and a residual-based stop, meant for refreshing a top-``r`` basis of a matrix
  that changed a little since the last call (GaLore-style projector updates).

All functions are batched over leading dimensions: ``A`` is ``[..., m, n]``. Results come back
on ``A``'s device in ``A``'s dtype (singular values in the matching real dtype); half inputs
are computed in float32.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import NamedTuple

import torch

from subspace_core.linalg.bases import check_matrix, working_dtype

__all__ = [
    "SVDFallbackWarning",
    "SVDResult",
    "SubspaceIterationResult",
    "SubspaceIterationWarning",
    "randomized_svd",
    "robust_svd",
    "subspace_iteration",
]


class SVDFallbackWarning(RuntimeWarning):
    """The first SVD attempt failed and a fallback (driver, precision, jitter) was used."""


class SubspaceIterationWarning(RuntimeWarning):
    """``subspace_iteration`` used all its iterations without reaching ``tol``."""


class SVDResult(NamedTuple):
    """Thin SVD factors ``A ≈ U diag(S) Vh``: U [..., m, k], S [..., k], Vh [..., k, n]."""

    U: torch.Tensor
    S: torch.Tensor
    Vh: torch.Tensor


class SubspaceIterationResult(NamedTuple):
    """Result of :func:`subspace_iteration`.

    Attributes:
        U, S, Vh: top-``rank`` Ritz approximation ``A ≈ U diag(S) Vh``.
        iters: iterations run (each one pass of ``Qᴴ A`` and ``A V``), ``1 <= iters``.
        residual: estimate of ``‖A V − U diag(S)‖_F / σ_1`` for the returned triplets (max
            over the batch); zero exactly when ``span(U)`` is an invariant singular subspace.
        converged: whether ``residual <= tol`` (always False when ``tol`` is None).
    """

    U: torch.Tensor
    S: torch.Tensor
    Vh: torch.Tensor
    iters: int
    residual: float
    converged: bool


def _real_dtype(dtype: torch.dtype) -> torch.dtype:
    return {torch.complex64: torch.float32, torch.complex128: torch.float64}.get(dtype, dtype)


def _double(dtype: torch.dtype) -> torch.dtype:
    return torch.complex128 if dtype.is_complex else torch.float64


def _all_finite(*tensors: torch.Tensor) -> bool:
    return all(bool(torch.isfinite(t).all()) for t in tensors)


def _require_finite(name: str, A: torch.Tensor) -> None:
    # A NaN/Inf anywhere makes the sum non-finite, so one reduction (no n·m bool tensor)
    # clears the common case; only a non-finite sum (or an overflowing one) is inspected.
    if bool(torch.isfinite(A.sum())):
        return
    finite = torch.isfinite(A)
    if not bool(finite.all()):
        bad = int((~finite).sum())
        raise ValueError(
            f"{name}: expected finite values, got {bad} NaN/Inf entries of {A.numel()} "
            f"(shape {tuple(A.shape)}); an SVD of it would be meaningless"
        )


def _svd_attempts(
    A: torch.Tensor, full_matrices: bool
) -> list[tuple[str, Callable[[], tuple[torch.Tensor, ...]]]]:
    """Ordered (label, thunk) SVD attempts: the default first, then ever more robust ones."""
    work = working_dtype(A.dtype)

    def svd(x: torch.Tensor, driver: str | None = None) -> tuple[torch.Tensor, ...]:
        # Looked up at call time (not bound at import) so tests can simulate failures.
        if driver is None:
            return tuple(torch.linalg.svd(x, full_matrices=full_matrices))
        return tuple(torch.linalg.svd(x, full_matrices=full_matrices, driver=driver))

    attempts = [(f"torch.linalg.svd ({work}, default driver)", lambda: svd(A.to(work)))]
    if A.is_cuda:
        # cuSOLVER's QR-based gesvd is the slow but sturdy one; Jacobi (gesvdj) converges
        # on matrices where the default gave up, and vice versa.
        for driver in ("gesvd", "gesvdj"):
            attempts.append((f"torch.linalg.svd ({work}, driver={driver!r})",
                             lambda driver=driver: svd(A.to(work), driver)))
    double = _double(A.dtype)
    if work != double:
        attempts.append((f"torch.linalg.svd ({double})", lambda: svd(A.to(double))))
    if A.is_cuda:
        attempts.append((f"torch.linalg.svd on CPU ({double})",
                         lambda: tuple(t.to(A.device) for t in svd(A.to("cpu", double)))))

    def jittered() -> tuple[torch.Tensor, ...]:
        # A diagonal shift of ~max(m, n)·eps64·‖A‖_F breaks the exact ties/degeneracies that
        # stall LAPACK's iterations; it moves every singular value by at most that amount,
        # far below the input's own precision.
        x = A.to("cpu", double)
        delta = max(x.shape[-2:]) * torch.finfo(torch.float64).eps * float(
            torch.linalg.matrix_norm(x).max().clamp_min(1e-300))
        eye = torch.eye(x.shape[-2], x.shape[-1], dtype=double)
        return tuple(t.to(A.device) for t in svd(x + delta * eye))

    attempts.append((f"torch.linalg.svd on CPU ({double}) with diagonal jitter", jittered))
    return attempts


def robust_svd(A: torch.Tensor, full_matrices: bool = False) -> SVDResult:
    """SVD ``A = U diag(S) Vh`` that retries instead of failing silently.

    Tries, in order: ``torch.linalg.svd`` in the working dtype (float32 for half inputs);
    on CUDA the ``gesvd`` and ``gesvdj`` drivers; float64 (complex128); on CUDA float64 on
    the CPU; finally float64 on the CPU with a tiny diagonal jitter. An attempt fails when it
    raises ``torch.linalg.LinAlgError`` (no convergence) or returns non-finite factors. When a
    fallback succeeds a :class:`SVDFallbackWarning` names every failure and what worked; when
    all fail, ``torch.linalg.LinAlgError`` lists them. Zeros are never returned in place of
    a failed decomposition.

    Args:
        A: [..., m, n] real or complex floating tensor without NaN/Inf.
        full_matrices: as in ``torch.linalg.svd`` (``k = min(m, n)`` when False).

    Returns:
        :class:`SVDResult` ``(U [..., m, m|k], S [..., k] descending, Vh [..., n|k, n])`` in
        ``A``'s dtype (``S`` real) on ``A``'s device.

    Raises:
        ValueError: ``A`` contains NaN or Inf.
        torch.linalg.LinAlgError: every attempt failed.
    """
    check_matrix("A", A)
    _require_finite("A", A)
    failures: list[str] = []
    for label, attempt in _svd_attempts(A, full_matrices):
        try:
            U, S, Vh = attempt()
        except torch.linalg.LinAlgError as err:
            failures.append(f"{label} raised {type(err).__name__}: {str(err).strip()}")
            continue
        if not _all_finite(U, S, Vh):
            failures.append(f"{label} returned non-finite factors")
            continue
        if failures:
            warnings.warn(
                f"robust_svd: SVD of a {tuple(A.shape)} {A.dtype} matrix on {A.device} needed "
                f"a fallback: {'; '.join(failures)}; succeeded with {label}",
                SVDFallbackWarning,
                stacklevel=2,
            )
        return SVDResult(U.to(A.dtype), S.to(_real_dtype(A.dtype)), Vh.to(A.dtype))
    raise torch.linalg.LinAlgError(
        f"robust_svd: every SVD attempt failed for a {tuple(A.shape)} {A.dtype} matrix on "
        f"{A.device}: {'; '.join(failures)}"
    )


def _check_positive_int(name: str, value: object, low: int, high: int | None = None) -> int:
    ok = isinstance(value, int) and not isinstance(value, bool) and value >= low
    if ok and high is not None:
        ok = value <= high
    if not ok:
        bound = f"[{low}, {high}]" if high is not None else f">= {low}"
        raise ValueError(f"{name}: expected an int in {bound}, got {value!r}")
    return value  # type: ignore[return-value]


def _orth(Y: torch.Tensor) -> torch.Tensor:
    """Orthonormal basis of span(Y) by reduced QR (no sign fix: only the span matters here)."""
    return torch.linalg.qr(Y, mode="reduced").Q


def _gaussian(A: torch.Tensor, rows: int, cols: int, generator: torch.Generator | None
              ) -> torch.Tensor:
    """Standard Gaussian matrix [..., rows, cols] in ``A``'s dtype, device and batch shape."""
    if generator is not None and torch.device(generator.device).type != A.device.type:
        raise ValueError(f"generator: expected one on {A.device.type}, got one on "
                         f"{generator.device}")
    shape = (*A.shape[:-2], rows, cols)
    return torch.randn(shape, generator=generator, dtype=A.dtype, device=A.device)


def _start_basis(
    A: torch.Tensor,
    width: int,
    init: torch.Tensor | None,
    generator: torch.Generator | None,
    *,
    pad_with_range_samples: bool,
) -> torch.Tensor:
    """Orthonormal Q [..., m, width]: ``span(init)`` padded to ``width`` random columns.

    Without ``init`` the block is ``orth(A Ω)``: random range samples already lean towards
    the dominant directions, which the Halko–Martinsson–Tropp range finder relies on. With
    ``init`` the pad is ``A Ω`` as well when ``pad_with_range_samples``, else plain Gaussian
    vectors — a warm start then needs no pass over ``A`` (on CPU even a thin product with
    ``A`` costs a full read of it), and the pad picks up range information at the first
    power step.
    """
    m, n = A.shape[-2:]
    if init is None:
        return _orth(A @ _gaussian(A, n, width, generator))
    pad = width - init.shape[-1]
    start = init.to(A.device, A.dtype).expand(*A.shape[:-2], *init.shape[-2:])
    if pad > 0:
        extra = (A @ _gaussian(A, n, pad, generator) if pad_with_range_samples
                 else _gaussian(A, m, pad, generator))
        start = torch.cat([start, extra], dim=-1)
    return _orth(start)


def _wide_svd(B: torch.Tensor) -> SVDResult:
    """Thin SVD of a short, wide ``B`` [..., ℓ, n] (ℓ <= n) through the QR of ``Bᴴ``.

    ``Bᴴ = Q₂ R`` (Householder, [n, ℓ]·[ℓ, ℓ]), ``Rᴴ = Ũ Σ Ṽᴴ`` (tiny SVD), so ``B = Ũ Σ (Q₂ Ṽ)ᴴ``.
    LAPACK's gesdd on the wide matrix directly was ~3-4x slower on CPU in our measurements,
    and this SVD sits inside every iteration of the methods below.
    """
    if B.shape[-2] >= B.shape[-1]:
        return robust_svd(B)
    Q2, R = torch.linalg.qr(B.mH, mode="reduced")
    U, S, Vh_small = robust_svd(R.mH)
    return SVDResult(U, S, Vh_small @ Q2.mH)


def _check_init(init: torch.Tensor | None, A: torch.Tensor) -> int:
    """Validate a warm-start basis [..., m, k]; return k (0 when there is none)."""
    if init is None:
        return 0
    check_matrix("init", init)
    m, limit = A.shape[-2], min(A.shape[-2:])
    if init.shape[-2] != m or not 1 <= init.shape[-1] <= limit:
        raise ValueError(f"init: expected a basis [..., {m}, k] with 1 <= k <= {limit}, got "
                         f"shape {tuple(init.shape)}")
    try:
        fits = torch.broadcast_shapes(init.shape[:-2], A.shape[:-2]) == A.shape[:-2]
    except RuntimeError:
        fits = False
    if not fits:
        raise ValueError(f"init: batch shape {tuple(init.shape[:-2])} does not broadcast to A's "
                         f"{tuple(A.shape[:-2])}")
    _require_finite("init", init)
    return init.shape[-1]


def randomized_svd(
    A: torch.Tensor,
    rank: int,
    *,
    oversample: int = 10,
    power_iters: int = 2,
    init: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
) -> SVDResult:
    """Rank-``r`` truncated SVD by randomized range finding (Halko, Martinsson & Tropp 2011).

    With ``ℓ = min(r + oversample, m, n)`` (or ``k`` if a wider ``init`` is given):

    1. ``Q = orth([init, A Ω])`` with Gaussian ``Ω`` [n, ℓ − k] (``k = 0`` without ``init``);
    2. ``power_iters`` times: ``Q = orth(A · orth(Aᴴ Q))`` — each step raises the spectrum to
       a higher power (``(A Aᴴ)^q A``), and orthonormalising *between* the two products keeps
       small singular directions from being lost to round-off (HMT Algorithm 4.4);
    3. ``B = Qᴴ A`` [ℓ, n], ``B = Ũ Σ Vᴴ`` (small SVD), ``U = Q Ũ``; keep the top ``r``.

    The expected error is close to the Eckart–Young optimum ``‖A − A_r‖``; ``power_iters``
    helps most for slowly decaying spectra. ``init`` (a previous basis of the column space,
    e.g. last step's ``U``) warm-starts step 1, so fewer power iterations are needed when the
    matrix changed little.

    Args:
        A: [..., m, n] floating tensor without NaN/Inf.
        rank: ``r``, ``1 <= r <= min(m, n)``.
        oversample: extra sketch columns ``p >= 0`` (HMT recommend 5–10).
        power_iters: ``q >= 0`` power iterations.
        init: optional warm-start basis [..., m, k] (need not be orthonormal).
        generator: random generator on ``A``'s device, for reproducible sketches.

    Returns:
        :class:`SVDResult` ``(U [..., m, r], S [..., r], Vh [..., r, n])``.
    """
    check_matrix("A", A)
    _require_finite("A", A)
    m, n = A.shape[-2:]
    rank = _check_positive_int("rank", rank, 1, min(m, n))
    _check_positive_int("oversample", oversample, 0)
    _check_positive_int("power_iters", power_iters, 0)
    width = min(max(rank + oversample, _check_init(init, A)), m, n)

    work = A.to(working_dtype(A.dtype))
    Q = _start_basis(work, width, init, generator, pad_with_range_samples=True)
    for _ in range(power_iters):
        Q = _orth(work @ _orth(work.mH @ Q))
    Ub, S, Vh = _wide_svd(Q.mH @ work)
    U = Q @ Ub[..., :rank]
    return SVDResult(U.to(A.dtype), S[..., :rank].to(_real_dtype(A.dtype)),
                     Vh[..., :rank, :].to(A.dtype))


#: Gaussian probes of the residual estimate in :func:`subspace_iteration`.
_RESIDUAL_PROBES = 16


def _sketched_residual(
    probes: torch.Tensor,
    probed_A: torch.Tensor,
    U: torch.Tensor,
    S: torch.Tensor,
    Vh: torch.Tensor,
) -> torch.Tensor:
    """Estimate ``‖A V − U Σ‖_F`` [...] from Gaussian probes ``G`` [..., m, s] (HMT 2011 §4.3).

    ``E ‖Gᴴ R‖_F² = s ‖R‖_F²`` (a Hutchinson trace estimate of ``Rᴴ R``); the relative standard
    deviation is at most ``sqrt(2/s)`` and far smaller when the residual energy is spread over
    many columns. ``Gᴴ R = (Gᴴ A) V − (Gᴴ U) Σ`` needs only ``Gᴴ A`` [..., s, n] (``probed_A``),
    which the caller gets in the same pass over ``A`` as ``Qᴴ A``.
    """
    sketch = probed_A @ Vh.mH - (probes.mH @ U) * S[..., None, :]
    return torch.linalg.vector_norm(sketch, dim=(-2, -1)) / probes.shape[-1] ** 0.5


def subspace_iteration(
    A: torch.Tensor,
    rank: int,
    *,
    init: torch.Tensor | None = None,
    iters: int = 10,
    tol: float | None = None,
    oversample: int = 10,
    generator: torch.Generator | None = None,
) -> SubspaceIterationResult:
    """Top-``r`` singular triplets by block power iteration with Rayleigh–Ritz, warm-startable.

    A block ``Q`` [m, ℓ] (``ℓ = min(r + oversample, m, n)``, wider if ``init`` is) starts as
    ``orth([init, Ω'])`` with Gaussian pad columns ``Ω'`` [m, ℓ − k] (no pass over ``A``), or
    as ``orth(A Ω)`` without ``init``. Each iteration:

    1. Rayleigh–Ritz: ``B = Qᴴ A`` [ℓ, n], ``B = Ũ Σ Vᴴ``; Ritz triplets ``U = Q Ũ``, ``Σ``, ``V``
       (the best rank-ℓ approximation of ``A`` within ``span(Q)``), sorted by ``σ``;
    2. stop test on the residual ``R = A V_r − U_r Σ_r`` of the top-``r`` triplets. Because
       ``Aᴴ U = V Σ`` holds exactly after Rayleigh–Ritz, ``R`` is their whole residual, and by
       Wedin's sin Θ theorem ``‖sin Θ(U_r, U_r*)‖ <= ‖R‖ / gap``. ``‖R‖_F`` is *estimated*
       with 16 Gaussian probes ``G`` (Halko–Martinsson–Tropp §4.3) from ``Gᴴ A``, computed in
       the same pass over ``A`` as ``Qᴴ A``; stop when ``‖R‖_F / σ_1 <= tol``;
    3. otherwise the power step ``Q = orth(A V)`` (``span(A V) = span(A Aᴴ Q)``).

    So an iteration that stops costs one pass over ``A`` (``[Q, G]ᴴ A``), and one that
    continues costs two. The top-``r`` subspace converges like ``(σ_{ℓ+1} / σ_r)^(2t)``; a
    warm start near the answer (the previous ``U`` after a small change of ``A``) typically
    meets ``tol`` at once, against the ``2·power_iters + 2`` products of a cold
    :func:`randomized_svd`.

    Args:
        A: [..., m, n] floating tensor without NaN/Inf.
        rank: ``r``, ``1 <= r <= min(m, n)``.
        init: warm-start basis [..., m, k] (e.g. the previous ``U``); None starts cold.
        iters: maximum number of iterations (all of them when ``tol`` is None), ``>= 1``.
        tol: stop once the estimated ``‖A V − U Σ‖_F / σ_1 <= tol`` (every batch element); a
            :class:`SubspaceIterationWarning` is emitted if ``iters`` run out first.
        oversample: extra block columns beyond ``r`` (speed up convergence).
        generator: random generator on ``A``'s device (random block columns and probes).

    Returns:
        :class:`SubspaceIterationResult` ``(U [..., m, r], S [..., r], Vh [..., r, n], iters,
        residual, converged)``; ``residual`` is the estimate of the returned triplets.
    """
    check_matrix("A", A)
    _require_finite("A", A)
    m, n = A.shape[-2:]
    rank = _check_positive_int("rank", rank, 1, min(m, n))
    _check_positive_int("iters", iters, 1)
    _check_positive_int("oversample", oversample, 0)
    if tol is not None and not tol > 0:
        raise ValueError(f"tol: expected a positive float or None, got {tol!r}")
    width = min(max(rank + oversample, _check_init(init, A)), m, n)

    work = A.to(working_dtype(A.dtype))
    Q = _start_basis(work, width, init, generator, pad_with_range_samples=False)
    for step in range(1, iters + 1):
        # One pass over A yields both the Rayleigh–Ritz matrix Qᴴ A and the probes' Gᴴ A.
        probes = _gaussian(work, m, _RESIDUAL_PROBES, generator)
        both = torch.cat([Q, probes], dim=-1).mH @ work
        Ub, S, Vh = _wide_svd(both[..., :width, :])
        U = Q @ Ub
        top = (U[..., :rank], S[..., :rank], Vh[..., :rank, :])
        scale = S[..., 0].clamp_min(torch.finfo(S.dtype).tiny)
        estimate = _sketched_residual(probes, both[..., width:, :], *top)
        residual = float((estimate / scale).max())
        if (tol is not None and residual <= tol) or step == iters:
            break
        Q = _orth(work @ Vh.mH)
    converged = tol is not None and residual <= tol
    if tol is not None and not converged:
        warnings.warn(
            f"subspace_iteration: residual {residual:.3g} > tol {tol:.3g} after {iters} "
            "iterations; returning the current estimate (raise iters, widen oversample, or "
            "use randomized_svd)",
            SubspaceIterationWarning,
            stacklevel=2,
        )
    U_r, S_r, Vh_r = top
    return SubspaceIterationResult(U_r.to(A.dtype), S_r.to(_real_dtype(A.dtype)),
                                   Vh_r.to(A.dtype), step, residual, converged)
