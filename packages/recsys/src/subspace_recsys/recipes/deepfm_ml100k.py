"""Recipe of ``recsys/deepfm_small.ml100k``: DeepFM on a collisionless table, MovieLens CTR.

Data: :func:`~subspace_recsys.data.load_movielens_ctr` (rating >= 4 -> click; time-ordered
80/10/10 split; 11 fields as global ids). Model: :func:`~subspace_recsys.zoo.
deepfm_small_ml100k` -- DeepFM, embedding 16 (+1 first-order column), MLP 64-32, one
:class:`~subspace_recsys.table.CollisionlessEmbedding` (admit on first sight, no expiry,
Adagrad lr 0.05 on the rows, N(0, 0.01) init). Training: dense parameters with Adam
(lr 1e-3), batch 512, shuffled with seed ``seed + epoch``, ``EPOCHS`` epochs; after each
epoch the validation AUC is measured and the state of the best epoch is kept (the shipped
checkpoint). ``torch.manual_seed(0)`` before building the model; one torch thread, so
the run is bit-reproducible on one machine/torch build.

Budget: 5 epochs of 157 steps; about 1 min on one core of a busy 2-core machine. ``quick``
trains one epoch on the first 20,000 training ratings (a smoke test, not a reproduction).
"""

from __future__ import annotations

import copy
from pathlib import Path

import torch

from subspace_core.zoo import save_state_dict
from subspace_recsys.batch import evaluate_ctr, train_ctr
from subspace_recsys.data import load_movielens_ctr

__all__ = ["EPOCHS", "FILE", "MODEL_ID", "train"]

MODEL_ID = "recsys/deepfm_small.ml100k"
FILE = "deepfm_small.ml100k.safetensors"
EPOCHS = 5
BATCH_SIZE = 512
DENSE_LR = 1e-3


def train(out_dir: str | Path, *, quick: bool = False, progress: bool = True) -> Path:
    """Train the DeepFM; returns ``out_dir/deepfm_small.ml100k.safetensors`` (written
    atomically, with a ``.sha256`` sidecar)."""
    from subspace_recsys.zoo import DEEPFM_ML100K, deepfm_small_ml100k

    out_dir = Path(out_dir)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        train_split = load_movielens_ctr("train")
        if quick:
            train_split = train_split.batch(slice(0, 20_000))
        val = load_movielens_ctr("validation")
        torch.manual_seed(0)
        model = deepfm_small_ml100k()
        best: dict = {"val_auc": -1.0}

        def keep_best(epoch: int, m: torch.nn.Module, loss: float) -> None:
            metrics = evaluate_ctr(m, val)
            if progress:
                print(f"epoch {epoch + 1}: train loss {loss:.4f}, validation AUC "
                      f"{metrics['auc']:.4f}, log loss {metrics['logloss']:.4f}", flush=True)
            if metrics["auc"] > best["val_auc"]:
                best.update(val_auc=metrics["auc"], val_logloss=metrics["logloss"],
                            epoch=epoch + 1, state=copy.deepcopy(m.state_dict()))

        train_ctr(model, train_split, epochs=1 if quick else EPOCHS, batch_size=BATCH_SIZE,
                  dense_lr=DENSE_LR, seed=0, on_epoch_end=keep_best)
    finally:
        torch.set_num_threads(threads)
    path = out_dir / FILE
    save_state_dict(best["state"], path, metadata={
        "model_id": MODEL_ID, "quick": quick, "best_epoch": best["epoch"],
        "validation_auc": round(best["val_auc"], 6), "config": DEEPFM_ML100K,
        "epochs": 1 if quick else EPOCHS, "batch_size": BATCH_SIZE, "dense_lr": DENSE_LR})
    return path
