"""Q-GaLore's INT8 weights: group-quantised storage, updated with stochastic rounding.

Q-GaLore keeps the trained weights in INT8 (group-wise scales) instead of BF16/FP32. An
update is applied as *dequantise → add the update → re-quantise*; with round-to-nearest an
update smaller than half a quantisation step is rounded away every time and training
stalls, so the re-quantisation uses **stochastic rounding** (SR): a value ``v`` between two
codes goes up with probability ``v − ⌊v⌋``, so ``E[dequant(quant(w))] = w`` and small
updates survive in expectation. Quantisation itself is the core's
:func:`subspace_core.ops.quantize.quantize` (``bits=8``; its module docstring is the spec).

Scheme (:class:`Int8Weight`)
----------------------------

The weight ``w`` of shape ``S`` is flattened and cut into groups of ``group_size``
consecutive elements (Q-GaLore's grouping; default 256, ``None`` = one group per row
``S[0]``). Each group ``g`` has an fp32 scale ``s_g`` that is recomputed from the group's
own range at every re-quantisation (as Q-GaLore and torchao do):

* symmetric (default): ``s = absmax / 127``, codes ``q = rnd(w / s) ∈ [-127, 127]``,
  ``w ≈ s·q``;
* asymmetric: ``s = (max − min) / 255``, ``z = −min / s`` (fp32, unrounded), uint8 code
  ``u = rnd((w − min) / s) ∈ [0, 255]`` stored as int8 ``q = u − 128 ∈ [-128, 127]``,
  ``w ≈ s·(q + 128 − z)``;

where ``rnd`` is round-half-to-even (``stochastic=False``) or ``⌊v + U[0, 1)⌋``
(``stochastic=True``). A group's extreme element is exactly representable, and because a
re-quantisation changes ``s`` only by the relative change of the extreme, the grid moves
by a fraction of the update: SR noise per step stays of order ``√(s · |update|)``.

Stochastic rounding draws from an explicit ``torch.Generator`` (required: there is no
silent use of the global RNG). :func:`rounding_generator` seeds one from
``(seed, step, stream)``, so an optimizer that keeps ``step`` in its state re-quantises
bit-identically after a resume.

Memory (persistent; ``G`` = group size, per weight element)
------------------------------------------------------------

=======================  =========================  ======================
storage                  bytes / element            G = 256
=======================  =========================  ======================
fp32 weight              4                          4
bf16 weight              2                          2
INT8 symmetric           1 + 4/G                    1.0156 (3.94x < fp32)
INT8 asymmetric          1 + 8/G                    1.0313
=======================  =========================  ======================

Transient float copies, one layer at a time (not persistent): the forward pass of
:class:`QuantizedLinear` dequantises ``W`` in the activation dtype for the matmul and frees
it (autograd saves the INT8 codes, not ``W``); the backward pass dequantises it again for
``∂L/∂x``; the weight gradient ``[out, in]`` (proxy dtype) lives in ``weight.grad`` until
``zero_grad`` exactly as for a float weight (per-layer stepping frees it early); the
optimizer step dequantises one fp32 ``W`` (plus its update) per parameter. The optimizer's
own state (GaLore's projected moments) is not affected by the weight format.

Autograd design (:class:`QuantizedLinear`)
------------------------------------------

The persistent copy of the weight is the buffers ``weight_codes`` (int8 ``[out, in]``),
``weight_scales`` (fp32 ``[n_groups]``) and, asymmetric, ``weight_zeros`` (fp32
``[n_groups]``). ``weight`` is an ``nn.Parameter`` of shape ``[out, in]`` that is only a
*gradient handle*: a single NaN element expanded with zero strides (4 bytes), which

* receives ``∂L/∂W`` from the layer's autograd function, so ``p.grad`` has the weight's
  shape and parameter-group helpers (``galore_param_groups``) and the optimizer see a
  normal 2-D weight;
* cannot be updated in place: ``add_``/``mul_``/``copy_`` on a zero-stride tensor raise, so
  an optimizer that does not know about INT8 weights (``torch.optim.AdamW``) fails loudly
  instead of silently updating nothing; reading its value gives NaN.

An INT8-aware optimizer finds the weight with :func:`int8_weight_of` and updates it with
:func:`int8_inplace_update` / :func:`apply_update_int8`. ``state_dict()`` holds the codes,
scales (zeros) and bias, never the handle; ``load_state_dict`` also accepts a float
``weight`` (an ``nn.Linear`` checkpoint), which it quantises with round-to-nearest.
"""

