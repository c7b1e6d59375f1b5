"""SVFit (Sun et al., 2024, arXiv:2409.05926): fine-tune only the top-r singular values.

``W = U diag(s) Vᵀ`` (SVD of the frozen pretrained weight); the top-``r`` singular values
``s_r`` are trainable (as a delta ``δ``: ``s_r + δ``, ``δ = 0`` at init), the singular
vectors and the remaining ``W_e = W − U_r diag(s_r) V_rᵀ`` stay frozen.
"""

from subspace_peft.adapters.svfit.config import SVFitConfig
from subspace_peft.adapters.svfit.layer import SVFitLinear, select_rank
from subspace_peft.adapters.svfit.model import SVFitModel

__all__ = ["SVFitConfig", "SVFitLinear", "SVFitModel", "select_rank"]
