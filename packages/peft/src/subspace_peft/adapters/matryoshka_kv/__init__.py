"""MatryoshkaKV (Lin et al., 2024, arXiv:2410.14731): trainable orthogonal projections of keys
and values with nested (Matryoshka) ranks, compressing a decoder's KV cache.

Each key-value head caches ``k U_k[:, :r_k]`` and ``v U_v[:, :r_v]`` instead of ``k, v``
(:class:`MatryoshkaKVAttention`); ``U`` starts at the PCA basis of calibration keys / values
(the training-free baseline) and is trained, kept orthogonal, by distilling the full-rank model
into the model at ranks drawn per step from a nested schedule, so one set of bases serves every
cache budget (:class:`MatryoshkaKVModel`).
"""

from subspace_peft.adapters.matryoshka_kv.config import MatryoshkaKVConfig
from subspace_peft.adapters.matryoshka_kv.layer import (
    KVStatistics,
    MatryoshkaKVAttention,
    orthogonal_basis,
)
from subspace_peft.adapters.matryoshka_kv.model import (
    MatryoshkaKVModel,
    distillation_kl,
    orthogonality_error,
)

__all__ = ["KVStatistics", "MatryoshkaKVAttention", "MatryoshkaKVConfig", "MatryoshkaKVModel",
           "distillation_kl", "orthogonal_basis", "orthogonality_error"]
