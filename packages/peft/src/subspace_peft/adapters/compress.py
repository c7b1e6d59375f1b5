"""Simulated weight compression of linear layers, the errors that EoRA compensates.

Every function here returns or writes *float* weights: the compressed model is simulated
("fake-quantised" / masked) so that it runs with ordinary ``nn.Linear`` layers and the
compression error ``ΔW = W - W_c`` can be read off directly. Three compressors:

**Round-to-nearest (RTN) weight quantisation** (:func:`rtn_quantize`), asymmetric, per
group: each row of ``W [out, in]`` is cut into groups of ``group_size`` consecutive input
columns (the last group of a row may be shorter when ``group_size`` does not divide ``in``,
as for SmolLM2's ``in = 576`` with the usual 128), and each group gets its own scale ``s`` and
zero-point ``z`` over the ``2**bits`` codes ``0 .. qmax``:

* ``zero_point="integer"`` (default; the asymmetric RTN of GPTQ / GPTQModel): the group's
  range is widened to contain 0 (``lo = min(min x, 0)``, ``hi = max(max x, 0)``),
  ``s = (hi - lo) / qmax``, ``z = round(-lo / s)`` (an integer code, so 0 is exactly
  representable and exact zeros stay zero), ``q = clamp(round(x / s) + z, 0, qmax)``,
  ``x̂ = s (q - z)``.
* ``zero_point="float"`` (min-max, like GGUF's Q4_1 or ``subspace_core.ops.quantize``):
  ``lo = min x``, ``hi = max x``, ``s = (hi - lo) / qmax``, ``q = round((x - lo) / s)``,
  ``x̂ = lo + s q`` (``z = -lo / s`` is then fractional).

Either way every de-quantised value of a group lies on its grid of ``2**bits`` points
``s (k - z)``, ``k = 0 .. qmax``, and ``|x - x̂| <= s / 2`` (round half to even; the clamp
only acts on values at most half a step outside the range). The core op
``subspace_core.ops.quantize`` is not reused because it packs codes (bits 4 and 8 only)
and needs ``group_size`` to divide the row; here any ``bits`` in 2..8 and ragged groups
are allowed, and nothing is packed.

**Unstructured pruning** (:func:`pruning_mask`) to a fraction ``sparsity`` of zeros *in
every output row* (``floor(sparsity * in)`` weights removed per row, ties broken by column
order, so the count is exact):

* ``"magnitude"``: remove the smallest ``|W_ij|`` of each row;
* ``"wanda"`` (Sun et al., 2023, arXiv:2306.11695): remove the smallest
  ``|W_ij| * ||X_j||_2``, with ``||X_j||_2`` the Euclidean norm of input feature ``j`` over
  the calibration tokens (:func:`input_norms_from_covariance` reads it off the diagonal of
  ``XᵀX`` collected by :func:`~subspace_peft.adapters.base.collect_input_covariance`).
  Wanda compares weights within an output row, as its paper recommends for LLMs.

**N:M semi-structured pruning** (``n_m=(2, 4)``): in every group of ``M`` consecutive input
columns of a row, keep the ``N`` largest scores (magnitude or Wanda's).

:func:`compress_model` applies one of them in place to the selected ``nn.Linear`` layers
(selection as :func:`~subspace_peft.adapters.base.find_targets`; embeddings and the LM head
are not linears of the decoder layers and are never selected by :data:`LLAMA_LINEARS`) and
returns per-layer errors (:class:`LayerError`). :func:`snapshot_weights` /
:func:`restore_weights` keep the original weights, which EoRA needs.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from subspace_peft.adapters.base import InputCovariance, check_patterns, find_targets

__all__ = [
    "COMPRESSION_METHODS",
    "LLAMA_LINEARS",
    "CompressionConfig",
    "LayerError",
    "RTNResult",
    "compress_model",
    "compress_weight",
    "input_norms_from_covariance",
    "llama_linears",
    "pruning_mask",
    "restore_weights",
    "rtn_quantize",
    "snapshot_weights",
]

#: Every linear of the decoder layers of a Hugging Face LLaMA-style model (attention q/k/v/o
#: and the SwiGLU gate/up/down projections); not the embeddings, not ``lm_head``.
LLAMA_LINEARS = r"layers\.\d+\.(self_attn\.(q|k|v|o)_proj|mlp\.(gate|up|down)_proj)"
#: ``CompressionConfig.method`` values.
COMPRESSION_METHODS = ("rtn", "magnitude", "wanda")


def llama_linears(layers: Sequence[int] | None = None) -> str:
    """:data:`LLAMA_LINEARS` restricted to the decoder layers with indices ``layers``
    (all layers when None)."""
    if layers is None:
        return LLAMA_LINEARS
    idx = [int(i) for i in layers]
    if not idx or any(i < 0 for i in idx):
        raise ValueError(f"layers: expected non-negative layer indices, got {list(layers)!r}")
    which = "|".join(str(i) for i in sorted(set(idx)))
    return rf"layers\.({which})\.(self_attn\.(q|k|v|o)_proj|mlp\.(gate|up|down)_proj)"


def _check_matrix(name: str, w: torch.Tensor) -> None:
    if not isinstance(w, torch.Tensor):
        raise TypeError(f"{name}: expected a torch.Tensor, got {type(w).__name__}")
    if w.dim() != 2 or w.numel() == 0:
        raise ValueError(f"{name}: expected a non-empty [out, in] matrix, got shape "
                         f"{tuple(w.shape)}")
    if not w.is_floating_point():
        raise TypeError(f"{name}: expected a floating dtype, got {w.dtype}")
    if not bool(torch.isfinite(w).all()):
        raise ValueError(f"{name}: contains NaN or inf")


# --------------------------------------------------------------------------- quantisation
@dataclass(frozen=True)
class RTNResult:
    """One weight matrix quantised by :func:`rtn_quantize`.

    Attributes:
        weight: de-quantised weight ``[out, in]`` in the input's dtype (the simulated
            compressed weight ``W_c``).
        codes: integer codes ``[out, in]`` (int16), in ``0 .. 2**bits - 1``.
        scales: float64 step ``s`` of every group ``[out, n_groups]``.
        zeros: float64 zero-point ``z`` of every group ``[out, n_groups]`` in code units
            (integer-valued with ``zero_point="integer"``); ``x̂ = s (q - z)``.
        bits: bits per weight.
        group_size: input columns per group (the last group of a row may be shorter).
    """

    weight: torch.Tensor
    codes: torch.Tensor
    scales: torch.Tensor
    zeros: torch.Tensor
    bits: int
    group_size: int

    def group_bounds(self) -> list[tuple[int, int]]:
        """``[(start, stop)]`` column range of every group."""
        n = self.weight.shape[1]
        return [(a, min(a + self.group_size, n)) for a in range(0, n, self.group_size)]


def _rtn_groups(x: torch.Tensor, qmax: int, zero_point: str
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """RTN of ``x [rows, groups, g]`` (float64): (dequantised, codes, scales, zeros)."""
    if zero_point == "integer":
        lo = x.amin(dim=-1, keepdim=True).clamp(max=0.0)
        hi = x.amax(dim=-1, keepdim=True).clamp(min=0.0)
        # an all-zero group: any positive step represents it exactly (GPTQ uses [-1, 1])
        empty = (hi - lo) == 0
        lo, hi = torch.where(empty, -1.0, lo), torch.where(empty, 1.0, hi)
        scale = (hi - lo) / qmax
        zero = torch.round(-lo / scale)
        q = (torch.round(x / scale) + zero).clamp(0, qmax)
        deq = scale * (q - zero)
    else:
        lo = x.amin(dim=-1, keepdim=True)
        hi = x.amax(dim=-1, keepdim=True)
        # a constant group: every code is 0 and x̂ = lo exactly; the step only has to be > 0
        scale = torch.where(hi > lo, (hi - lo) / qmax, torch.ones_like(lo))
        zero = -lo / scale
        q = torch.round((x - lo) / scale).clamp(0, qmax)
        deq = lo + scale * q
    return deq, q, scale.squeeze(-1), zero.squeeze(-1)


@torch.no_grad()
def rtn_quantize(weight: torch.Tensor, bits: int = 4, group_size: int | None = 128, *,
                 zero_point: str = "integer") -> RTNResult:
    """Asymmetric per-group round-to-nearest quantisation of ``weight [out, in]``.

    Args:
        weight: floating ``[out, in]`` matrix (computed in float64).
        bits: bits per weight, 2..8 (``2**bits`` codes per group).
        group_size: input columns per group; ``None`` = one group per row. Need not divide
            ``in`` (the last group of each row is then shorter).
        zero_point: ``"integer"`` (GPTQ-style, range widened to contain 0) or ``"float"``
            (min-max); see the module docstring.

    Returns:
        :class:`RTNResult` with the de-quantised weight and the codes / scales / zeros.
    """
    _check_matrix("weight", weight)
    if isinstance(bits, bool) or not isinstance(bits, int) or not 2 <= bits <= 8:
        raise ValueError(f"bits: expected an int in 2..8, got {bits!r}")
    n = weight.shape[1]
    if group_size is None:
        group_size = n
    if isinstance(group_size, bool) or not isinstance(group_size, int) or group_size < 1:
        raise ValueError(f"group_size: expected a positive int or None, got {group_size!r}")
    group_size = min(group_size, n)
    if zero_point not in ("integer", "float"):
        raise ValueError(f"zero_point: expected 'integer' or 'float', got {zero_point!r}")
    qmax = 2**bits - 1
    w = weight.detach().to(torch.float64)
    rows = w.shape[0]
    full = (n // group_size) * group_size
    parts = []
    if full:
        parts.append(_rtn_groups(w[:, :full].reshape(rows, -1, group_size), qmax, zero_point))
    if full < n:  # the ragged last group of every row
        parts.append(_rtn_groups(w[:, full:].reshape(rows, 1, n - full), qmax, zero_point))
    deq = torch.cat([p[0].reshape(rows, -1) for p in parts], dim=1)
    codes = torch.cat([p[1].reshape(rows, -1) for p in parts], dim=1).to(torch.int16)
    scales = torch.cat([p[2] for p in parts], dim=1)
    zeros = torch.cat([p[3] for p in parts], dim=1)
    return RTNResult(deq.to(weight.dtype), codes, scales, zeros, bits, group_size)


# --------------------------------------------------------------------------- pruning
def input_norms_from_covariance(stats: Mapping[str, InputCovariance | torch.Tensor]
                                ) -> dict[str, torch.Tensor]:
    """``{name: ||X_j||_2 [in]}``: the per-feature input norms Wanda needs, read off the
    diagonal of the summed ``XᵀX`` (an :class:`InputCovariance` or an ``[in, in]`` tensor)."""
    out = {}
    for name, s in stats.items():
        xtx = s.xtx if isinstance(s, InputCovariance) else s
        if not isinstance(xtx, torch.Tensor) or xtx.dim() != 2 or xtx.shape[0] != xtx.shape[1]:
            raise ValueError(f"stats[{name!r}]: expected an InputCovariance or a square "
                             f"[in, in] tensor, got {getattr(xtx, 'shape', type(xtx))}")
        out[name] = torch.diagonal(xtx).clamp(min=0).sqrt()
    return out


def _prune_scores(weight: torch.Tensor, method: str,
                  input_norms: torch.Tensor | None) -> torch.Tensor:
    score = weight.detach().abs().to(torch.float64)
    if method == "magnitude":
        return score
    if method != "wanda":
        raise ValueError(f"method: expected 'magnitude' or 'wanda', got {method!r}")
    if input_norms is None:
        raise ValueError("input_norms: Wanda needs the calibration input norms ||X_j|| [in] "
                         "(see input_norms_from_covariance), got None")
    norms = torch.as_tensor(input_norms).detach().to(torch.float64, copy=False).flatten()
    if norms.numel() != weight.shape[1]:
        raise ValueError(f"input_norms: expected {weight.shape[1]} values (in_features), got "
                         f"{norms.numel()}")
    if not bool(torch.isfinite(norms).all()) or bool((norms < 0).any()):
        raise ValueError("input_norms: expected finite non-negative norms")
    return score * norms.to(score.device)[None, :]


@torch.no_grad()
def pruning_mask(weight: torch.Tensor, sparsity: float = 0.5, *, method: str = "magnitude",
                 input_norms: torch.Tensor | None = None,
                 n_m: tuple[int, int] | None = None) -> torch.Tensor:
    """Boolean keep-mask ``[out, in]`` (True = kept) for pruning ``weight [out, in]``.

    Args:
        weight: floating ``[out, in]`` matrix.
        sparsity: fraction of each row removed (unstructured): exactly
            ``floor(sparsity * in)`` entries per row. Ignored when ``n_m`` is given.
        method: ``"magnitude"`` (score ``|W_ij|``) or ``"wanda"`` (``|W_ij| ||X_j||``).
        input_norms: ``[in]`` calibration norms ``||X_j||_2`` (Wanda only).
        n_m: ``(N, M)``: keep the ``N`` best of every ``M`` consecutive columns instead
            (e.g. ``(2, 4)``); ``M`` must divide ``in``.
    """
    _check_matrix("weight", weight)
    score = _prune_scores(weight, method, input_norms)
    out, n = score.shape
    if n_m is not None:
        if (not isinstance(n_m, tuple | list) or len(n_m) != 2
                or not all(isinstance(v, int) and not isinstance(v, bool) for v in n_m)
                or not 0 < n_m[0] <= n_m[1]):
            raise ValueError(f"n_m: expected (N, M) ints with 0 < N <= M, got {n_m!r}")
        keep_n, m = n_m
        if n % m:
            raise ValueError(f"n_m: M = {m} must divide in_features = {n}")
        groups = score.reshape(out, n // m, m)
        # stable sort: ties keep the earlier column, so exactly N survive per group
        order = torch.sort(groups, dim=-1, descending=True, stable=True).indices
        mask = torch.zeros_like(groups, dtype=torch.bool)
        mask.scatter_(-1, order[..., :keep_n], True)
        return mask.reshape(out, n)
    if isinstance(sparsity, bool) or not 0.0 <= float(sparsity) < 1.0:
        raise ValueError(f"sparsity: expected a fraction in [0, 1), got {sparsity!r}")
    n_prune = math.floor(float(sparsity) * n)
    mask = torch.ones(out, n, dtype=torch.bool, device=weight.device)
    if n_prune:
        order = torch.sort(score, dim=1, stable=True).indices
        mask.scatter_(1, order[:, :n_prune], False)
    return mask


# --------------------------------------------------------------------------- model level
@dataclass(frozen=True)
class CompressionConfig:
    """What :func:`compress_model` does to each target linear.

    Attributes:
        method: ``"rtn"`` (quantise), ``"magnitude"`` or ``"wanda"`` (prune).
        bits, group_size, zero_point: RTN options (:func:`rtn_quantize`).
        sparsity: pruned fraction per row (unstructured pruning).
        n_m: ``(N, M)`` for N:M pruning instead of unstructured (e.g. ``(2, 4)``).
        target_modules: regex(es) selecting the linears (:func:`find_targets` rules).
    """

    method: str = "rtn"
    bits: int = 4
    group_size: int | None = 128
    zero_point: str = "integer"
    sparsity: float = 0.5
    n_m: tuple[int, int] | None = None
    target_modules: str | tuple[str, ...] = LLAMA_LINEARS

    def __post_init__(self) -> None:
        if self.method not in COMPRESSION_METHODS:
            raise ValueError(f"method: expected one of {list(COMPRESSION_METHODS)}, got "
                             f"{self.method!r}")
        if isinstance(self.sparsity, bool) or not 0.0 <= float(self.sparsity) < 1.0:
            raise ValueError(f"sparsity: expected a fraction in [0, 1), got {self.sparsity!r}")
        if self.method == "rtn" and self.n_m is not None:
            raise ValueError("n_m: N:M pruning needs method 'magnitude' or 'wanda', got "
                             "method 'rtn'")
        if not isinstance(self.target_modules, str):
            object.__setattr__(self, "target_modules", tuple(self.target_modules))
        check_patterns("target_modules", self.target_modules)

    @property
    def label(self) -> str:
        """Short human-readable description, e.g. ``4-bit RTN g128`` or ``50% Wanda``."""
        if self.method == "rtn":
            g = "row" if self.group_size is None else str(self.group_size)
            return f"{self.bits}-bit RTN g{g}"
        name = {"magnitude": "magnitude", "wanda": "Wanda"}[self.method]
        if self.n_m is not None:
            return f"{self.n_m[0]}:{self.n_m[1]} {name}"
        return f"{100 * self.sparsity:g}% {name}"


@dataclass(frozen=True)
class LayerError:
    """Compression error of one weight ``W [out, in]`` → ``W_c``.

    Attributes:
        name: qualified module name.
        shape: ``(out, in)``.
        relative_error: ``||W - W_c||_F / ||W||_F``.
        max_abs_error: ``max |W - W_c|``.
        sparsity: fraction of exact zeros in ``W_c``.
    """

    name: str
    shape: tuple[int, int]
    relative_error: float
    max_abs_error: float
    sparsity: float


@torch.no_grad()
def compress_weight(weight: torch.Tensor, config: CompressionConfig, *,
                    input_norms: torch.Tensor | None = None) -> torch.Tensor:
    """The simulated compressed ``W_c [out, in]`` of ``weight`` (same dtype) under
    ``config``."""
    if config.method == "rtn":
        return rtn_quantize(weight, config.bits, config.group_size,
                            zero_point=config.zero_point).weight
    mask = pruning_mask(weight, config.sparsity, method=config.method,
                        input_norms=input_norms, n_m=config.n_m)
    return weight.detach().masked_fill(~mask, 0.0)


def _linears(model: nn.Module, target_modules: str | Sequence[str]) -> dict[str, nn.Linear]:
    names = find_targets(model, target_modules)
    modules = dict(model.named_modules())
    owners: dict[int, int] = {}
    for _, p in model.named_parameters(remove_duplicate=False):
        owners[id(p)] = owners.get(id(p), 0) + 1
    for name in names:
        if owners[id(modules[name].weight)] > 1:
            raise ValueError(f"target_modules: the weight of {name!r} is shared with another "
                             "module (tied); compressing it would change that module too")
    return {name: modules[name] for name in names}


@torch.no_grad()
def compress_model(model: nn.Module, config: CompressionConfig, *,
                   input_norms: Mapping[str, torch.Tensor] | None = None
                   ) -> dict[str, LayerError]:
    """Compress the weights of the target linears of ``model`` in place.

    Args:
        model: any module; its selected ``nn.Linear`` weights are overwritten by ``W_c``
            (biases untouched).
        config: the compressor.
        input_norms: ``{name: ||X_j|| [in]}`` for every target (Wanda only; see
            :func:`input_norms_from_covariance`).

    Returns:
        ``{name: LayerError}`` in model order.
    """
    if not isinstance(config, CompressionConfig):
        raise TypeError(f"config: expected CompressionConfig, got {type(config).__name__}")
    linears = _linears(model, config.target_modules)
    if config.method == "wanda":
        missing = [n for n in linears if input_norms is None or n not in input_norms]
        if missing:
            raise ValueError(f"input_norms: Wanda needs the input norms of every target; "
                             f"missing {missing[:4]} ({len(missing)} of {len(linears)})")
    errors = {}
    for name, linear in linears.items():
        w = linear.weight
        norms = input_norms[name] if config.method == "wanda" else None
        wc = compress_weight(w, config, input_norms=norms)
        diff = (w.detach().to(torch.float64) - wc.to(torch.float64))
        ref = float(w.detach().to(torch.float64).norm())
        errors[name] = LayerError(
            name=name, shape=(w.shape[0], w.shape[1]),
            relative_error=float(diff.norm()) / ref if ref > 0 else float(diff.norm()),
            max_abs_error=float(diff.abs().max()),
            sparsity=float((wc == 0).double().mean()),
        )
        w.copy_(wc)
    return errors


def snapshot_weights(model: nn.Module, target_modules: str | Sequence[str] = LLAMA_LINEARS
                     ) -> dict[str, torch.Tensor]:
    """``{name: W [out, in]}``: detached copies of the target linears' weights (keep them
    before :func:`compress_model`; EoRA fits ``ΔW = W - W_c`` from them)."""
    return {n: m.weight.detach().clone() for n, m in _linears(model, target_modules).items()}


@torch.no_grad()
def restore_weights(model: nn.Module, weights: Mapping[str, torch.Tensor]) -> None:
    """Copy ``weights`` (from :func:`snapshot_weights`) back into the named linears."""
    modules = dict(model.named_modules())
    for name, w in weights.items():
        module = modules.get(name)
        if not isinstance(module, nn.Linear):
            raise ValueError(f"weights: {name!r} is not an nn.Linear of the model (got "
                             f"{type(module).__name__})")
        if tuple(module.weight.shape) != tuple(w.shape):
            raise ValueError(f"weights[{name!r}]: expected shape {tuple(module.weight.shape)}, "
                             f"got {tuple(w.shape)}")
        module.weight.copy_(w)
