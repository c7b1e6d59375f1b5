"""Mamba-1 block (Gu & Dao, 2023): input-dependent (selective) SSM with a gated output.

``[batch, L, d_model]`` → in_proj → (x, z) each ``d_inner = expand · d_model`` wide; x goes
through a causal depthwise conv1d and SiLU, then x_proj gives per-step ``(Δ_low, B, C)``
(``dt_rank + 2·d_state``), dt_proj lifts Δ to ``d_inner`` channels, and the selective scan
``h_t = exp(Δ_t A) h_{t-1} + Δ_t B_t x_t``, ``y_t = C_t h_t + D x_t``, gated by ``silu(z)``,
is projected back by out_proj. The scan is :func:`subspace_core.ops.selective_scan.selective_scan`
(``scan_backend`` ``"auto"``/``"torch"``/``"triton"``), or mamba-ssm's CUDA kernel with
``scan_backend="mamba_ssm"`` when that package imports on a CUDA machine (optional extra
``subspace-ssm[cuda]``; its backward is not deterministic, so it is never picked by
``"auto"``).

:meth:`Mamba.step` is the generation path: it carries ``(conv_state [batch, d_inner,
d_conv − 1], ssm_state [batch, d_inner, d_state] float32)`` and matches the full forward.
"""

from __future__ import annotations

import math
from functools import cache

import torch
import torch.nn.functional as F
from torch import nn

from subspace_core.ops.selective_scan import selective_scan
from subspace_ssm.masks import check_mask, lengths_of, right_align
from subspace_ssm.optim import mark_ssm_param

__all__ = ["SCAN_BACKENDS", "Mamba", "MambaState", "mamba_ssm_available"]

SCAN_BACKENDS = ("auto", "torch", "triton", "mamba_ssm")
#: Δ input at padded steps: softplus(−1e4 + bias) = 0, so the step is the identity.
_PAD_DELTA = -1e4

MambaState = tuple[torch.Tensor, torch.Tensor]


@cache
def mamba_ssm_available() -> bool:
    """Whether mamba-ssm's selective-scan CUDA kernel imports (never true without CUDA)."""
    if not torch.cuda.is_available():
        return False
    try:
        from mamba_ssm.ops.selective_scan_interface import selective_scan_fn  # noqa: F401
    except Exception:  # ImportError, or its missing compiled extension
        return False
    return True


