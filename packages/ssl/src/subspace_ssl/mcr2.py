"""MCR² (supervised) and MLC (unsupervised manifold linearizing and clustering).

**MCR²** (Yu et al., NeurIPS 2020) learns features whose classes span mutually orthogonal
low-dimensional subspaces by maximising the rate reduction ``ΔR = R(Z) − R_c(Z, Π)`` of
L2-normalised features; :func:`mcr2_loss` returns ``−ΔR`` for hard labels (it is
:func:`subspace_core.linalg.coding_rate_reduction` on the normalised features).

**MLC** (Ding, Tong, Chan, Dai, Ma, Haeffele, "Unsupervised Manifold Linearizing and
Clustering", ICCV 2023) learns the representation *and* the membership without labels. For a
mini-batch of ``n`` samples, a shared trunk feeds

* a feature head ``z_i = f(x_i) / ‖f(x_i)‖`` (``Z`` [n, d]), and
* a cluster head ``c_i = g(x_i) / ‖g(x_i)‖`` (``C`` [n, d_c]) whose similarities give the
  *doubly stochastic* membership ``Γ = P_{Ω,η}(|C Cᵀ|)`` [n, n], where
  ``P_{Ω,η}(M) = argmin_{Γ ∈ Ω} −⟨M, Γ⟩ + η ⟨Γ, log Γ⟩`` over
  ``Ω = {Γ ≥ 0, Γ 1 = 1, Γᵀ 1 = 1}`` is computed by Sinkhorn iterations (:func:`sinkhorn`).

Row ``j`` of ``Γ`` is a soft "cluster" around sample ``j`` (its weights sum to 1), and the
columns sum to 1, so ``Σ_j diag(Γ_j) = I`` is a valid MCR² membership with ``n`` groups.
The objective maximised (:func:`mlc_objective`) is

    R(Z; ε) − R_c(Z, Γ; ε) + γ H(Γ),
    R(Z) = ½ logdet(I + d/(n ε²) Zᵀ Z),
    R_c(Z, Γ) = Σ_j (1/2n) logdet(I + d/ε² Σ_i Γ_ji z_i z_iᵀ),
    H(Γ) = −(1/n) Σ_ij Γ_ij log Γ_ij   (mean row entropy, nats).

``Γ = I`` (every sample its own rank-1 cluster) minimises ``R_c``; the entropy term and the
Sinkhorn temperature ``η`` keep the membership spread over neighbours (the authors' later
CPP code swaps the entropy for ``½ γ ‖Γ‖_F²``). Final cluster labels come from spectral
clustering of ``Γ`` computed over the whole evaluation set (:meth:`MLC.predict`), as the
authors' code does.

Sources: the paper's abstract and method summary and the authors' public follow-up code
(github.com/LeslieTrue/CPP: ``MLCLoss``, ``SinkhornDistance``, ``update_pi_from_z``); the
paper's full text was not available offline. The optimiser settings are CPP's defaults;
``ε = 0.3`` (``ε² = 0.09``; CPP: 0.1) and ``η = 0.2`` (CPP: 0.175) are close to them.

**One-shot initialisation**: the representation starts from
self-supervised features, and the cluster head starts as a *copy* of the feature head, so
the initial membership is ``Γ₀ = P_{Ω,η}(|Z Zᵀ|)`` — the doubly stochastic projection of the
initial features' own similarities — with no k-means or alternating pre-clustering. Here the
self-supervised features are a frozen encoder's (ImageNet MobileNetV2 in the Fashion-MNIST
recipe): each head has a linear skip from the standardised input that starts at the input's
top ``z_dim`` principal directions, with the MLP branch's last layer at zero, so
``Z₀ = normalize(PCA(x))``; optionally ``warmup_steps`` steps maximising ``R(Z)`` alone (the
authors' follow-up code, CPP, has this switch) run before the copy
(:meth:`MLC.one_shot_init`). The objective is blind to which partition it compresses — any
split into orthogonal groups scores alike — so this start is what ties the learned
subspaces to the data's structure (from a random MLP the clusters are much worse).

Deviations from the paper, on purpose:

* the PCA skip above replaces the paper's SSL-pretrained feature head (there is no
  augmentation-based pretraining on fixed feature vectors);
* the entropy is normalised per row (``1/n``) so ``γ`` does not scale with the batch size;
* the similarity fed to Sinkhorn is ``|c_iᵀ c_j|`` (sign-invariant, as in the authors'
  CPP code: ``z`` and ``−z`` lie on the same subspace);
* the trunk's input is standardised with the training set's mean and std (buffers of the
  model), because the frozen encoder's features are not centred;
* spectral clustering runs on a symmetrised k-nearest-neighbour sparsification of ``Γ``
  (the top ``knn`` weights per row) so 10k test samples fit in seconds on a CPU.

Layout: this module's features are rows (``[n, d]``, one sample per row, the convention of
the package); :mod:`subspace_core.linalg` takes MCR²'s ``Z`` as columns (``[d, n]``).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from subspace_core.linalg import coding_rate, coding_rate_reduction

__all__ = [
    "MLC",
    "MLCConfig",
    "MLCTerms",
    "build_mlc_optimizer",
    "compression_rate",
    "fit_mlc",
    "mcr2_loss",
    "mean_row_entropy",
    "mlc_objective",
    "sinkhorn",
    "spectral_labels",
    "train_mlc_epoch",
    "warmup_mlc",
]


# --- checks --------------------------------------------------------------------------------


def _check_rows(name: str, x: object, *, dim: int | None = None) -> torch.Tensor:
    if not isinstance(x, torch.Tensor) or not x.is_floating_point():
        raise TypeError(
            f"{name}: expected a float tensor [n, d], got {getattr(x, 'dtype', type(x).__name__)}"
        )
    if x.ndim != 2 or x.shape[0] == 0:
        raise ValueError(f"{name}: expected a non-empty tensor [n, d], got shape {tuple(x.shape)}")
    if dim is not None and x.shape[1] != dim:
        raise ValueError(f"{name}: expected {dim} columns, got shape {tuple(x.shape)}")
    if not bool(torch.isfinite(x).all()):
        raise ValueError(f"{name}: expected finite values, got NaN/Inf")
    return x


def _positive(name: str, value: object) -> float:
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or not value > 0
        or not math.isfinite(value)
    ):
        raise ValueError(f"{name}: expected a positive finite number, got {value!r}")
    return float(value)


def _positive_int(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name}: expected a positive int, got {value!r}")
    return value


# --- MCR² ----------------------------------------------------------------------------------


def mcr2_loss(
    features: torch.Tensor,
    labels: torch.Tensor,
    eps: float = 0.5,
    *,
    num_classes: int | None = None,
) -> torch.Tensor:
    """Supervised MCR² loss ``−ΔR(Z, Π, ε)`` of the L2-normalised rows of ``features``.

    ``ΔR = R(Z) − R_c(Z, Π)`` with ``R(Z) = ½ logdet(I + d/(n ε²) Zᵀ Z)`` and
    ``R_c = Σ_j (n_j / 2n) logdet(I + d/(n_j ε²) Z_jᵀ Z_j)`` over the classes (rows of class
    ``j`` in ``Z_j``); see :func:`subspace_core.linalg.coding_rate_reduction`.

    Args:
        features: ``[n, d]`` float, one sample per row (normalised to unit length here).
        labels: ``[n]`` integer class ids ``0..k−1``.
        eps: the distortion ``ε > 0`` (``ε²`` enters the formula; the MCR² reference code's
            ``eps=0.5`` is ``ε² = 0.5``, i.e. ``eps=0.707`` here).
        num_classes: ``k`` (default: largest label + 1); empty classes contribute 0.

    Returns:
        0-d tensor (differentiable), ``−ΔR`` in nats; minimise it.
    """
    features = _check_rows("features", features)
    eps = _positive("eps", eps)
    if not isinstance(labels, torch.Tensor) or labels.shape != (features.shape[0],):
        raise ValueError(
            f"labels: expected an integer tensor of shape ({features.shape[0]},), "
            f"got {getattr(labels, 'shape', type(labels).__name__)}"
        )
    z = F.normalize(features, dim=1)
    terms = coding_rate_reduction(z.mT, labels.to(z.device), eps=eps, num_classes=num_classes)
    return -terms.reduction


# --- MLC building blocks -------------------------------------------------------------------


def sinkhorn(scores: torch.Tensor, eta: float, num_iters: int = 10) -> torch.Tensor:
    """Doubly stochastic projection ``P_{Ω,η}(M) = argmin_{Γ ∈ Ω} −⟨M, Γ⟩ + η ⟨Γ, log Γ⟩``.

    ``Ω = {Γ ≥ 0, Γ 1 = 1, Γᵀ 1 = 1}`` (``n × n``). The minimiser is
    ``Γ = diag(a) exp(M/η) diag(b)``; ``num_iters`` rounds of Sinkhorn–Knopp scaling (each
    normalises the rows, then the columns) find ``a, b``, in the log domain so small ``η``
    does not overflow. The last step normalises the columns, so they sum to 1 exactly and
    the rows to within the scaling's convergence (geometric in ``num_iters``). The result is
    differentiable in ``scores`` (autograd unrolls the iterations).

    Args:
        scores: similarities ``M`` [n, n].
        eta: entropic temperature ``η > 0`` (small ``η``: a sharper membership).
        num_iters: scaling rounds.

    Returns:
        ``Γ`` [n, n] in ``scores``' dtype.
    """
    if (
        not isinstance(scores, torch.Tensor)
        or not scores.is_floating_point()
        or scores.ndim != 2
        or scores.shape[0] != scores.shape[1]
        or scores.shape[0] == 0
    ):
        raise ValueError(
            f"scores: expected a non-empty square float tensor [n, n], got "
            f"{getattr(scores, 'dtype', type(scores).__name__)} of shape "
            f"{tuple(getattr(scores, 'shape', ()))}"
        )
    eta = _positive("eta", eta)
    num_iters = _positive_int("num_iters", num_iters)
    log_k = scores / eta
    log_b = torch.zeros_like(log_k[0])
    for _ in range(num_iters):
        log_a = -torch.logsumexp(log_k + log_b[None, :], dim=1)
        log_b = -torch.logsumexp(log_k + log_a[:, None], dim=0)
    return torch.exp(log_k + log_a[:, None] + log_b[None, :])


def compression_rate(z: torch.Tensor, membership: torch.Tensor, eps: float) -> torch.Tensor:
    """``R_c(Z, Γ; ε) = Σ_j (t_j/2n) logdet(I + d/(t_j ε²) Σ_i Γ_ji z_i z_iᵀ)``, ``t_j = Σ_i Γ_ji``.

    The same quantity as ``coding_rate_reduction(z.mT, membership=Γ).compression`` of
    :mod:`subspace_core.linalg`, computed for *many* groups (MLC has one per sample): the
    ``k`` Gram matrices come from one GEMM ``Γ [k, n] @ (z_i z_iᵀ) [n, d²]``, i.e. ``n·d²``
    memory instead of the ``k·n·d`` of weighting ``Z`` per group. Groups of zero weight
    contribute 0.

    Args:
        z: features [n, d], one sample per row.
        membership: ``Γ`` [k, n], non-negative; each column (sample) should sum to 1 for
            ``R_c`` to be the MCR² compression (not checked here: it is a training hot path).
        eps: distortion ``ε > 0``.

    Returns:
        0-d tensor (differentiable in both arguments).
    """
    z = _check_rows("z", z)
    eps = _positive("eps", eps)
    n, d = z.shape
    if not isinstance(membership, torch.Tensor) or membership.ndim != 2 or membership.shape[1] != n:
        raise ValueError(
            f"membership: expected a tensor [k, {n}], got shape "
            f"{tuple(getattr(membership, 'shape', ()))}"
        )
    weights = membership.to(z.dtype)
    outer = (z[:, :, None] * z[:, None, :]).reshape(n, d * d)
    grams = (weights @ outer).reshape(-1, d, d)  # [k, d, d]
    totals = weights.sum(dim=1)  # [k]
    safe = totals.clamp_min(torch.finfo(z.dtype).tiny)
    eye = torch.eye(d, dtype=z.dtype, device=z.device)
    factor = torch.linalg.cholesky(eye + (d / (safe * eps**2))[:, None, None] * grams)
    logdets = 2 * torch.log(torch.diagonal(factor, dim1=-2, dim2=-1)).sum(dim=-1)
    return (totals / (2 * n) * logdets).sum()


def mean_row_entropy(membership: torch.Tensor) -> torch.Tensor:
    """``H(Γ) = −(1/n) Σ_ij Γ_ij log Γ_ij`` for ``Γ`` [n, n] (``0 log 0 = 0``), in nats.

    For a doubly stochastic ``Γ`` it lies in ``[0, log n]``: 0 for a permutation (e.g. the
    identity), ``log n`` for the uniform ``Γ = 11ᵀ/n``.
    """
    if not isinstance(membership, torch.Tensor) or membership.ndim != 2:
        raise ValueError(
            f"membership: expected a tensor [n, n], got shape "
            f"{tuple(getattr(membership, 'shape', ()))}"
        )
    return -torch.special.xlogy(membership, membership).sum() / membership.shape[0]


class MLCTerms(NamedTuple):
    """One evaluation of the MLC objective on a mini-batch (0-d tensors but ``membership``).

    ``loss = −expansion + compression − gamma · entropy`` (minimised); ``membership`` is
    ``Γ`` [n, n]."""

    loss: torch.Tensor
    expansion: torch.Tensor
    compression: torch.Tensor
    entropy: torch.Tensor
    membership: torch.Tensor


def mlc_objective(
    z: torch.Tensor,
    c: torch.Tensor,
    *,
    eps: float = 0.3,
    eta: float = 0.2,
    gamma: float = 0.1,
    sinkhorn_iters: int = 10,
) -> MLCTerms:
    """The MLC loss ``−[R(Z) − R_c(Z, Γ) + γ H(Γ)]`` with ``Γ = P_{Ω,η}(|C Cᵀ|)``.

    Args:
        z: features [n, d] (rows; normalised to unit length here, a no-op for
            :class:`MLC`'s outputs).
        c: cluster-head outputs [n, d_c] (rows; normalised here too).
        eps: distortion ``ε`` of both rates.
        eta: Sinkhorn temperature ``η`` of the membership.
        gamma: weight ``γ >= 0`` of the membership's mean row entropy.
        sinkhorn_iters: Sinkhorn rounds.

    Returns:
        :class:`MLCTerms`; ``loss`` is differentiable in ``z`` and ``c``.
    """
    z = F.normalize(_check_rows("z", z), dim=1)
    c = F.normalize(_check_rows("c", c), dim=1)
    if c.shape[0] != z.shape[0]:
        raise ValueError(f"c: expected {z.shape[0]} rows (those of z), got {c.shape[0]}")
    if isinstance(gamma, bool) or not isinstance(gamma, (int, float)) or not gamma >= 0:
        raise ValueError(f"gamma: expected a non-negative number, got {gamma!r}")
    membership = sinkhorn((c @ c.mT).abs(), eta, sinkhorn_iters)
    expansion = coding_rate(z.mT, eps)
    compression = compression_rate(z, membership, eps)
    entropy = mean_row_entropy(membership)
    loss = -expansion + compression - gamma * entropy
    return MLCTerms(loss, expansion, compression, entropy, membership)


def spectral_labels(
    affinity: torch.Tensor | np.ndarray, k: int, *, knn: int | None = 30, seed: int = 0
) -> np.ndarray:
    """Spectral clustering (Ng–Jordan–Weiss) of a non-negative affinity ``A`` [n, n].

    Keeps the ``knn`` largest entries of each row (all of them for ``None``), symmetrises
    ``W = (A + Aᵀ)/2``, takes the ``k`` leading eigenvectors of ``D^{-1/2} W D^{-1/2}``,
    normalises their rows and runs :func:`~subspace_ssl.clustering.kmeans_labels` on them.

    Returns:
        int64 array [n] of cluster ids ``0..k−1``.
    """
    import scipy.sparse as sp
    from scipy.sparse.linalg import eigsh

    from subspace_ssl.clustering import kmeans_labels

    a = (
        affinity.detach().cpu().double().numpy()
        if isinstance(affinity, torch.Tensor)
        else np.asarray(affinity, dtype=np.float64)
    )
    if a.ndim != 2 or a.shape[0] != a.shape[1] or not np.isfinite(a).all() or (a < 0).any():
        raise ValueError(
            f"affinity: expected a finite non-negative square matrix, got shape {a.shape}"
        )
    n = a.shape[0]
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k < n:
        raise ValueError(f"k: expected an int in [1, {n - 1}], got {k!r}")
    if knn is not None and knn < n:
        _positive_int("knn", knn)
        cols = np.argpartition(-a, knn, axis=1)[:, :knn]
        rows = np.repeat(np.arange(n), knn)
        w = sp.csr_matrix((a[rows, cols.ravel()], (rows, cols.ravel())), shape=(n, n))
    else:
        w = sp.csr_matrix(a)
    w = (w + w.T) * 0.5
    degree = np.asarray(w.sum(axis=1)).ravel()
    inv_sqrt = 1.0 / np.sqrt(np.maximum(degree, np.finfo(np.float64).tiny))
    normalised = sp.diags(inv_sqrt) @ w @ sp.diags(inv_sqrt)
    # A fixed start vector makes ARPACK (and so the labels) reproducible.
    v0 = np.random.default_rng(seed).standard_normal(n)
    _, vectors = eigsh(normalised, k=k, which="LA", v0=v0)
    vectors /= np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
    return kmeans_labels(vectors, k, seed)


# --- the model -----------------------------------------------------------------------------


class MLC(nn.Module):
    """MLC network on fixed-length input features (e.g. a frozen encoder's embeddings).

    ``x`` [N, input_dim] → standardise with the buffers ``input_mean``/``input_std`` →
    trunk ``Linear(input_dim, hidden) → BatchNorm1d → ReLU → Linear(hidden, hidden) → ReLU``
    → two linear heads, each output L2-normalised: ``forward(x) = (z [N, z_dim],
    c [N, z_dim])``. ``z`` is the linearised representation (a union of subspaces after
    training), ``c`` the cluster embedding whose similarities define the membership.

    Args:
        input_dim: width of the input features (1280 for MobileNetV2's pooled features).
        hidden_dim: trunk width.
        z_dim: output width of both heads (equal, so :meth:`one_shot_init` can copy).
        num_clusters: default number of clusters of :meth:`predict`.
        eta: default Sinkhorn temperature of :meth:`membership`/:meth:`predict` (use the
            training ``η``).

    The defaults are the architecture of the shipped Fashion-MNIST checkpoint (MobileNetV2
    pooled features in, 10 clusters).
    """

    def __init__(
        self,
        input_dim: int = 1280,
        hidden_dim: int = 512,
        z_dim: int = 64,
        num_clusters: int = 10,
        eta: float = 0.2,
    ) -> None:
        super().__init__()
        for name, value in (
            ("input_dim", input_dim),
            ("hidden_dim", hidden_dim),
            ("z_dim", z_dim),
            ("num_clusters", num_clusters),
        ):
            _positive_int(name, value)
        self.input_dim, self.hidden_dim, self.z_dim = input_dim, hidden_dim, z_dim
        self.num_clusters = num_clusters
        self.eta = _positive("eta", eta)
        self.register_buffer("input_mean", torch.zeros(input_dim))
        self.register_buffer("input_std", torch.ones(input_dim))
        self.trunk = nn.Sequential(
            nn.Linear(input_dim, hidden_dim),
            nn.BatchNorm1d(hidden_dim),
            nn.ReLU(),
            nn.Linear(hidden_dim, hidden_dim),
            nn.ReLU(),
        )
        self.feature_head = nn.Linear(hidden_dim, z_dim)
        self.cluster_head = nn.Linear(hidden_dim, z_dim)
        # Linear skips from the standardised input: ``fit_input_normalization(pca=True)`` sets
        # them to the input's principal directions (and zeroes the MLP branch's last layer), so
        # the representation starts as the frozen features' principal subspace.
        self.feature_skip = nn.Linear(input_dim, z_dim, bias=False)
        self.cluster_skip = nn.Linear(input_dim, z_dim, bias=False)
        nn.init.zeros_(self.feature_skip.weight)
        nn.init.zeros_(self.cluster_skip.weight)

    def extra_repr(self) -> str:
        return f"num_clusters={self.num_clusters}, eta={self.eta}"

    @torch.no_grad()
    def fit_input_normalization(
        self, x: torch.Tensor, *, pca: bool = False, whiten: bool = False
    ) -> None:
        """Set ``input_mean``/``input_std`` to the per-feature statistics of ``x`` [N, input_dim].

        ``pca=True`` also sets both skips to the top ``z_dim`` principal directions of the
        standardised ``x`` (divided by their singular values if ``whiten``) and zeroes the
        heads' linear layers, so that at this point ``z = c = normalize(PCA(x))``."""
        x = _check_rows("x", x, dim=self.input_dim)
        self.input_mean.copy_(x.mean(dim=0))
        self.input_std.copy_(x.std(dim=0).clamp_min(1e-6))
        if pca:
            # 20k rows estimate the top principal directions well and keep the SVD cheap.
            xs = ((x[:20000] - self.input_mean) / self.input_std).double()
            _, s, v = torch.linalg.svd(xs, full_matrices=False)
            r = min(self.z_dim, len(s))
            w = torch.zeros(self.z_dim, self.input_dim, dtype=torch.float64)
            w[:r] = v[:r]
            if whiten:
                w[:r] /= (s[:r, None] / math.sqrt(len(xs))).clamp_min(1e-6)
            for skip in (self.feature_skip, self.cluster_skip):
                skip.weight.copy_(w.to(skip.weight.dtype))
            for head in (self.feature_head, self.cluster_head):
                nn.init.zeros_(head.weight)
                nn.init.zeros_(head.bias)

    @torch.no_grad()
    def one_shot_init(self) -> None:
        """Copy the feature head into the cluster head: ``c = z``, so ``Γ₀ = P_{Ω,η}(|Z Zᵀ|)``."""
        self.cluster_head.load_state_dict(self.feature_head.state_dict())
        self.cluster_skip.load_state_dict(self.feature_skip.state_dict())

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``x`` [N, input_dim] float → ``(z, c)``, each [N, z_dim] with unit-norm rows."""
        if not isinstance(x, torch.Tensor) or x.ndim != 2 or x.shape[1] != self.input_dim:
            raise ValueError(
                f"x: expected features [N, {self.input_dim}], got shape "
                f"{tuple(getattr(x, 'shape', ()))}"
            )
        x = (x - self.input_mean) / self.input_std
        h = self.trunk(x)
        z = self.feature_head(h) + self.feature_skip(x)
        c = self.cluster_head(h) + self.cluster_skip(x)
        return F.normalize(z, dim=1), F.normalize(c, dim=1)

    @torch.no_grad()
    def embed(self, x: torch.Tensor, batch_size: int = 4096) -> tuple[torch.Tensor, torch.Tensor]:
        """``forward`` in eval mode over batches: ``(z, c)`` [N, z_dim] each (mode restored)."""
        was_training = self.training
        self.eval()
        try:
            parts = [self(chunk) for chunk in x.split(batch_size)]
        finally:
            self.train(was_training)
        return torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])

    @torch.no_grad()
    def membership(
        self, x: torch.Tensor, *, eta: float | None = None, sinkhorn_iters: int = 10
    ) -> torch.Tensor:
        """``Γ = P_{Ω,η}(|C Cᵀ|)`` [N, N] of the whole set ``x`` [N, input_dim] (eval mode;
        ``eta`` defaults to the model's)."""
        _, c = self.embed(x)
        return sinkhorn((c @ c.mT).abs(), self.eta if eta is None else eta, sinkhorn_iters)

    @torch.no_grad()
    def predict(
        self,
        x: torch.Tensor,
        num_clusters: int | None = None,
        *,
        eta: float | None = None,
        sinkhorn_iters: int = 10,
        knn: int | None = 30,
        seed: int = 0,
    ) -> np.ndarray:
        """Cluster ids [N] of ``x`` [N, input_dim]: spectral clustering of :meth:`membership`.

        ``Γ`` is N × N (400 MB in float32 for N = 10,000): split a larger set first.
        """
        k = self.num_clusters if num_clusters is None else num_clusters
        return spectral_labels(
            self.membership(x, eta=eta, sinkhorn_iters=sinkhorn_iters), k, knn=knn, seed=seed
        )


# --- training ------------------------------------------------------------------------------


@dataclass(frozen=True)
class MLCConfig:
    """Hyper-parameters of MLC training (objective, optimiser, schedule)."""

    eps: float = 0.3  # distortion ε of R and R_c (ε² ≈ 0.1, the authors' setting)
    eta: float = 0.2  # Sinkhorn temperature η
    gamma: float = 0.1  # weight of the membership entropy
    sinkhorn_iters: int = 10
    batch_size: int = 1024
    epochs: int = 4
    pca_init: bool = True  # start the representation at the input's principal subspace
    warmup_steps: int = 0  # steps maximising R(Z) alone before the one-shot copy
    lr: float = 3e-3  # trunk and feature head (SGD with momentum, as the authors)
    lr_cluster: float = 2e-3  # cluster head
    momentum: float = 0.9
    weight_decay: float = 1e-4
    weight_decay_cluster: float = 5e-3
    cosine: bool = True  # cosine decay of both learning rates to 0 over the epochs
    seed: int = 0


def build_mlc_optimizer(model: MLC, cfg: MLCConfig) -> torch.optim.SGD:
    """SGD with momentum; group 0 = trunk + feature head, group 1 = cluster head."""
    cluster = [*model.cluster_head.parameters(), *model.cluster_skip.parameters()]
    ids = {id(p) for p in cluster}
    rest = [p for p in model.parameters() if id(p) not in ids]
    return torch.optim.SGD(
        [
            {"params": rest, "lr": cfg.lr, "weight_decay": cfg.weight_decay},
            {"params": cluster, "lr": cfg.lr_cluster, "weight_decay": cfg.weight_decay_cluster},
        ],
        lr=cfg.lr,
        momentum=cfg.momentum,
    )


def _batches(n: int, batch_size: int, generator: torch.Generator) -> list[torch.Tensor]:
    """A shuffled epoch of index batches, dropping a last batch smaller than half a batch
    (a tiny batch gives a noisy, badly scaled coding rate)."""
    order = torch.randperm(n, generator=generator)
    parts = list(order.split(batch_size))
    if len(parts) > 1 and len(parts[-1]) < batch_size // 2:
        parts.pop()
    return parts


def warmup_mlc(
    model: MLC, features: torch.Tensor, cfg: MLCConfig, optimizer: torch.optim.Optimizer
) -> list[float]:
    """``cfg.warmup_steps`` steps maximising ``R(Z)`` alone, then :meth:`MLC.one_shot_init`.

    Returns the expansion ``R(Z)`` of each warm-up step.
    """
    generator = torch.Generator().manual_seed(cfg.seed * 1_000_003 - 1)
    history: list[float] = []
    model.train()
    while len(history) < cfg.warmup_steps:
        for idx in _batches(len(features), cfg.batch_size, generator):
            if len(history) >= cfg.warmup_steps:
                break
            z, _ = model(features[idx])
            expansion = coding_rate(z.mT, cfg.eps)
            optimizer.zero_grad(set_to_none=True)
            (-expansion).backward()
            optimizer.step()
            history.append(float(expansion))
    model.one_shot_init()
    # The copy invalidates the cluster head's momentum: start it afresh.
    for p in [*model.cluster_head.parameters(), *model.cluster_skip.parameters()]:
        optimizer.state.pop(p, None)
    return history


def train_mlc_epoch(
    model: MLC,
    features: torch.Tensor,
    cfg: MLCConfig,
    optimizer: torch.optim.Optimizer,
    epoch: int,
    on_step: Callable[[MLCTerms], None] | None = None,
) -> dict[str, float]:
    """One epoch of mini-batch MLC on ``features`` [N, input_dim] (order seeded by
    ``(cfg.seed, epoch)``, so a resumed run replays it). Returns the epoch means of
    ``loss``, ``expansion``, ``compression`` and ``entropy``."""
    generator = torch.Generator().manual_seed(cfg.seed * 1_000_003 + epoch)
    model.train()
    sums = dict.fromkeys(("loss", "expansion", "compression", "entropy"), 0.0)
    batches = _batches(len(features), cfg.batch_size, generator)
    total = cfg.epochs * len(batches)
    for i, idx in enumerate(batches):
        if cfg.cosine:
            factor = 0.5 * (1 + math.cos(math.pi * min(1.0, (epoch * len(batches) + i) / total)))
            for group, base in zip(optimizer.param_groups, (cfg.lr, cfg.lr_cluster), strict=True):
                group["lr"] = base * factor
        z, c = model(features[idx])
        terms = mlc_objective(
            z, c, eps=cfg.eps, eta=cfg.eta, gamma=cfg.gamma, sinkhorn_iters=cfg.sinkhorn_iters
        )
        optimizer.zero_grad(set_to_none=True)
        terms.loss.backward()
        optimizer.step()
        for key in sums:
            sums[key] += float(getattr(terms, key).detach())
        if on_step is not None:
            on_step(terms)
    return {k: v / len(batches) for k, v in sums.items()}


def fit_mlc(
    model: MLC,
    features: torch.Tensor,
    cfg: MLCConfig | None = None,
    *,
    on_step: Callable[[MLCTerms], None] | None = None,
) -> list[dict[str, float]]:
    """Train ``model`` on ``features`` [N, input_dim] from scratch: input standardisation
    (+ PCA start of the skips if ``cfg.pca_init``), warm-up + one-shot initialisation, then
    ``cfg.epochs`` epochs. Returns per-epoch means.

    (The recipe :mod:`subspace_ssl.recipes.mlc` runs the same steps with checkpoints.)"""
    cfg = cfg or MLCConfig()
    features = _check_rows("features", features, dim=model.input_dim)
    torch.manual_seed(cfg.seed)
    model.fit_input_normalization(features, pca=cfg.pca_init)
    optimizer = build_mlc_optimizer(model, cfg)
    warmup_mlc(model, features, cfg, optimizer)
    return [
        train_mlc_epoch(model, features, cfg, optimizer, epoch, on_step)
        for epoch in range(cfg.epochs)
    ]
