"""S4: the structured state-space layer with a DPLR state matrix (Gu, Goel & Ré, 2022).

Per channel, ``A = Λ − P P*`` in the unitary eigenbasis of HiPPO-LegS's normal part
(:func:`subspace_ssm.hippo.dplr_legs`), discretised with the bilinear transform. The
convolution kernel is never formed from powers of Ā: S4 evaluates its truncated generating
function at the L-th roots of unity ``z_k = exp(−2πik/L)``::

    K̂(z) = Σ_{l<L} C Āˡ B̄ zˡ = C̃ (I − Ā z)⁻¹ B̄,         C̃ = C (I − Āᴸ)   (z^L = 1)
         = 2/(1+z) · C̃ (g(z) − A)⁻¹ B,                    g(z) = (2/Δ)(1 − z)/(1 + z)
         = 2/(1+z) · [k₀₀ − k₀₁ (1 + k₁₁)⁻¹ k₁₀]            (Woodbury for the rank-1 term)

with ``k_ab = Σ_n a_n b_n / (g − λ_n)`` Cauchy sums (a ∈ {C̃, P̄}, b ∈ {B, P}) and
``K = irfft(K̂)``. At ``z = −1`` (even L) g is infinite; the limit there is
``K̂(−1) = (Δ/2) Σ_n C̃_n B_n``. The layer learns C̃ directly (as S4 does), which ties C̃
to a length: the kernel is always generated at ``l_max`` (or L if longer) and truncated to
L, so a sequence's outputs do not depend on how much padding follows it. :meth:`S4.step`
recovers ``C = C̃ (I − Ā^{l_max})⁻¹`` for the recurrence, so step mode matches convolution
mode.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from subspace_ssm.cauchy import cauchy_conj
from subspace_ssm.fftconv import fft_conv
from subspace_ssm.hippo import dplr_legs
from subspace_ssm.masks import check_mask
from subspace_ssm.optim import mark_ssm_param
from subspace_ssm.s4d import _complex_param

__all__ = ["S4", "S4Kernel"]


class S4Kernel(nn.Module):
    """DPLR SSM of S4 (HiPPO-LegS init, bilinear), ``H`` channels, state size N (N/2 pairs).

    Args:
        d_model: channels H.
        d_state: state size N (even).
        channels: kernels per channel (2 for bidirectional).
        dt_min, dt_max: range of the log-uniform initial steps.
        lr: learning rate of the SSM parameters (marked for :func:`ssm_param_groups`).
    """

    def __init__(self, d_model: int, d_state: int = 64, *, channels: int = 1,
                 dt_min: float = 1e-3, dt_max: float = 1e-1, lr: float | None = None):
        super().__init__()
        if d_state % 2 or d_state < 2:
            raise ValueError(f"d_state: expected an even state size >= 2, got {d_state}")
        H = d_model
        self.d_model, self.d_state, self.channels = H, d_state, channels
        dplr = dplr_legs(d_state)
        up = dplr.Lambda.imag > 0  # one of each conjugate pair
        Lam = dplr.Lambda[up].expand(H, -1)
        log_dt = torch.rand(H) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min)
        self.log_dt = mark_ssm_param(nn.Parameter(log_dt), lr)
        self.log_A_real = mark_ssm_param(nn.Parameter(torch.log(-Lam.real).float().clone()), lr)
        self.A_imag = mark_ssm_param(nn.Parameter(Lam.imag.float().clone()), lr)
        self.P = mark_ssm_param(_complex_param(dplr.P[up].expand(H, -1)), lr)
        self.B = mark_ssm_param(_complex_param(dplr.B[up].expand(H, -1)), lr)
        C = torch.randn(channels, H, d_state // 2, dtype=torch.complex128) * 0.5**0.5
        self.C_tilde = _complex_param(C)

    def eigenvalues(self) -> torch.Tensor:
        """Λ ``[H, N/2]`` complex64."""
        return torch.complex(-torch.exp(self.log_A_real), self.A_imag)

    def kernel(self, L: int) -> torch.Tensor:
        """Convolution kernel ``[channels, H, L]`` via the Cauchy generating function."""
        lam = self.eigenvalues()
        P, B = torch.view_as_complex(self.P), torch.view_as_complex(self.B)
        Ct = torch.view_as_complex(self.C_tilde)
        dt = torch.exp(self.log_dt)[:, None]  # [H, 1]
        k = torch.arange(L // 2 + 1, device=lam.device, dtype=lam.real.dtype)
        z = torch.exp(-2j * math.pi * k / L)  # rfft nodes [K], in the parameters' precision
        at_minus_one = (1 + z).abs() < 1e-6
        zz = torch.where(at_minus_one, torch.zeros_like(z), z)  # placeholder, fixed below
        g = (2 / dt) * (1 - zz) / (1 + zz)  # [H, K]
        # Cauchy sums over all conjugate pairs, one set of nodes g per channel
        def cauchy(v):  # v [..., H, M] -> [..., H, K]
            return cauchy_conj(v, g, lam)

        k00 = cauchy(Ct * B)
        k01 = cauchy(Ct * P)
        k10 = cauchy(P.conj() * B)
        k11 = cauchy(P.conj() * P)
        khat = 2 / (1 + zz) * (k00 - k01 * k10 / (1 + k11))
        limit = dt * (Ct * B).real.sum(-1, keepdim=True)  # (Δ/2)·2 Re Σ_half C̃ B
        khat = torch.where(at_minus_one, limit.to(khat.dtype), khat)
        return torch.fft.irfft(khat, n=L)

    def dense(self, L: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Dense bilinear ``(Ā [H, N, N], B̄ [H, N], C [channels, H, N])`` over the full
        conjugate-paired state (complex128), ``C = C̃ (I − Āᴸ)⁻¹`` for length ``L``."""
        lam = self.eigenvalues().to(torch.complex128)
        P = torch.view_as_complex(self.P).to(torch.complex128)
        B = torch.view_as_complex(self.B).to(torch.complex128)
        Ct = torch.view_as_complex(self.C_tilde).to(torch.complex128)
        full = [torch.cat([x, x.conj()], -1) for x in (lam, P, B, Ct)]
        lam, P, B, Ct = full
        N = lam.shape[-1]
        dt = torch.exp(self.log_dt).to(torch.float64)[:, None, None]
        eye = torch.eye(N, dtype=torch.complex128, device=lam.device)
        A = torch.diag_embed(lam) - P[..., :, None] * P.conj()[..., None, :]
        back = eye - dt / 2 * A
        Ab = torch.linalg.solve(back, eye + dt / 2 * A)
        Bb = torch.linalg.solve(back, (dt[..., 0] * B)[..., None])[..., 0]
        AL = torch.linalg.matrix_power(Ab, L)
        # C (I − Āᴸ) = C̃  ⇒  C = C̃ (I − Āᴸ)⁻¹, solved as (I − Āᴸ)ᵀ Cᵀ = C̃ᵀ
        C = torch.linalg.solve((eye - AL).transpose(-1, -2), Ct[..., None])[..., 0]
        return Ab, Bb, C


