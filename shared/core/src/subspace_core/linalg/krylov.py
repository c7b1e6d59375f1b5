"""Krylov solvers for sequences of related linear systems: GMRES(m) and recycled GCRO-DR.

Solving many systems ``A_i x_i = b_i`` whose matrices change slowly (a parametrised PDE
sampled at many parameters, a nonlinear or time-stepping iteration) wastes work when each
solve starts from scratch: restarted GMRES keeps rediscovering the same slow, near-null
eigen-directions. GCRO-DR (Parks, de Sturler, Mackey, Johnson & Maiti 2006, "Recycling
Krylov subspaces for sequences of linear systems", SIAM J. Sci. Comput. 28(5)) carries a
``k``-dimensional *recycle space* ``U_k`` — harmonic Ritz vectors of the smallest-magnitude
eigenvalues — from each restart cycle to the next and from each system to the next, and
solves the remaining problem on the complement of ``C_k = A U_k``. Sorting the systems so
consecutive ones are similar (:func:`sort_by_similarity`, the "sorting Krylov recycling"
idea of Wang et al. 2024, "Accelerating data generation for neural operators via Krylov
subspace recycling") makes the carried space more useful.

Conventions. ``A`` is a square tensor ``[n, n]`` (dense or sparse, applied as ``A @ v``) or a
callable ``v ↦ A v`` on vectors ``[n]``; ``b`` is one right-hand side ``[n]`` (Krylov
methods are sequential in the iteration, so there is no batch dimension). The solvers
work in float64 whatever the input dtype and return ``x`` in ``b``'s dtype and device.
Convergence: ``‖b − A x‖₂ <= max(rtol ‖b‖₂, atol)``, checked on the true residual. The
solvers are not differentiable (they run under ``torch.no_grad``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch

__all__ = [
    "KrylovInfo",
    "Operator",
    "gcro_dr",
    "gmres",
    "solve_sequence",
    "sort_by_similarity",
]

Operator = torch.Tensor | Callable[[torch.Tensor], torch.Tensor]

_DTYPE = torch.float64


@dataclass
class KrylovInfo:
    """What a solve did.

    Attributes:
        converged: the true residual met the tolerance.
        iterations: Arnoldi steps (one operator application each) — the usual iteration count.
        matvecs: all operator applications: iterations, plus one true-residual evaluation
            per restart, plus ``k`` to map a recycled space through the new ``A``.
        cycles: restart cycles run.
        relative_residual: true ``‖b − A x‖ / ‖b‖`` of the returned ``x``.
        residual_history: relative residual at the start, then after every Arnoldi step (the
            least-squares value, equal to the true residual in exact arithmetic).
        recycle_space: GCRO-DR only: ``U_k [n, k]`` to pass to the next system's solve.
    """

    converged: bool
    iterations: int
    matvecs: int
    cycles: int
    relative_residual: float
    residual_history: list[float] = field(default_factory=list)
    recycle_space: torch.Tensor | None = None


# --------------------------------------------------------------------------- operator


class _CountingOperator:
    """``A`` as a float64 matvec that counts its applications."""

    def __init__(self, A: Operator, n: int, device: torch.device) -> None:
        self.count = 0
        self._n = n
        if isinstance(A, torch.Tensor):
            if A.ndim != 2 or tuple(A.shape) != (n, n):
                raise ValueError(f"A: expected a square matrix [{n}, {n}] matching b, got shape {tuple(A.shape)}")
            if not (A.dtype.is_floating_point and not A.dtype.is_complex):
                raise TypeError(f"A: expected a real floating-point matrix, got {A.dtype}")
            matrix = A.to(device=device, dtype=_DTYPE)
            self._apply = matrix.__matmul__
        elif callable(A):
            self._apply = A
        else:
            raise TypeError(f"A: expected a tensor [n, n] or a callable v -> A v, got {type(A).__name__}")

    def __call__(self, v: torch.Tensor) -> torch.Tensor:
        self.count += 1
        out = self._apply(v)
        if not isinstance(out, torch.Tensor) or tuple(out.shape) != (self._n,):
            shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
            raise ValueError(f"A: expected A(v) to return a vector [{self._n}], got {shape}")
        return out.to(_DTYPE)

    def block(self, Y: torch.Tensor) -> torch.Tensor:
        """``A Y`` for ``Y [n, k]``, column by column (a callable only takes vectors)."""
        if Y.shape[1] == 0:
            return Y.clone()
        return torch.stack([self(y) for y in Y.unbind(1)], dim=1)


def _check_rhs(b: object, x0: object) -> tuple[torch.Tensor, torch.Tensor | None]:
    if not isinstance(b, torch.Tensor) or b.ndim != 1 or not b.dtype.is_floating_point:
        desc = f"{b.dtype} tensor of shape {tuple(b.shape)}" if isinstance(b, torch.Tensor) else type(b).__name__
        raise ValueError(f"b: expected a real floating-point vector [n], got {desc}")
    if x0 is not None and (not isinstance(x0, torch.Tensor) or x0.shape != b.shape):
        desc = tuple(x0.shape) if isinstance(x0, torch.Tensor) else type(x0).__name__
        raise ValueError(f"x0: expected a vector of b's shape {tuple(b.shape)}, got {desc}")
    return b, x0


def _check_settings(restart: int, rtol: float, atol: float, maxiter: int | None) -> None:
    if restart < 1:
        raise ValueError(f"restart: expected an int >= 1, got {restart}")
    if not (rtol >= 0 and atol >= 0) or rtol == atol == 0:
        raise ValueError(f"rtol/atol: expected non-negative with one positive, got {rtol}, {atol}")
    if maxiter is not None and maxiter < 0:
        raise ValueError(f"maxiter: expected an int >= 0, got {maxiter}")


# --------------------------------------------------------------------------- Arnoldi cycle


@dataclass
class _Cycle:
    """One Arnoldi cycle on ``(I − CCᵀ) A`` from ``v_1 = r / β``, truncated at ``steps``.

    ``V [n, j+1]``, ``H [j+1, j]`` (``(I − CCᵀ) A V_j = V_{j+1} H``), ``B [k, j]``
    (``= Cᵀ A V_j``) and the least-squares solution ``y [j]`` of ``min ‖β e_1 − H y‖``.
    """

    V: torch.Tensor
    H: torch.Tensor
    B: torch.Tensor
    y: torch.Tensor
    steps: int


def _arnoldi_cycle(
    op: _CountingOperator, r: torch.Tensor, C: torch.Tensor, max_steps: int,
    target: float, scale: float, history: list[float],
) -> _Cycle:
    n, k = r.numel(), C.shape[1]
    beta = torch.linalg.vector_norm(r).item()
    V = torch.zeros(n, max_steps + 1, dtype=_DTYPE, device=r.device)
    H = torch.zeros(max_steps + 1, max_steps, dtype=_DTYPE)
    B = torch.zeros(k, max_steps, dtype=_DTYPE, device=r.device)
    V[:, 0] = r / beta
    # Givens rotations turn H into upper-triangular R column by column, so the residual
    # norm |g_{j+1}| of the small least-squares problem is known after every step.
    rotations: list[tuple[float, float]] = []
    R = torch.zeros(max_steps, max_steps, dtype=_DTYPE)
    g = [beta] + [0.0] * max_steps
    steps = 0
    for j in range(max_steps):
        w = op(V[:, j])
        # Classical Gram–Schmidt twice ("CGS2") against [C, V]: as accurate as modified
        # Gram–Schmidt, but done in a few matrix-vector products instead of a Python loop.
        h_col = torch.zeros(j + 1, dtype=_DTYPE, device=r.device)
        for _ in range(2):
            if k:
                hc = C.mT @ w
                w = w - C @ hc
                B[:, j] += hc
            hv = V[:, : j + 1].mT @ w
            w = w - V[:, : j + 1] @ hv
            h_col += hv
        h_next = torch.linalg.vector_norm(w).item()
        H[: j + 1, j] = h_col.cpu()
        H[j + 1, j] = h_next

        col = H[: j + 2, j].tolist()
        for i, (c, s) in enumerate(rotations):
            col[i], col[i + 1] = c * col[i] + s * col[i + 1], -s * col[i] + c * col[i + 1]
        radius = math.hypot(col[j], col[j + 1])
        c, s = (col[j] / radius, col[j + 1] / radius) if radius > 0 else (1.0, 0.0)
        rotations.append((c, s))
        col[j] = radius
        R[: j + 1, j] = torch.tensor(col[: j + 1], dtype=_DTYPE)
        g[j], g[j + 1] = c * g[j], -s * g[j]
        steps = j + 1
        history.append(abs(g[j + 1]) / scale)

        # Happy breakdown: the Krylov space is invariant, the least-squares solution exact.
        if h_next <= 1e-14 * max(1.0, torch.linalg.vector_norm(h_col).item()):
            break
        V[:, j + 1] = w / h_next
        if abs(g[j + 1]) <= target:
            break
    R_j = R[:steps, :steps]
    g_j = torch.tensor(g[:steps], dtype=_DTYPE).unsqueeze(1)
    y = torch.linalg.solve_triangular(R_j, g_j, upper=True).squeeze(1)
    return _Cycle(V[:, : steps + 1], H[: steps + 1, :steps].to(r.device), B[:, :steps],
                  y.to(r.device), steps)


# --------------------------------------------------------------------------- GMRES(m)


@torch.no_grad()
def gmres(
    A: Operator,
    b: torch.Tensor,
    x0: torch.Tensor | None = None,
    *,
    restart: int = 30,
    rtol: float = 1e-8,
    atol: float = 0.0,
    maxiter: int | None = None,
) -> tuple[torch.Tensor, KrylovInfo]:
    """Restarted GMRES(m) (Saad & Schultz 1986): the from-scratch baseline.

    Each cycle builds an orthonormal basis ``V_{j+1}`` of the Krylov space
    ``K_j(A, r) = span{r, Ar, …, A^{j−1} r}`` (Arnoldi, ``A V_j = V_{j+1} H̄_j``) and takes
    ``x ← x + V_j y`` with ``y = argmin ‖β e_1 − H̄_j y‖`` (minimal residual over the space);
    after ``m = restart`` steps the basis is dropped and the cycle restarts from the new
    residual.

    Shapes: ``A [n, n]`` or callable, ``b [n]``, ``x0 [n]`` (default 0) → ``x [n]``, info.
    ``maxiter`` caps the total Arnoldi steps (default ``10 n``).
    """
    b, x0 = _check_rhs(b, x0)
    _check_settings(restart, rtol, atol, maxiter)
    n, device = b.numel(), b.device
    op = _CountingOperator(A, n, device)
    maxiter = 10 * n if maxiter is None else maxiter
    rhs = b.to(_DTYPE)
    x = torch.zeros(n, dtype=_DTYPE, device=device) if x0 is None else x0.to(_DTYPE).clone()
    b_norm = torch.linalg.vector_norm(rhs).item()
    scale = b_norm if b_norm > 0 else 1.0
    target = max(rtol * b_norm, atol)
    empty = torch.zeros(n, 0, dtype=_DTYPE, device=device)
    history: list[float] = []
    iterations = cycles = 0
    while True:
        r = rhs - op(x) if (cycles or x0 is not None) else rhs.clone()
        r_norm = torch.linalg.vector_norm(r).item()
        if not history:
            history.append(r_norm / scale)
        if r_norm <= target or iterations >= maxiter:
            break
        cycle = _arnoldi_cycle(op, r, empty, min(restart, maxiter - iterations), target, scale, history)
        x = x + cycle.V[:, : cycle.steps] @ cycle.y
        iterations += cycle.steps
        cycles += 1
    info = KrylovInfo(r_norm <= target, iterations, op.count, cycles, r_norm / scale, history)
    return x.to(b.dtype), info


# --------------------------------------------------------------------------- GCRO-DR


def _real_basis_of_eigvecs(values: torch.Tensor, vectors: torch.Tensor, k: int) -> torch.Tensor:
    """Real basis ``[m, <=k]`` of the eigenvectors with the ``k`` largest ``|values|``.

    A complex-conjugate pair spans the same real plane as ``Re z`` and ``Im z``, so a pair
    contributes both; a pair straddling the ``k``-th slot keeps only its real part.
    """
    order = torch.argsort(values.abs(), descending=True).tolist()
    tol = 1e-10 * values.abs().max().item()
    columns: list[torch.Tensor] = []
    used: set[int] = set()
    for i in order:
        if len(columns) >= k:
            break
        if i in used:
            continue
        used.add(i)
        z = vectors[:, i]
        if abs(values[i].imag.item()) <= tol:
            part = z.real if z.real.norm() >= z.imag.norm() else z.imag
            columns.append(part)
            continue
        columns.append(z.real)
        columns.append(z.imag)
        partner = torch.argmin((values - values[i].conj()).abs()).item()
        used.add(partner)
    return torch.stack(columns[:k], dim=1)


def _harmonic_ritz_space(
    G: torch.Tensor, WtV: torch.Tensor, k: int
) -> torch.Tensor:
    """``P [m, <=k]`` spanning the harmonic Ritz vectors of smallest harmonic Ritz values.

    Solves ``Gᵀ G z = θ Gᵀ (WᵀV̂) z`` (Parks et al. 2006, eq. 2.16), where ``A V̂ = W G``.
    With ``G`` of full column rank this is ``G⁺ (WᵀV̂) z = θ⁻¹ z``: a standard eigenproblem
    whose *largest* ``|θ⁻¹|`` are the wanted smallest ``|θ|`` — the eigenvalues nearest
    zero, which slow restarted GMRES down most.
    """
    N = torch.linalg.lstsq(G, WtV).solution
    values, vectors = torch.linalg.eig(N)
    P = _real_basis_of_eigvecs(values, vectors, k)
    # Orthonormalise and drop dependent columns so that G P has a well-conditioned QR.
    Up, sigma, _ = torch.linalg.svd(P, full_matrices=False)
    return Up[:, sigma > 1e-10 * sigma[0]]


def _recycled_pair(
    op: _CountingOperator, Y: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(U, C)`` with ``span U = span Y``, ``C = A U`` orthonormal (``[A Y] = C R``, ``U = Y R⁻¹``)."""
    C, R = torch.linalg.qr(op.block(Y), mode="reduced")
    # Directions that A maps to (nearly) dependent images would blow up under R⁻¹: drop them.
    diag = torch.diagonal(R).abs()
    keep = diag > 1e-12 * diag.max()
    if not bool(keep.any()):
        return Y[:, :0], C[:, :0]  # A annihilates the whole space: nothing worth recycling
    if not bool(keep.all()):
        return _recycled_pair(op, Y[:, keep])  # rare; k extra matvecs are acceptable
    U = torch.linalg.solve_triangular(R, Y, upper=True, left=False)
    return U, C