from __future__ import annotations

import math
import re
import weakref
from collections.abc import Callable, Sequence

import torch
from torch import nn

from subspace_core.ops.quantize import QuantizedTensor, dequantize, quantize

__all__ = [
    "DEFAULT_GROUP_SIZE",
    "Int8Weight",
    "QuantizedLinear",
    "apply_update_int8",
    "convert_linear_to_int8",
    "int8_inplace_update",
    "int8_weight_of",
    "rounding_generator",
]

#: Q-GaLore's group size (elements of the flattened weight per scale).
DEFAULT_GROUP_SIZE = 256
#: Offset between the core's asymmetric uint8 codes and the stored int8 codes.
_ASYM_OFFSET = 128


def _resolve_group_size(shape: tuple[int, ...], group_size: int | None) -> int:
    numel = math.prod(shape)
    if numel == 0:
        raise ValueError(f"shape: expected a non-empty weight, got {shape}")
    if group_size is None:
        return numel // shape[0]
    if isinstance(group_size, bool) or not isinstance(group_size, int) or group_size < 1:
        raise ValueError(f"group_size: expected a positive int or None, got {group_size!r}")
    if numel % group_size:
        raise ValueError(
            f"group_size: expected a divisor of the {numel} elements of a weight of shape "
            f"{shape}, got {group_size} (use group_size=None for one group per row)"
        )
    return group_size


def _check_generator(generator: torch.Generator | None, device: torch.device,
                     stochastic: bool) -> None:
    if generator is None:
        if stochastic:
            raise ValueError(
                "generator: expected a torch.Generator for stochastic rounding (e.g. "
                "rounding_generator(seed, step, device=...)), got None"
            )
        return
    if not isinstance(generator, torch.Generator):
        raise TypeError(f"generator: expected a torch.Generator, got {type(generator).__name__}")
    if torch.device(generator.device).type != torch.device(device).type:
        raise ValueError(f"generator: expected one on {torch.device(device).type} (the weight's "
                         f"device), got one on {generator.device}")


