"""S4D: the diagonal structured state-space layer (Gu, Gupta, Goel & Ré, 2022).

Per channel h (``H = d_model`` channels, each its own SISO system) and mode n (``M`` complex
modes, conjugate pairs halved, see :mod:`subspace_ssm.init`)::

    x_k = Ā x_{k-1} + B̄ u_k,     y_k = 2·Re(Σ_n C_n x_k[n]) + D u_k

with the continuous ``Λ = −exp(log_A_real) + i·A_imag`` discretised by the step
``Δ = exp(log_dt)``:

    ZOH        Ā = exp(ΔΛ)                     B̄ = (exp(ΔΛ) − 1)/Λ · B
    bilinear   Ā = (1 + ΔΛ/2)/(1 − ΔΛ/2)       B̄ = Δ/(1 − ΔΛ/2) · B

Both keep |Ā| < 1 whenever Re Λ < 0, which the parametrisation guarantees. Convolution mode
unrolls the recurrence into the kernel ``K_l = 2·Re(Σ_n C_n B̄_n Ā_nˡ)`` (a Vandermonde
product) applied by FFT; :meth:`S4D.step` runs the same system one step at a time. The layer
is the SSM, the skip D, GELU, and a GLU output projection, as in S4D's reference block.
Inputs are ``[batch, L, d_model]``.

The Vandermonde products are blocked (:func:`vandermonde`): with ``l = i + B·j`` and
``B ≈ √L``, ``Āˡ = Āⁱ · Ā^{Bj}``, so two small power tables (``[H, M, B]`` and
``[H, M, L/B]``, each entry computed directly from ``log Ā``, no repeated products) and one
batched real matrix product give all L lags: ``O(H·M·√L)`` transcendental functions instead of
``O(H·M·L)`` complex exponentials, and ``2·H·M·L`` multiply-adds in a BLAS matmul.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from subspace_ssm.fftconv import fft_conv
from subspace_ssm.hippo import hippo_legs
from subspace_ssm.init import DIAGONAL_INITS, conj_half, diagonal_init
from subspace_ssm.masks import check_mask, lengths_of, right_align
from subspace_ssm.optim import mark_ssm_param
from subspace_ssm.ptd import ptd_legs

__all__ = ["DISCRETIZATIONS", "S4D", "S4DKernel", "discretize_diagonal", "vandermonde",
           "vandermonde_transpose"]

DISCRETIZATIONS = ("zoh", "bilinear")
INITS = (*DIAGONAL_INITS, "ptd")


def discretize_diagonal(Lambda: torch.Tensor, dt: torch.Tensor, method: str
                        ) -> tuple[torch.Tensor, torch.Tensor]:
    """``(log Ā, B̄ / B)`` for diagonal ``Lambda [..., M]`` and steps ``dt [..., 1]``.

    Returns the logarithm of Ā (powers are ``exp(l · log Ā)``, which keeps the Vandermonde
    product stable) and the factor that turns B into B̄.
    """
    dtA = dt * Lambda
    if method == "zoh":
        return dtA, torch.expm1(dtA) / Lambda
    if method == "bilinear":
        return torch.log((1 + dtA / 2) / (1 - dtA / 2)), dt / (1 - dtA / 2)
    raise ValueError(f"discretization: expected one of {DISCRETIZATIONS}, got {method!r}")


def _blocks(L: int) -> tuple[int, int]:
    """``(B, J)``: block size ``B = 2^⌈log₂(L)/2⌉ ≈ √L`` and ``J = ⌈L / B⌉`` blocks."""
    B = 1 << ((max(L, 1) - 1).bit_length() + 1) // 2
    return B, -(-L // B)


def _power_table(log_a: torch.Tensor, n: int, stride: int
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """``(Re, Im)`` of ``Ā^(stride·i)`` for ``i < n``: real ``[..., M, n]`` tensors.

    Each entry is ``exp(stride·i·Re log Ā)·(cos, sin)(stride·i·Im log Ā)``, computed directly
    (no products of powers, so no rounding accumulates however close |Ā| is to 1). The phase
    reaches 10³–10⁵ rad at long L; it is formed and reduced modulo 2π in float64 (float32
    rounding of the large product alone would shift it by up to 10⁻²), the rest runs in the
    parameters' dtype. Differentiable.
    """
    real, imag = log_a.real, log_a.imag
    wide = torch.float32 if log_a.device.type == "mps" else torch.float64  # MPS: no float64
    idx = torch.arange(n, device=log_a.device, dtype=wide) * stride
    mag = torch.exp(real[..., None] * idx.to(real.dtype))
    phase = torch.remainder(imag.to(wide)[..., None] * idx, 2 * math.pi).to(real.dtype)
    return mag * torch.cos(phase), mag * torch.sin(phase)


def vandermonde(weights: torch.Tensor, log_a: torch.Tensor, L: int) -> torch.Tensor:
    """``2·Re(Σ_n W_n Ā_nˡ)`` for ``l < L``: real ``[..., H, L]``.

    Args:
        weights: complex ``W [..., H, M]`` (leading dims broadcast, e.g. channels or batch).
        log_a: complex ``log Ā [H, M]``.
        L: number of lags.

    Blocked: ``l = i + B·j``, ``Re(W Āⁱ Ā^{Bj}) = [Re, −Im](Ā^{Bj}) · [Re, Im](W Āⁱ)``, one
    batched real matmul ``[H, J, 2M] @ [..., H, 2M, B]``, whose ``[J, B]`` output read row by
    row is the lag axis.
    """
    B, J = _blocks(L)
    fine_re, fine_im = _power_table(log_a, B, 1)             # Āⁱ, [H, M, B]
    coarse_re, coarse_im = _power_table(log_a, J, B)         # Ā^{Bj}, [H, M, J]
    w_re, w_im = weights.real[..., None], weights.imag[..., None]
    rows = torch.cat([w_re * fine_re - w_im * fine_im,
                      w_re * fine_im + w_im * fine_re], -2)  # W Āⁱ, [..., H, 2M, B]
    cols = torch.cat([coarse_re, -coarse_im], -2).transpose(-1, -2)  # [H, J, 2M]
    return 2 * torch.matmul(cols, rows).flatten(-2)[..., :L]


def vandermonde_transpose(v: torch.Tensor, log_a: torch.Tensor) -> torch.Tensor:
    """``Σ_l v_l Ā_nˡ``: complex ``[..., H, M]`` for real ``v [..., H, L]`` and ``log Ā [H, M]``.

    The transposed product of :func:`vandermonde`, blocked the same way: ``l = i + B·j``,
    ``Σ_i Āⁱ Σ_j v_{i+Bj} Ā^{Bj}`` (the inner sum is one batched real matmul).
    """
    L = v.shape[-1]
    B, J = _blocks(L)
    fine_re, fine_im = _power_table(log_a, B, 1)             # [H, M, B]
    coarse_re, coarse_im = _power_table(log_a, J, B)         # [H, M, J]
    blocks = F.pad(v.to(fine_re.dtype), (0, B * J - L)).unflatten(-1, (J, B))  # [..., H, J, B]
    inner_re, inner_im = torch.matmul(torch.cat([coarse_re, coarse_im], -2),
                                      blocks).chunk(2, -2)   # [..., H, M, B] each
    return torch.complex((fine_re * inner_re - fine_im * inner_im).sum(-1),
                         (fine_re * inner_im + fine_im * inner_re).sum(-1))


def _complex_param(t: torch.Tensor) -> nn.Parameter:
    # stored as real [..., 2]: safetensors checkpoints and every optimizer handle it
    return nn.Parameter(torch.view_as_real(t.to(torch.complex64)).clone())


class S4DKernel(nn.Module):
    """The diagonal SSM of S4D: parameters, discretisation, kernel and recurrence.

    Args:
        d_model: channels H.
        d_state: state size N (``N // 2`` complex modes; PTD may keep a few more, one per
            real eigenvalue, see :func:`subspace_ssm.init.conj_half`).
        init: ``"legs"``, ``"inv"``, ``"lin"``, ``"real"`` (S4D) or ``"ptd"`` (S4-PTD:
            perturb-then-diagonalise HiPPO-LegS, with B and C in its eigenbasis).
        discretization: ``"zoh"`` or ``"bilinear"``.
        channels: independent kernels per channel (2 for a bidirectional layer).
        dt_min, dt_max: range of the log-uniform initial steps.
        lr: learning rate of the SSM parameters (marked for :func:`ssm_param_groups`).
        ptd_eps: relative perturbation of the PTD init.
        seed: seed of the PTD perturbation.
    """

    def __init__(self, d_model: int, d_state: int = 64, *, init: str = "legs",
                 discretization: str = "zoh", channels: int = 1, dt_min: float = 1e-3,
                 dt_max: float = 1e-1, lr: float | None = None, ptd_eps: float = 1e-4,
                 seed: int = 0):
        super().__init__()
        if init not in INITS:
            raise ValueError(f"init: expected one of {INITS}, got {init!r}")
        if discretization not in DISCRETIZATIONS:
            raise ValueError(f"discretization: expected one of {DISCRETIZATIONS}, "
                             f"got {discretization!r}")
        if not 0 < dt_min <= dt_max:
            raise ValueError(f"dt_min, dt_max: expected 0 < dt_min <= dt_max, got {dt_min}, {dt_max}")
        H = d_model
        self.d_model, self.d_state, self.channels = H, d_state, channels
        self.discretization = discretization
        log_dt = torch.rand(H) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min)
        if init == "ptd":
            if d_state % 2:
                raise ValueError(f"d_state: expected an even state size for init='ptd', got {d_state}")
            res = ptd_legs(d_state, ptd_eps, seed=seed)
            C_full = torch.randn(channels, H, d_state, dtype=torch.float64) * 0.5**0.5
            B_full = res.V_inv @ hippo_legs(d_state)[1].to(torch.complex128)
            Lam, B, C = conj_half(res.Lambda, B_full, C_full.to(torch.complex128) @ res.V)
            # a perturbed eigenvalue may sit just right of the axis: keep the system stable
            Lam = torch.complex(Lam.real.clamp(max=-1e-4), Lam.imag)
            B = B.expand(H, -1)
        else:
            Lam = diagonal_init(init, d_state)
            B = torch.ones(H, Lam.shape[0], dtype=torch.complex128)
            C = torch.randn(channels, H, Lam.shape[0], dtype=torch.complex128) * 0.5**0.5
        Lam = Lam.expand(H, -1)
        self.log_dt = mark_ssm_param(nn.Parameter(log_dt), lr)
        self.log_A_real = mark_ssm_param(nn.Parameter(torch.log(-Lam.real).float().clone()), lr)
        self.A_imag = mark_ssm_param(nn.Parameter(Lam.imag.float().clone()), lr)
        self.B = mark_ssm_param(_complex_param(B), lr)
        self.C = _complex_param(C)

    @property
    def n_modes(self) -> int:
        """M, the number of stored complex modes."""
        return self.A_imag.shape[-1]

    def eigenvalues(self) -> torch.Tensor:
        """Continuous Λ ``[H, M]`` complex64."""
        return torch.complex(-torch.exp(self.log_A_real), self.A_imag)

    def discrete(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(log Ā [H, M], B̄ [H, M], C [channels, H, M])``, complex64."""
        dt = torch.exp(self.log_dt)[:, None]
        log_a, b_factor = discretize_diagonal(self.eigenvalues(), dt, self.discretization)
        return log_a, b_factor * torch.view_as_complex(self.B), torch.view_as_complex(self.C)

    def kernel(self, L: int) -> torch.Tensor:
        """Convolution kernel ``[channels, H, L]``: ``K_l = 2·Re(Σ_n C_n B̄_n Ā_nˡ)``
        (blocked Vandermonde product, :func:`vandermonde`)."""
        log_a, Bb, C = self.discrete()
        return vandermonde(C * Bb, log_a, L)

    def state_to_output(self, x: torch.Tensor, log_a: torch.Tensor, C: torch.Tensor,
                        L: int) -> torch.Tensor:
        """Zero-input response ``[batch, H, L]`` of the state ``x [batch, H, M]``:
        ``2·Re(Σ_n C_n Ā_n^{l+1} x_n)``."""
        return vandermonde(C * torch.exp(log_a) * x, log_a, L)

    def final_state(self, u: torch.Tensor, x0: torch.Tensor | None,
                    lengths: torch.Tensor | None) -> torch.Tensor:
        """State after the last (real) step, ``[batch, H, M]`` complex, for ``u [batch, H, L]``.

        ``x = Āˡᵉⁿ x0 + B̄ Σ_k Ā^{len−1−k} u_k``: a Vandermonde product over right-aligned input.
        """
        log_a, Bb, _ = self.discrete()
        b, _, L = u.shape
        if lengths is None:
            lengths = torch.full((b,), L, device=u.device, dtype=torch.long)
        else:
            u = right_align(u, lengths)
        x = Bb * vandermonde_transpose(u.flip(-1), log_a)  # input k meets Ā^{L−1−k}
        if x0 is not None:
            x = x + torch.exp(log_a * lengths[:, None, None]) * x0
        return x


