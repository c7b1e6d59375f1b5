"""Long convolutions by FFT: how S4 / S4D apply their kernels in O(L log L)."""

from __future__ import annotations

import torch

__all__ = ["fft_conv"]


def fft_conv(u: torch.Tensor, k: torch.Tensor, k_rev: torch.Tensor | None = None) -> torch.Tensor:
    """``y_l = Σ_{j ≤ l} k[l − j] u_j  (+ Σ_{j > l} k_rev[j − l − 1] u_j)``.

    Args:
        u: ``[..., H, L]`` real input.
        k: ``[H, L]`` causal kernel.
        k_rev: ``[H, L]`` anti-causal kernel (bidirectional layers) or None.

    Returns ``[..., H, L]``. Zero-padding to 2L makes the circular FFT convolution linear.
    """
    L = u.shape[-1]
    if k.shape[-1] != L or (k_rev is not None and k_rev.shape[-1] != L):
        raise ValueError(f"k: expected kernels of length L={L}, got {tuple(k.shape)}")
    kk = torch.nn.functional.pad(k, (0, L))
    if k_rev is not None:
        # position 2L − m of the circular kernel multiplies u_{l+m}: the future, m >= 1
        kk = kk + torch.nn.functional.pad(k_rev.flip(-1), (L, 0))
    n = 2 * L
    y = torch.fft.irfft(torch.fft.rfft(u.float(), n=n) * torch.fft.rfft(kk.float(), n=n), n=n)
    return y[..., :L].to(u.dtype)