@torch.no_grad()
def gcro_dr(
    A: Operator,
    b: torch.Tensor,
    x0: torch.Tensor | None = None,
    *,
    recycle_space: torch.Tensor | None = None,
    restart: int = 30,
    recycle: int = 10,
    rtol: float = 1e-8,
    atol: float = 0.0,
    maxiter: int | None = None,
) -> tuple[torch.Tensor, KrylovInfo]:
    """GCRO-DR(m, k): GMRES with deflated restarting and a recycle space carried across systems.

    Shapes: ``A [n, n]`` or callable, ``b [n]``, ``x0 [n]`` (default 0), ``recycle_space
    [n, k']`` (``info.recycle_space`` of the previous solve, or None) → ``x [n]``, info.

    Maths (Parks et al. 2006, Algorithm 2). Keep ``U_k`` and ``C_k = A U_k`` with
    ``C_kᵀ C_k = I``. A given recycle space ``Ỹ`` is mapped through the *current* ``A``:
    ``A Ỹ = C R``, ``U = Ỹ R⁻¹``, then ``x ← x + U Cᵀ r``, ``r ← r − C Cᵀ r`` (the best
    correction from ``span U``). Each cycle runs ``m − k`` Arnoldi steps with the deflated
    operator ``(I − C Cᵀ) A`` from ``v_1 = r/β``, giving ``(I − CCᵀ) A V = V_+ H̄`` and
    ``B = Cᵀ A V``, so ``A [Ũ V] = [C V_+] Ĝ`` with ``Ũ = U D`` (unit columns) and
    ``Ĝ = [[D, B], [0, H̄]]``. As ``r ⟂ C``, the minimal-residual update over
    ``span [U V]`` is ``y_V = argmin ‖β e_1 − H̄ y‖`` and ``x ← x + V y_V − U B y_V``.
    The new recycle space is spanned by the harmonic Ritz vectors ``V̂ P`` (``V̂ = [Ũ V]``) of
    the ``k`` smallest harmonic Ritz values; ``Ĝ P = Q R`` gives ``C ← [C V_+] Q``,
    ``U ← V̂ P R⁻¹``. Without a recycle space the first cycle is a plain GMRES(m) cycle.

    ``restart = m`` counts recycled plus new directions (``k < m``); ``maxiter`` caps the
    total Arnoldi steps (default ``10 n``).
    """
    b, x0 = _check_rhs(b, x0)
    _check_settings(restart, rtol, atol, maxiter)
    if not 1 <= recycle < restart:
        raise ValueError(f"recycle: expected 1 <= recycle < restart={restart}, got {recycle}")
    n, device = b.numel(), b.device
    if recycle_space is not None and (
        not isinstance(recycle_space, torch.Tensor) or recycle_space.ndim != 2
        or recycle_space.shape[0] != n or recycle_space.shape[1] > recycle
    ):
        desc = tuple(recycle_space.shape) if isinstance(recycle_space, torch.Tensor) else type(recycle_space).__name__
        raise ValueError(f"recycle_space: expected a matrix [{n}, <= {recycle}], got {desc}")
    op = _CountingOperator(A, n, device)
    maxiter = 10 * n if maxiter is None else maxiter
    rhs = b.to(_DTYPE)
    x = torch.zeros(n, dtype=_DTYPE, device=device) if x0 is None else x0.to(_DTYPE).clone()
    b_norm = torch.linalg.vector_norm(rhs).item()
    scale = b_norm if b_norm > 0 else 1.0
    target = max(rtol * b_norm, atol)
    history: list[float] = []
    U = torch.zeros(n, 0, dtype=_DTYPE, device=device)
    C = U.clone()
    if recycle_space is not None and recycle_space.shape[1] > 0:
        U, C = _recycled_pair(op, recycle_space.to(device=device, dtype=_DTYPE))
    iterations = cycles = 0
    while True:
        r = rhs - op(x) if (cycles or x0 is not None) else rhs.clone()
        r_norm = torch.linalg.vector_norm(r).item()
        if not history:
            history.append(r_norm / scale)
        if r_norm <= target or iterations >= maxiter:
            break
        if C.shape[1]:
            # Best correction from span U (A U = C): also re-establishes r ⟂ C exactly.
            coeff = C.mT @ r
            x = x + U @ coeff
            r = r - C @ coeff
        k = C.shape[1]
        cycle = _arnoldi_cycle(op, r, C, min(restart - k, maxiter - iterations), target, scale, history)
        j = cycle.steps
        x = x + cycle.V[:, :j] @ cycle.y - U @ (cycle.B @ cycle.y)
        iterations += j
        cycles += 1
        U, C = _deflated_restart(U, C, cycle, recycle)
    info = KrylovInfo(r_norm <= target, iterations, op.count, cycles, r_norm / scale, history,
                      recycle_space=U if U.shape[1] else None)
    return x.to(b.dtype), info


