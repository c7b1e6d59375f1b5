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

from subspace_core.eval import Protocol, protocol_doc, register_protocol
from subspace_core.zoo import PretrainedCfg, register_model
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
        description=protocol_doc(__doc__, "movielens_ctr"),
    )
)

#: Shipped checkpoints: id -> (sha256, bytes, num_params, metrics of movielens_ctr).
SHIPPED: dict[str, tuple[str, int, int, dict[str, float]]] = {
    "recsys/deepfm_small.ml100k": (
        "80df566aaa8a04ef56205ac2a6de304815effb31aa097ef2de3c25e4f9a0a175", 752_928, 178_244,
        {"auc": 0.705430488963358, "logloss": 0.6334966176184628},
    ),
}
_SHA, _BYTES, _PARAMS, _METRICS = SHIPPED["recsys/deepfm_small.ml100k"]


@register_model(
    "recsys/deepfm_small.ml100k",
    pretrained_cfg=PretrainedCfg(
        file="deepfm_small.ml100k.safetensors",
        sha256=_SHA,
        num_bytes=_BYTES,
        num_params=_PARAMS,
        license="Apache-2.0 (weights); MovieLens-100K data: GroupLens research terms",
        paper="Guo et al. 2017, DeepFM: A Factorization-Machine based Neural Network for CTR "
        "Prediction, IJCAI 2017, arXiv:1703.04247; Liu et al. 2022, Monolith: Real Time "
        "Recommendation System With Collisionless Embedding Table, arXiv:2209.07663",
        recipe="subspace_recsys.recipes.deepfm_ml100k:train",
        metrics={"movielens_ctr": _METRICS},
        data={"dataset": "movielens_100k", "label": "rating >= 4", "split": "time-ordered "
              "80/10/10 (train 80,000 / validation 10,000 / test 10,000)",
              "fields": list(MOVIELENS_FIELDS), "ids": "global: field << 40 | value"},
        train_budget="5 epochs x 157 steps (batch 512), best validation epoch kept: 37 s on "
        "one core of a busy 2-core machine (OMP_NUM_THREADS=1)",
        package="subspace_recsys.weights",
        notes="The checkpoint holds the dense weights and the whole CollisionlessEmbedding "
        "state (cuckoo index: keys, rows, counts, last-seen; row storage 4,096 x 17 with the "
        "Adagrad accumulators, so training can continue); num_params counts every stored "
        "scalar. Ids unseen in training get zero vectors at serving time (in the time-ordered "
        "split, 86 % of test ratings come from users with no training rating).",
    ),
    protocols=("movielens_ctr",),
    description="DeepFM (embedding 16, MLP 64-32) on a collisionless embedding table, "
    "MovieLens-100K as CTR.",
)
def deepfm_small_ml100k(**overrides) -> nn.Module:
    """DeepFM (embedding 16, MLP 64-32) over one CollisionlessEmbedding (Adagrad rows) for
    the 11 MovieLens CTR fields; ``overrides`` replace DeepFM keyword arguments."""
    cfg = DEEPFM_ML100K
    table = dict(cfg["table"])
    kwargs = {"hidden": cfg["hidden"], "dropout": cfg["dropout"],
              "embedding_factory": lambda dim: CollisionlessEmbedding(dim, **table)} | overrides
    return DeepFM(len(MOVIELENS_FIELDS), cfg["embed_dim"], **kwargs)
