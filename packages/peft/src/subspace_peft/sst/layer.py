"""Sparse Spectral Training (SST): linear layers trained in singular-value form.

``W = U diag(σ) Vh (+ W_res)`` with ``U [d_in, k]``, ``σ [k]``, ``Vh [k, d_out]`` in the
layout of :func:`subspace_core.ops.lowrank_linear.svd_linear` (``y = x U diag(σ) Vh + b``;
an ``nn.Linear``'s weight is ``[d_out, d_in]``, so ``U σ Vh`` is the SVD of ``weight.T``).

* all k singular values σ receive gradients every step;
* each round, :meth:`SSTLinear.resample` draws ``r = sample_rank`` singular-vector pairs
  without replacement with probability proportional to ``|σ|``; only those U columns and
  Vh rows receive (non-zero) gradients, the others are detached in the forward pass, so
  their gradients are exactly zero;
* :meth:`SSTLinear.reorthogonalize` re-SVDs ``U diag(σ) Vh`` (keeps UᵀU = I, VhVhᵀ = I,
  σ sorted and non-negative), in place so optimizer references stay valid;
* ``W_res`` (frozen buffer, only when ``rank < min(d_in, d_out)``) holds the part of the
  initial weight outside the top-k subspace, so the layer equals the dense one at init.

Optimizer note (what "only sampled vectors are updated" needs): gradients of unsampled
vectors are zero, but Adam's moments from earlier rounds and weight decay would still move
them. Pass the optimizer to :meth:`SSTController.step` (or ``resample``/``reorthogonalize``)
to zero the U/Vh moments at every round change, and use ``weight_decay=0`` for U and Vh
(:func:`sst_param_groups`).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

import torch
from torch import nn

from subspace_core.ops.lowrank_linear import svd_linear

__all__ = ["SSTController", "SSTLinear", "convert_to_sst", "sst_param_groups"]


def _sign_fix(U: torch.Tensor, Vh: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Flip (U column, Vh row) pairs so each U column's largest-|.| entry is positive."""
    idx = U.abs().argmax(dim=0)
    signs = torch.sign(U[idx, torch.arange(U.shape[1])])
    signs[signs == 0] = 1
    return U * signs, Vh * signs[:, None]


class SSTLinear(nn.Module):
    """``nn.Linear`` replacement trained with Sparse Spectral Training (see module doc)."""

    def __init__(
        self,
        in_features: int,
        out_features: int,
        rank: int | None = None,
        sample_rank: int | None = None,
        bias: bool = True,
        *,
        backend: str = "auto",
        device=None,
        dtype=None,
    ) -> None:
        super().__init__()
        full = min(in_features, out_features)
        rank = full if rank is None else rank
        if not 1 <= rank <= full:
            raise ValueError(f"rank: expected 1 <= rank <= min(in, out) = {full}, got {rank}")
        sample_rank = rank if sample_rank is None else sample_rank
        if not 1 <= sample_rank <= rank:
            raise ValueError(f"sample_rank: expected 1 <= sample_rank <= rank = {rank}, got {sample_rank}")
        kw = {"device": device, "dtype": dtype}
        self.in_features, self.out_features = in_features, out_features
        self.rank, self.sample_rank, self.backend = rank, sample_rank, backend
        self.U = nn.Parameter(torch.empty(in_features, rank, **kw))
        self.S = nn.Parameter(torch.empty(rank, **kw))
        self.Vh = nn.Parameter(torch.empty(rank, out_features, **kw))
        self.bias = nn.Parameter(torch.zeros(out_features, **kw)) if bias else None
        self.register_buffer("W_res", None)
        self.register_buffer("mask", torch.ones(rank, dtype=torch.bool, device=device))
        self.reset_from_weight(nn.init.kaiming_uniform_(torch.empty(out_features, in_features, **kw), a=5**0.5))

    @classmethod
    def from_linear(
        cls, linear: nn.Linear, rank: int | None = None, sample_rank: int | None = None, **kwargs
    ) -> SSTLinear:
        """An SST layer computing exactly ``linear`` (up to float error) at init."""
        layer = cls(linear.in_features, linear.out_features, rank, sample_rank,
                    bias=linear.bias is not None, device=linear.weight.device,
                    dtype=linear.weight.dtype, **kwargs)
        layer.reset_from_weight(linear.weight.detach(), None if linear.bias is None else linear.bias.detach())
        return layer

    @torch.no_grad()
    def reset_from_weight(self, weight: torch.Tensor, bias: torch.Tensor | None = None) -> None:
        """Set ``U, σ, Vh`` (top-``rank`` SVD of ``weight.T``) and ``W_res`` (the rest)."""
        if tuple(weight.shape) != (self.out_features, self.in_features):
            raise ValueError(f"weight: expected shape {(self.out_features, self.in_features)}, got {tuple(weight.shape)}")
        w = weight.T.double()
        U, S, Vh = torch.linalg.svd(w, full_matrices=False)
        U, Vh = _sign_fix(U[:, : self.rank], Vh[: self.rank])
        S = S[: self.rank]
        self.U.copy_(U)
        self.S.copy_(S)
        self.Vh.copy_(Vh)
        if self.rank < min(self.in_features, self.out_features):
            self.W_res = (w - (U * S) @ Vh).to(self.U.dtype)
        else:
            self.W_res = None
        if bias is not None and self.bias is not None:
            self.bias.copy_(bias)
        self.mask.fill_(True)

    def weight_matrix(self) -> torch.Tensor:
        """The dense ``[d_in, d_out]`` weight ``U diag(σ) Vh (+ W_res)``, no gradient."""
        with torch.no_grad():
            w = (self.U * self.S) @ self.Vh
            return w if self.W_res is None else w + self.W_res

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        m = self.mask
        U = torch.where(m[None, :], self.U, self.U.detach())
        Vh = torch.where(m[:, None], self.Vh, self.Vh.detach())
        y = svd_linear(x, U, self.S, Vh, self.bias, backend=self.backend)
        if self.W_res is not None:
            y = y + x @ self.W_res
        return y

    @torch.no_grad()
    def resample(
        self, generator: torch.Generator | None = None, optimizer: torch.optim.Optimizer | None = None
    ) -> torch.Tensor:
        """Draw ``sample_rank`` vector pairs ∝ |σ| (no replacement); return their indices."""
        weights = self.S.detach().abs().float().cpu()
        if not torch.isfinite(weights).all():
            raise FloatingPointError("SSTLinear.resample: non-finite singular values")
        if weights.sum() <= 0:
            weights = torch.ones_like(weights)
        idx = torch.multinomial(weights, self.sample_rank, replacement=False, generator=generator)
        self.mask.fill_(False)
        self.mask[idx.to(self.mask.device)] = True
        if optimizer is not None:
            _zero_moments(optimizer, (self.U, self.Vh))
        return idx

    @torch.no_grad()
    def reorthogonalize(self, optimizer: torch.optim.Optimizer | None = None) -> None:
        """Re-SVD ``U diag(σ) Vh`` in place (W_res untouched, the function is unchanged)."""
        U, S, Vh = torch.linalg.svd((self.U.double() * self.S.double()) @ self.Vh.double(),
                                    full_matrices=False)
        U, Vh = _sign_fix(U[:, : self.rank], Vh[: self.rank])
        self.U.copy_(U)
        self.S.copy_(S[: self.rank])
        self.Vh.copy_(Vh)
        if optimizer is not None:
            _zero_moments(optimizer, (self.U, self.S, self.Vh))

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"rank={self.rank}, sample_rank={self.sample_rank}, bias={self.bias is not None}, "
                f"residual={self.W_res is not None}")


