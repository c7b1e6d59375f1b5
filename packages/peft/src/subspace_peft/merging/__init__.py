"""Model merging: task vectors, task arithmetic, TIES, AdaMerging and Concrete subspace merging.

* :mod:`.task_vectors` — task vectors ``τ_t = θ_t − θ_0`` over parameters chosen by name,
  task arithmetic ``θ_0 + Σ_t λ_t (m ⊙ τ_t)`` (Ilharco et al., 2022) and TIES-merging
  (trim, elect sign, disjoint mean; Yadav et al., 2023).
* :mod:`.adamerging` — AdaMerging (Yang et al., 2023): task-wise or layer-wise coefficients
  learned by minimising the prediction entropy on unlabeled test inputs, the merged weights
  a differentiable function of them (:class:`TaskVectorMerger`, ``torch.func``).
* :mod:`.concrete` — Concrete subspace merging (Tang et al., 2023): a mask shared by the task
  vectors, learned through its binary Concrete relaxation by bi-level entropy minimisation,
  then binarised; Concrete TA and Concrete AM.

Heads are never merged: each task keeps its own, applied by the ``task_forward`` callable.
"""

from subspace_peft.merging.adamerging import (
    AdaMergingConfig,
    TaskForward,
    TaskVectorMerger,
    adamerging,
    entropy_loss,
    merging_entropy,
    sample_batches,
)
from subspace_peft.merging.concrete import (
    BINARIZE_METHODS,
    ConcreteConfig,
    ConcreteMask,
    ConcreteResult,
    concrete_merging,
    concrete_sample,
    keep_fraction,
    learn_concrete_mask,
    rescale_mask,
)
from subspace_peft.merging.task_vectors import (
    StateDictLike,
    TaskVector,
    check_task_vectors,
    load_merged,
    parameter_dict,
    task_arithmetic,
    task_vector,
    task_vectors,
    ties_disjoint_merge,
    ties_elect_sign,
    ties_merging,
    ties_trim,
)

__all__ = [
    "BINARIZE_METHODS",
    "AdaMergingConfig",
    "ConcreteConfig",
    "ConcreteMask",
    "ConcreteResult",
    "StateDictLike",
    "TaskForward",
    "TaskVector",
    "TaskVectorMerger",
    "adamerging",
    "check_task_vectors",
    "concrete_merging",
    "concrete_sample",
    "entropy_loss",
    "keep_fraction",
    "learn_concrete_mask",
    "load_merged",
    "merging_entropy",
    "parameter_dict",
    "rescale_mask",
    "sample_batches",
    "task_arithmetic",
    "task_vector",
    "task_vectors",
    "ties_disjoint_merge",
    "ties_elect_sign",
    "ties_merging",
    "ties_trim",
]