class S4(nn.Module):
    """S4 layer: DPLR SSM (+ D skip) → GELU → Linear(H, 2H) → GLU, on ``[batch, L, d_model]``.

    Args:
        d_model, d_state, dt_min, dt_max, lr: see :class:`S4Kernel`.
        bidirectional: add an anti-causal kernel (no ``step``).
        l_max: length the kernel (and C̃) refers to; longer inputs use their own length.
        dropout: dropout after the activation.
    """

    def __init__(self, d_model: int, d_state: int = 64, *, bidirectional: bool = False,
                 dropout: float = 0.0, dt_min: float = 1e-3, dt_max: float = 1e-1,
                 lr: float | None = None, l_max: int = 1024):
        super().__init__()
        if l_max < 1:
            raise ValueError(f"l_max: expected a length >= 1, got {l_max}")
        self.d_model = d_model
        self.l_max = l_max
        self.bidirectional = bidirectional
        self.ssm = S4Kernel(d_model, d_state, channels=2 if bidirectional else 1,
                            dt_min=dt_min, dt_max=dt_max, lr=lr)
        self.D = nn.Parameter(torch.randn(d_model))
        self.dropout = nn.Dropout(dropout)
        self.out = nn.Linear(d_model, 2 * d_model)
        self._recurrence: tuple[torch.Tensor, ...] | None = None

    def _post(self, y: torch.Tensor) -> torch.Tensor:
        return F.glu(self.out(self.dropout(F.gelu(y))), dim=-1)

    def forward(self, u: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """Convolution mode: ``u [batch, L, d_model]`` (mask bool ``[batch, L]``) → same shape."""
        if u.dim() != 3 or u.shape[-1] != self.d_model:
            raise ValueError(f"u: expected shape (batch, L, {self.d_model}), got {tuple(u.shape)}")
        b, L, _ = u.shape
        mask = check_mask(mask, b, L)
        if mask is not None:
            u = u * mask[..., None]
        x = u.transpose(1, 2)
        K = self.ssm.kernel(max(L, self.l_max))[..., :L]
        y = fft_conv(x, K[0], K[1] if self.bidirectional else None) + self.D[:, None] * x
        return self._post(y.transpose(1, 2))

    def setup_step(self, L: int | None = None) -> None:
        """Prepare :meth:`step` (computes ``C = C̃ (I − Āᴸ)⁻¹`` for ``L' = max(L, l_max)``, the
        length convolution mode uses for inputs of length L)."""
        if self.bidirectional:
            raise RuntimeError("setup_step: a bidirectional layer has no recurrent mode")
        Ab, Bb, C = self.ssm.dense(max(L or 0, self.l_max))
        self._recurrence = (Ab.to(torch.complex64), Bb.to(torch.complex64),
                            C[0].to(torch.complex64))

    def default_state(self, batch: int, device: torch.device | str | None = None) -> torch.Tensor:
        """Zero state ``[batch, d_model, N]`` complex64 (the full conjugate-paired state)."""
        return torch.zeros(batch, self.d_model, self.ssm.d_state, dtype=torch.complex64,
                           device=device)

    def step(self, u: torch.Tensor, state: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """One step ``u [batch, d_model]`` → ``(y [batch, d_model], state)``; call
        :meth:`setup_step` first (and again after the parameters change)."""
        if self._recurrence is None:
            raise RuntimeError("step: call setup_step() first")
        Ab, Bb, C = self._recurrence
        state = torch.einsum("hij,bhj->bhi", Ab, state) + Bb * u[..., None]
        y = (C * state).sum(-1).real + self.D * u
        return self._post(y), state
