"""8-bit block-wise optimizer moments (bitsandbytes-style, ``GaLoreAdamW(state_bits=8)``).

A moment tensor ``x`` (any shape, ``n`` elements) is flattened and cut into ``b``
blocks of equal size ``g = ceil(n / b)``, ``b = ceil(n / block_size)`` (so ``g <=
block_size``; the flat tensor is zero-padded by fewer than ``b`` elements). Each block
has one float32 scale; the codes are one byte per element:

* **first moment** ``M`` (signed): per-block absmax, ``s = absmax / 127``, int8 codes in
  ``[-127, 127]``, ``M ≈ s · q`` — the core's
  :func:`subspace_core.ops.quantize.quantize` (``bits=8, symmetric=True``) with
  stochastic rounding.
* **second moment** ``V`` (non-negative): its square root ``u = √V`` is stored with a
  linear *zero-free* unsigned map: ``s = absmax(u) / 256``, uint8 codes ``k ∈ [0, 255]``
  and ``u ≈ (k + 1) · s``, ``V ≈ ((k + 1) · s)²``. Why: Adam divides by ``√V``; a map
  that can return 0 for a small but non-zero ``V`` (any linear map with a zero code, the
  bitsandbytes-style ``V`` rounding of tiny entries next to a large one in the same block)
  turns the update of that element into ``m / ε`` and training blows up. With the zero-free
  map the smallest representable ``√V`` is ``absmax(u) / 256``, so an update is at most
  ``256 · |m| / absmax(u)`` (entries below the first code are over-estimated: a smaller,
  safer step); an all-zero block has ``absmax(u)`` floored at ``2⁻⁵⁴`` so that ``V > 0``
  (a normal float32) there too. Storing ``√V`` instead of ``V`` doubles the dynamic range in log terms
  (``V`` spans ``256² = 65536`` per block instead of 256), and ``√V`` is what the update
  uses; a relative error ``δ`` of ``√V`` is a relative error ``δ`` of the step.

Re-quantisation uses **stochastic rounding** (``floor(v + U[0, 1))``, unbiased): with
round-to-nearest an EMA increment below half a code (``(1 − β2)(g² − V)`` is 0.1 % of
``V`` with β2 = 0.999, far below the 1/256 code spacing of the largest entries) would be
rounded away at every step and ``V`` would freeze. The noise is drawn from generators
seeded from ``(seed, step, moment, n)`` (:func:`rounding_seed`), so re-quantisation is
a pure function of the state: a resumed run is bit-identical.

Block size: 256 by default (:data:`DEFAULT_BLOCK_SIZE`; bitsandbytes uses 2048 with a
non-linear "dynamic" code map; with the linear maps here, smaller blocks keep outliers from
coarsening the codes of a whole block, at 4 bytes of scale per block: 1.6 % of the codes).
Tensors with fewer than ``min_size`` elements (:data:`DEFAULT_MIN_SIZE` = 4096, as
bitsandbytes' ``min_8bit_size``) keep float32 moments.

Memory per moment of ``n >= min_size`` elements: ``b · g`` bytes of codes (``< n + b``) and
``4 b`` bytes of scales, i.e. ``n (1 + 4 / block_size)`` bytes: ``25.4 %`` of float32 at
the default block size.

State keys (for moment ``key``, e.g. ``"exp_avg"``): ``key + "_codes"`` (int8 ``[b, g]``
for the first moment, uint8 ``[b, g]`` for the second), ``key + "_scales"`` (float32
``[b]``) and ``"moment_shape"`` (int64 ``[ndim]``, the shape the moments have).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch

from subspace_core.ops.quantize import QuantizedTensor, dequantize, quantize

__all__ = [
    "DEFAULT_BLOCK_SIZE",
    "DEFAULT_MIN_SIZE",
    "block_layout",
    "check_block_size",
    "dequantize_sqrt_unsigned",
    "dequantized_moments",
    "quantize_sqrt_unsigned",
    "rounding_seed",
    "state_nbytes",
]

#: Elements per quantisation block (at most).
DEFAULT_BLOCK_SIZE = 256
#: Moments of tensors with fewer elements stay float32 (bitsandbytes' ``min_8bit_size``).
DEFAULT_MIN_SIZE = 4096
#: Floor of a block's absmax(√V): the smallest code value s = 2⁻⁶² then squares to a normal
#: float32 (4.7e-38), so even an all-zero block dequantises to V > 0.
_SQRT_V_FLOOR = 2.0**-54
_SIGNED_KEYS = ("exp_avg",)  # moments that can be negative; the others are second moments


def check_block_size(name: str, value: object) -> int:
    """Validate a block size (an int >= 2); return it."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 2:
        raise ValueError(f"{name}: expected an int >= 2, got {value!r}")
    return value


def block_layout(numel: int, block_size: int) -> tuple[int, int]:
    """``(blocks b, block length g)`` for ``numel`` elements: ``b = ceil(numel / block_size)``,
    ``g = ceil(numel / b) <= block_size`` (``b · g - numel < b`` padding elements)."""
    blocks = max(1, math.ceil(numel / block_size))
    return blocks, math.ceil(numel / blocks)


