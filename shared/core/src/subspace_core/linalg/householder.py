"""Householder-product parametrisation of orthonormal frames.

A product of Householder reflections ``H(v) = I − 2 v vᵀ / (vᵀv)`` is orthogonal for any
nonzero vectors ``v``, so ``Q = H(v_1) H(v_2) ⋯ H(v_k) I[:, :p]`` is an orthonormal ``n×p``
frame for *unconstrained* ``v_i`` — a way to train an orthonormal projector (e.g. the
low-rank projector of GaLore-like methods) with any Euclidean optimizer. With ``k = p < n``
reflectors every orthonormal frame is reachable (:func:`frame_to_householder` finds the
vectors), so a frame can be initialised from an SVD basis and then trained.

The product is never formed as ``n×n`` matrices: it uses the compact "UT" form of the
reflector product (Joffrain, Low, Quintana-Ortí, van de Geijn & Van Zee 2006),
``H(v_1) ⋯ H(v_k) = I − Y S⁻¹ Yᵀ`` with unit columns ``Y`` and ``S`` upper triangular,
``S = diag(YᵀY)/2 + strict_upper(YᵀY)``; applied to ``I[:, :p]`` this costs ``O(n k (k + p))``
in a few batched matmuls and one triangular solve, all differentiable.
"""

from __future__ import annotations

import math

import torch
from torch import nn

__all__ = ["HouseholderFrame", "frame_to_householder", "householder_product"]


def _check_real_matrix(name: str, X: object) -> torch.Tensor:
    if not isinstance(X, torch.Tensor):
        raise TypeError(f"{name}: expected a torch.Tensor [..., n, k], got {type(X).__name__}")
    if not X.dtype.is_floating_point:
        raise TypeError(f"{name}: expected a real floating-point tensor, got {X.dtype}")
    if X.ndim < 2 or X.shape[-1] < 1 or X.shape[-2] < 1:
        raise ValueError(f"{name}: expected a non-empty matrix [..., n, k], got shape {tuple(X.shape)}")
    return X


def householder_product(V: torch.Tensor, p: int | None = None) -> torch.Tensor:
    """First ``p`` columns of ``H(v_1) H(v_2) ⋯ H(v_k)``: an orthonormal frame ``[..., n, p]``.

    Shapes: ``V [..., n, k]`` (column ``i`` is ``v_i``, any nonzero scale) → ``[..., n, p]``;
    ``p`` defaults to ``k`` and must satisfy ``1 <= p <= n``.

    Maths: ``H(v) = I − 2 v vᵀ / (vᵀv)``. With unit vectors ``y_i = v_i / ‖v_i‖`` stacked in
    ``Y``, ``H(v_1) ⋯ H(v_k) = I − Y S⁻¹ Yᵀ`` where ``S`` is upper triangular with
    ``S_ii = 1/2`` and ``S_ij = y_iᵀ y_j`` (``i < j``); hence
    ``Q = I[:, :p] − Y S⁻¹ Y[:p, :]ᵀ``. Differentiable in ``V`` (a zero column raises:
    its reflector is undefined).
    """
    _check_real_matrix("V", V)
    n, k = V.shape[-2], V.shape[-1]
    p = k if p is None else p
    if not 1 <= p <= n:
        raise ValueError(f"p: expected 1 <= p <= n={n}, got {p}")
    norms = torch.linalg.vector_norm(V, dim=-2, keepdim=True)
    if (norms == 0).any():
        raise ValueError("V: expected nonzero Householder vectors, got a zero column")
    Y = V / norms
    S = torch.triu(Y.mT @ Y, diagonal=1)
    S = S + 0.5 * torch.eye(k, dtype=V.dtype, device=V.device)
    correction = torch.linalg.solve_triangular(S, Y[..., :p, :].mT, upper=True)  # [..., k, p]
    eye = torch.eye(n, p, dtype=V.dtype, device=V.device)
    return eye - Y @ correction


