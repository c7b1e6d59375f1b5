"""Principal angles, distances and Riemannian geometry of the Grassmann manifold.

A point of the Grassmannian ``Gr(n, p)`` (a ``p``-dimensional subspace of ``R^n``) is
represented by an orthonormal frame ``U`` of shape ``[..., n, p]`` (``UᵀU = I_p``) whose
columns span it; ``U`` and ``U Q`` (``Q`` orthogonal ``p×p``) are the same point. The
tangent space at ``U`` is ``{H ∈ R^{n×p} : UᵀH = 0}`` with the metric ``⟨H, K⟩ = tr(HᵀK)``.

Everything is batched over leading dimensions, runs in the input's dtype and on its
device, and follows Edelman, Arias & Smith (1998), "The geometry of algorithms with
orthogonality constraints", and Bendokat, Zimmermann & Absil (2024), "A Grassmann manifold
handbook". The optimizers at the end make frames trainable parameters, e.g. for Grassmann
class representation (one subspace per class, logit = ‖Sᵀx‖).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any

import torch

from subspace_core.linalg.bases import qr_positive

__all__ = [
    "GrassmannAdam",
    "GrassmannSGD",
    "chordal_distance",
    "geodesic_distance",
    "grassmann_exp",
    "grassmann_log",
    "grassmann_retraction",
    "principal_angles",
    "projection_distance",
    "tangent_projection",
]


# --------------------------------------------------------------------------- helpers


def _check_frames(name: str, X: object) -> torch.Tensor:
    """Raise unless ``X`` is a real floating tensor ``[..., n, p]`` with ``1 <= p <= n``."""
    if not isinstance(X, torch.Tensor):
        raise TypeError(f"{name}: expected a torch.Tensor [..., n, p], got {type(X).__name__}")
    if not X.dtype.is_floating_point:
        raise TypeError(f"{name}: expected a real floating-point tensor, got {X.dtype}")
    if X.ndim < 2 or X.shape[-1] < 1 or X.shape[-1] > X.shape[-2]:
        raise ValueError(
            f"{name}: expected a frame [..., n, p] with 1 <= p <= n, got shape {tuple(X.shape)}"
        )
    return X


def _check_same_ambient(U: torch.Tensor, V: torch.Tensor, nu: str = "U", nv: str = "V") -> None:
    if U.shape[-2] != V.shape[-2]:
        raise ValueError(
            f"{nv}: expected the same ambient dimension n={U.shape[-2]} as {nu}, "
            f"got shape {tuple(V.shape)}"
        )


def _check_same_shape(U: torch.Tensor, H: torch.Tensor, nu: str, nh: str) -> None:
    if U.shape[-2:] != H.shape[-2:]:
        raise ValueError(
            f"{nh}: expected trailing shape {tuple(U.shape[-2:])} (that of {nu}), "
            f"got shape {tuple(H.shape)}"
        )


def _orthonormality_error(U: torch.Tensor) -> float:
    eye = torch.eye(U.shape[-1], dtype=U.dtype, device=U.device)
    return (U.mT @ U - eye).abs().amax().item() if U.numel() else 0.0


# --------------------------------------------------------------------------- angles & distances


def principal_angles(U: torch.Tensor, V: torch.Tensor, *, orthonormalize: bool = True) -> torch.Tensor:
    """Principal angles between ``span(U)`` and ``span(V)``, ascending, in ``[0, π/2]``.

    Shapes: ``U [..., n, p]``, ``V [..., n, q]`` (leading dims broadcast) → ``θ [..., min(p, q)]``.

    Maths: with orthonormal bases ``Q_U, Q_V``, ``cos θ_i = σ_i(Q_Uᵀ Q_V)``. ``arccos`` loses
    all accuracy for small angles (``cos θ = 1 − θ²/2`` rounds to 1 below ``θ ≈ 1e-8`` in
    float64), so, following Björck & Golub (1973) and Knyazev & Argentati (2002), the angles
    below π/4 come from the sines instead: for ``q <= p``, ``sin θ_i`` are the singular values
    of ``(I − Q_U Q_Uᵀ) Q_V`` (in the same order reversed), which are computed with small
    absolute error, hence small relative error for tiny angles.

    Args:
        U, V: bases of the two subspaces (full column rank).
        orthonormalize: QR-orthonormalise ``U`` and ``V`` first (default). Pass ``False``
            only for frames already orthonormal to working precision (saves two QRs);
            non-orthonormal input then gives wrong angles.

    Not meant to be differentiated at repeated angles (singular-value derivatives blow up).
    """
    _check_frames("U", U)
    _check_frames("V", V)
    _check_same_ambient(U, V)
    if orthonormalize:
        U = torch.linalg.qr(U, mode="reduced").Q
        V = torch.linalg.qr(V, mode="reduced").Q
    if V.shape[-1] > U.shape[-1]:  # angles are symmetric; keep the thinner frame as V
        U, V = V, U
    cosines = torch.linalg.svdvals(U.mT @ V).clamp(0.0, 1.0)  # descending → θ ascending
    residual = V - U @ (U.mT @ V)
    residual = residual - U @ (U.mT @ residual)  # second projection: error ~ eps, not eps·κ
    sines = torch.linalg.svdvals(residual).flip(-1).clamp(0.0, 1.0)  # ascending → θ ascending
    small = sines.square() < 0.5  # θ < π/4: sine is the accurate one
    theta = torch.where(small, torch.arcsin(sines), torch.arccos(cosines))
    return theta.sort(dim=-1).values


def geodesic_distance(U: torch.Tensor, V: torch.Tensor, *, orthonormalize: bool = True) -> torch.Tensor:
    """Arc-length (geodesic) distance ``‖θ‖₂``; shapes ``[..., n, p], [..., n, q]`` → ``[...]``.

    For ``p = q`` this is the length of the shortest geodesic from ``span U`` to ``span V``
    and equals ``‖grassmann_log(U, V)‖_F``.
    """
    return torch.linalg.vector_norm(principal_angles(U, V, orthonormalize=orthonormalize), dim=-1)


def chordal_distance(U: torch.Tensor, V: torch.Tensor, *, orthonormalize: bool = True) -> torch.Tensor:
    """Chordal distance ``‖sin θ‖₂`` (Conway, Hardin & Sloane 1996); ``[...]``.

    For ``p = q`` it equals ``‖UUᵀ − VVᵀ‖_F / √2`` (see :func:`projection_distance`), but is
    computed from the angles, so it stays accurate for nearly equal subspaces where the
    difference of projectors cancels.
    """
    theta = principal_angles(U, V, orthonormalize=orthonormalize)
    return torch.linalg.vector_norm(torch.sin(theta), dim=-1)


def projection_distance(
    U: torch.Tensor, V: torch.Tensor, *, norm: str = "fro", orthonormalize: bool = True
) -> torch.Tensor:
    """Distance between the orthogonal projectors ``P_U = UUᵀ`` and ``P_V = VVᵀ``; ``[...]``.

    * ``norm="fro"``: ``‖P_U − P_V‖_F / √2 = sqrt(Σ sin²θ_i + |p − q| / 2)``
      (``= ‖sin θ‖₂`` when ``p = q``). The ``√2`` makes it the chordal distance of equal
      dimensions; the extra term counts the ``|p − q|`` directions one space has beyond
      the other.
    * ``norm="2"``: the spectral norm ``‖P_U − P_V‖₂ = sin θ_max`` if ``p = q``, and ``1`` if
      ``p ≠ q`` (some vector of the bigger space is orthogonal to the smaller one).

    Both are evaluated from the principal angles, never by forming ``n×n`` projectors.
    """
    if norm not in ("fro", "2"):
        raise ValueError(f"norm: expected 'fro' or '2', got {norm!r}")
    theta = principal_angles(U, V, orthonormalize=orthonormalize)
    extra = abs(U.shape[-1] - V.shape[-1])
    sines = torch.sin(theta)
    if norm == "fro":
        return torch.sqrt(sines.square().sum(-1) + extra / 2)
    if extra:
        return torch.ones_like(sines[..., 0])
    return sines[..., -1]


# --------------------------------------------------------------------------- Riemannian maps


def tangent_projection(U: torch.Tensor, G: torch.Tensor) -> torch.Tensor:
    """Orthogonal projection of ``G [..., n, p]`` onto the tangent space at ``U``: ``G − U UᵀG``.

    Applied to a Euclidean gradient this gives the Riemannian gradient; applied to a tangent
    vector at another point it is the vector transport by projection.
    """
    _check_frames("U", U)
    _check_same_shape(U, G, "U", "G")
    return G - U @ (U.mT @ G)


def grassmann_exp(U: torch.Tensor, H: torch.Tensor) -> torch.Tensor:
    """Riemannian exponential: the frame reached from ``U`` along the geodesic with velocity ``H``.

    Shapes: ``U, H [..., n, p]`` with ``UᵀH = 0`` → ``[..., n, p]`` orthonormal.

    Maths (Edelman et al. 1998, Thm 2.3): with the thin SVD ``H = W Σ Vᵀ``,
    ``Exp_U(H) = U V cos(Σ) Vᵀ + W sin(Σ) Vᵀ``. The result is orthonormal up to rounding;
    callers iterating it many times should re-orthonormalise now and then.
    """
    _check_frames("U", U)
    _check_same_shape(U, H, "U", "H")
    W, sigma, Vh = torch.linalg.svd(H, full_matrices=False)
    cos, sin = torch.cos(sigma).unsqueeze(-2), torch.sin(sigma).unsqueeze(-2)
    return ((U @ Vh.mT) * cos + W * sin) @ Vh


def grassmann_log(U: torch.Tensor, V: torch.Tensor) -> torch.Tensor:
    """Riemannian logarithm: tangent ``H`` at ``U`` with ``span Exp_U(H) = span V``, minimal ``‖H‖_F``.

    Shapes: ``U, V [..., n, p]`` orthonormal → ``H [..., n, p]`` with ``UᵀH = 0`` and
    ``‖H‖_F = geodesic_distance(U, V)``.

    Maths (Bendokat, Zimmermann & Absil, Algorithm 5.3 — stable, no inverse of ``UᵀV``):
    1. Procrustes-align ``V``'s basis to ``U``: ``VᵀU = A S Bᵀ`` (SVD), ``Ṽ = V A Bᵀ``, which
       makes ``UᵀṼ`` symmetric positive semidefinite (``= cos Σ`` in the right basis);
    2. ``(I − UUᵀ) Ṽ = Q̂ Ŝ R̂ᵀ`` (thin SVD), where ``Ŝ = sin Σ``;
    3. ``H = Q̂ arcsin(Ŝ) R̂ᵀ``.
    At the cut locus (some angle = π/2) one of the several shortest geodesics is returned.
    """
    _check_frames("U", U)
    _check_frames("V", V)
    _check_same_shape(U, V, "U", "V")
    A, _, Bh = torch.linalg.svd(V.mT @ U, full_matrices=False)
    aligned = V @ (A @ Bh)
    Qh, sines, Rh = torch.linalg.svd(aligned - U @ (U.mT @ aligned), full_matrices=False)
    return (Qh * torch.arcsin(sines.clamp(0.0, 1.0)).unsqueeze(-2)) @ Rh


def grassmann_retraction(U: torch.Tensor, H: torch.Tensor) -> torch.Tensor:
    """QR retraction ``R_U(H) = qf(U + H)`` with ``diag(R) > 0``; ``[..., n, p]`` orthonormal.

    A first-order approximation of :func:`grassmann_exp` (same point and velocity at
    ``H = 0``) that costs one QR instead of an SVD. The sign fix makes it continuous in
    ``H`` and makes ``R_U(0) = U`` column by column.
    """
    _check_frames("U", U)
    _check_same_shape(U, H, "U", "H")
    return qr_positive(U + H)


# --------------------------------------------------------------------------- optimizers

_STEP_MAPS = ("retraction", "exp")


def _move(U: torch.Tensor, step: torch.Tensor, step_map: str) -> torch.Tensor:
    """The point reached from ``U`` along tangent ``step``, orthonormal to working precision."""
    if step_map == "retraction":
        return qr_positive(U + step)
    # The exponential map drifts off orthonormality by O(eps) per step; a sign-fixed QR is the
    # identity on an orthonormal frame, so polishing costs nothing in accuracy.
    return qr_positive(grassmann_exp(U, step))


class _GrassmannOptimizer(torch.optim.Optimizer):
    """Shared validation: every parameter must be an orthonormal real frame ``[..., n, p]``."""

    def __init__(self, params: Iterable[Any], defaults: dict[str, Any]) -> None:
        if not defaults["lr"] >= 0.0:
            raise ValueError(f"lr: expected a non-negative number, got {defaults['lr']}")
        super().__init__(params, defaults)

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        super().add_param_group(param_group)
        try:
            self._validate_group(len(self.param_groups) - 1)
        except (TypeError, ValueError):
            self.param_groups.pop()  # a rejected group must not stay half-registered
            raise

    def _validate_group(self, group_index: int) -> None:
        group = self.param_groups[group_index]
        if group["step_map"] not in _STEP_MAPS:
            raise ValueError(f"step_map: expected one of {_STEP_MAPS}, got {group['step_map']!r}")
        for index, param in enumerate(group["params"]):
            name = f"params[{index}] of param group {group_index}"
            _check_frames(name, param)
            # Starting off the manifold would make every later step meaningless; refuse
            # instead of silently orthonormalising the user's tensor.
            tol = 10 * math.sqrt(torch.finfo(param.dtype).eps)  # catches a missing QR, not rounding
            error = _orthonormality_error(param.detach())
            if not error <= tol:
                raise ValueError(
                    f"{name}: expected an orthonormal frame (max |UᵀU − I| <= {tol:.1e}), "
                    f"got {error:.2e}; initialise it with torch.linalg.qr(X).Q"
                )

    @staticmethod
    def _riemannian_grad(U: torch.Tensor, maximize: bool) -> torch.Tensor:
        if U.grad.is_sparse:
            raise RuntimeError("Grassmann optimizers do not support sparse gradients")
        grad = -U.grad if maximize else U.grad
        return grad - U @ (U.mT @ grad)


class GrassmannSGD(_GrassmannOptimizer):
    """Riemannian SGD with (heavy-ball or Nesterov) momentum on ``Gr(n, p)`` frames.

    Every parameter is an orthonormal frame ``[..., n, p]`` (each leading index is a separate
    subspace: a product manifold). One step, for Euclidean gradient ``G``:

    * Riemannian gradient ``g = G − U UᵀG`` (projection onto the tangent space at ``U``);
    * ``m ← μ m + g``; direction ``d = m`` (or ``g + μ m`` with ``nesterov=True``);
    * ``U ← R_U(−lr d)`` with the QR retraction (``step_map="retraction"``) or the
      exponential map (``step_map="exp"``, then re-orthonormalised);
    * ``m ← m − U_new U_newᵀ m``: momentum is carried to the new tangent space by
      projection (vector transport by projection, Absil et al. 2008, §8.1).

    Weight decay is not offered: the frame's norm is fixed, so decay has no meaning here.
    Parameters must be orthonormal at construction (checked); they stay so after each step.
    """

    def __init__(
        self,
        params: Iterable[Any],
        lr: float,
        momentum: float = 0.0,
        *,
        nesterov: bool = False,
        maximize: bool = False,
        step_map: str = "retraction",
    ) -> None:
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"momentum: expected a number in [0, 1), got {momentum}")
        if nesterov and momentum == 0.0:
            raise ValueError("nesterov: expected momentum > 0 with nesterov=True, got momentum=0")
        defaults = dict(lr=lr, momentum=momentum, nesterov=nesterov, maximize=maximize,
                        step_map=step_map)
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure: Callable[[], torch.Tensor] | None = None) -> torch.Tensor | None:
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            lr, mu = group["lr"], group["momentum"]
            for U in group["params"]:
                if U.grad is None:
                    continue
                grad = self._riemannian_grad(U, group["maximize"])
                direction = grad
                if mu > 0:
                    state = self.state[U]
                    buf = state.get("momentum_buffer")
                    buf = grad.clone() if buf is None else buf.mul_(mu).add_(grad)
                    state["momentum_buffer"] = buf
                    direction = grad + mu * buf if group["nesterov"] else buf
                new = _move(U, -lr * direction, group["step_map"])
                U.copy_(new)
                if mu > 0:
                    buf.sub_(U @ (U.mT @ buf))  # transport to the new tangent space
        return loss


class GrassmannAdam(_GrassmannOptimizer):
    """Riemannian Adam (Bécigneul & Ganea 2019) on ``Gr(n, p)`` frames.

    Each frame ``[..., n, p]`` (every leading index a separate subspace) keeps a tangent
    first moment ``m`` and a second moment ``v``. One step, for Euclidean gradient ``G``:

    * ``g = G − U UᵀG`` (Riemannian gradient);
    * ``m ← β₁ m + (1 − β₁) g``;
    * ``v ← β₂ v + (1 − β₂) s(g)``, where with ``second_moment="scalar"`` (default)
      ``s(g) = ‖g‖²_F / (n p)`` — one scalar per frame, as Bécigneul & Ganea prescribe for a
      product of manifolds (a coordinate-wise ``v`` has no intrinsic meaning on a manifold);
      dividing by ``n p`` only rescales ``lr`` so it means roughly the per-entry step of
      ``torch.optim.Adam``. The scalar is invariant to the basis choice ``U ↦ UQ``. With
      ``second_moment="elementwise"``, ``s(g) = g ⊙ g`` (as geoopt does) and the
      preconditioned direction is projected back onto the tangent space, since the
      elementwise division leaves it;
    * ``d = m̂ / (√v̂ + ε)`` with the usual bias corrections;
    * ``U ← R_U(−lr d)`` (QR retraction or exponential map, as in :class:`GrassmannSGD`);
    * ``m ← m − U_new U_newᵀ m`` (vector transport by projection); ``v`` is kept as is.
    """

    def __init__(
        self,
        params: Iterable[Any],
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        *,
        second_moment: str = "scalar",
        maximize: bool = False,
        step_map: str = "retraction",
    ) -> None:
        if not (0.0 <= betas[0] < 1.0 and 0.0 <= betas[1] < 1.0):
            raise ValueError(f"betas: expected two numbers in [0, 1), got {betas}")
        if not eps >= 0.0:
            raise ValueError(f"eps: expected a non-negative number, got {eps}")
        if second_moment not in ("scalar", "elementwise"):
            raise ValueError(
                f"second_moment: expected 'scalar' or 'elementwise', got {second_moment!r}"
            )
        defaults = dict(lr=lr, betas=betas, eps=eps, second_moment=second_moment,
                        maximize=maximize, step_map=step_map)
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure: Callable[[], torch.Tensor] | None = None) -> torch.Tensor | None:
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            scalar = group["second_moment"] == "scalar"
            for U in group["params"]:
                if U.grad is None:
                    continue
                grad = self._riemannian_grad(U, group["maximize"])
                state = self.state[U]
                if not state:
                    state["step"] = 0
                    state["exp_avg"] = torch.zeros_like(U)
                    state["exp_avg_sq"] = (torch.zeros_like(U[..., :1, :1]) if scalar
                                           else torch.zeros_like(U))
                state["step"] += 1
                t = state["step"]
                exp_avg, exp_avg_sq = state["exp_avg"], state["exp_avg_sq"]
                exp_avg.mul_(beta1).add_(grad, alpha=1 - beta1)
                second = grad.square().mean(dim=(-2, -1), keepdim=True) if scalar else grad.square()
                exp_avg_sq.mul_(beta2).add_(second, alpha=1 - beta2)
                m_hat = exp_avg / (1 - beta1**t)
                v_hat = exp_avg_sq / (1 - beta2**t)
                direction = m_hat / (v_hat.sqrt() + group["eps"])
                if not scalar:
                    direction = direction - U @ (U.mT @ direction)
                U.copy_(_move(U, -group["lr"] * direction, group["step_map"]))
                exp_avg.sub_(U @ (U.mT @ exp_avg))  # transport to the new tangent space
        return loss
