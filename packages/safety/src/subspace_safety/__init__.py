"""Subspace Zoo: concept subspaces for safe generation and robust embeddings.

* :class:`ConceptSubspace` -- an SVD basis of a concept's embeddings: project in / out,
  per-token proximity, save / load (:mod:`subspace_safety.concept`);
* SAFREE (:mod:`subspace_safety.safree`): flag prompt tokens near a toxic concept subspace
  and project them onto its orthogonal complement within the prompt's own input space;
  self-validating step count; Fourier re-attention. :class:`SafreeStableDiffusion` runs it
  inside a diffusers text-to-image pipeline (:mod:`subspace_safety.diffusers_integration`,
  extra ``diffusers``);
* :class:`EigenShield` (Marchenko-Pastur bulk edge, robustness-based score, quantile) and
  the plain :class:`PCAProjection` baseline (:mod:`subspace_safety.eigenshield`);
* Effort (:func:`apply_effort`): SVD-split layers with frozen principal and trainable,
  orthogonality-constrained residual components (:mod:`subspace_safety.effort`);
* :class:`LiTClip` -- a CLIP-like model assembled LiT-style from a frozen ImageNet
  MobileNetV2 and a frozen MiniLM, only the projections trained (:mod:`subspace_safety.lit_clip`;
  shipped as ``safety/lit_clip_mnv2_minilm.fmnist_mnist``);
* small VAE / DCGAN / DDPM generators for Fashion-MNIST (:mod:`subspace_safety.generators`),
  their cached fakes (:mod:`subspace_safety.fakes`) and a MobileNetV2 fake detector adapted by
  Effort, LoRA or full fine-tuning (:mod:`subspace_safety.detector`; the Effort one shipped
  as ``safety/effort_mnv2_b14.fmnist_dcgan``, stored as its trained residuals and head);
* :class:`NudeNetEvaluator` -- NudeNet's ONNX detector as an external image-safety evaluator
  (nudity rate, per-label counts) on tensors or PIL images (:mod:`subspace_safety.nudenet_eval`,
  extra ``nudenet``);
* L-inf PGD (:func:`pgd_linf`) and the EigenShield robustness evaluation
  (:mod:`subspace_safety.robustness`); SAFREE concept erasure on the LiT CLIP
  (:mod:`subspace_safety.erasure`).

Importing the package does not register anything with the core; the ``subzoo`` plugin
(:mod:`subspace_safety.plugin`) does. Status (issue 11): in development.
"""

from subspace_safety.attacks import pgd_linf
from subspace_safety.concept import ConceptSubspace
from subspace_safety.detector import (
    EffortFakeDetector,
    FakeDetector,
    adapt,
    roc_auc,
    train_detector,
)
from subspace_safety.effort import (
    EffortConv1x1,
    EffortLinear,
    EffortLosses,
    apply_effort,
    effort_layers,
    effort_losses,
)
from subspace_safety.eigenshield import EigenShield, PCAProjection, SubspaceFilter
from subspace_safety.erasure import (
    ErasureResult,
    LiTTokenEncoder,
    build_concept,
    evaluate_erasure,
    filter_prompts,
)
from subspace_safety.generators import GENERATORS, SmallDCGAN, SmallDDPM, SmallVAE
from subspace_safety.lit_clip import LiTClip, info_nce_loss, pool_tokens
from subspace_safety.nudenet_eval import NudeNetEvaluator, NudityReport
from subspace_safety.safree import (
    HFTextEncoder,
    SafreeResult,
    TokenEncoder,
    concept_subspace_from_prompts,
    fourier_reattention,
    safree_filter_prompts,
    safree_filter_tokens,
    self_validating_steps,
)

__all__ = [
    "GENERATORS",
    "ConceptSubspace",
    "EffortConv1x1",
    "EffortFakeDetector",
    "EffortLinear",
    "EffortLosses",
    "EigenShield",
    "ErasureResult",
    "FakeDetector",
    "HFTextEncoder",
    "LiTClip",
    "LiTTokenEncoder",
    "NudeNetEvaluator",
    "NudityReport",
    "PCAProjection",
    "SafreeResult",
    "SmallDCGAN",
    "SmallDDPM",
    "SmallVAE",
    "SubspaceFilter",
    "TokenEncoder",
    "adapt",
    "apply_effort",
    "build_concept",
    "concept_subspace_from_prompts",
    "effort_layers",
    "effort_losses",
    "evaluate_erasure",
    "filter_prompts",
    "fourier_reattention",
    "info_nce_loss",
    "pgd_linf",
    "pool_tokens",
    "roc_auc",
    "safree_filter_prompts",
    "safree_filter_tokens",
    "self_validating_steps",
    "train_detector",
]