def rounding_generator(seed: int, step: int, stream: int = 0,
                       device: torch.device | str = "cpu") -> torch.Generator:
    """A generator for the stochastic rounding of update ``step`` of weight ``stream``.

    Seeded from ``(seed, step, stream)`` only, so a resumed run draws the same noise.
    """
    for name, value in (("seed", seed), ("step", step), ("stream", stream)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ValueError(f"{name}: expected a non-negative int, got {value!r}")
    g = torch.Generator(device=device)
    g.manual_seed((seed * 1_000_003 + step * 7_919 + stream * 104_729) % (2**63 - 1))
    return g


class Int8Weight:
    """A group-wise INT8 weight (see the module docstring for the scheme).

    Args:
        codes: int8 tensor of the weight's shape ``S``.
        scales: float32 ``[numel(S) // group_size]``, one per group of the flattened weight.
        zeros: float32 ``[numel(S) // group_size]`` zero-points in uint8-code units
            (asymmetric: ``w ≈ s·(codes + 128 − zeros)``), or None (symmetric: ``w ≈ s·codes``).
        group_size: elements per group, a divisor of ``numel(S)``.

    The tensors are used, not copied: :meth:`quantize` writes into them in place, so an
    ``Int8Weight`` built on a module's buffers updates those buffers.
    """

    def __init__(self, codes: torch.Tensor, scales: torch.Tensor,
                 zeros: torch.Tensor | None = None, *, group_size: int) -> None:
        if not isinstance(codes, torch.Tensor) or codes.dtype != torch.int8:
            got = codes.dtype if isinstance(codes, torch.Tensor) else type(codes).__name__
            raise TypeError(f"codes: expected an int8 tensor, got {got}")
        shape = tuple(codes.shape)
        group_size = _resolve_group_size(shape, group_size)
        groups = codes.numel() // group_size
        for name, t in (("scales", scales), ("zeros", zeros)):
            if t is None:
                continue
            if t.dtype != torch.float32 or tuple(t.shape) != (groups,):
                raise ValueError(f"{name}: expected a float32 tensor of shape ({groups},) for "
                                 f"{shape} codes in groups of {group_size}, got {t.dtype} "
                                 f"{tuple(t.shape)}")
            if t.device != codes.device:
                raise ValueError(f"{name}: expected device {codes.device} (that of codes), got "
                                 f"{t.device}")
        self.codes, self.scales, self.zeros = codes, scales, zeros
        self.group_size = group_size

    # ------------------------------------------------------------ constructors
    @classmethod
    def empty(cls, shape: Sequence[int] | torch.Size, *,
              group_size: int | None = DEFAULT_GROUP_SIZE, symmetric: bool = True,
              device: torch.device | str | None = None) -> Int8Weight:
        """An all-zero weight of ``shape`` (codes 0, scales 1; zero-points 128)."""
        shape = tuple(int(n) for n in shape)
        size = _resolve_group_size(shape, group_size)
        groups = math.prod(shape) // size
        codes = torch.zeros(shape, dtype=torch.int8, device=device)
        scales = torch.ones(groups, dtype=torch.float32, device=device)
        zeros = None if symmetric else torch.full((groups,), float(_ASYM_OFFSET),
                                                  dtype=torch.float32, device=device)
        return cls(codes, scales, zeros, group_size=size)

    @classmethod
    def from_float(cls, w: torch.Tensor, *, group_size: int | None = DEFAULT_GROUP_SIZE,
                   symmetric: bool = True, generator: torch.Generator | None = None,
                   stochastic: bool = False) -> Int8Weight:
        """Quantise float ``w`` (round-to-nearest unless ``stochastic``)."""
        q = cls.empty(w.shape, group_size=group_size, symmetric=symmetric, device=w.device)
        q.quantize(w, generator, stochastic=stochastic)
        return q

    # -------------------------------------------------------------- properties
    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.codes.shape)

    @property
    def symmetric(self) -> bool:
        return self.zeros is None

    @property
    def device(self) -> torch.device:
        return self.codes.device

    @property
    def nbytes(self) -> int:
        """Persistent bytes: codes + scales (+ zero-points)."""
        return sum(t.numel() * t.element_size() for t in self.tensors().values())

    def tensors(self) -> dict[str, torch.Tensor]:
        """``{"codes", "scales"(, "zeros")}``: what to save (e.g. with safetensors)."""
        out = {"codes": self.codes, "scales": self.scales}
        if self.zeros is not None:
            out["zeros"] = self.zeros
        return out

    # ------------------------------------------------------------ (de)quantise
    def _core(self) -> QuantizedTensor:
        rows = self.codes.numel() // self.group_size
        data = self.codes.reshape(rows, self.group_size)
        if self.zeros is not None:
            data = (data.to(torch.int16) + _ASYM_OFFSET).to(torch.uint8)
        return QuantizedTensor(
            data=data, scales=self.scales.reshape(rows, 1),
            zeros=None if self.zeros is None else self.zeros.reshape(rows, 1),
            shape=(rows, self.group_size), bits=8, group_size=self.group_size,
        )

    def dequantize(self, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """The float weight ``[S]`` in ``dtype`` (computed in float32)."""
        return dequantize(self._core(), dtype).reshape(self.shape)

    @torch.no_grad()
    def quantize(self, w: torch.Tensor, generator: torch.Generator | None = None, *,
                 stochastic: bool = True) -> None:
        """Re-quantise float ``w`` (shape ``S``) into this weight, in place.

        Args:
            w: float tensor of the weight's shape and device, without NaN/Inf.
            generator: the rounding noise's generator (required when ``stochastic``), on
                ``w``'s device type; consumed, so reuse it only on purpose.
            stochastic: unbiased stochastic rounding (default) or round-to-nearest-even.

        Scales (and zero-points) are recomputed from ``w``'s groups.
        """
        if not isinstance(w, torch.Tensor) or not w.dtype.is_floating_point:
            got = w.dtype if isinstance(w, torch.Tensor) else type(w).__name__
            raise TypeError(f"w: expected a floating-point tensor, got {got}")
        if tuple(w.shape) != self.shape:
            raise ValueError(f"w: expected shape {self.shape}, got {tuple(w.shape)}")
        if w.device != self.device:
            raise ValueError(f"w: expected device {self.device}, got {w.device}")
        _check_generator(generator, w.device, stochastic)
        if not torch.isfinite(w).all():
            raise ValueError(f"w: the {self.shape} weight contains NaN or Inf; refusing to "
                             "quantise it")
        x = w.detach().reshape(-1, self.group_size)
        q = quantize(x, bits=8, group_size=self.group_size, symmetric=self.symmetric,
                     stochastic=stochastic, generator=generator if stochastic else None)
        data = q.data
        if self.zeros is not None:
            data = (data.to(torch.int16) - _ASYM_OFFSET).to(torch.int8)
            self.zeros.copy_(q.zeros.reshape(-1))
        self.codes.copy_(data.reshape(self.shape))
        self.scales.copy_(q.scales.reshape(-1))


# ---------------------------------------------------------------------- updates
@torch.no_grad()
def int8_inplace_update(qweight: Int8Weight, fn: Callable[[torch.Tensor], object],
                        generator: torch.Generator | None, *,
                        stochastic: bool = True) -> None:
    """Dequantise to a float32 ``W``, run ``fn(W)`` (an in-place update), re-quantise.

    E.g. ``int8_inplace_update(qw, lambda W: projected_adam(W, grad, P, M, V, ...), gen)``:
    any optimizer step written for float weights applies to an INT8 weight this way.
    """
    W = qweight.dequantize(torch.float32)
    fn(W)
    qweight.quantize(W, generator, stochastic=stochastic)


@torch.no_grad()
def apply_update_int8(qweight: Int8Weight, update: torch.Tensor,
                      generator: torch.Generator | None, *, alpha: float = 1.0,
                      stochastic: bool = True) -> None:
    """``W ← quant(dequant(W) + alpha · update)`` with stochastic rounding, in place.

    Args:
        qweight: the INT8 weight (e.g. ``module.qweight`` or :func:`int8_weight_of`).
        update: float tensor of the weight's shape (e.g. ``-lr · Adam direction``).
        generator: rounding generator (required when ``stochastic``).
        alpha: multiplier of ``update``.
        stochastic: False rounds to nearest (small updates are then lost: for ablations).
    """
    if not isinstance(update, torch.Tensor) or tuple(update.shape) != qweight.shape:
        got = tuple(update.shape) if isinstance(update, torch.Tensor) else type(update).__name__
        raise ValueError(f"update: expected a tensor of shape {qweight.shape}, got {got}")
    int8_inplace_update(qweight, lambda W: W.add_(update.to(W.device, torch.float32),
                                                  alpha=alpha),
                        generator, stochastic=stochastic)


# ------------------------------------------------------------------------ module
def _handle(shape: tuple[int, ...], dtype: torch.dtype,
            device: torch.device | str | None) -> torch.Tensor:
    """One NaN element expanded (zero strides) to ``shape``: 4 bytes, not writable."""
    return torch.full((), float("nan"), dtype=dtype, device=device).expand(shape)


class _Int8LinearFunction(torch.autograd.Function):
    """``y = x Wᵀ + b`` with ``W`` dequantised from INT8 codes; ∂L/∂W goes to the handle."""

    @staticmethod
    def forward(ctx, x, handle, bias, codes, scales, zeros, group_size):
        W = Int8Weight(codes, scales, zeros, group_size=group_size).dequantize(x.dtype)
        ctx.save_for_backward(x, codes, scales, zeros)
        ctx.group_size = group_size
        return nn.functional.linear(x, W, None if bias is None else bias.to(x.dtype))

    @staticmethod
    def backward(ctx, grad_out):
        x, codes, scales, zeros = ctx.saved_tensors
        grad_x = grad_w = grad_b = None
        if ctx.needs_input_grad[0]:
            W = Int8Weight(codes, scales, zeros, group_size=ctx.group_size)
            grad_x = grad_out @ W.dequantize(grad_out.dtype)
        g2 = grad_out.reshape(-1, grad_out.shape[-1])
        if ctx.needs_input_grad[1]:
            grad_w = g2.T @ x.reshape(-1, x.shape[-1]).to(g2.dtype)
        if ctx.needs_input_grad[2]:
            grad_b = g2.sum(0)
        return grad_x, grad_w, grad_b, None, None, None, None


class QuantizedLinear(nn.Module):
    """``nn.Linear`` whose weight is stored in INT8 (see the module docstring).

    Args:
        in_features, out_features, bias: as ``nn.Linear``.
        group_size: elements of the flattened ``[out, in]`` weight per scale (a divisor of
            ``out · in``); None: one group per output row.
        symmetric: absmax int8 codes ``[-127, 127]`` (default) or min-max codes with
            zero-points (stored as int8 ``[-128, 127]``).
        dtype: dtype of the gradient handle ``weight`` (hence of ``weight.grad``) and bias.
        device: device of everything.

    Buffers (persistent): ``weight_codes`` int8 ``[out, in]``, ``weight_scales`` float32
    ``[n_groups]``, ``weight_zeros`` float32 ``[n_groups]`` (asymmetric only). Parameters:
    ``weight`` (gradient handle, ``[out, in]``, 4 bytes of storage) and ``bias``.
    The forward computes in the input's dtype. Codes start at zero: use
    :meth:`from_linear`, :meth:`load_state_dict` or ``qweight.quantize``.
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True, *,
                 group_size: int | None = DEFAULT_GROUP_SIZE, symmetric: bool = True,
                 dtype: torch.dtype = torch.float32,
                 device: torch.device | str | None = None) -> None:
        super().__init__()
        for name, value in (("in_features", in_features), ("out_features", out_features)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name}: expected a positive int, got {value!r}")
        if not dtype.is_floating_point:
            raise TypeError(f"dtype: expected a floating dtype, got {dtype}")
        self.in_features, self.out_features = in_features, out_features
        q = Int8Weight.empty((out_features, in_features), group_size=group_size,
                             symmetric=symmetric, device=device)
        self.group_size = q.group_size
        self.register_buffer("weight_codes", q.codes)
        self.register_buffer("weight_scales", q.scales)
        if not symmetric:
            self.register_buffer("weight_zeros", q.zeros)
        self.weight = nn.Parameter(_handle((out_features, in_features), dtype, device))
        self._register_handle()
        self.bias = (nn.Parameter(torch.zeros(out_features, dtype=dtype, device=device))
                     if bias else None)

    def _register_handle(self) -> None:
        self.weight._subzoo_int8_module = weakref.ref(self)

    @property
    def symmetric(self) -> bool:
        return "weight_zeros" not in self._buffers

    @property
    def qweight(self) -> Int8Weight:
        """The INT8 weight, on this module's buffers (updates write into them)."""
        return Int8Weight(self.weight_codes, self.weight_scales,
                          self._buffers.get("weight_zeros"), group_size=self.group_size)

    def dequantized_weight(self, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """A float copy of the weight ``[out, in]``."""
        return self.qweight.dequantize(dtype)

    @classmethod
    def from_linear(cls, linear: nn.Linear, *, group_size: int | None = DEFAULT_GROUP_SIZE,
                    symmetric: bool = True) -> QuantizedLinear:
        """Quantise ``linear`` (round-to-nearest); the bias is copied, dtypes kept."""
        if not isinstance(linear, nn.Linear):
            raise TypeError(f"linear: expected an nn.Linear, got {type(linear).__name__}")
        w = linear.weight
        module = cls(linear.in_features, linear.out_features, linear.bias is not None,
                     group_size=group_size, symmetric=symmetric, dtype=w.dtype,
                     device=w.device)
        module.qweight.quantize(w.detach(), None, stochastic=False)
        if linear.bias is not None:
            with torch.no_grad():
                module.bias.copy_(linear.bias)
            module.bias.requires_grad_(linear.bias.requires_grad)
        module.weight.requires_grad_(w.requires_grad)
        return module

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] != self.in_features:
            raise ValueError(f"x: expected last dim {self.in_features} (in_features), got shape "
                             f"{tuple(x.shape)}")
        return _Int8LinearFunction.apply(
            x, self.weight, self.bias, self.weight_codes, self.weight_scales,
            self._buffers.get("weight_zeros"), self.group_size,
        )

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"bias={self.bias is not None}, group_size={self.group_size}, "
                f"symmetric={self.symmetric}")

    # ----------------------------------------------- keep the handle a handle
    def _apply(self, fn, recurse=True):
        # Let .to()/.cuda()/.half() move codes and the bias, but keep the scales float32
        # and re-create the handle (applying fn to it would materialise [out, in]).
        params = self._parameters
        handle = params["weight"]
        keep = {name: self._buffers[name] for name in ("weight_scales", "weight_zeros")
                if name in self._buffers}
        self._parameters = {k: v for k, v in params.items() if k != "weight"}
        try:
            out = super()._apply(fn, recurse)
        finally:
            kept = self._parameters
            self._parameters = params
            for k, v in kept.items():
                params[k] = v
        device = self.weight_codes.device
        for name, t in keep.items():
            self._buffers[name] = t.to(device)
        probe = fn(torch.zeros((), dtype=handle.dtype, device=handle.device))
        handle.data = _handle(tuple(handle.shape), probe.dtype, device)
        if handle.grad is not None:
            handle.grad = fn(handle.grad)
        return out

    def __setstate__(self, state):
        # copy.deepcopy / pickle clone the handle into a dense tensor: make it a handle again
        super().__setstate__(state)
        handle = self._parameters["weight"]
        handle.data = _handle(tuple(handle.shape), handle.dtype, handle.device)
        self._register_handle()

    def _save_to_state_dict(self, destination, prefix, keep_vars):
        super()._save_to_state_dict(destination, prefix, keep_vars)
        destination.pop(prefix + "weight", None)

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys,
                              unexpected_keys, error_msgs):
        params = self._parameters
        self._parameters = {k: v for k, v in params.items() if k != "weight"}
        try:
            super()._load_from_state_dict(state_dict, prefix, local_metadata, strict,
                                          missing_keys, unexpected_keys, error_msgs)
        finally:
            self._parameters = params
        key = prefix + "weight"
        if key not in state_dict:
            return
        if key in unexpected_keys:
            unexpected_keys.remove(key)
        w = state_dict[key]
        shape = (self.out_features, self.in_features)
        if prefix + "weight_codes" in state_dict:
            error_msgs.append(f"{key}: expected either a float weight or INT8 codes "
                              f"({prefix}weight_codes), got both")
        elif not isinstance(w, torch.Tensor) or not w.dtype.is_floating_point \
                or tuple(w.shape) != shape:
            got = (f"{w.dtype} {tuple(w.shape)}" if isinstance(w, torch.Tensor)
                   else type(w).__name__)
            error_msgs.append(f"{key}: expected a float tensor of shape {shape}, got {got}")
        else:
            self.qweight.quantize(w.to(self.weight_codes.device), None, stochastic=False)
            for name in ("weight_codes", "weight_scales", "weight_zeros"):
                if prefix + name in missing_keys:
                    missing_keys.remove(prefix + name)


