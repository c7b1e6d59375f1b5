"""Long convolutions by FFT: how S4 / S4D apply their kernels in O(L log L)."""

from __future__ import annotations

import torch

__all__ = ["fft_conv", "fft_conv_mimo"]


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


def fft_conv_mimo(u: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """Causal multi-input multi-output convolution ``y_l = Σ_{j ≤ l} k[l − j] @ u_j``.

    Args:
        u: ``[batch, L, H_in]`` real input (time on dim 1, as S5 holds it).
        k: ``[L, H_out, H_in]`` real kernel (a matrix per lag).

    Returns ``[batch, L, H_out]``. One real FFT of the input and of the kernel, a per-frequency
    matrix product (``batch · H_out · H_in`` complex products per frequency), one inverse FFT.
    """
    if u.dim() != 3 or k.dim() != 3 or k.shape[0] != u.shape[1] or k.shape[2] != u.shape[2]:
        raise ValueError(f"u, k: expected u [batch, L, H_in] and k [L, H_out, H_in], got "
                         f"{tuple(u.shape)} and {tuple(k.shape)}")
    L = u.shape[1]
    n = 2 * L
    u_f = torch.fft.rfft(u.float(), n=n, dim=1)                      # [b, n/2+1, H_in]
    k_f = torch.fft.rfft(k.float(), n=n, dim=0)                      # [n/2+1, H_out, H_in]
    # one contiguous batched matmul over frequencies (complex einsum falls back to many
    # small copies on CPU)
    y_f = torch.bmm(u_f.transpose(0, 1).contiguous(), k_f.transpose(1, 2).contiguous())
    y_f = y_f.transpose(0, 1)                                         # [b, n/2+1, H_out]
    return torch.fft.irfft(y_f, n=n, dim=1)[:, :L].to(u.dtype)
