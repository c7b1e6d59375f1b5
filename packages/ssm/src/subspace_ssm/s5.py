"""S5: the simplified (MIMO, diagonal) state-space layer (Smith, Warrington & Linderman, 2023).

One state of ``P`` complex modes shared by all ``H`` channels (multi-input multi-output)::

    x_k = Λ̄ ⊙ x_{k-1} + B̄ u_k,     y_k = 2·Re(C̃ x_k) + D ⊙ u_k
    Λ̄ = exp(ΔΛ), B̄ = ((Λ̄ − 1)/Λ) ⊙ B̃     (ZOH; bilinear also available)

with ``B̃ = V⁻¹ B``, ``C̃ = C V`` in the eigenbasis of the initial state matrix (conjugate
pairs halved). Unpadded sequences whose final state is not asked for are processed in
convolution mode: the layer is time-invariant, so ``y = K * u`` with the MIMO kernel
``K_k = 2·Re(C̃ Λ̄^k B̄)`` (``[L, H, H]``) applied by FFT (:func:`subspace_ssm.fftconv.fft_conv_mimo`)
— no ``[batch, L, P]`` complex states are formed. Otherwise (padding masks, state out) the
parallel associative scan (:func:`subspace_ssm.scan.linear_scan`) runs, with padded steps as
identity steps. Δ may differ per mode in both. Inits: ``"legs"`` (S5's: eigenvectors of the normal part
of HiPPO-LegS, in ``blocks`` diagonal blocks) and ``"ptd"`` (S5-PTD: perturb-then-
diagonalise HiPPO-LegS, see :mod:`subspace_ssm.ptd`). Inputs are ``[batch, L, d_model]``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from subspace_ssm.fftconv import fft_conv_mimo
from subspace_ssm.hippo import dplr_legs
from subspace_ssm.init import conj_half
from subspace_ssm.masks import check_mask
from subspace_ssm.optim import mark_ssm_param
from subspace_ssm.ptd import ptd_legs
from subspace_ssm.s4d import DISCRETIZATIONS, _complex_param, discretize_diagonal
from subspace_ssm.scan import linear_scan

__all__ = ["S5"]

INITS = ("legs", "ptd")


def _eigenbasis(init: str, N: int, blocks: int, ptd_eps: float, seed: int
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(Λ [N], V [N, N], V⁻¹ [N, N])`` complex128 of the initial state matrix."""
    if init == "ptd":
        res = ptd_legs(N, ptd_eps, seed=seed)
        return res.Lambda, res.V, res.V_inv
    size = N // blocks
    d = dplr_legs(size)
    lam = d.Lambda.repeat(blocks)
    V = torch.block_diag(*([d.V] * blocks))
    return lam, V, V.conj().T  # V is unitary