class S4D(nn.Module):
    """S4D layer: SSM (+ D skip) → GELU → Linear(H, 2H) → GLU, on ``[batch, L, d_model]``.

    Args:
        d_model: channels H.
        d_state: state size N.
        init, discretization, dt_min, dt_max, lr, ptd_eps, seed: see :class:`S4DKernel`.
        bidirectional: add an anti-causal kernel (no ``step``, no state passing).
        dropout: dropout after the activation.
    """

    def __init__(self, d_model: int, d_state: int = 64, *, init: str = "legs",
                 discretization: str = "zoh", bidirectional: bool = False,
                 dropout: float = 0.0, dt_min: float = 1e-3, dt_max: float = 1e-1,
                 lr: float | None = None, ptd_eps: float = 1e-4, seed: int = 0):
        super().__init__()
        self.d_model = d_model
        self.bidirectional = bidirectional
        self.ssm = S4DKernel(d_model, d_state, init=init, discretization=discretization,
                             channels=2 if bidirectional else 1, dt_min=dt_min, dt_max=dt_max,
                             lr=lr, ptd_eps=ptd_eps, seed=seed)
        self.D = nn.Parameter(torch.randn(d_model))
        self.dropout = nn.Dropout(dropout)
        self.out = nn.Linear(d_model, 2 * d_model)
        # (key, (Ā, B̄, 2·C)): the discrete system of step(), see setup_step()
        self._step_cache: tuple[tuple, tuple[torch.Tensor, ...]] | None = None

    def _post(self, y: torch.Tensor) -> torch.Tensor:
        # pointwise after the SSM: the same in convolution and recurrent mode
        return F.glu(self.out(self.dropout(F.gelu(y))), dim=-1)

    def forward(self, u: torch.Tensor, mask: torch.Tensor | None = None,
                initial_state: torch.Tensor | None = None, return_state: bool = False
                ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """Convolution mode.

        Args:
            u: ``[batch, L, d_model]``.
            mask: bool ``[batch, L]`` (right padding) or None; padded inputs are zeroed, so
                real positions do not see the padding.
            initial_state: complex ``[batch, d_model, M]`` state before the first step.
            return_state: also return the state after each sequence's last real step.

        Returns ``y [batch, L, d_model]`` (padded positions are not meaningful) or
        ``(y, state)``.
        """
        if u.dim() != 3 or u.shape[-1] != self.d_model:
            raise ValueError(f"u: expected shape (batch, L, {self.d_model}), got {tuple(u.shape)}")
        b, L, _ = u.shape
        mask = check_mask(mask, b, L)
        if self.bidirectional and (initial_state is not None or return_state):
            raise ValueError("initial_state/return_state: a bidirectional layer has no causal "
                             "state to pass")
        if mask is not None:
            u = u * mask[..., None]
        x = u.transpose(1, 2)  # [b, H, L]
        K = self.ssm.kernel(L)
        y = fft_conv(x, K[0], K[1] if self.bidirectional else None)
        if initial_state is not None:
            self._check_state(initial_state, b)
            log_a, _, C = self.ssm.discrete()
            y = y + self.ssm.state_to_output(initial_state, log_a, C[0], L)
        y = y + self.D[:, None] * x
        out = self._post(y.transpose(1, 2))
        if not return_state:
            return out
        lengths = None if mask is None else lengths_of(mask)
        return out, self.ssm.final_state(x, initial_state, lengths)

    def _check_state(self, state: torch.Tensor, batch: int) -> None:
        expected = (batch, self.d_model, self.ssm.n_modes)
        if tuple(state.shape) != expected or not state.is_complex():
            raise ValueError(f"state: expected a complex tensor of shape {expected}, got "
                             f"{state.dtype} {tuple(state.shape)}")

    def default_state(self, batch: int, device: torch.device | str | None = None) -> torch.Tensor:
        """Zero state ``[batch, d_model, M]`` complex64."""
        return torch.zeros(batch, self.d_model, self.ssm.n_modes, dtype=torch.complex64,
                           device=device)

    def _step_key(self) -> tuple | None:
        # identifies the SSM parameters' current values: an in-place update (optimizer,
        # load_state_dict, fill_) bumps a version counter, .to()/.double() moves the storage
        ssm = self.ssm
        try:
            return (ssm.discretization,
                    *((p.data_ptr(), p._version) for p in (ssm.log_dt, ssm.log_A_real,
                                                            ssm.A_imag, ssm.B, ssm.C)))
        except RuntimeError:  # parameters made under inference_mode keep no version counter
            return None

    def _discrete_step(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        log_a, Bb, C = self.ssm.discrete()
        return torch.exp(log_a), Bb, 2 * C[0]

    def setup_step(self) -> None:
        """Discretise once for :meth:`step`: caches ``(Ā, B̄, 2·C)`` ``[d_model, M]``.

        Optional: :meth:`step` calls it whenever the cache is missing or stale (an SSM
        parameter was changed in place or moved), so the recurrence always uses the current
        parameters. The cache holds constants (no autograd graph); when a gradient to the SSM
        parameters is needed, :meth:`step` discretises afresh instead.
        """
        if self.bidirectional:
            raise RuntimeError("setup_step: a bidirectional layer sees the future; it has no "
                               "recurrent mode")
        with torch.inference_mode(False), torch.no_grad():  # plain tensors, usable anywhere
            self._step_cache = (self._step_key(), self._discrete_step())

    def _step_system(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        if torch.is_grad_enabled() and any(p.requires_grad for p in self.ssm.parameters()):
            return self._discrete_step()  # in the autograd graph
        key = self._step_key()
        if key is None:  # changes cannot be detected: never trust a cache
            return self._discrete_step()
        if self._step_cache is None or self._step_cache[0] != key:
            self.setup_step()
        return self._step_cache[1]

    def step(self, u: torch.Tensor, state: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """One recurrent step: ``u [batch, d_model]`` → ``(y [batch, d_model], new state)``.

        ``x ← Ā x + B̄ u``, ``y = 2·Re(C x) + D u``, then the output block, with the discrete
        system cached by :meth:`setup_step` (recomputed only when the parameters change; every
        step while gradients flow to the SSM parameters or when the parameters were created
        under ``torch.inference_mode``, which keeps no record of changes).
        """
        if self.bidirectional:
            raise RuntimeError("step: a bidirectional layer sees the future; it has no "
                               "recurrent mode")
        self._check_state(state, u.shape[0])
        a_bar, Bb, C2 = self._step_system()
        state = a_bar * state + Bb * u[..., None]
        y = torch.addcmul((C2 * state).sum(-1).real, self.D, u)
        return self._post(y), state

    def forward_recurrent(self, u: torch.Tensor, initial_state: torch.Tensor | None = None
                          ) -> tuple[torch.Tensor, torch.Tensor]:
        """:meth:`step` over ``u [batch, L, d_model]``: ``(y, final state)``."""
        state = self.default_state(u.shape[0], u.device) if initial_state is None else initial_state
        ys = []
        for t in range(u.shape[1]):
            y, state = self.step(u[:, t], state)
            ys.append(y)
        return torch.stack(ys, 1), state
