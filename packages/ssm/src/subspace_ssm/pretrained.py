"""Shipped checkpoints of the ssm package.

``ssm/s4d_tiny.sfmnist``: S4D-LegS (d_model 32, 4 layers, d_state 32; 21,706 parameters)
on sequential Fashion-MNIST, trained by :mod:`subspace_ssm.recipes.s4d_sfmnist`
(``subzoo train ssm/s4d_tiny.sfmnist``) and scored by the ``sfmnist_test`` and
``ptd_robustness`` protocols (``subzoo eval ssm/s4d_tiny.sfmnist [--protocol P]``). The
claimed metrics below are what those commands measured on the shipped file.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from subspace_core.zoo import PretrainedCfg, register_model
from subspace_ssm.recipes import s4d_sfmnist

__all__ = ["SHIPPED"]

_S4D_PAPER = ("Gu, Gupta, Goel & Ré 2022, On the Parameterization and Initialization of "
              "Diagonal State Space Models, arXiv:2206.11893")

#: checkpoint file → sha256, bytes, parameters, claimed metrics {protocol: {metric: value}}.
SHIPPED: dict[str, dict[str, Any]] = {
    s4d_sfmnist.CHECKPOINT_FILE: {
        "sha256": "0538818d9f66f7a8a1cfacbdae1681a29c0159a75f19d895070a4bb6fee88f4f",
        "num_bytes": 90_752,
        "num_params": 21_706,
        "metrics": {
            "sfmnist_test": {"top1": 86.36, "nll": 0.363412},
            "ptd_robustness": {"robust_top1": 54.125, "top1_clean": 87.3,
                               "top1_low_0.25": 55.45, "top1_low_0.5": 38.8, "top1_low_1": 27.5,
                               "top1_high_0.25": 78.1, "top1_high_0.5": 69.25,
                               "top1_high_1": 55.65},
        },
        "train_budget": "2 epochs x 938 steps of 64 (1,876 steps), one thread: 2,850 s "
        "(47.5 min) on a 2-core CPU shared with other jobs",
    },
}


def _s4d_tiny_sfmnist(**overrides) -> nn.Module:
    from subspace_ssm.zoo import build

    return build("s4d_tiny", "sfmnist", **overrides)


_DESCRIPTION = ("S4D-LegS classifier (d_model=32, 4 layers, d_state=32, 21.7k params) trained "
                "on sequential Fashion-MNIST (pixel by pixel, L=784), 2 epochs on CPU.")
_CFG = SHIPPED.get(s4d_sfmnist.CHECKPOINT_FILE)
if _CFG is not None:
    register_model(
        s4d_sfmnist.MODEL_ID,
        pretrained_cfg=PretrainedCfg(
            file=s4d_sfmnist.CHECKPOINT_FILE,
            sha256=_CFG["sha256"],
            num_bytes=_CFG["num_bytes"],
            num_params=_CFG["num_params"],
            license="Apache-2.0",
            paper=_S4D_PAPER,
            recipe="subspace_ssm.recipes.s4d_sfmnist:train",
            metrics=_CFG["metrics"],
            data={"dataset": "fashion_mnist", "split": "train (60,000)",
                  "input": "float32 [N, 784, 1]: pixel/255, normalised mean 0.2860 std 0.3530, "
                  "row-major pixel sequence", "classes": 10},
            train_budget=_CFG["train_budget"],
            package="subspace_ssm.weights",
            notes=_CFG.get("notes", ""),
        ),
        protocols=("sfmnist_test", "ptd_robustness"),
        description=_DESCRIPTION,
    )(_s4d_tiny_sfmnist)
else:  # recipe only: no checkpoint shipped yet
    register_model(s4d_sfmnist.MODEL_ID, protocols=("sfmnist_test", "ptd_robustness"),
                   recipe="subspace_ssm.recipes.s4d_sfmnist:train",
                   description=_DESCRIPTION + " No weights shipped yet.")(_s4d_tiny_sfmnist)
