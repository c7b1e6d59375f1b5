"""Training in a random subspace: ``θ = θ0 + P θ_d`` (Li et al., 2018, "Measuring the Intrinsic
Dimension of Objective Landscapes", arXiv:1804.08838).

All ``D`` selected parameters of a module move together along a fixed random ``d``-dimensional
subspace: only ``θ_d [d]`` (zero at init, so the module is unchanged at init) is trained, and
``P [D, d]`` is a fixed random projection. The *intrinsic dimension* ``d_int90`` is the
smallest ``d`` at which subspace training reaches 90 % of the accuracy of training all ``D``
parameters (:func:`find_intrinsic_dimension`); Li et al. report ``d_int90 ≈ 750`` for a
784-200-200-10 MLP on MNIST (``D = 199,210``).

Projections (:class:`DenseProjection`, :class:`FastfoodProjection`), both linear maps
``R^d -> R^D`` with (approximately) unit-norm columns, so that a step of size ``ε`` along any
coordinate of ``θ_d`` moves ``θ`` by ``ε`` in norm whatever ``D``:

* **dense**: ``P = R diag(1 / ||R_{:,j}||)`` with ``R_ij ~ N(0, 1)`` i.i.d. — columns of norm
  exactly 1 (Li et al. normalise the columns; in high dimension they are also nearly
  orthogonal). ``R`` is drawn in row chunks, each from its own seeded generator, so that a
  ``P`` too large to store (``D · d > dense_max_entries``) is regenerated chunk by chunk in the
  forward and the backward (custom autograd function; memory ``O(chunk + D + d)``) and equals
  the stored one exactly.
* **Fastfood** (Le et al., 2013): with ``L = 2^⌈log2 max(D, d)⌉``,
  ``P = c · [H G Π H B]_{:D, :d}``, where ``H`` is the ``L x L`` Walsh–Hadamard matrix
  (Sylvester order, entries ±1, applied in ``O(L log L)`` by :func:`fwht`), ``B`` a diagonal
  of random signs, ``Π`` a random permutation, ``G`` a diagonal of ``N(0, 1)`` and
  ``c = 1 / sqrt(D · Σ_i G_i²)``. The scalar ``c`` takes the place of Fastfood's diagonal ``S``
  (as in the reference code of Li et al. and of Aghajanyan et al. 2020): every column of
  ``H G Π H B`` has squared norm ``L Σ G²`` exactly, so the columns of ``P`` have norm exactly
  1 when ``D = L`` and squared norm ``1`` in expectation over the kept rows otherwise (the
  ``D`` rows kept of the ``L``). Storage ``O(L)``; ``θ_d`` is zero-padded to ``L``.

The wrapped module is called functionally (``torch.func.functional_call``) with
``θ0 + P θ_d`` in place of its selected parameters, so its own parameters stay untouched
(and frozen) at ``θ0``; buffers (e.g. batch-norm statistics) are the module's own.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from subspace_peft.adapters.base import name_matches
from subspace_peft.adapters.intrinsic.config import IntrinsicConfig

__all__ = [
    "INTRINSIC_FORMAT",
    "DenseProjection",
    "FastfoodProjection",
    "IntrinsicModel",
    "IntrinsicSearch",
    "find_intrinsic_dimension",
    "fwht",
    "make_projection",
]

#: ``format`` field of the metadata of the files :meth:`IntrinsicModel.save` writes.
INTRINSIC_FORMAT = "subspace_peft.intrinsic/1"


def _mix_seed(*parts: int | str) -> int:
    """A 63-bit seed derived from ``parts`` (distinct tuples give independent seeds)."""
    digest = hashlib.blake2b(repr(parts).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1


# ------------------------------------------------------------------------- Hadamard
_HADAMARD_CACHE: dict[tuple[int, torch.dtype, torch.device], torch.Tensor] = {}


def _hadamard(k: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """Sylvester Hadamard matrix ``H_{2^k}`` (cached per size, dtype and device)."""
    key = (k, dtype, device)
    H = _HADAMARD_CACHE.get(key)
    if H is None:
        H = torch.ones(1, 1, dtype=dtype, device=device)
        for _ in range(k):
            H = torch.cat([torch.cat([H, H], 1), torch.cat([H, -H], 1)], 0)
        _HADAMARD_CACHE[key] = H
    return H


def fwht(x: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """Unnormalised fast Walsh–Hadamard transform of ``x`` along ``dim`` (differentiable).

    For ``n = x.shape[dim]`` a power of two, returns ``x`` multiplied along ``dim`` by the
    Sylvester-ordered Hadamard matrix ``H_n`` (``scipy.linalg.hadamard(n)``; symmetric, entries
    ±1, ``H_n H_n = n I``) in ``O(n log n)``. Shape and dtype are kept.

    ``H_n = H_{2^{k_1}} ⊗ ... ⊗ H_{2^{k_m}}`` (``(H_n)_{ij} = (-1)^{popcount(i & j)}``
    factorises over groups of index bits), so the transform is applied as ``m`` small dense
    products with ``H_64`` (6 bits at a time) along the corresponding axes of a reshaped
    view: ``2 · 64 · n`` flops per group of 6 bits, but ``log2(n) / 6`` passes over memory
    instead of the radix-2 butterfly's ``log2 n`` (2.5x faster for ``n = 2^18`` on a CPU).
    """
    n = x.shape[dim]
    if n < 1 or n & (n - 1):
        raise ValueError(f"x: the size of dim {dim} must be a power of two, got {n}")
    moved = x.movedim(dim, -1)
    lead = moved.shape[:-1]
    y = moved.reshape(-1, n)
    rows = y.shape[0]
    bits = n.bit_length() - 1
    inner = 1  # size of the low index bits already transformed
    while inner < n:
        k = min(6, bits)
        bits -= k
        K = 1 << k
        H = _hadamard(k, y.dtype, y.device)
        if inner == 1:
            y = y.reshape(-1, K) @ H  # lowest bits: the last axis (H is symmetric)
        else:
            # index = (outer, this group, inner): H acts on the middle axis, batched
            y = torch.matmul(H, y.reshape(rows * (n // (inner * K)), K, inner))
        inner *= K
    return y.reshape(*lead, n).movedim(-1, dim)


# ---------------------------------------------------------------------- projections
class DenseProjection(nn.Module):
    """Dense Gaussian ``P [D, d]`` with unit-norm columns (see the module doc).

    Args:
        D: output size (parameters moved).
        d: input size (subspace dimension).
        seed: seed; the same ``(D, d, seed)`` gives the same ``P`` (generated on the CPU).
        max_entries: keep ``P`` in memory when ``D · d <= max_entries``; else regenerate it
            in chunks in every forward and backward.
        chunk_entries: entries per generated chunk (``max(1, chunk_entries // d)`` rows).

    ``forward(θ_d [d]) -> [D]``.
    """

    def __init__(self, D: int, d: int, seed: int = 0, *, max_entries: int = 1 << 24,
                 chunk_entries: int = 1 << 20) -> None:
        super().__init__()
        if D < 1 or d < 1:
            raise ValueError(f"D, d: expected positive sizes, got D={D}, d={d}")
        self.D, self.d, self.seed = int(D), int(d), int(seed)
        self.chunk_rows = max(1, int(chunk_entries) // self.d)
        self.materialized = self.D * self.d <= max_entries
        sq = torch.zeros(self.d, dtype=torch.float64)
        chunks = []
        for c in range(self.num_chunks):
            R = self._raw_chunk(c)
            sq += R.to(torch.float64).square().sum(0)
            if self.materialized:
                chunks.append(R)
        inv = (1.0 / sq.sqrt()).to(torch.float32)
        self.register_buffer("inv_norms", inv, persistent=False)
        if self.materialized:
            self.register_buffer("matrix_", torch.cat(chunks) * inv, persistent=False)

    @property
    def num_chunks(self) -> int:
        return -(-self.D // self.chunk_rows)

    def _raw_chunk(self, c: int) -> torch.Tensor:
        lo = c * self.chunk_rows
        rows = min(self.chunk_rows, self.D - lo)
        gen = torch.Generator().manual_seed(_mix_seed("dense", self.seed, c))
        return torch.randn(rows, self.d, generator=gen)

    def chunk(self, c: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
        """Rows ``[c · chunk_rows, ...)`` of ``P`` (normalised), on ``device``."""
        R = self._raw_chunk(c) * self.inv_norms.cpu()
        return R.to(device=device, dtype=dtype)

    def matrix(self) -> torch.Tensor:
        """The explicit ``P [D, d]`` (float32; allocates it when it is not kept)."""
        if self.materialized:
            return self.matrix_
        dev = self.inv_norms.device
        return torch.cat([self.chunk(c, dev, torch.float32) for c in range(self.num_chunks)])

    def forward(self, theta: torch.Tensor) -> torch.Tensor:
        if theta.shape != (self.d,):
            raise ValueError(f"theta: expected shape ({self.d},), got {tuple(theta.shape)}")
        if self.materialized:
            return self.matrix_.to(theta.dtype) @ theta
        return _ChunkedMatVec.apply(theta, self)

    def extra_repr(self) -> str:
        return f"D={self.D}, d={self.d}, seed={self.seed}, materialized={self.materialized}"


class _ChunkedMatVec(torch.autograd.Function):
    """``P θ`` and ``Pᵀ g`` with ``P`` regenerated chunk by chunk (nothing of size D·d kept)."""

    @staticmethod
    def forward(ctx, theta: torch.Tensor, proj: DenseProjection) -> torch.Tensor:
        ctx.proj = proj
        out = theta.new_empty(proj.D)
        for c in range(proj.num_chunks):
            lo = c * proj.chunk_rows
            P = proj.chunk(c, theta.device, theta.dtype)
            out[lo:lo + P.shape[0]] = P @ theta
        return out

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        proj = ctx.proj
        out = grad.new_zeros(proj.d)
        for c in range(proj.num_chunks):
            lo = c * proj.chunk_rows
            P = proj.chunk(c, grad.device, grad.dtype)
            out += P.T @ grad[lo:lo + P.shape[0]]
        return out, None


class FastfoodProjection(nn.Module):
    """Fastfood ``P = c [H G Π H B]_{:D, :d}`` (see the module doc); ``O(L)`` storage.

    Args:
        D: output size. d: input size. seed: seed (CPU generator; same ``P`` everywhere).

    Buffers (non-persistent, regenerated from the seed): ``signs [L]`` (``B``), ``perm [L]``
    (``(Π v)_i = v[perm[i]]``), ``gauss [L]`` (``G``); ``scale`` is ``c``.
    ``forward(θ_d [d]) -> [D]``.
    """

    def __init__(self, D: int, d: int, seed: int = 0) -> None:
        super().__init__()
        if D < 1 or d < 1:
            raise ValueError(f"D, d: expected positive sizes, got D={D}, d={d}")
        self.D, self.d, self.seed = int(D), int(d), int(seed)
        self.L = 1 << (max(self.D, self.d) - 1).bit_length()
        gen = torch.Generator().manual_seed(_mix_seed("fastfood", self.seed))
        signs = torch.randint(0, 2, (self.L,), generator=gen).to(torch.float32) * 2 - 1
        perm = torch.randperm(self.L, generator=gen)
        gauss = torch.randn(self.L, generator=gen)
        self.register_buffer("signs", signs, persistent=False)
        self.register_buffer("perm", perm, persistent=False)
        self.register_buffer("gauss", gauss, persistent=False)
        self.register_buffer("inv_perm", torch.argsort(perm), persistent=False)
        self.scale = 1.0 / math.sqrt(self.D * float(gauss.to(torch.float64).square().sum()))

    def forward(self, theta: torch.Tensor) -> torch.Tensor:
        if theta.shape != (self.d,):
            raise ValueError(f"theta: expected shape ({self.d},), got {tuple(theta.shape)}")
        return _FastfoodFn.apply(theta, self)

    def apply_transpose(self, grad: torch.Tensor) -> torch.Tensor:
        """``Pᵀ g [d]`` for ``g [D]``: ``c [B H Πᵀ G H]_{:d, :D} g`` (``H``, ``G``, ``B``
        symmetric; ``Πᵀ w = w[argsort(perm)]``)."""
        u = F.pad(grad, (0, self.L - self.D)) * self.scale
        u = fwht(u) * self.gauss.to(grad.dtype)
        u = fwht(u.index_select(0, self.inv_perm)) * self.signs.to(grad.dtype)
        return u[:self.d]

    def apply_forward(self, theta: torch.Tensor) -> torch.Tensor:
        """``P θ [D]`` for ``θ [d]`` (no autograd graph; :meth:`forward` wraps it)."""
        v = F.pad(theta, (0, self.L - self.d)) * self.signs.to(theta.dtype)
        v = fwht(v).index_select(0, self.perm) * self.gauss.to(theta.dtype)
        return fwht(v)[:self.D] * self.scale

    def matrix(self) -> torch.Tensor:
        """The explicit ``P [D, d]``, column by column (small sizes only)."""
        eye = torch.eye(self.d, device=self.signs.device)
        return torch.stack([self(e) for e in eye], dim=1)

    def extra_repr(self) -> str:
        return f"D={self.D}, d={self.d}, L={self.L}, seed={self.seed}"


class _FastfoodFn(torch.autograd.Function):
    """``P θ`` with the backward ``Pᵀ g`` computed by the transposed transform (two more
    Hadamard transforms) instead of autograd through the forward's intermediates."""

    @staticmethod
    def forward(ctx, theta: torch.Tensor, proj: FastfoodProjection) -> torch.Tensor:
        ctx.proj = proj
        return proj.apply_forward(theta)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        return ctx.proj.apply_transpose(grad.contiguous()), None


def make_projection(kind: str, D: int, d: int, seed: int, *, max_entries: int = 1 << 24
                    ) -> DenseProjection | FastfoodProjection:
    """``DenseProjection`` or ``FastfoodProjection`` by name (``"dense"`` / ``"fastfood"``)."""
    if kind == "dense":
        return DenseProjection(D, d, seed, max_entries=max_entries)
    if kind == "fastfood":
        return FastfoodProjection(D, d, seed)
    raise ValueError(f"kind: expected 'dense' or 'fastfood', got {kind!r}")


# --------------------------------------------------------------------------- model
class IntrinsicModel(nn.Module):
    """``module`` trained in a random ``d``-dimensional subspace of its parameters.

    Args:
        module: any ``nn.Module``; its selected parameters (``config.parameters``, default all
            that require grad) are ``θ0`` and are frozen (flags restored by
            :meth:`merge_and_unload`).
        config: :class:`IntrinsicConfig` (``dim`` = ``d``, projection, seed, ...).

    The only trainable tensor is ``theta_d [d]`` (zero at init). ``forward(*args, **kwargs)``
    calls ``module`` with ``θ0 + P θ_d`` for the selected parameters. Example::

        sub = IntrinsicModel(mlp, IntrinsicConfig(dim=750))
        opt = torch.optim.Adam([sub.theta_d], lr=1e-2)
        loss = F.cross_entropy(sub(x), y)

    Attributes: ``D`` (selected scalars), ``d``, ``param_names``, ``projections``
    (one, or one per selected tensor with ``per_tensor``).
    """

    def __init__(self, module: nn.Module, config: IntrinsicConfig) -> None:
        super().__init__()
        if not isinstance(config, IntrinsicConfig):
            raise TypeError(f"config: expected IntrinsicConfig, got {type(config).__name__}")
        named = list(module.named_parameters())
        names = [n for n, p in named if p.requires_grad and (
            config.parameters is None or name_matches(n, config.parameters))]
        if not names:
            raise ValueError(f"parameters: {config.parameters!r} selected no trainable "
                             f"parameter of the {type(module).__name__}; its parameters are "
                             f"named like {[n for n, _ in named][:6]}")
        self.module = module
        self.config = config
        self._requires_grad = {n: p.requires_grad for n, p in named}
        for p in module.parameters():
            p.requires_grad_(False)
        params = dict(named)
        self.param_names = tuple(names)
        self.param_shapes = tuple(tuple(params[n].shape) for n in names)
        self.sizes = tuple(params[n].numel() for n in names)
        self.D = sum(self.sizes)
        self.d = config.dim
        if self.d > self.D:
            raise ValueError(f"dim: expected d <= D = {self.D} (the selected parameters), "
                             f"got {self.d}")
        first = params[names[0]]
        self.theta_d = nn.Parameter(torch.zeros(self.d, device=first.device,
                                                dtype=torch.float32))
        kw = {"max_entries": config.dense_max_entries}
        if config.per_tensor:
            projs = [make_projection(config.projection, D_i, self.d,
                                     _mix_seed(config.seed, "tensor", i), **kw)
                     for i, D_i in enumerate(self.sizes)]
        else:
            projs = [make_projection(config.projection, self.D, self.d, config.seed, **kw)]
        self.projections = nn.ModuleList(projs).to(first.device)
        self._merged = False

    # ------------------------------------------------------------------ maths
    def offset(self) -> torch.Tensor:
        """``P θ_d [D]`` (differentiable; per-tensor pieces concatenated in ``param_names``
        order)."""
        if self.config.per_tensor:
            return torch.cat([proj(self.theta_d) for proj in self.projections])
        return self.projections[0](self.theta_d)

    def deltas(self) -> dict[str, torch.Tensor]:
        """``{parameter name: (P θ_d) reshaped to the parameter}`` (differentiable)."""
        pieces = torch.split(self.offset(), self.sizes)
        return {n: piece.view(shape) for n, piece, shape
                in zip(self.param_names, pieces, self.param_shapes, strict=True)}

    def parameters_now(self) -> dict[str, torch.Tensor]:
        """``{name: θ0 + P θ_d}`` for the selected parameters (differentiable)."""
        params = dict(self.module.named_parameters())
        return {n: params[n] + delta.to(params[n].dtype) for n, delta in self.deltas().items()}

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        if self._merged:
            raise RuntimeError("IntrinsicModel: merged; use the module merge_and_unload returned")
        return torch.func.functional_call(self.module, self.parameters_now(), args, kwargs)

    def num_trainable_parameters(self) -> int:
        """``d`` (``theta_d``; the module's parameters are frozen)."""
        return sum(p.numel() for p in self.parameters() if p.requires_grad)

    @torch.no_grad()
    def merge_and_unload(self) -> nn.Module:
        """Write ``θ0 + P θ_d`` into the module's parameters, restore their ``requires_grad``
        flags and return the module (this wrapper is unusable afterwards)."""
        new = {n: t.detach() for n, t in self.parameters_now().items()}
        for n, p in self.module.named_parameters():
            if n in new:
                p.copy_(new[n])
            p.requires_grad_(self._requires_grad.get(n, True))
        self._merged = True
        return self.module

    # ------------------------------------------------------------------ save / load
    def _fingerprint(self) -> list[float]:
        from subspace_peft.adapters.base import _fingerprint

        params = dict(self.module.named_parameters())
        return _fingerprint(torch.cat([params[n].detach().reshape(-1).float()
                                       for n in self.param_names]))

    def save(self, path: str | Path) -> str:
        """Write ``theta_d`` and the configuration to ``path`` (safetensors + ``.sha256``
        sidecar; the projection is regenerated from the seed on load). Returns the sha256."""
        from subspace_core.zoo import save_state_dict

        meta = {"format": INTRINSIC_FORMAT, "config": self.config.to_dict(),
                "parameters": {n: list(s) for n, s in zip(self.param_names, self.param_shapes,
                                                          strict=True)},
                "fingerprint": self._fingerprint()}
        return save_state_dict({"theta_d": self.theta_d.detach()}, path, metadata=meta)

    @classmethod
    def load(cls, module: nn.Module, path: str | Path, *, sha256: str | None = None
             ) -> IntrinsicModel:
        """Rebuild on ``module`` (the same ``θ0``) from a file written by :meth:`save`.

        Raises:
            ValueError: not an intrinsic-dimension file, or the module's selected parameters
                (names, shapes, values) differ from those it was saved for.
        """
        import json

        from safetensors import safe_open

        from subspace_core.zoo import load_state_dict

        path = Path(path)
        if sha256 is None:
            sidecar = path.with_name(path.name + ".sha256")
            if not sidecar.is_file():
                raise FileNotFoundError(f"{path}: pass sha256= or keep the {sidecar.name} "
                                        "sidecar")
            sha256 = sidecar.read_text().split()[0]
        tensors = load_state_dict(path, sha256=sha256)
        with safe_open(str(path), framework="pt") as fh:
            meta = json.loads((fh.metadata() or {}).get("subzoo", "{}"))
        if meta.get("format") != INTRINSIC_FORMAT:
            raise ValueError(f"{path}: not an intrinsic-dimension file (format "
                             f"{meta.get('format')!r}, expected {INTRINSIC_FORMAT!r})")
        self = cls(module, IntrinsicConfig.from_dict(meta["config"]))
        saved = {n: list(s) for n, s in meta["parameters"].items()}
        mine = {n: list(s) for n, s in zip(self.param_names, self.param_shapes, strict=True)}
        if saved != mine:
            raise ValueError(f"{path}: saved for parameters {list(saved.items())[:3]}..., this "
                             f"module selects {list(mine.items())[:3]}...")
        expected, actual = meta["fingerprint"], self._fingerprint()
        tol = 1e-5 * max(abs(expected[0]), 1e-12)
        if any(abs(a - e) > tol for a, e in zip(actual, expected, strict=True)):
            raise ValueError(f"{path}: the module's parameters differ from the θ0 it was saved "
                             f"for (fingerprint expected {expected}, actual {actual})")
        with torch.no_grad():
            self.theta_d.copy_(tensors["theta_d"])
        return self


# --------------------------------------------------------------------------- search
@dataclass
class IntrinsicSearch:
    """Result of :func:`find_intrinsic_dimension`.

    Attributes:
        d_int: the smallest evaluated ``d`` whose accuracy reached ``threshold`` (None when
            none did).
        threshold: ``target_fraction · baseline_acc``.
        accuracies: ``{d: accuracy}`` of every evaluated ``d`` (evaluation order).
    """

    d_int: int | None
    threshold: float
    accuracies: dict[int, float] = field(default_factory=dict)

    @property
    def reached(self) -> bool:
        return self.d_int is not None


def find_intrinsic_dimension(train_fn: Callable[[int], float], dims: Iterable[int], *,
                             baseline_acc: float, target_fraction: float = 0.9,
                             search: str = "scan") -> IntrinsicSearch:
    """``d_int`` = the smallest ``d`` of ``dims`` whose subspace accuracy ``train_fn(d)``
    reaches ``target_fraction · baseline_acc`` (Li et al.'s ``d_int90`` for 0.9).

    Args:
        train_fn: trains in a ``d``-dimensional subspace and returns its accuracy.
        dims: candidate dimensions (sorted and de-duplicated here).
        baseline_acc: accuracy of training every parameter (same model, same data).
        target_fraction: fraction of the baseline to reach (0.9 for ``d_int90``).
        search: ``"scan"`` evaluates every candidate (the accuracy curve; robust to noise:
            the answer is the smallest passing ``d``); ``"bisect"`` assumes accuracy grows with
            ``d`` and evaluates ``⌈log2(n + 1)⌉`` candidates.
    """
    candidates = sorted({int(d) for d in dims})
    if not candidates or candidates[0] < 1:
        raise ValueError(f"dims: expected a non-empty list of ints >= 1, got {list(dims)!r}")
    if not 0.0 < target_fraction <= 1.0:
        raise ValueError(f"target_fraction: expected a fraction in (0, 1], got "
                         f"{target_fraction!r}")
    if search not in ("scan", "bisect"):
        raise ValueError(f"search: expected 'scan' or 'bisect', got {search!r}")
    threshold = target_fraction * float(baseline_acc)
    result = IntrinsicSearch(None, threshold)

    def passes(d: int) -> bool:
        if d not in result.accuracies:
            result.accuracies[d] = float(train_fn(d))
        return result.accuracies[d] >= threshold

    if search == "scan":
        for d in candidates:
            passes(d)
        passing = [d for d in candidates if result.accuracies[d] >= threshold]
        result.d_int = passing[0] if passing else None
        return result
    lo, hi = 0, len(candidates)  # invariant: the answer's index is in [lo, hi]; hi = none
    while lo < hi:
        mid = (lo + hi) // 2
        if passes(candidates[mid]):
            hi = mid
        else:
            lo = mid + 1
    result.d_int = candidates[lo] if lo < len(candidates) else None
    return result
