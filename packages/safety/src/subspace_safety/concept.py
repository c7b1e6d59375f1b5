"""Concept subspaces: the span of a concept's embeddings, found by SVD.

A :class:`ConceptSubspace` is an orthonormal basis ``U`` [d, k] (optionally around a centre
``μ`` [d]) of the directions that embeddings of one concept occupy, e.g. the pooled text
embeddings of "nudity", "naked person", "nsfw". With ``P = U Uᵀ`` it gives

* ``project_in(x)  = μ + P (x − μ)``  — the part of ``x`` the concept explains;
* ``project_out(x) = x − P (x − μ)``  — ``x`` with the concept directions removed;
* ``distance(x)    = ‖(I − P)(x − μ)‖`` — how far ``x`` lies from the (affine) subspace;
* ``proximity(x)   = ‖P (x − μ)‖² / ‖x − μ‖²`` — cos² of the angle to the subspace, in [0, 1].

SAFREE (Yoon et al., ICLR 2025) uses the uncentred span of the concept prompts' pooled
embeddings (``center=False``, every non-zero singular direction kept), which is the default.
Without a centre, ``project_out(x)`` is exactly orthogonal to every basis vector.

Checkpoints are safetensors files (tensors ``basis``, ``singular_values`` and, if centred,
``mean``) with string metadata; loading re-checks shapes and orthonormality.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import torch

from subspace_core.io import atomic_path
from subspace_core.linalg import project, project_out, select_by_energy
from subspace_core.linalg.svd import robust_svd

__all__ = ["ConceptSubspace"]

_FORMAT = "subspace_safety.ConceptSubspace"
_FORMAT_VERSION = "1"
_RESERVED_KEYS = ("format", "format_version", "centered")


def _check_float_tensor(name: str, value: object, *, min_ndim: int = 1) -> torch.Tensor:
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"{name}: expected a torch.Tensor, got {type(value).__name__}")
    if not value.dtype.is_floating_point:
        raise TypeError(f"{name}: expected a floating-point tensor, got {value.dtype}")
    if value.ndim < min_ndim:
        raise ValueError(f"{name}: expected a tensor with >= {min_ndim} dims, "
                         f"got shape {tuple(value.shape)}")
    return value


def _orthonormality_error(U: torch.Tensor) -> float:
    gram = U.T.double() @ U.double()
    return float(torch.linalg.matrix_norm(gram - torch.eye(U.shape[1], dtype=gram.dtype)))


class ConceptSubspace:
    """An orthonormal basis of a concept's embedding directions (see the module docstring).

    Build one with :meth:`from_embeddings` (or :meth:`load`); the constructor takes a basis
    that is already orthonormal.

    Args:
        basis: ``U`` [d, k], orthonormal columns (``UᵀU = I_k``), ``1 <= k <= d``.
        singular_values: [k] non-negative, descending; the SVD spectrum the basis came from
            (kept for inspection and energy bookkeeping).
        mean: centre ``μ`` [d], or None for a linear subspace through the origin.
        metadata: free-form ``str -> str`` pairs stored with the checkpoint (e.g. the prompts).
    """

    def __init__(self, basis: torch.Tensor, singular_values: torch.Tensor,
                 mean: torch.Tensor | None = None,
                 metadata: Mapping[str, str] | None = None) -> None:
        _check_float_tensor("basis", basis, min_ndim=2)
        if basis.ndim != 2 or not 1 <= basis.shape[1] <= basis.shape[0]:
            raise ValueError(f"basis: expected [d, k] with 1 <= k <= d, got {tuple(basis.shape)}")
        d, k = basis.shape
        _check_float_tensor("singular_values", singular_values)
        if tuple(singular_values.shape) != (k,):
            raise ValueError(f"singular_values: expected shape ({k},) to match basis [d, k] = "
                             f"{tuple(basis.shape)}, got {tuple(singular_values.shape)}")
        if mean is not None:
            _check_float_tensor("mean", mean)
            if tuple(mean.shape) != (d,):
                raise ValueError(f"mean: expected shape ({d},), got {tuple(mean.shape)}")
        err = _orthonormality_error(basis)
        tol = 1e-3 if basis.dtype in (torch.float16, torch.bfloat16) else 1e-4
        if err > tol:
            raise ValueError(f"basis: expected orthonormal columns (‖UᵀU − I‖_F <= {tol:g}), "
                             f"got {err:.3g}")
        meta = dict(metadata or {})
        for key, value in meta.items():
            if not isinstance(key, str) or not isinstance(value, str):
                raise TypeError(f"metadata: expected str -> str pairs, got {key!r}: "
                                f"{type(value).__name__}")
        self.basis = basis
        self.singular_values = singular_values
        self.mean = mean
        self.metadata = meta

    # ----------------------------------------------------------------- construction
    @classmethod
    def from_embeddings(cls, embeddings: torch.Tensor, *, rank: int | None = None,
                        energy: float | None = None, center: bool = False,
                        tol: float | None = None,
                        metadata: Mapping[str, str] | None = None) -> ConceptSubspace:
        """Span of the rows of ``embeddings`` [n, d] (after subtracting their mean if ``center``).

        SVD ``X = A Σ Vᵀ`` of the (centred) rows; the basis is the top right singular vectors
        ``V[:, :k]``. ``k`` is ``rank`` if given, else the smallest ``k`` keeping ``energy``
        of ``Σ σ_i²`` if given, else the numerical rank (``σ_i > tol · σ_0``, default
        ``tol = max(n, d) · eps``), which spans every concept embedding — SAFREE's choice.
        Computed in float64; the basis comes back in the input's dtype (float32 for halves).

        Raises:
            ValueError: not [n, d], non-finite values, all rows zero (after centring),
                ``rank`` and ``energy`` both given, or either out of range.
        """
        _check_float_tensor("embeddings", embeddings, min_ndim=2)
        if embeddings.ndim != 2 or embeddings.shape[0] < 1 or embeddings.shape[1] < 1:
            raise ValueError(f"embeddings: expected a non-empty [n, d] matrix, "
                             f"got shape {tuple(embeddings.shape)}")
        if not bool(torch.isfinite(embeddings).all()):
            raise ValueError("embeddings: contains NaN or Inf")
        if rank is not None and energy is not None:
            raise ValueError(f"rank, energy: give at most one, got rank={rank!r}, "
                             f"energy={energy!r}")
        n, d = embeddings.shape
        if center and n < 2:
            raise ValueError(f"embeddings: center=True needs >= 2 rows, got {n}")
        out_dtype = embeddings.dtype if embeddings.dtype == torch.float64 else torch.float32
        X = embeddings.detach().to(torch.float64)
        mean = X.mean(dim=0) if center else None
        if mean is not None:
            X = X - mean
        _, S, Vh = robust_svd(X)
        if float(S[0]) == 0.0:
            raise ValueError("embeddings: every row is zero" + (" after centring" if center
                                                                 else "") + "; no subspace")
        cutoff = (max(n, d) * torch.finfo(embeddings.dtype).eps if tol is None else tol)
        if not cutoff >= 0:
            raise ValueError(f"tol: expected a non-negative float, got {tol!r}")
        numerical_rank = int((cutoff * S[0] < S).sum())
        if rank is not None:
            if isinstance(rank, bool) or not isinstance(rank, int) \
                    or not 1 <= rank <= numerical_rank:
                raise ValueError(f"rank: expected an int in [1, {numerical_rank}] (the numerical "
                                 f"rank of the embeddings), got {rank!r}")
            k = rank
        elif energy is not None:
            # select_by_energy validates energy in (0, 1].
            k = min(select_by_energy(S, energy), numerical_rank)
        else:
            k = numerical_rank
        basis = Vh[:k].T.contiguous()
        meta = {"n_embeddings": str(n), **dict(metadata or {})}
        return cls(basis.to(out_dtype), S[:k].to(out_dtype),
                   None if mean is None else mean.to(out_dtype), meta)

    # ----------------------------------------------------------------- properties
    @property
    def dim(self) -> int:
        """Ambient dimension ``d``."""
        return int(self.basis.shape[0])

    @property
    def rank(self) -> int:
        """Subspace dimension ``k``."""
        return int(self.basis.shape[1])

    @property
    def centered(self) -> bool:
        """Whether the subspace is affine (has a centre ``μ``)."""
        return self.mean is not None

    def projector(self) -> torch.Tensor:
        """The dense projector ``P = U Uᵀ`` [d, d] (for inspection; projections never build it)."""
        return self.basis @ self.basis.T

    def to(self, *args, **kwargs) -> ConceptSubspace:
        """A copy with tensors moved/cast like ``torch.Tensor.to``."""
        return ConceptSubspace(self.basis.to(*args, **kwargs),
                               self.singular_values.to(*args, **kwargs),
                               None if self.mean is None else self.mean.to(*args, **kwargs),
                               self.metadata)

    # ----------------------------------------------------------------- maths
    def _prepare(self, x: object, name: str) -> tuple[torch.Tensor, torch.Tensor]:
        """(x − μ, U) in x's dtype/device; raises on a wrong trailing dimension."""
        x = _check_float_tensor(name, x)
        if x.shape[-1] != self.dim:
            raise ValueError(f"{name}: expected a last dimension of {self.dim} (the concept "
                             f"subspace's ambient dimension), got shape {tuple(x.shape)}")
        U = self.basis.to(device=x.device)
        centred = x if self.mean is None else x - self.mean.to(device=x.device, dtype=x.dtype)
        return centred, U

    def coordinates(self, x: torch.Tensor) -> torch.Tensor:
        """Coordinates ``Uᵀ(x − μ)``: [..., d] -> [..., k]."""
        centred, U = self._prepare(x, "x")
        return centred @ U.to(centred.dtype)

    def project_in(self, x: torch.Tensor) -> torch.Tensor:
        """``μ + P (x − μ)``: the concept part of ``x`` [..., d] (same shape)."""
        centred, U = self._prepare(x, "x")
        inside = project(centred, U, side="right")
        return inside if self.mean is None else inside + self.mean.to(x.device, x.dtype)

    def project_out(self, x: torch.Tensor) -> torch.Tensor:
        """``x − P (x − μ)``: ``x`` [..., d] with the concept directions removed (same shape).

        Uncentred, ``Uᵀ project_out(x) = 0`` exactly up to round-off.
        """
        centred, U = self._prepare(x, "x")
        residual = project_out(centred, U, side="right")
        return residual if self.mean is None else residual + self.mean.to(x.device, x.dtype)

    def distance(self, x: torch.Tensor, *, relative: bool = False) -> torch.Tensor:
        """Distance ``‖(I − P)(x − μ)‖`` of each vector in ``x`` [..., d] to the subspace: [...].

        ``relative=True`` divides by ``‖x − μ‖`` (the sine of the angle to the subspace, in
        [0, 1]), so vectors of different norms compare by direction; a zero vector gets 0.
        """
        centred, U = self._prepare(x, "x")
        residual = project_out(centred, U, side="right").norm(dim=-1)
        if not relative:
            return residual
        norm = centred.norm(dim=-1)
        return torch.where(norm > 0, residual / norm.clamp_min(torch.finfo(norm.dtype).tiny),
                           torch.zeros_like(norm))

    def proximity(self, x: torch.Tensor) -> torch.Tensor:
        """Per-vector proximity ``‖P(x − μ)‖² / ‖x − μ‖²`` in [0, 1] (cos² of the angle): [...].

        1 means inside the concept subspace, 0 orthogonal to it; a zero vector gets 0.
        Apply it to token embeddings [B, T, d] to get per-token scores [B, T].
        """
        sine = self.distance(x, relative=True)
        centred, _ = self._prepare(x, "x")
        return torch.where(centred.norm(dim=-1) > 0, 1 - sine.square(), torch.zeros_like(sine))

    # ----------------------------------------------------------------- persistence
    def save(self, path: str | os.PathLike, metadata: Mapping[str, str] | None = None) -> Path:
        """Write a safetensors file atomically (temp file, then rename); returns the path.

        ``metadata`` (``str -> str``) is merged over the instance's metadata.
        """
        from safetensors.torch import save_file

        meta = {**self.metadata, **dict(metadata or {})}
        for key, value in meta.items():
            if not isinstance(key, str) or not isinstance(value, str):
                raise TypeError(f"metadata: expected str -> str pairs, got {key!r}: "
                                f"{type(value).__name__}")
            if key in _RESERVED_KEYS:
                raise ValueError(f"metadata: key {key!r} is reserved ({_RESERVED_KEYS})")
        meta.update(format=_FORMAT, format_version=_FORMAT_VERSION,
                    centered=str(self.centered).lower())
        tensors = {"basis": self.basis.detach().cpu().contiguous(),
                   "singular_values": self.singular_values.detach().cpu().contiguous()}
        if self.mean is not None:
            tensors["mean"] = self.mean.detach().cpu().contiguous()
        path = Path(path)
        with atomic_path(path) as tmp:
            save_file(tensors, tmp, metadata=meta)
        return path

    @classmethod
    def load(cls, path: str | os.PathLike, *, device: str | torch.device = "cpu"
             ) -> ConceptSubspace:
        """Read a file written by :meth:`save`; refuses other safetensors files.

        Raises:
            FileNotFoundError: no such file.
            ValueError: not a ConceptSubspace file, a newer format, or inconsistent tensors.
        """
        from safetensors import safe_open

        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"path: no ConceptSubspace file at {str(path)!r}")
        with safe_open(str(path), framework="pt", device=str(device)) as f:
            meta = dict(f.metadata() or {})
            if meta.get("format") != _FORMAT:
                raise ValueError(f"path: {str(path)!r} is not a ConceptSubspace file "
                                 f"(metadata format={meta.get('format')!r}, expected {_FORMAT!r})")
            if meta.get("format_version") != _FORMAT_VERSION:
                raise ValueError(f"path: format_version {meta.get('format_version')!r} is not "
                                 f"supported (expected {_FORMAT_VERSION!r})")
            keys = set(f.keys())
            missing = {"basis", "singular_values"} - keys
            if missing:
                raise ValueError(f"path: {str(path)!r} lacks tensors {sorted(missing)}")
            centred = meta.get("centered") == "true"
            if centred != ("mean" in keys):
                raise ValueError(f"path: metadata centered={meta.get('centered')!r} disagrees "
                                 f"with the stored tensors {sorted(keys)}")
            basis = f.get_tensor("basis")
            singular_values = f.get_tensor("singular_values")
            mean = f.get_tensor("mean") if centred else None
        user_meta = {k: v for k, v in meta.items() if k not in _RESERVED_KEYS}
        return cls(basis, singular_values, mean, user_meta)

    def __repr__(self) -> str:
        return (f"ConceptSubspace(dim={self.dim}, rank={self.rank}, centered={self.centered}, "
                f"dtype={self.basis.dtype})")
