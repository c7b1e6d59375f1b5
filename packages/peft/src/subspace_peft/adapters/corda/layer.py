"""CorDA: context-oriented decomposition of a weight and the LoRA-like layer built from it.

Method (CorDA, Yang et al. 2024, arXiv:2406.05223; maths as in Hugging Face ``peft``'s
``tuners/lora/corda.py``). For a linear ``y = x Wᵀ`` (``W [out, in]``) with input covariance
``C = XᵀX [in, in]`` collected on a few calibration batches:

1. damp: ``C_λ = C + λ I`` with ``λ = damping · mean(diag C)``; ``damping`` starts at 0.01 and
   doubles until ``‖C_λ C_λ⁻¹ − I‖_F < 0.05`` (peft's test). Damping is not optional: ``C`` is
   singular whenever the calibration set has fewer tokens than ``in`` or the inputs lie in a
   subspace (LayerNorm outputs nearly do), and then ``(W C) C⁺ = W P_range(C) ≠ W``: the part of
   ``W`` acting on directions the data never visited would be lost. With ``λ > 0`` the
   identity ``W = (W C_λ) C_λ⁻¹`` is exact for every ``λ``.
2. decompose: ``W C_λ = U diag(S) Vᵀ`` (thin SVD, ``k = min(out, in)`` components, float64), so
   ``W = U diag(S) (Vᵀ C_λ⁻¹)``: each component ``S_i u_i (C_λ⁻¹ v_i)ᵀ`` is ordered by how much
   it moves the outputs *on this data* (``S_i = ‖W C_λ v_i‖``) rather than by its own size.
3. select ``r`` components: ``"ipm"`` (instruction-previewed) the ``r`` largest ``S``,
   ``"kpm"`` (knowledge-preserved) the ``r`` smallest, so that the components that carry
   the calibration data's knowledge stay frozen.
4. initialise the adapter with them and freeze the rest:
   ``B0 = U_r diag(√(S_r/c))``, ``A0 = diag(√(S_r/c)) V_rᵀ C_λ⁻¹`` (``c`` = LoRA scaling
   ``alpha / r``) and ``W_res = W − c B0 A0``; the layer computes ``x W_resᵀ + c x Aᵀ Bᵀ + b``,
   equal to the original layer at init.

Differences from peft, all deliberate: the decomposition runs in float64 (peft: float32) with
a Cholesky solve instead of an explicit inverse; the calibration inputs are scaled by their
largest *absolute* value (peft divides by ``torch.max(x).abs()``, the same whenever the
largest-magnitude entry is positive); calibration inputs of any batch size are flattened to
rows (peft's hook assumes batch size 1).

The trainable tensors are ``lora_A [r, in]`` and ``lora_B [out, r]``: ``r (in + out)`` scalars.
The initial factors are kept as buffers (``lora_A0``, ``lora_B0``): with the original base
weight they rebuild ``W_res`` on load, and they give the change with respect to the original
weight in LoRA form, ``c (B A − B0 A0) = [c B, −c B0] @ [A; A0]`` (rank ``2r``), which is what
:mod:`subspace_peft.adapters.export` hands to Hugging Face ``peft``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from subspace_core.linalg import robust_svd
from subspace_peft.adapters.base import AdapterLayer, lowrank_forward
from subspace_peft.adapters.corda.config import MODES

__all__ = ["CorDADecomposition", "CorDALinear", "corda_decompose"]


@dataclass
class CorDADecomposition:
    """``W C_λ = U diag(S) Vh`` with ``C_λ = C + λ I`` (all float64).

    Attributes:
        U: ``[out, k]``; S: ``[k]`` descending; Vh: ``[k, in]``; ``k = min(out, in)``.
        A: ``[k, in]`` = ``Vh C_λ⁻¹`` (so ``W = U diag(S) A``).
        damping: the final ``λ / mean(diag C)``.
        ridge: ``λ``.
    """

    U: torch.Tensor
    S: torch.Tensor
    Vh: torch.Tensor
    A: torch.Tensor
    damping: float
    ridge: float

    def reconstruct(self) -> torch.Tensor:
        """``U diag(S) Vh C_λ⁻¹`` ``[out, in]``: equals ``W`` up to float64 rounding."""
        return (self.U * self.S) @ self.A

    def indices(self, rank: int, mode: str) -> torch.Tensor:
        """Indices (into ``S``) of the ``rank`` components ``mode`` adapts."""
        k = self.S.numel()
        if mode not in MODES:
            raise ValueError(f"mode: expected one of {MODES}, got {mode!r}")
        if not 1 <= rank <= k:
            raise ValueError(f"rank: expected 1 <= rank <= min(out, in) = {k}, got {rank}")
        if mode == "ipm":
            return torch.arange(0, rank, device=self.S.device)
        return torch.arange(k - rank, k, device=self.S.device)

    def factors(self, rank: int, mode: str, scaling: float = 1.0
                ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(B0 [out, r], A0 [r, in])`` with ``scaling · B0 A0`` = the selected components."""
        idx = self.indices(rank, mode)
        root = torch.sqrt(self.S[idx] / scaling)
        return self.U[:, idx] * root, root[:, None] * self.A[idx]


