"""CorDA (Yang et al., 2024, arXiv:2406.05223): context-oriented decomposition adaptation.

SVD of ``W C`` (``C`` the input covariance from a few calibration batches), ``W = U S Vᵀ C⁻¹``;
the ``r`` smallest (``"kpm"``, knowledge-preserved) or largest (``"ipm"``,
instruction-previewed) components initialise a LoRA pair, the rest stays frozen.
"""

from subspace_peft.adapters.corda.config import MODES, CorDAConfig
from subspace_peft.adapters.corda.layer import CorDADecomposition, CorDALinear, corda_decompose
from subspace_peft.adapters.corda.model import CorDAModel

__all__ = ["MODES", "CorDAConfig", "CorDADecomposition", "CorDALinear", "CorDAModel",
           "corda_decompose"]
