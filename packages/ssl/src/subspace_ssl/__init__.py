"""Subspace Zoo: self-supervised subspace objectives (see the package README).

Importing the package does not register anything with the core; the ``subzoo`` plugin
(:mod:`subspace_ssl.plugin`) does, and Starbucks loads ``transformers`` only when used.
"""

from subspace_ssl.augment import AugmentConfig, augment
from subspace_ssl.barlow import (
    MixedBarlowLoss,
    barlow_twins_loss,
    cross_correlation,
    mixup_regulariser,
    standardize,
)
from subspace_ssl.data import load_images, to_input
from subspace_ssl.dsl import DSLTrainer, DynamicSubspaceLearners, build_dsl
from subspace_ssl.encoders import ConvEncoder, Projector, build_encoder
from subspace_ssl.gcr import (
    GCRClassifier,
    GrassmannClassHead,
    LinearClassifier,
    build_classifier,
    build_optimizers,
)
from subspace_ssl.probes import embed, knn_accuracy, linear_probe, pixel_features
from subspace_ssl.rankme import rankme, select_by_rankme, spearman
from subspace_ssl.retrieval import clustering_nmi, recall_at_k
from subspace_ssl.starbucks import (
    STARBUCKS_SCHEDULE,
    StarbucksLoss,
    StarbucksMiniLM,
    load_adapter,
    save_adapter,
    starbucks_minilm,
)

__all__ = [
    "STARBUCKS_SCHEDULE",
    "AugmentConfig",
    "ConvEncoder",
    "DSLTrainer",
    "DynamicSubspaceLearners",
    "GCRClassifier",
    "GrassmannClassHead",
    "LinearClassifier",
    "MixedBarlowLoss",
    "Projector",
    "StarbucksLoss",
    "StarbucksMiniLM",
    "augment",
    "barlow_twins_loss",
    "build_classifier",
    "build_dsl",
    "build_encoder",
    "build_optimizers",
    "clustering_nmi",
    "cross_correlation",
    "embed",
    "knn_accuracy",
    "linear_probe",
    "load_adapter",
    "load_images",
    "mixup_regulariser",
    "pixel_features",
    "rankme",
    "recall_at_k",
    "save_adapter",
    "select_by_rankme",
    "spearman",
    "standardize",
    "starbucks_minilm",
    "to_input",
]
