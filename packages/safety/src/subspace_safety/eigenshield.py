"""EigenShield: keep only the causal eigen-directions of an embedding space.

EigenShield (Darabi et al., 2025, arXiv:2502.14976) is an inference-time defence: fit the
sample covariance of clean embeddings, use random-matrix theory to tell signal from noise,
and project every embedding onto the subspace of directions that carry robust signal, so
that perturbations living in the other directions are filtered out.

:meth:`EigenShield.fit` does this in three steps:

1. **Spikes.** Eigen-directions of the covariance of ``embeddings`` [n, d] whose eigenvalue
   stands above the Marchenko–Pastur bulk edge ``λ₊ = σ²(1 + √(d/n))²`` (plus a Tracy–Widom
   margin), via :func:`subspace_core.linalg.spiked_outliers`; ``σ²`` is estimated from the
   median eigenvalue. These are the candidate signal directions; the bulk is noise.
2. **Robustness-based nonconformity score (RbNS).** For each candidate ``v`` the score is
   ``RbNS(v) = E[(vᵀ(x' − x))²] / E[(vᵀ(x − μ))²]`` on calibration data: the energy a
   perturbation ``x → x'`` puts along ``v`` relative to the clean signal energy along
   ``v``. Causal directions carry much signal and move little under perturbation (low
   score); correlational directions — weak, or the ones an attack pushes along — score
   high. With perturbed calibration embeddings (e.g. of attacked or augmented inputs) the
   numerator is measured; without, it is the isotropic noise level ``σ²`` (the energy the
   noise bulk puts along any unit direction), so the score ranks directions by their
   signal-to-noise ratio *on held-out data*, which also demotes spikes that were sampling
   artefacts of the fit set.
3. **Quantile threshold.** ``τ`` = the empirical ``quantile`` (inverse CDF: the
   ``⌈quantile · k⌉``-th smallest) of the candidate scores; directions with ``RbNS <= τ`` are kept, i.e. ``⌈quantile · k⌉`` of the ``k``
   candidates when the scores are distinct (the split-conformal rule applied to directions).

The paper's reference code was not available here; step 2 is this package's reading of the
paper's description (a robustness score of eigenvectors with a quantile cut-off), stated
exactly above so it can be checked.

:class:`PCAProjection` is the plain baseline: the top-``rank`` principal directions, no
random-matrix test, no score. Both are ``nn.Module``\\ s whose forward is the (affine)
projection ``x ↦ μ + B Bᵀ (x − μ)``, differentiable so adaptive attacks can go through it.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import ClassVar

import torch
from safetensors import safe_open
from safetensors.torch import load_file
from torch import nn

from subspace_core.linalg import spiked_outliers
from subspace_core.linalg.spectra import TW1_QUANTILES
from subspace_core.linalg.svd import robust_svd
from subspace_core.zoo import save_state_dict
from subspace_core.zoo.checkpoint import load_state_dict

__all__ = ["EigenShield", "PCAProjection", "SubspaceFilter"]


def _embeddings(name: str, value: object, dim: int | None = None) -> torch.Tensor:
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"{name}: expected a torch.Tensor [n, d], got {type(value).__name__}")
    if not value.dtype.is_floating_point:
        raise TypeError(f"{name}: expected a real floating tensor, got {value.dtype}")
    if value.ndim != 2:
        raise ValueError(f"{name}: expected embeddings [n, d], got shape {tuple(value.shape)}")
    if dim is not None and value.shape[1] != dim:
        raise ValueError(f"{name}: expected embedding dimension {dim}, got {value.shape[1]}")
    if not bool(torch.isfinite(value).all()):
        raise ValueError(f"{name}: expected finite values, got NaN/Inf")
    return value


class SubspaceFilter(nn.Module):
    """Affine orthogonal projection ``x ↦ μ + B Bᵀ (x − μ)`` onto a kept subspace.

    Buffers: ``mean`` [d] (``μ``, zeros when fitted without centring) and ``basis`` [d, k]
    (orthonormal columns ``B``). Subclasses fill them in ``fit``.
    """

    kind: ClassVar[str] = "subspace_filter"

    def __init__(self, dim: int = 1, rank: int = 0) -> None:
        super().__init__()
        self.register_buffer("mean", torch.zeros(dim))
        self.register_buffer("basis", torch.zeros(dim, rank))
        self.fitted = False

    @property
    def dim(self) -> int:
        """Embedding dimension ``d``."""
        return self.basis.shape[0]

    @property
    def rank(self) -> int:
        """Dimension ``k`` of the kept subspace."""
        return self.basis.shape[1]

    def _check_fitted(self) -> None:
        if not self.fitted:
            raise RuntimeError(f"{type(self).__name__}: call fit(...) (or load) before use")

    def projector(self) -> torch.Tensor:
        """The linear part ``P = B Bᵀ`` [d, d]: symmetric and idempotent."""
        self._check_fitted()
        return self.basis @ self.basis.mT

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Project embeddings ``x`` [..., d] onto the kept subspace; same shape and dtype."""
        self._check_fitted()
        if not isinstance(x, torch.Tensor) or not x.dtype.is_floating_point:
            raise TypeError(f"x: expected a real floating tensor [..., {self.dim}], got "
                            f"{getattr(x, 'dtype', type(x).__name__)}")
        if x.ndim < 1 or x.shape[-1] != self.dim:
            raise ValueError(f"x: expected shape [..., {self.dim}], got {tuple(x.shape)}")
        basis = self.basis.to(x.device, x.dtype)
        mean = self.mean.to(x.device, x.dtype)
        return mean + ((x - mean) @ basis) @ basis.mT

    def transform(self, x: torch.Tensor) -> torch.Tensor:
        """Alias of ``forward`` (scikit-learn style)."""
        return self(x)

    def _metadata(self) -> dict[str, object]:
        return {}

    def _set_metadata(self, meta: dict[str, object]) -> None:
        del meta

    def save(self, path: str | Path) -> str:
        """Write the filter as safetensors (atomically, with a ``.sha256`` sidecar);
        returns the file's sha256."""
        self._check_fitted()
        meta = {"kind": self.kind, **self._metadata()}
        return save_state_dict(self.state_dict(), path, metadata={"filter": json.dumps(meta)})

    @classmethod
    def load(cls, path: str | Path, *, sha256: str | None = None) -> SubspaceFilter:
        """Read a filter written by :meth:`save`; with ``sha256`` the bytes are verified.

        Raises ``ValueError`` when the file holds another kind of filter.
        """
        path = Path(path)
        tensors = load_state_dict(path, sha256=sha256) if sha256 else load_file(str(path))
        with safe_open(str(path), framework="pt") as handle:
            raw = (handle.metadata() or {}).get("subzoo", "{}")
        meta = json.loads(json.loads(raw).get("filter", "{}"))
        if meta.get("kind") != cls.kind:
            raise ValueError(f"path: expected a saved {cls.__name__} (kind {cls.kind!r}), got "
                             f"kind {meta.get('kind')!r}")
        if "basis" not in tensors or "mean" not in tensors:
            raise ValueError(f"path: expected tensors 'basis' and 'mean', got {sorted(tensors)}")
        dim, rank = tensors["basis"].shape
        filt = cls(dim, rank)
        for name, tensor in tensors.items():
            if name not in ("basis", "mean"):
                filt.register_buffer(name, torch.empty_like(tensor))
        filt.load_state_dict(tensors, assign=True)
        filt._set_metadata(meta)
        filt.fitted = True
        return filt


