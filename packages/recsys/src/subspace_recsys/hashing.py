"""64-bit integer hashing in torch int64 arithmetic (shared by the tables and sharding).

torch has no uint64 arithmetic, but int64 addition and multiplication wrap modulo 2**64,
which is exactly what the unsigned algorithms need; only right shifts differ (torch's are
arithmetic), hence :func:`shr64`. Constants are written as the signed int64 with the same
bits (:func:`signed64`).
"""

from __future__ import annotations

import torch

__all__ = ["GOLDEN64", "fmix64", "shr64", "signed64", "splitmix64"]

_MASK64 = (1 << 64) - 1


def signed64(x: int) -> int:
    """The int64 with the same 64 bits as the unsigned ``x`` (reduced modulo 2**64)."""
    x &= _MASK64
    return x - (1 << 64) if x >= 1 << 63 else x


#: The golden-ratio increment of SplitMix64, as a signed int64.
GOLDEN64 = signed64(0x9E3779B97F4A7C15)
_SPLITMIX_1 = signed64(0xBF58476D1CE4E5B9)
_SPLITMIX_2 = signed64(0x94D049BB133111EB)
_FMIX_1 = signed64(0xFF51AFD7ED558CCD)
_FMIX_2 = signed64(0xC4CEB9FE1A85EC53)


def shr64(x: torch.Tensor, shift: int) -> torch.Tensor:
    """Logical right shift of int64 ``x`` by ``shift`` in ``[1, 63]`` (torch shifts int64
    arithmetically; clearing the copied sign bits makes ``x ^ (x >> s)`` a bijection)."""
    return (x >> shift) & ((1 << (64 - shift)) - 1)


def splitmix64(x: torch.Tensor) -> torch.Tensor:
    """SplitMix64's output function (Steele, Lea & Flood 2014) of int64 ``x`` [*] -> [*].

    A bijection in which every input bit flips about half of the output bits, so ids like
    ``(field << 40) | value`` spread evenly. Callers add their own state/salt first.
    """
    x = (x ^ shr64(x, 30)) * _SPLITMIX_1
    x = (x ^ shr64(x, 27)) * _SPLITMIX_2
    return x ^ shr64(x, 31)


def fmix64(x: torch.Tensor) -> torch.Tensor:
    """murmur3's 64-bit finaliser of int64 ``x`` [*] -> [*] (a bijection, full avalanche)."""
    x = (x ^ shr64(x, 33)) * _FMIX_1
    x = (x ^ shr64(x, 33)) * _FMIX_2
    return x ^ shr64(x, 33)
