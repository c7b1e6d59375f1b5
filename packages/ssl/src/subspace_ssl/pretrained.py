"""Shipped checkpoints of the ssl package.

Each entry of :data:`SHIPPED` is one checkpoint trained by its recipe (``subzoo train ID``)
and scored by its protocols (``subzoo eval ID [--protocol P]``); the claimed metrics are what
those commands measured on the shipped file.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from subspace_core.zoo import PretrainedCfg, register_model
from subspace_ssl.encoders import build_encoder

__all__ = ["SHIPPED"]

_BT_PAPER = ("Zbontar, Jing, Misra, LeCun & Deny 2021, Barlow Twins: Self-Supervised Learning "
             "via Redundancy Reduction, arXiv:2103.03230")
_MBT_PAPER = ("Bandara, De Melo & Patel 2023, Guarding Barlow Twins Against Overfitting with "
              "Mixed Samples, arXiv:2312.02151")
_FMNIST_DATA = {"dataset": "fashion_mnist", "split": "train (60,000; labels unused)",
                "input": "float32 [N, 1, 28, 28]: pixel/255, normalised mean 0.2860 std 0.3530",
                "output": "[N, 256] global-average-pooled embedding"}

#: model id → sha256, bytes, parameters, claimed metrics {protocol: {metric: value}}, card text,
#: builder (no arguments) of the architecture.
SHIPPED: dict[str, dict[str, Any]] = {}


def _register(model_id: str, cfg: dict[str, Any]) -> None:
    build = cfg["build"]

    def builder(**overrides) -> nn.Module:
        return build(**overrides)

    builder.__name__ = model_id.split("/", 1)[1].replace(".", "_")
    register_model(
        model_id,
        pretrained_cfg=PretrainedCfg(
            file=model_id.split("/", 1)[1] + ".safetensors", sha256=cfg["sha256"],
            num_bytes=cfg["num_bytes"], num_params=cfg["num_params"], license="Apache-2.0",
            paper=cfg["paper"], recipe=cfg["recipe"], metrics=cfg["metrics"], data=cfg["data"],
            train_budget=cfg["train_budget"], package="subspace_ssl.weights",
            notes=cfg.get("notes", "")),
        protocols=cfg["protocols"],
        description=cfg["description"],
    )(builder)


def _tiny_encoder(**overrides) -> nn.Module:
    if overrides:
        raise ValueError(f"overrides: the shipped encoder takes none, got {sorted(overrides)}")
    return build_encoder("tiny")


for _model_id, _cfg in SHIPPED.items():
    _register(_model_id, _cfg)
