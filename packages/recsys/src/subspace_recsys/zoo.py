"""The recsys zoo: protocol ``movielens_ctr`` and the shipped ``recsys/deepfm_small.ml100k``.

**Protocol ``movielens_ctr``**: MovieLens-100K as CTR (a rating >= 4 is a click), the
time-ordered split of :func:`~subspace_recsys.data.load_movielens_ctr` (all ratings sorted by
timestamp; train the first 80 %, validation the next 10 %, test the last 10,000 ratings).
The model scores the whole test split in eval mode (its tables are read-only: ids never seen
in training get zero vectors); ``auc`` is the ROC AUC with ties counted one half,
``logloss`` the mean binary cross-entropy of the logits (:mod:`subspace_recsys.metrics`).
"""

from __future__ import annotations

from functools import lru_cache

import torch
from torch import nn

from subspace_core.eval import Protocol, register_protocol
from subspace_recsys.batch import evaluate_ctr
from subspace_recsys.data import MOVIELENS_FIELDS, load_movielens_ctr
from subspace_recsys.models import DeepFM
from subspace_recsys.table import CollisionlessEmbedding

__all__ = ["DEEPFM_ML100K", "MOVIELENS_CTR", "SHIPPED", "deepfm_small_ml100k",
           "movielens_ctr_metrics"]

#: Architecture of ``recsys/deepfm_small.ml100k`` (the recipe trains exactly this).
DEEPFM_ML100K = {"embed_dim": 16, "hidden": (64, 32), "dropout": 0.0,
                 "table": {"optimizer": "adagrad", "lr": 0.05, "init_std": 0.01}}


@lru_cache(maxsize=1)
def _test_split():
    return load_movielens_ctr("test")


@torch.no_grad()
def movielens_ctr_metrics(model: nn.Module, device: torch.device | str = "cpu"
                          ) -> dict[str, float]:  # fmt: skip
    """``auc`` and ``logloss`` of ``model(ids, dense=None, now=...) -> logits`` on the
    MovieLens-100K CTR test split (see module doc). Tables run on CPU."""
    if torch.device(device).type != "cpu":
        raise ValueError(f"device: the collisionless tables run on CPU only, got {device}")
    result = evaluate_ctr(model, _test_split())
    return {"auc": result["auc"], "logloss": result["logloss"]}


def _protocol_doc(name: str) -> str:
    return (__doc__ or "").split(f"**Protocol ``{name}``**")[1].split("\n\n")[0].strip(": \n")


MOVIELENS_CTR = register_protocol(
    Protocol(
        name="movielens_ctr",
        dataset="movielens_100k",
        split="test",
        preprocessing="rating >= 4 -> click; all ratings sorted by timestamp, test = the last "
        "10 %; 11 fields (user, item, age group, gender, occupation, zip region, release "
        "decade, two genres, hour, weekday) as global ids (field << 40 | value)",
        metrics=("auc", "logloss"),
        higher_is_better=(True, False),
        run=movielens_ctr_metrics,
        description=_protocol_doc("movielens_ctr"),
    )
)

#: Shipped checkpoints: id -> (sha256, bytes, num_params, metrics of movielens_ctr).
SHIPPED: dict[str, tuple[str, int, int, dict[str, float]]] = {}


def deepfm_small_ml100k(**overrides) -> nn.Module:
    """DeepFM (embedding 16, MLP 64-32) over one CollisionlessEmbedding (Adagrad rows) for
    the 11 MovieLens CTR fields; ``overrides`` replace DeepFM keyword arguments."""
    cfg = DEEPFM_ML100K
    table = dict(cfg["table"])
    kwargs = {"hidden": cfg["hidden"], "dropout": cfg["dropout"],
              "embedding_factory": lambda dim: CollisionlessEmbedding(dim, **table)} | overrides
    return DeepFM(len(MOVIELENS_FIELDS), cfg["embed_dim"], **kwargs)