def _deflated_restart(
    U: torch.Tensor, C: torch.Tensor, cycle: _Cycle, recycle: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """New ``(U, C)`` from the harmonic Ritz vectors of the augmented space ``[Ũ V]``."""
    k, j = C.shape[1], cycle.steps
    scales = torch.linalg.vector_norm(U, dim=0)
    U_unit = U / scales
    V, V_plus = cycle.V[:, :j], cycle.V
    G = torch.zeros(k + j + 1, k + j, dtype=_DTYPE, device=U.device)
    G[:k, :k] = torch.diag(1.0 / scales)
    G[:k, k:] = cycle.B
    G[k:, k:] = cycle.H
    W = torch.cat([C, V_plus], dim=1)
    # WᵀV̂ = [[CᵀŨ, 0], [V_+ᵀŨ, I]]: V ⟂ C and V_+ᵀ V = I, so only the Ũ block is computed.
    WtV = torch.zeros(k + j + 1, k + j, dtype=_DTYPE, device=U.device)
    WtV[:, :k] = W.mT @ U_unit
    WtV[k : k + j, k:] = torch.eye(j, dtype=_DTYPE, device=U.device)
    P = _harmonic_ritz_space(G, WtV, min(recycle, k + j))
    Q, R = torch.linalg.qr(G @ P, mode="reduced")
    Y = torch.cat([U_unit, V], dim=1) @ P
    return torch.linalg.solve_triangular(R, Y, upper=True, left=False), W @ Q


# --------------------------------------------------------------------------- sequences


def solve_sequence(
    systems: Sequence[tuple[Operator, torch.Tensor]],
    *,
    method: str = "gcro_dr",
    order: Sequence[int] | None = None,
    restart: int = 30,
    recycle: int = 10,
    rtol: float = 1e-8,
    atol: float = 0.0,
    maxiter: int | None = None,
) -> list[tuple[torch.Tensor, KrylovInfo]]:
    """Solve ``A_i x_i = b_i`` for every ``(A_i, b_i)`` in ``systems``, in ``order``.

    ``method="gcro_dr"`` carries the recycle space from each solve to the next (in the
    given order, e.g. from :func:`sort_by_similarity`); ``method="gmres"`` solves each one
    from scratch with GMRES(restart). Returns ``[(x_i, info_i)]`` indexed like ``systems``.
    """
    if method not in ("gcro_dr", "gmres"):
        raise ValueError(f"method: expected 'gcro_dr' or 'gmres', got {method!r}")
    order = list(range(len(systems))) if order is None else list(order)
    if sorted(order) != list(range(len(systems))):
        raise ValueError(f"order: expected a permutation of range({len(systems)}), got {order}")
    results: list[tuple[torch.Tensor, KrylovInfo] | None] = [None] * len(systems)
    space = None
    for i in order:
        A, b = systems[i]
        if method == "gmres":
            results[i] = gmres(A, b, restart=restart, rtol=rtol, atol=atol, maxiter=maxiter)
            continue
        x, info = gcro_dr(A, b, recycle_space=space, restart=restart, recycle=recycle,
                          rtol=rtol, atol=atol, maxiter=maxiter)
        space = info.recycle_space
        results[i] = (x, info)
    return results  # type: ignore[return-value]


def sort_by_similarity(
    features: torch.Tensor | Sequence[torch.Tensor],
    *,
    start: int | None = 0,
    distance: Callable[[torch.Tensor, torch.Tensor], float] | None = None,
) -> list[int]:
    """An order of the systems in which consecutive ones are close (sorting Krylov recycling).

    Args:
        features: one dense tensor per system (any shape, flattened), or a tensor
            ``[N, ...]``: the system's parameters, coefficient field, or matrix (for sparse
            matrices sharing one sparsity pattern, pass ``A.values()``). Sparse tensors raise.
        start: the system the order starts with; ``None`` tries every start and keeps the
            shortest path (``O(N³)``, fine for hundreds of systems).
        distance: ``distance(f_i, f_j) -> float``; default Euclidean on the flattened
            features, i.e. ``‖A_i − A_j‖_F`` when the features are the matrices.

    Returns a permutation of ``range(N)``: the greedy nearest-neighbour path — from the
    current system, go to the closest one not yet visited. It is a heuristic for the
    shortest Hamiltonian path (a travelling-salesman problem), not the optimum.
    """
    items = list(features.unbind(0)) if isinstance(features, torch.Tensor) else list(features)
    if not items:
        return []
    for i, f in enumerate(items):
        if not isinstance(f, torch.Tensor) or f.is_sparse or f.layout != torch.strided:
            raise TypeError(f"features[{i}]: expected a dense tensor, got {type(f).__name__}"
                            + (f" with layout {f.layout}" if isinstance(f, torch.Tensor) else ""))
        if f.numel() != items[0].numel():
            raise ValueError(f"features[{i}]: expected {items[0].numel()} elements like features[0], got {f.numel()}")
    count = len(items)
    if start is not None and not 0 <= start < count:
        raise ValueError(f"start: expected an index in [0, {count}), got {start}")
    if distance is None:
        flat = torch.stack([f.reshape(-1).to(_DTYPE) for f in items])
        dist = torch.cdist(flat, flat).cpu()
    else:
        dist = torch.tensor([[float(distance(a, c)) for c in items] for a in items], dtype=_DTYPE)
    starts = range(count) if start is None else [start]
    best, best_length = [], math.inf
    for first in starts:
        path, length = _greedy_path(dist, first)
        if length < best_length:
            best, best_length = path, length
    return best


def _greedy_path(dist: torch.Tensor, first: int) -> tuple[list[int], float]:
    visited = torch.zeros(dist.shape[0], dtype=torch.bool)
    visited[first] = True
    path, length = [first], 0.0
    for _ in range(dist.shape[0] - 1):
        row = dist[path[-1]].masked_fill(visited, math.inf)
        nxt = int(torch.argmin(row))
        length += row[nxt].item()
        visited[nxt] = True
        path.append(nxt)
    return path, length