def _zero_moments(optimizer: torch.optim.Optimizer, params: Iterable[torch.Tensor]) -> None:
    for p in params:
        for value in optimizer.state.get(p, {}).values():
            if torch.is_tensor(value) and value.shape == p.shape:
                value.zero_()


def convert_to_sst(
    model: nn.Module,
    target_modules: Sequence[str] | str,
    rank: int | None = None,
    sample_rank: int | None = None,
    **kwargs,
) -> list[str]:
    """Replace, in place, every ``nn.Linear`` whose qualified name matches a pattern.

    ``target_modules``: regular expressions searched (``re.search``) in module names, e.g.
    ``("attn", "mlp")``. ``rank`` (default full) is capped per layer at ``min(d_in, d_out)``.
    Returns the replaced names; raises when nothing matched (no silent no-op).
    """
    patterns = [target_modules] if isinstance(target_modules, str) else list(target_modules)
    if not patterns:
        raise ValueError("target_modules: expected at least one pattern")
    replaced: list[str] = []
    for name, module in list(model.named_modules()):
        if not isinstance(module, nn.Linear) or not any(re.search(p, name) for p in patterns):
            continue
        full = min(module.in_features, module.out_features)
        k = full if rank is None else min(rank, full)
        r = None if sample_rank is None else min(sample_rank, k)
        new = SSTLinear.from_linear(module, k, r, **kwargs)
        parent_name, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent_name) if parent_name else model, child, new)
        replaced.append(name)
    if not replaced:
        raise ValueError(f"target_modules: no nn.Linear matched {patterns}")
    return replaced


def sst_param_groups(model: nn.Module, weight_decay: float = 0.0, **group_kwargs) -> list[dict]:
    """Two optimizer groups: SST U/Vh factors (weight_decay 0) and everything else."""
    factors = [p for m in model.modules() if isinstance(m, SSTLinear) for p in (m.U, m.Vh)]
    ids = {id(p) for p in factors}
    rest = [p for p in model.parameters() if id(p) not in ids and p.requires_grad]
    return [{"params": factors, "weight_decay": 0.0, **group_kwargs},
            {"params": rest, "weight_decay": weight_decay, **group_kwargs}]


class SSTController:
    """Round schedule: call :meth:`step` after every ``optimizer.step()``.

    Every ``resample_every`` steps all SST layers draw new vector pairs; every
    ``reorth_every`` steps (0: never) they are re-orthogonalised. Sampling uses a generator
    seeded with ``seed`` (deterministic). Layers are sampled once at construction.
    """

    def __init__(self, model: nn.Module, optimizer: torch.optim.Optimizer | None = None, *,
                 resample_every: int = 1, reorth_every: int = 100, seed: int = 0) -> None:
        self.layers = [m for m in model.modules() if isinstance(m, SSTLinear)]
        if not self.layers:
            raise ValueError("model: has no SSTLinear layers (call convert_to_sst first)")
        if resample_every < 1 or reorth_every < 0:
            raise ValueError(f"resample_every >= 1 and reorth_every >= 0 expected, got {resample_every}, {reorth_every}")
        self.optimizer, self.resample_every, self.reorth_every = optimizer, resample_every, reorth_every
        self.generator = torch.Generator().manual_seed(seed)
        self.steps = 0
        for layer in self.layers:
            layer.resample(self.generator)

    def step(self) -> None:
        self.steps += 1
        if self.reorth_every and self.steps % self.reorth_every == 0:
            for layer in self.layers:
                layer.reorthogonalize(self.optimizer)
        if self.steps % self.resample_every == 0:
            for layer in self.layers:
                layer.resample(self.generator, self.optimizer)