@torch.no_grad()
def corda_decompose(weight: torch.Tensor, covariance: torch.Tensor, *,
                    damping: float = 0.01, max_doublings: int = 30) -> CorDADecomposition:
    """Context-oriented decomposition of ``weight [out, in]`` under ``covariance [in, in]``.

    See the module docstring (steps 1-2). Raises ``ValueError`` for wrong shapes, a
    non-finite input, or a covariance with no positive diagonal mass (layer never fed).
    """
    if weight.ndim != 2:
        raise ValueError(f"weight: expected a 2-D [out, in] tensor, got shape "
                         f"{tuple(weight.shape)}")
    n = weight.shape[1]
    if tuple(covariance.shape) != (n, n):
        raise ValueError(f"covariance: expected shape ({n}, {n}) for a weight of shape "
                         f"{tuple(weight.shape)}, got {tuple(covariance.shape)}")
    if not damping > 0:
        raise ValueError(f"damping: expected > 0, got {damping!r}")
    W = weight.detach().to(torch.float64)
    C = covariance.detach().to(device=W.device, dtype=torch.float64)
    if not bool(torch.isfinite(C).all()):
        raise ValueError("covariance: contains NaN or Inf")
    C = 0.5 * (C + C.T)  # accumulated sums can be off-symmetric by rounding
    mean_diag = float(torch.diagonal(C).mean())
    if not mean_diag > 0:
        raise ValueError(f"covariance: mean diagonal is {mean_diag}; expected > 0 (was the "
                         "layer fed any non-zero calibration input?)")
    eye = torch.eye(n, dtype=torch.float64, device=W.device)
    for _ in range(max_doublings):
        ridge = damping * mean_diag
        Cd = C + ridge * eye
        L, info = torch.linalg.cholesky_ex(Cd)
        if int(info) == 0:
            inv = torch.cholesky_solve(eye, L)
            if float(torch.linalg.matrix_norm(Cd @ inv - eye)) < 0.05:
                break
        damping *= 2.0
    else:  # pragma: no cover - a PSD matrix plus a positive ridge always factorises
        raise RuntimeError(f"corda_decompose: C + λI did not factorise after {max_doublings} "
                           "doublings of the damping")
    U, S, Vh = robust_svd(W @ Cd)
    # Vh C_λ⁻¹ = (C_λ⁻¹ Vhᵀ)ᵀ since C_λ is symmetric; a solve is more accurate than inv().
    A = torch.cholesky_solve(Vh.T.contiguous(), L).T
    return CorDADecomposition(U=U, S=S, Vh=Vh, A=A.contiguous(), damping=damping, ridge=ridge)