class S5(nn.Module):
    """S5 layer: MIMO diagonal SSM by parallel scan (+ D) → GELU → Linear(H, 2H) → GLU.

    Args:
        d_model: channels H.
        d_state: state size N (even; N/2 stored modes, a few more for PTD's real modes).
        init: ``"legs"`` or ``"ptd"``.
        blocks: diagonal blocks of the ``"legs"`` init (S5's J); must divide d_state.
        discretization: ``"zoh"`` or ``"bilinear"``.
        dt_min, dt_max: range of the log-uniform initial steps (one per mode).
        dropout: dropout after the activation.
        lr: learning rate of the SSM parameters (Λ, B̃, Δ) for :func:`ssm_param_groups`.
        ptd_eps, seed: PTD perturbation size and seed.
    """

    def __init__(self, d_model: int, d_state: int = 64, *, init: str = "legs", blocks: int = 1,
                 discretization: str = "zoh", dt_min: float = 1e-3, dt_max: float = 1e-1,
                 dropout: float = 0.0, lr: float | None = None, ptd_eps: float = 1e-4,
                 seed: int = 0):
        super().__init__()
        if init not in INITS:
            raise ValueError(f"init: expected one of {INITS}, got {init!r}")
        if discretization not in DISCRETIZATIONS:
            raise ValueError(f"discretization: expected one of {DISCRETIZATIONS}, "
                             f"got {discretization!r}")
        if d_state % 2 or blocks < 1 or d_state % blocks or (d_state // blocks) % 2:
            raise ValueError(f"d_state, blocks: expected an even d_state split into `blocks` "
                             f"even blocks, got d_state={d_state}, blocks={blocks}")
        H = d_model
        self.d_model, self.d_state, self.discretization = H, d_state, discretization
        lam, V, V_inv = _eigenbasis(init, d_state, blocks, ptd_eps, seed)
        # lecun-normal B [N, H] and C [H, N] in the original basis, then into the eigenbasis
        B = torch.randn(d_state, H, dtype=torch.float64) / math.sqrt(H)
        C = torch.randn(H, d_state, dtype=torch.float64) / math.sqrt(d_state)
        lam, Bt, Ct = conj_half(lam, V_inv @ B.to(torch.complex128), C.to(torch.complex128) @ V)
        # a perturbed eigenvalue may sit just right of the axis: keep the system stable
        lam = torch.complex(lam.real.clamp(max=-1e-4), lam.imag)
        M = lam.shape[0]
        log_dt = torch.rand(M) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min)
        self.log_dt = mark_ssm_param(nn.Parameter(log_dt), lr)
        self.log_A_real = mark_ssm_param(nn.Parameter(torch.log(-lam.real).float()), lr)
        self.A_imag = mark_ssm_param(nn.Parameter(lam.imag.float()), lr)
        self.B = mark_ssm_param(_complex_param(Bt), lr)   # [M, H]
        self.C = _complex_param(Ct)                       # [H, M]
        self.D = nn.Parameter(torch.randn(H))
        self.dropout = nn.Dropout(dropout)
        self.out = nn.Linear(H, 2 * H)

    @property
    def n_modes(self) -> int:
        """M, the number of stored complex modes."""
        return self.A_imag.shape[0]

    def discrete(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(Λ̄ [M], B̄ [M, H], C̃ [H, M])`` complex64."""
        lam = torch.complex(-torch.exp(self.log_A_real), self.A_imag)
        log_a, b_factor = discretize_diagonal(lam, torch.exp(self.log_dt), self.discretization)
        return torch.exp(log_a), b_factor[:, None] * torch.view_as_complex(self.B), \
            torch.view_as_complex(self.C)

    def _post(self, y: torch.Tensor) -> torch.Tensor:
        return F.glu(self.out(self.dropout(F.gelu(y))), dim=-1)

    def forward(self, u: torch.Tensor, mask: torch.Tensor | None = None,
                initial_state: torch.Tensor | None = None, return_state: bool = False
                ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """Scan mode.

        Args:
            u: ``[batch, L, d_model]``.
            mask: bool ``[batch, L]`` (right padding) or None. Padded steps are identity
                steps of the recurrence (Λ̄ → 1, no input), so the returned state is the one
                after each sequence's last real step.
            initial_state: complex ``[batch, M]`` or None.
            return_state: also return the final state.
        """
        if u.dim() != 3 or u.shape[-1] != self.d_model:
            raise ValueError(f"u: expected shape (batch, L, {self.d_model}), got {tuple(u.shape)}")
        b, L, _ = u.shape
        mask = check_mask(mask, b, L)
        if initial_state is not None:
            self._check_state(initial_state, b)
        lam_bar, Bb, C = self.discrete()
        if mask is None and not return_state:
            return self._post(self._convolve(u, lam_bar, Bb, C, initial_state))
        bu = torch.einsum("mh,blh->blm", Bb, u.to(Bb.dtype))          # [b, L, M]
        a = lam_bar.expand(b, L, -1)
        if mask is not None:
            m = mask[..., None]
            a = torch.where(m, a, torch.ones_like(a))
            bu = torch.where(m, bu, torch.zeros_like(bu))
        states = linear_scan(a, bu, dim=1, h0=initial_state)       # [b, L, M]
        y = 2 * torch.einsum("hm,blm->blh", C, states).real + self.D * u
        out = self._post(y)
        return (out, states[:, -1]) if return_state else out

    def _convolve(self, u: torch.Tensor, lam_bar: torch.Tensor, Bb: torch.Tensor,
                  C: torch.Tensor, initial_state: torch.Tensor | None) -> torch.Tensor:
        """Convolution mode: the scan's ``y`` without forming the states."""
        L = u.shape[1]
        powers = lam_bar[None, :] ** torch.arange(L, device=u.device)[:, None]  # Λ̄^k [L, M]
        H, M = C.shape
        kernel = 2 * ((C[None] * powers[:, None, :]).reshape(L * H, M) @ Bb).real
        kernel = kernel.reshape(L, H, H)                                         # [L, H, H]
        y = fft_conv_mimo(u, kernel) + self.D * u
        if initial_state is not None:  # h0 decays into every step: 2·Re(C̃ Λ̄^(t+1) h0)
            y = y + 2 * torch.einsum("hm,lm,bm->blh", C, powers * lam_bar, initial_state).real
        return y

    def _check_state(self, state: torch.Tensor, batch: int) -> None:
        expected = (batch, self.n_modes)
        if tuple(state.shape) != expected or not state.is_complex():
            raise ValueError(f"state: expected a complex tensor of shape {expected}, got "
                             f"{state.dtype} {tuple(state.shape)}")

    def default_state(self, batch: int, device: torch.device | str | None = None) -> torch.Tensor:
        """Zero state ``[batch, M]`` complex64."""
        return torch.zeros(batch, self.n_modes, dtype=torch.complex64, device=device)

    def step(self, u: torch.Tensor, state: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """One recurrent step: ``u [batch, d_model]`` → ``(y [batch, d_model], state [batch, M])``."""
        self._check_state(state, u.shape[0])
        lam_bar, Bb, C = self.discrete()
        state = lam_bar * state + u.to(Bb.dtype) @ Bb.T
        y = 2 * (state @ C.T).real + self.D * u
        return self._post(y), state
