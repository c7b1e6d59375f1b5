"""SVFit layer: a frozen linear whose top-``r`` singular values are trainable.

Method (SVFit, Sun et al. 2024, arXiv:2409.05926). With the SVD of the pretrained weight
``W = U diag(s) Vᵀ`` (``W [out, in]``), SVFit splits ``W = W_r + W_e`` with the best rank-``r``
approximation ``W_r = U_r diag(s_r) V_rᵀ``, trains only the ``r`` singular values ``s_r`` and
freezes the singular vectors ``U_r``, ``V_r`` and the remainder ``W_e``. The paper adapts no
singular vector (that is what separates it from PiSSA, which trains ``U_r diag(s_r)^½`` and
``diag(s_r)^½ V_rᵀ``, and from SVFT, which trains off-diagonal coefficients); its trainable
count is ``r`` per matrix.

Implementation choices:

* The trainable tensor is a delta ``δ [r]`` on ``s_r`` (zero at init), so the layer's weight is
  ``W + U_r diag(δ) V_rᵀ = W_e + U_r diag(s_r + δ) V_rᵀ``. Keeping the original ``W`` as the
  frozen weight (instead of ``W_e``) makes the output at init bit-identical to the original
  linear and costs the same.
* The SVD is computed once, in float64, with :func:`subspace_core.linalg.robust_svd` (retries
  instead of returning garbage); ``U_r [out, r]`` and ``V_rᵀ [r, in]`` are kept in the
  weight's dtype as non-persistent buffers (they are recomputed from the base weight when an
  adapter is loaded, so a saved SVFit adapter holds ``2r`` numbers per layer: ``δ`` and the
  ``s_r`` it was made with, the latter to check that the recomputed SVD is the same).
  A singular pair ``(u_i, v_i)`` is defined up to a joint sign flip, which leaves
  ``δ_i u_i v_iᵀ`` unchanged, so a recomputed SVD gives the same layer.
* Forward: ``y = x Wᵀ + ((x V_r) ⊙ δ) U_rᵀ + b`` costs ``r (in + out)`` extra multiply-adds
  per row; rebuilding ``W + U_r diag(δ) V_rᵀ`` costs ``r · in · out`` once per call. The layer
  takes whichever is cheaper for the call's number of rows (``rows (in + out) > in · out``
  favours rebuilding, e.g. more than 192 tokens per call for a 384 x 384 matrix); both give
  the same values and gradients.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import nn

from subspace_core.linalg import robust_svd, select_by_energy
from subspace_peft.adapters.base import AdapterLayer

__all__ = ["SVFitLinear", "select_rank"]


def select_rank(singular_values: torch.Tensor, rank: int | None = None,
                energy: float | None = None) -> int:
    """Number ``r`` of top singular values to train for a spectrum ``s [k]`` (descending).

    ``rank`` given: ``min(rank, k)``. ``energy`` given: the smallest ``r`` with
    ``sum(s[:r]**2) >= energy * sum(s**2)``. Neither: ``k``.
    """
    k = int(singular_values.numel())
    if rank is not None and energy is not None:
        raise ValueError("select_rank: give rank or energy, not both")
    if rank is not None:
        if isinstance(rank, bool) or not isinstance(rank, int) or rank < 1:
            raise ValueError(f"rank: expected an int >= 1, got {rank!r}")
        return min(rank, k)
    if energy is not None:
        if not 0.0 < energy <= 1.0:
            raise ValueError(f"energy: expected a fraction in (0, 1], got {energy!r}")
        # the core's energy rule (GPM's); an all-zero spectrum still trains one value
        return max(1, select_by_energy(singular_values, energy))
    return k


class SVFitLinear(AdapterLayer):
    """``nn.Linear`` adapter training the top-``r`` singular values (see the module doc).

    Args:
        base_layer: the pretrained ``nn.Linear`` (frozen; its weight is kept as is).
        rank: number of top singular values to train (clipped to ``min(out, in)``).
        energy: alternatively, the energy fraction that selects ``r`` (:func:`select_rank`).

    Tensors: ``delta_s [r]`` (trainable), ``singular_values [r]`` (``s_r``, frozen, saved),
    ``U_r [out, r]`` and ``Vh_r [r, in]`` (frozen, recomputed, not saved).
    """

    trainable_names = ("delta_s",)
    rebuild_names = ("singular_values",)

    def __init__(self, base_layer: nn.Linear, rank: int | None = None,
                 energy: float | None = None) -> None:
        super().__init__(base_layer)
        W = base_layer.weight.detach()
        U, S, Vh = robust_svd(W.to(torch.float64))
        r = select_rank(S, rank, energy)
        kw = {"dtype": W.dtype, "device": W.device}
        self.register_buffer("U_r", U[:, :r].to(**kw).contiguous(), persistent=False)
        self.register_buffer("Vh_r", Vh[:r].to(**kw).contiguous(), persistent=False)
        self.register_buffer("singular_values", S[:r].to(**kw).contiguous())
        self.delta_s = nn.Parameter(torch.zeros(r, **kw))

    @property
    def rank(self) -> int:
        return int(self.delta_s.numel())

    def effective_singular_values(self) -> torch.Tensor:
        """``s_r + δ [r]``: the trained top singular values (no gradient)."""
        return (self.singular_values + self.delta_s).detach()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        W, b = self.base_layer.weight, self.base_layer.bias
        rows = x.numel() // self.in_features
        if rows * (self.in_features + self.out_features) > self.in_features * self.out_features:
            return F.linear(x, torch.addmm(W, self.U_r * self.delta_s, self.Vh_r), b)
        return F.linear(x, W, b) + F.linear(F.linear(x, self.Vh_r) * self.delta_s, self.U_r)

    def original_weight(self) -> torch.Tensor:
        return self.base_layer.weight.detach()

    def lora_factors(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``B = U_r diag(δ) [out, r]``, ``A = V_rᵀ [r, in]``."""
        return (self.U_r * self.delta_s).detach(), self.Vh_r.detach().clone()

    @torch.no_grad()
    def load_adapter_state(self, state: Mapping[str, torch.Tensor]) -> None:
        """Load ``delta_s``, refusing it when the saved ``s_r`` differs from this SVD's."""
        super().load_adapter_state(state)
        saved = state["singular_values"].to(torch.float64).cpu()
        mine = self.singular_values.to(torch.float64).cpu()
        if saved.shape != mine.shape or not torch.allclose(
                saved, mine, rtol=1e-4, atol=1e-5 * float(mine.max().clamp_min(1e-12))):
            raise ValueError("SVFitLinear: the saved top singular values differ from those of "
                             "this base weight; the adapter was made for another model")