class CorDALinear(AdapterLayer):
    """LoRA-like layer with a residual base: ``y = x W_resᵀ + c · drop(x) Aᵀ Bᵀ + b``.

    Args:
        base_layer: the pretrained ``nn.Linear``; its weight parameter is *replaced* (not
            modified in place, so a weight tied elsewhere is untouched) by the frozen
            residual ``W − c B0 A0``.
        A0: ``[r, in]`` initial ``lora_A``; B0: ``[out, r]`` initial ``lora_B``.
        scaling: ``c`` (``alpha / r``).
        dropout: dropout probability on the adapter path's input.
    """

    trainable_names = ("lora_A", "lora_B")
    rebuild_names = ("lora_A0", "lora_B0")

    def __init__(self, base_layer: nn.Linear, A0: torch.Tensor, B0: torch.Tensor, *,
                 scaling: float = 1.0, dropout: float = 0.0) -> None:
        super().__init__(base_layer)
        r = A0.shape[0]
        if A0.ndim != 2 or A0.shape[1] != self.in_features:
            raise ValueError(f"A0: expected shape [r, {self.in_features}], got "
                             f"{tuple(A0.shape)}")
        if tuple(B0.shape) != (self.out_features, r):
            raise ValueError(f"B0: expected shape [{self.out_features}, {r}], got "
                             f"{tuple(B0.shape)}")
        W = base_layer.weight.detach()
        kw = {"dtype": W.dtype, "device": W.device}
        self.scaling = float(scaling)
        residual = W.to(torch.float64) - self.scaling * (
            B0.to(W.device, torch.float64) @ A0.to(W.device, torch.float64))
        base_layer.weight = nn.Parameter(residual.to(**kw), requires_grad=False)
        self.register_buffer("lora_A0", A0.detach().to(**kw).clone())
        self.register_buffer("lora_B0", B0.detach().to(**kw).clone())
        self.lora_A = nn.Parameter(self.lora_A0.clone())
        self.lora_B = nn.Parameter(self.lora_B0.clone())
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()

    @property
    def rank(self) -> int:
        return int(self.lora_A.shape[0])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        base = F.linear(x, self.base_layer.weight, self.base_layer.bias)
        return base + self.scaling * lowrank_forward(self.dropout(x), self.lora_A, self.lora_B)

    def original_weight(self) -> torch.Tensor:
        """``W_res + c B0 A0`` (the pretrained weight up to one rounding)."""
        w = self.base_layer.weight.detach().to(torch.float64) + self.scaling * (
            self.lora_B0.to(torch.float64) @ self.lora_A0.to(torch.float64))
        return w.to(self.base_layer.weight.dtype)

    @torch.no_grad()
    def merged_weight(self) -> torch.Tensor:
        w = self.base_layer.weight.to(torch.float64) + self.scaling * (
            self.lora_B.to(torch.float64) @ self.lora_A.to(torch.float64))
        return w.to(self.base_layer.weight.dtype)

    def lora_factors(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Change w.r.t. the original weight: ``B = [c B, −c B0] [out, 2r]``,
        ``A = [A; A0] [2r, in]`` (``B @ A = c (B A − B0 A0)``)."""
        B = torch.cat([self.lora_B, -self.lora_B0], dim=1) * self.scaling
        A = torch.cat([self.lora_A, self.lora_A0], dim=0)
        return B.detach(), A.detach()

    @torch.no_grad()
    def load_adapter_state(self, state: Mapping[str, torch.Tensor]) -> None:
        """Copy the trained ``lora_A, lora_B`` and, when the saved initial factors ``lora_A0,
        lora_B0`` differ from this layer's, adopt them and re-derive the frozen residual
        ``W_res = W0 − c B0 A0`` from the pretrained weight, so a layer built from any
        decomposition of the same ``W0`` ends up equal to the saved one."""
        super().load_adapter_state(state)
        A0, B0 = state["lora_A0"], state["lora_B0"]
        for name, new, old in (("lora_A0", A0, self.lora_A0), ("lora_B0", B0, self.lora_B0)):
            if tuple(new.shape) != tuple(old.shape):
                raise ValueError(f"CorDALinear.{name}: expected shape {tuple(old.shape)}, got "
                                 f"{tuple(new.shape)}")
        if torch.equal(A0.to(self.lora_A0), self.lora_A0) and \
                torch.equal(B0.to(self.lora_B0), self.lora_B0):
            return
        weight = self.base_layer.weight
        original = weight.to(torch.float64) + self.scaling * (
            self.lora_B0.to(torch.float64) @ self.lora_A0.to(torch.float64))
        residual = original - self.scaling * (B0.to(weight.device, torch.float64)
                                              @ A0.to(weight.device, torch.float64))
        weight.copy_(residual.to(weight.dtype))
        self.lora_A0.copy_(A0)
        self.lora_B0.copy_(B0)

    def extra_metadata(self) -> dict:
        return {"rank": self.rank, "scaling": self.scaling}

    def extra_repr(self) -> str:
        return super().extra_repr() + f", scaling={self.scaling}"