class Mamba(nn.Module):
    """The Mamba-1 mixer block (no norm, no residual: see ``SSMClassifier`` for those).

    Args:
        d_model: model width.
        d_state: SSM state size N per channel.
        d_conv: width of the causal depthwise convolution.
        expand: ``d_inner = expand · d_model``.
        dt_rank: rank of the Δ projection (``"auto"``: ``ceil(d_model / 16)``).
        dt_min, dt_max, dt_init_floor: initial Δ range (log-uniform), as in mamba-ssm.
        bias, conv_bias: biases of the linear projections / of the convolution.
        scan_backend: ``"auto"``, ``"torch"``, ``"triton"`` or ``"mamba_ssm"``.
        lr: learning rate of the SSM parameters (A_log, D, dt_proj.bias).
    """

    def __init__(self, d_model: int, d_state: int = 16, d_conv: int = 4, expand: int = 2,
                 dt_rank: int | str = "auto", dt_min: float = 1e-3, dt_max: float = 1e-1,
                 dt_init_floor: float = 1e-4, bias: bool = False, conv_bias: bool = True,
                 scan_backend: str = "auto", lr: float | None = None):
        super().__init__()
        if scan_backend not in SCAN_BACKENDS:
            raise ValueError(f"scan_backend: expected one of {SCAN_BACKENDS}, got {scan_backend!r}")
        if d_conv < 1:
            raise ValueError(f"d_conv: expected a width >= 1, got {d_conv}")
        self.d_model, self.d_state, self.d_conv = d_model, d_state, d_conv
        self.d_inner = d_inner = expand * d_model
        self.dt_rank = math.ceil(d_model / 16) if dt_rank == "auto" else int(dt_rank)
        self.scan_backend = scan_backend
        self.in_proj = nn.Linear(d_model, 2 * d_inner, bias=bias)
        self.conv1d = nn.Conv1d(d_inner, d_inner, d_conv, groups=d_inner, bias=conv_bias)
        self.x_proj = nn.Linear(d_inner, self.dt_rank + 2 * d_state, bias=False)
        self.dt_proj = nn.Linear(self.dt_rank, d_inner, bias=True)
        std = self.dt_rank**-0.5
        nn.init.uniform_(self.dt_proj.weight, -std, std)
        dt = torch.exp(torch.rand(d_inner) * (math.log(dt_max) - math.log(dt_min))
                       + math.log(dt_min)).clamp(min=dt_init_floor)
        with torch.no_grad():  # bias = softplus⁻¹(dt), so that softplus(bias) = dt initially
            self.dt_proj.bias.copy_(dt + torch.log(-torch.expm1(-dt)))
        mark_ssm_param(self.dt_proj.bias, lr)
        # S4D-Real: A = −(1, ..., N) for every channel, stored as log(−A)
        A = torch.arange(1, d_state + 1, dtype=torch.float32).repeat(d_inner, 1)
        self.A_log = mark_ssm_param(nn.Parameter(torch.log(A)), lr)
        self.D = mark_ssm_param(nn.Parameter(torch.ones(d_inner)), lr)
        self.out_proj = nn.Linear(d_inner, d_model, bias=bias)

    def _scan(self, x, dt, A, B, C, z, h0, want_state):
        if self.scan_backend == "mamba_ssm":
            if not mamba_ssm_available() or not x.is_cuda:
                raise RuntimeError("scan_backend='mamba_ssm': needs CUDA tensors and an "
                                   "importable mamba_ssm (pip install 'subspace-ssm[cuda]')")
            if h0 is not None:
                raise ValueError("initial_state: mamba-ssm's kernel takes no initial state; "
                                 "use scan_backend='triton' or 'torch'")
            from mamba_ssm.ops.selective_scan_interface import selective_scan_fn

            res = selective_scan_fn(x, dt, A, B, C, self.D.float(), z=z,
                                    delta_bias=self.dt_proj.bias.float(), delta_softplus=True,
                                    return_last_state=want_state)
            return res if want_state else (res, None)
        res = selective_scan(x, dt, A, B, C, self.D.float(), z, self.dt_proj.bias.float(), True,
                             h0, True, backend=self.scan_backend)
        return res

    def forward(self, hidden: torch.Tensor, mask: torch.Tensor | None = None,
                initial_state: MambaState | None = None, return_state: bool = False
                ) -> torch.Tensor | tuple[torch.Tensor, MambaState]:
        """Full-sequence forward.

        Args:
            hidden: ``[batch, L, d_model]``.
            mask: bool ``[batch, L]`` (right padding) or None. Padded inputs are zeroed and
                padded steps leave the SSM state unchanged, so outputs at real positions and
                the returned state ignore the padding.
            initial_state: ``(conv_state, ssm_state)`` from a previous call or None.
            return_state: also return ``(conv_state, ssm_state)`` after the last real step.

        Returns ``[batch, L, d_model]``, or ``(output, state)``.
        """
        if hidden.dim() != 3 or hidden.shape[-1] != self.d_model:
            raise ValueError(f"hidden: expected shape (batch, L, {self.d_model}), "
                             f"got {tuple(hidden.shape)}")
        b, L, _ = hidden.shape
        mask = check_mask(mask, b, L)
        conv_state, ssm_state = (None, None) if initial_state is None else initial_state
        if conv_state is not None:
            self._check_state(conv_state, ssm_state, b)
        xz = self.in_proj(hidden).transpose(1, 2)  # [b, 2·d_inner, L]
        x, z = xz.chunk(2, dim=1)
        if mask is not None:
            x = x * mask[:, None, :]
        k = self.d_conv - 1
        prev = x.new_zeros(b, self.d_inner, k) if conv_state is None else conv_state.to(x.dtype)
        x_ext = torch.cat([prev, x], dim=-1)  # causal: the k previous inputs come first
        x = F.silu(F.conv1d(x_ext, self.conv1d.weight, self.conv1d.bias, groups=self.d_inner))
        x_dbl = self.x_proj(x.transpose(1, 2))  # [b, L, dt_rank + 2N]
        dt_low, B, C = x_dbl.split([self.dt_rank, self.d_state, self.d_state], dim=-1)
        dt = (dt_low @ self.dt_proj.weight.T).transpose(1, 2)  # [b, d_inner, L], bias in scan
        if mask is not None:
            dt = torch.where(mask[:, None, :], dt, torch.full_like(dt, _PAD_DELTA))
        A = -torch.exp(self.A_log.float())
        y, last = self._scan(x, dt, A, B.transpose(1, 2), C.transpose(1, 2), z, ssm_state,
                             return_state)
        out = self.out_proj(y.transpose(1, 2))
        if not return_state:
            return out
        # conv state: the last k (real) inputs of the convolution
        if mask is not None:
            x_ext = torch.cat([prev, right_align(x_ext[..., k:], lengths_of(mask))], dim=-1)
        return out, (x_ext[..., x_ext.shape[-1] - k:], last)

    def _check_state(self, conv_state, ssm_state, batch) -> None:
        exp_conv = (batch, self.d_inner, self.d_conv - 1)
        exp_ssm = (batch, self.d_inner, self.d_state)
        if conv_state is None or tuple(conv_state.shape) != exp_conv:
            raise ValueError(f"conv_state: expected shape {exp_conv}, got "
                             f"{None if conv_state is None else tuple(conv_state.shape)}")
        if ssm_state is None or tuple(ssm_state.shape) != exp_ssm:
            raise ValueError(f"ssm_state: expected shape {exp_ssm}, got "
                             f"{None if ssm_state is None else tuple(ssm_state.shape)}")

    def default_state(self, batch: int, device: torch.device | str | None = None,
                      dtype: torch.dtype = torch.float32) -> MambaState:
        """Zero ``(conv_state [batch, d_inner, d_conv − 1], ssm_state [batch, d_inner, N])``."""
        return (torch.zeros(batch, self.d_inner, self.d_conv - 1, device=device, dtype=dtype),
                torch.zeros(batch, self.d_inner, self.d_state, device=device,
                            dtype=torch.float32))

    def step(self, hidden: torch.Tensor, state: MambaState
             ) -> tuple[torch.Tensor, MambaState]:
        """One generation step: ``hidden [batch, d_model]`` → ``(out [batch, d_model], state)``."""
        conv_state, ssm_state = state
        self._check_state(conv_state, ssm_state, hidden.shape[0])
        x, z = self.in_proj(hidden).chunk(2, dim=-1)  # [b, d_inner] each
        window = torch.cat([conv_state, x[..., None]], dim=-1)  # [b, d_inner, d_conv]
        x = (window * self.conv1d.weight[:, 0, :]).sum(-1)
        if self.conv1d.bias is not None:
            x = x + self.conv1d.bias
        x = F.silu(x)
        dt_low, B, C = self.x_proj(x).split([self.dt_rank, self.d_state, self.d_state], dim=-1)
        dt = F.softplus(self.dt_proj(dt_low)).float()  # [b, d_inner]
        A = -torch.exp(self.A_log.float())
        h = torch.exp(dt[..., None] * A) * ssm_state + (dt * x.float())[..., None] * B.float()[:, None, :]
        y = (h * C.float()[:, None, :]).sum(-1) + self.D.float() * x.float()
        y = (y * F.silu(z.float())).to(hidden.dtype)
        return self.out_proj(y), (window[..., 1:], h)
