"""Evaluation: protocol registry, the ``evaluate`` runner, results as CSV rows."""

from subspace_core.eval.classification import image_classification_protocol, normalize_images
from subspace_core.eval.metrics import roc_auc
from subspace_core.eval.protocol import (
    Protocol,
    get_protocol,
    list_protocols,
    protocol_doc,
    register_protocol,
)
from subspace_core.eval.results import ResultRow, append_results, environment_info, read_results
from subspace_core.eval.runner import EvalResult, evaluate

__all__ = [
    "EvalResult",
    "Protocol",
    "ResultRow",
    "append_results",
    "environment_info",
    "evaluate",
    "get_protocol",
    "image_classification_protocol",
    "list_protocols",
    "normalize_images",
    "protocol_doc",
    "read_results",
    "register_protocol",
    "roc_auc",
]