def _blocks(x: torch.Tensor, block_size: int) -> torch.Tensor:
    """``x`` flattened, zero-padded and viewed as ``[b, g]`` (float32)."""
    flat = x.detach().reshape(-1).float()
    b, g = block_layout(flat.numel(), block_size)
    if b * g != flat.numel():
        flat = torch.nn.functional.pad(flat, (0, b * g - flat.numel()))
    return flat.view(b, g)


def rounding_seed(seed: int, step: int, moment: int, numel: int) -> int:
    """Seed of the stochastic rounding of one moment at one (1-based) step."""
    return (((int(seed) * 1_000_003 + int(step)) * 31 + moment) * 1_000_033 + numel) % (2**63 - 1)


def quantize_sqrt_unsigned(V: torch.Tensor, block_size: int, seed: int
                           ) -> tuple[torch.Tensor, torch.Tensor]:
    """Codes (uint8 ``[b, g]``) and scales (float32 ``[b]``) of ``√V`` (zero-free map).

    ``V >= 0`` of any shape; ``k = clamp(floor(√V / s − 1 + U), 0, 255)``, ``s = absmax / 256``.
    """
    u = _blocks(V, block_size).sqrt()
    scales = u.amax(dim=1).clamp_(min=_SQRT_V_FLOOR).div_(256.0)
    gen = torch.Generator(device=u.device).manual_seed(seed)
    noise = torch.rand(u.shape, generator=gen, device=u.device, dtype=torch.float32)
    v = u.div_(scales[:, None]).sub_(1.0).add_(noise).floor_().clamp_(0.0, 255.0)
    return v.to(torch.uint8), scales


def dequantize_sqrt_unsigned(codes: torch.Tensor, scales: torch.Tensor,
                             shape: Sequence[int]) -> torch.Tensor:
    """``V ≈ ((k + 1) · s)²`` reshaped to ``shape`` (float32)."""
    u = (codes.float() + 1.0).mul_(scales[:, None])
    numel = math.prod(shape)
    return u.square_().reshape(-1)[:numel].reshape(tuple(shape))


def _quantize_signed(M: torch.Tensor, block_size: int, seed: int
                     ) -> tuple[torch.Tensor, torch.Tensor]:
    x = _blocks(M, block_size)
    q = quantize(x, bits=8, group_size=x.shape[1], symmetric=True, stochastic=True, seed=seed)
    return q.data, q.scales.reshape(-1)


def _dequantize_signed(codes: torch.Tensor, scales: torch.Tensor,
                       shape: Sequence[int]) -> torch.Tensor:
    q = QuantizedTensor(data=codes, scales=scales[:, None], zeros=None, shape=tuple(codes.shape),
                        bits=8, group_size=codes.shape[1])
    numel = math.prod(shape)
    return dequantize(q, torch.float32).reshape(-1)[:numel].reshape(tuple(shape))


@contextmanager
def dequantized_moments(state: dict[str, Any], keys: Sequence[str], block_size: int,
                        min_size: int, seed: int = 0) -> Iterator[dict[str, Any]]:
    """Yield a working copy of ``state`` whose moments ``keys`` are float32 tensors.

    On entry, moments stored quantised (``key + "_codes"``) are dequantised; on normal
    exit, every moment of the working copy with at least ``min_size`` elements is
    re-quantised into ``state`` (the others are stored as float32) and the other entries
    of the working copy (``step``, ``projector``, ...) are written back. If the body
    raises, ``state`` is left as it was.
    """
    work = {k: v for k, v in state.items()
            if k != "moment_shape" and not k.endswith(("_codes", "_scales"))}
    for key in keys:
        if key + "_codes" in state:
            shape = state["moment_shape"].tolist()
            codes, scales = state[key + "_codes"], state[key + "_scales"]
            work[key] = (_dequantize_signed(codes, scales, shape) if key in _SIGNED_KEYS
                         else dequantize_sqrt_unsigned(codes, scales, shape))
    yield work
    for k, v in work.items():
        if k not in keys:
            state[k] = v
    step = work.get("step", 0)
    step = int(step.item()) if isinstance(step, torch.Tensor) else int(step)
    for i, key in enumerate(keys):
        x = work.get(key)
        if x is None:
            continue
        if x.numel() < min_size:
            state[key] = x
            for suffix in ("_codes", "_scales"):
                state.pop(key + suffix, None)
            continue
        s = rounding_seed(seed, step, i, x.numel())
        codes, scales = (_quantize_signed(x, block_size, s) if key in _SIGNED_KEYS
                         else quantize_sqrt_unsigned(x, block_size, s))
        state[key + "_codes"], state[key + "_scales"] = codes, scales
        state["moment_shape"] = torch.tensor(tuple(x.shape), dtype=torch.int64)
        state.pop(key, None)


def state_nbytes(state: dict[str, Any]) -> int:
    """Bytes of all tensors in a (nested) state dict."""
    total = 0
    for v in state.values():
        if isinstance(v, torch.Tensor):
            total += v.numel() * v.element_size()
        elif isinstance(v, dict):
            total += state_nbytes(v)
    return total