class PCAProjection(SubspaceFilter):
    """Baseline: project onto the top-``rank`` principal directions of the fit embeddings.

    Example::

        pca = PCAProjection().fit(clean_embeddings, rank=shield.rank)   # same rank
        filtered = pca(embeddings)                                      # [n, d]
    """

    kind = "pca_projection"

    def fit(self, embeddings: torch.Tensor, rank: int, *, center: bool = True) -> PCAProjection:
        """Fit on ``embeddings`` [n, d]; ``rank`` in ``1..min(n, d)``. Returns ``self``."""
        X = _embeddings("embeddings", embeddings)
        n, d = X.shape
        if isinstance(rank, bool) or not isinstance(rank, int) or not 1 <= rank <= min(n, d):
            raise ValueError(f"rank: expected an int in [1, {min(n, d)}], got {rank!r}")
        work = X.detach().to(torch.float64)
        mean = work.mean(0) if center else torch.zeros(d, dtype=work.dtype, device=work.device)
        _, _, Vh = robust_svd(work - mean)
        self.mean = mean.to(X.dtype)
        self.basis = Vh[:rank].mT.contiguous().to(X.dtype)
        self.fitted = True
        return self


class EigenShield(SubspaceFilter):
    """Random-matrix causal-subspace filter (see the module docstring for the method).

    After :meth:`fit`:

    - ``candidate_eigenvalues`` [k] — eigenvalues above the bulk, descending;
    - ``scores`` [k] — their RbNS on the calibration data;
    - ``kept`` [k] (bool) — which candidates form ``basis`` [d, r];
    - ``sigma2``, ``bulk_edge``, ``edge_threshold``, ``score_threshold`` (floats) and
      ``quantile``.

    Example::

        shield = EigenShield().fit(clean_train_emb, calibration=clean_val_emb,
                                   perturbed=noisy_val_emb, quantile=0.9)
        robust = shield(test_emb)            # [n, d] -> [n, d]
    """

    kind = "eigenshield"

    def __init__(self, dim: int = 1, rank: int = 0) -> None:
        super().__init__(dim, rank)
        self.register_buffer("candidate_eigenvalues", torch.zeros(0))
        self.register_buffer("scores", torch.zeros(0))
        self.register_buffer("kept", torch.zeros(0, dtype=torch.bool))
        self.sigma2 = math.nan
        self.bulk_edge = math.nan
        self.edge_threshold = math.nan
        self.score_threshold = math.nan
        self.quantile = math.nan

    def fit(
        self,
        embeddings: torch.Tensor,
        *,
        calibration: torch.Tensor | None = None,
        perturbed: torch.Tensor | None = None,
        quantile: float = 0.9,
        center: bool = True,
        sigma2: float | None = None,
        tw_margin: float = TW1_QUANTILES[0.01],
    ) -> EigenShield:
        """Fit on clean ``embeddings`` [n, d]. Returns ``self``.

        Args:
            embeddings: clean embeddings [n, d] whose covariance spectrum is analysed.
            calibration: clean held-out embeddings [m, d] for the scores (default: the fit
                embeddings; held-out data is better, it exposes spikes that were chance).
            perturbed: perturbed versions [m, d] of ``calibration`` (row ``i`` of one is row
                ``i`` of the other, e.g. the embedding of an attacked image). Default: none,
                the perturbation energy is the bulk noise level ``σ²``.
            quantile: fraction in (0, 1] of the candidate directions to keep (lowest RbNS).
            center: centre the embeddings (and the projection) at their mean.
            sigma2: noise variance of the bulk (default: estimated from the median
                eigenvalue, see :func:`subspace_core.linalg.spiked_outliers_from_eigenvalues`).
            tw_margin: Tracy–Widom units above ``λ₊`` an eigenvalue must clear (default: a
                1 % false-alarm level for pure noise).

        Raises:
            ValueError: no eigenvalue clears the bulk edge (the embeddings look like white
                noise, there is no signal subspace to keep).
        """
        X = _embeddings("embeddings", embeddings)
        d = X.shape[1]
        if isinstance(quantile, bool) or not isinstance(quantile, (int, float)) \
                or not 0 < quantile <= 1:
            raise ValueError(f"quantile: expected a fraction in (0, 1], got {quantile!r}")
        cal = X if calibration is None else _embeddings("calibration", calibration, d)
        if perturbed is not None:
            perturbed = _embeddings("perturbed", perturbed, d)
            if perturbed.shape != cal.shape:
                raise ValueError(f"perturbed: expected the shape of calibration "
                                 f"{tuple(cal.shape)}, got {tuple(perturbed.shape)}")

        work = X.detach().to(torch.float64)
        found = spiked_outliers(work, center=center, sigma2=sigma2, tw_margin=tw_margin)
        k = found.eigenvalues.numel()
        if k == 0:
            raise ValueError(
                f"embeddings: no covariance eigenvalue above the Marchenko–Pastur edge "
                f"(threshold {found.threshold:.4g}, sigma2 {found.sigma2:.4g}); the embeddings "
                f"look like white noise, there is no signal subspace to keep")
        V = found.eigenvectors  # [d, k]
        mean = work.mean(0) if center else torch.zeros(d, dtype=work.dtype, device=work.device)

        cal64 = cal.detach().to(work.device, torch.float64)
        signal = ((cal64 - mean) @ V).pow(2).mean(0)  # [k]
        if perturbed is None:
            disturbance = torch.full_like(signal, found.sigma2)
        else:
            shift = perturbed.detach().to(work.device, torch.float64) - cal64
            disturbance = (shift @ V).pow(2).mean(0)
        scores = disturbance / signal.clamp_min(torch.finfo(signal.dtype).tiny)
        # empirical (inverse-CDF) quantile: the ⌈q·k⌉-th smallest score, so exactly that many
        # directions are kept when scores are distinct; the tolerance absorbs q·k = 4.0000001
        count = max(1, math.ceil(float(quantile) * k - 1e-9))
        threshold = float(torch.sort(scores).values[count - 1])
        kept = scores <= threshold

        self.mean = mean.to(X.dtype)
        self.basis = V[:, kept].contiguous().to(X.dtype)
        self.candidate_eigenvalues = found.eigenvalues.to(X.dtype)
        self.scores = scores.to(X.dtype)
        self.kept = kept
        self.sigma2 = float(found.sigma2)
        self.bulk_edge = float(found.bulk_edge)
        self.edge_threshold = float(found.threshold)
        self.score_threshold = threshold
        self.quantile = float(quantile)
        self.fitted = True
        return self

    def _metadata(self) -> dict[str, object]:
        return {"sigma2": self.sigma2, "bulk_edge": self.bulk_edge,
                "edge_threshold": self.edge_threshold, "score_threshold": self.score_threshold,
                "quantile": self.quantile}

    def _set_metadata(self, meta: dict[str, object]) -> None:
        for name in ("sigma2", "bulk_edge", "edge_threshold", "score_threshold", "quantile"):
            setattr(self, name, float(meta.get(name, math.nan)))