def frame_to_householder(Q: torch.Tensor) -> torch.Tensor:
    """Householder vectors ``V [..., n, p]`` with ``householder_product(V) == Q``.

    Shapes: ``Q [..., n, p]`` orthonormal (checked) → ``V [..., n, p]``.

    Maths: reflector ``j`` maps ``e_j`` to the current target column ``q`` exactly:
    ``v_j = e_j − q``, whose entries above ``j`` are zero (so ``H(v_j)`` fixes
    ``e_1 … e_{j−1}``), and ``Q ← H(v_j) Q`` turns column ``j`` into ``e_j``. After ``p``
    steps ``Q = H(v_1) ⋯ H(v_p) I[:, :p]``. ``1 − q_j`` is evaluated as
    ``Σ_{i>j} q_i² / (1 + q_j)`` when ``q_j > 0`` to avoid cancellation (Parlett's trick, as
    in LAPACK ``dlarfg``). If ``q = e_j`` already, any ``v ⟂ e_1 … e_j`` works (``e_n`` is used).
    For ``p = n`` a product of ``n`` reflectors has determinant ``(−1)^n``, so only such
    ``Q`` are representable; others raise.
    """
    _check_real_matrix("Q", Q)
    n, p = Q.shape[-2], Q.shape[-1]
    if p > n:
        raise ValueError(f"Q: expected a frame [..., n, p] with p <= n, got shape {tuple(Q.shape)}")
    eye_p = torch.eye(p, dtype=Q.dtype, device=Q.device)
    error = (Q.mT @ Q - eye_p).abs().amax().item()
    tol = 10 * math.sqrt(torch.finfo(Q.dtype).eps)  # catches a non-frame, not rounding
    if not error <= tol:
        raise ValueError(f"Q: expected an orthonormal frame (max |QᵀQ − I| <= {tol:.1e}), got {error:.2e}")

    target = Q.clone()
    rows = torch.arange(n, device=Q.device)
    vectors = []
    for j in range(p):
        q = target[..., :, j]
        q_j = q[..., j]
        below_sq = q[..., j + 1 :].square().sum(-1)
        one_minus_qj = torch.where(q_j > 0, below_sq / (1 + q_j), 1 - q_j)
        # Entries above j are rounding noise (the column is orthogonal to e_1..e_{j-1});
        # zeroing them keeps H(v_j) from disturbing the columns already fixed.
        v = torch.where(rows < j, torch.zeros_like(q), -q)
        v[..., j] = one_minus_qj
        degenerate = torch.linalg.vector_norm(v, dim=-1) == 0
        if degenerate.any():
            if j == n - 1:
                raise ValueError(
                    f"Q: a square frame (p = n = {n}) must have det(Q) = (-1)^{n} to be a "
                    f"product of {n} reflectors; got det(Q) = {(-1) ** (n + 1)}"
                )
            v = torch.where(degenerate.unsqueeze(-1), (rows == n - 1).to(Q.dtype), v)
        vectors.append(v)
        target = target - (2 / v.square().sum(-1))[..., None, None] * v.unsqueeze(-1) * (
            v.unsqueeze(-2) @ target
        )
    return torch.stack(vectors, dim=-1)


class HouseholderFrame(nn.Module):
    """A trainable orthonormal frame ``[n, p]`` parametrised by Householder vectors.

    ``forward()`` returns ``householder_product(self.vectors, p)``: orthonormal by
    construction for every value of the unconstrained parameter ``vectors [n, k]``
    (``k = num_reflectors``, default ``p``), so plain SGD/Adam can train it.

    Initialisation: random (``torch.randn``, i.e. a random frame) or, through
    :meth:`from_frame` / :meth:`set_frame`, exactly a given orthonormal frame (e.g. the top
    singular vectors of a gradient). Exact initialisation needs ``k >= p`` (and ``p < n``
    unless ``det`` fits, see :func:`frame_to_householder`).
    """

    def __init__(
        self,
        n: int,
        p: int,
        num_reflectors: int | None = None,
        *,
        dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
    ) -> None:
        super().__init__()
        k = p if num_reflectors is None else num_reflectors
        if not 1 <= p <= n:
            raise ValueError(f"p: expected 1 <= p <= n={n}, got {p}")
        if not 1 <= k <= n:
            raise ValueError(f"num_reflectors: expected 1 <= num_reflectors <= n={n}, got {k}")
        self.n, self.p, self.num_reflectors = n, p, k
        self.vectors = nn.Parameter(torch.randn(n, k, dtype=dtype, device=device))

    @classmethod
    def from_frame(cls, Q: torch.Tensor, num_reflectors: int | None = None) -> HouseholderFrame:
        """A module whose ``forward()`` equals the orthonormal frame ``Q [n, p]``."""
        if not isinstance(Q, torch.Tensor) or Q.ndim != 2:
            shape = tuple(Q.shape) if isinstance(Q, torch.Tensor) else type(Q).__name__
            raise ValueError(f"Q: expected an orthonormal frame [n, p], got {shape}")
        module = cls(Q.shape[0], Q.shape[1], num_reflectors, dtype=Q.dtype, device=Q.device)
        module.set_frame(Q)
        return module

    @torch.no_grad()
    def set_frame(self, Q: torch.Tensor) -> None:
        """Overwrite the vectors in place so that ``forward()`` returns ``Q [n, p]``."""
        if tuple(Q.shape) != (self.n, self.p):
            raise ValueError(f"Q: expected shape {(self.n, self.p)}, got {tuple(Q.shape)}")
        if self.num_reflectors < self.p:
            raise ValueError(
                f"num_reflectors: expected >= p={self.p} to represent an arbitrary frame, "
                f"got {self.num_reflectors}"
            )
        head = frame_to_householder(Q.to(self.vectors.dtype))
        extra = self.num_reflectors - self.p
        if extra:
            # Reflectors beyond p must fix e_1..e_p: vectors supported on rows p..n-1.
            tail = torch.randn(self.n, extra, dtype=head.dtype, device=head.device)
            tail[: self.p] = 0
            head = torch.cat([head, tail], dim=1)
        self.vectors.copy_(head)

    def forward(self) -> torch.Tensor:
        return householder_product(self.vectors, self.p)

    def extra_repr(self) -> str:
        return f"n={self.n}, p={self.p}, num_reflectors={self.num_reflectors}"
