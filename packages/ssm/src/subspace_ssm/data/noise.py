"""Fourier-mode input noise: the perturbation of the PTD robustness protocol.

Yu et al. (ICLR 2024) show that the diagonal S4D/S5 initialisations only converge weakly to
HiPPO-LegS (their transfer functions differ at some frequencies), so models built on them
can be sensitive to inputs perturbed in particular Fourier modes, while S4-PTD/S5-PTD
converge strongly. The noise here is a sum of sinusoids at chosen integer modes ``k``
(``k`` cycles over the sequence length L), with random phases::

    n_t = a · sqrt(2 / |K|) · Σ_{k ∈ K} cos(2π k t / L + φ_k),     φ_k ~ U[0, 2π)

drawn independently per example and channel. For distinct modes ``0 < k < L/2`` the
root-mean-square of ``n`` over the sequence is exactly ``a`` (the amplitude, in units of
the input: sequences normalised to unit variance make ``a`` a noise-to-signal ratio), and
its spectrum is zero outside ``K``. Bands: :func:`mode_band`.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

__all__ = ["add_fourier_noise", "fourier_mode_noise", "mode_band"]


def mode_band(L: int, band: str, width: int = 16) -> tuple[int, ...]:
    """``width`` consecutive modes: ``"low"`` = 1..width, ``"mid"`` around L/4, ``"high"`` just
    below the Nyquist mode L/2."""
    nyq = (L - 1) // 2  # highest mode strictly below L/2
    if not 1 <= width <= nyq:
        raise ValueError(f"width: expected 1..{nyq} modes for L={L}, got {width}")
    if band == "low":
        start = 1
    elif band == "mid":
        start = max(1, L // 4 - width // 2)
    elif band == "high":
        start = nyq - width + 1
    else:
        raise ValueError(f"band: expected 'low', 'mid' or 'high', got {band!r}")
    return tuple(range(start, start + width))


def fourier_mode_noise(n: int, L: int, channels: int, modes: Sequence[int], amplitude: float,
                       *, seed: int = 0) -> torch.Tensor:
    """Noise ``[n, L, channels]`` float32 with RMS ``amplitude`` in the Fourier ``modes``."""
    modes_t = torch.as_tensor(list(modes), dtype=torch.float64)
    if modes_t.numel() == 0 or modes_t.unique().numel() != modes_t.numel():
        raise ValueError(f"modes: expected distinct integer modes, got {list(modes)}")
    if bool(((modes_t < 1) | (modes_t >= L / 2) | (modes_t != modes_t.round())).any()):
        raise ValueError(f"modes: expected integers in [1, L/2) = [1, {L / 2:g}), got {list(modes)}")
    if not amplitude >= 0:
        raise ValueError(f"amplitude: expected a value >= 0, got {amplitude}")
    g = torch.Generator().manual_seed(seed)
    phase = torch.rand(n, channels, len(modes_t), generator=g, dtype=torch.float64) * 2 * torch.pi
    t = torch.arange(L, dtype=torch.float64)
    angle = 2 * torch.pi * modes_t[:, None] * t[None, :] / L          # [K, L]
    waves = torch.cos(angle[None, None] + phase[..., None])           # [n, c, K, L]
    noise = amplitude * (2.0 / len(modes_t)) ** 0.5 * waves.sum(2)    # [n, c, L]
    return noise.transpose(1, 2).float()


def add_fourier_noise(x: torch.Tensor, amplitude: float, modes: Sequence[int], *,
                      seed: int = 0) -> torch.Tensor:
    """``x`` (float ``[n, L, d]``) plus :func:`fourier_mode_noise` of the same shape."""
    if not x.is_floating_point() or x.dim() != 3:
        raise ValueError(f"x: expected float [n, L, d], got {x.dtype} {tuple(x.shape)}")
    n, L, d = x.shape
    return x + fourier_mode_noise(n, L, d, modes, amplitude, seed=seed).to(x)