def int8_weight_of(p: torch.Tensor) -> Int8Weight | None:
    """The :class:`Int8Weight` behind gradient handle ``p`` (a QuantizedLinear's ``weight``),
    or None for an ordinary parameter."""
    ref = getattr(p, "_subzoo_int8_module", None)
    module = ref() if ref is not None else None
    if module is None or module._parameters.get("weight") is not p:
        return None
    return module.qweight


def convert_linear_to_int8(model: nn.Module, target_modules: str | Sequence[str], *,
                           group_size: int | None = DEFAULT_GROUP_SIZE,
                           symmetric: bool = True) -> list[str]:
    """Replace the ``nn.Linear`` modules whose name matches by :class:`QuantizedLinear`.

    A module matches when any regex of ``target_modules`` is found (``re.search``) in its
    qualified name (as ``galore_param_groups``). Returns the replaced names.

    Raises ValueError when nothing matches, when a matching module is a *subclass* of
    ``nn.Linear`` (its forward or its parent may read ``.weight`` directly), when a matching
    weight is shared with another module (tied), or when ``group_size`` does not fit.
    """
    if isinstance(target_modules, str):
        target_modules = (target_modules,)
    patterns = [re.compile(p) for p in target_modules]
    if not patterns:
        raise ValueError("target_modules: expected at least one name pattern, got none")
    owners: dict[int, int] = {}
    for _, p in model.named_parameters(remove_duplicate=False):
        owners[id(p)] = owners.get(id(p), 0) + 1
    chosen: list[tuple[str, nn.Linear]] = []
    for name, module in model.named_modules():
        if not name or not isinstance(module, nn.Linear) \
                or not any(p.search(name) for p in patterns):
            continue
        if type(module) is not nn.Linear:
            raise ValueError(f"target_modules: {name!r} is a {type(module).__name__}, a subclass "
                             "of nn.Linear that may read .weight directly; expected plain "
                             "nn.Linear modules only (narrow the patterns)")
        if owners[id(module.weight)] > 1:
            raise ValueError(f"target_modules: the weight of {name!r} is shared with another "
                             "module (tied); quantising it would untie it")
        chosen.append((name, module))
    if not chosen:
        names = [n for n, m in model.named_modules() if isinstance(m, nn.Linear)][:20]
        raise ValueError(f"target_modules: no nn.Linear module matches {list(target_modules)}; "
                         f"linear modules are e.g. {names}")
    for name, module in chosen:
        try:
            new = QuantizedLinear.from_linear(module, group_size=group_size,
                                              symmetric=symmetric)
        except ValueError as err:
            raise ValueError(f"{name}: {err}") from None
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, child, new)
    return [name for name, _ in chosen]
