"""Shipped checkpoints of the ssm package.

Each entry of :data:`SHIPPED` is one checkpoint trained by
:mod:`subspace_ssm.recipes.classifier` (``subzoo train ID``) and scored by its task's
protocols (``subzoo eval ID [--protocol P]``); the claimed metrics are what those commands
measured on the shipped file.

* ``ssm/s4d_tiny.sfmnist``: S4D-LegS (d_model 32, 4 layers, d_state 32), sequential
  Fashion-MNIST, 4 epochs.
* ``ssm/s5_ptd_tiny.sfmnist``: S5 with the perturb-then-diagonalise HiPPO-LegS init (d_model
  32, 4 layers, d_state 32), sequential Fashion-MNIST, 1 epoch.
* ``ssm/mamba_tiny.sfmnist14``: Mamba-1 (d_model 32, 4 blocks, d_state 8), sequential
  Fashion-MNIST at 14×14 (L = 196), 2 epochs.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from subspace_core.zoo import PretrainedCfg, register_model
from subspace_ssm.recipes.classifier import PRESETS, checkpoint_file
from subspace_ssm.zoo import PROTOCOLS, build

__all__ = ["SHIPPED"]

_S4D_PAPER = ("Gu, Gupta, Goel & Ré 2022, On the Parameterization and Initialization of "
              "Diagonal State Space Models, arXiv:2206.11893")
_PTD_PAPER = ("Yu, Nigmetov, Morozov, Mahoney & Erichson 2024, Robustifying State-space Models "
              "for Long Sequences via Approximate Diagonalization, arXiv:2310.01698 (S5: Smith, "
              "Warrington & Linderman 2023, arXiv:2208.04933)")
_MAMBA_PAPER = ("Gu & Dao 2023, Mamba: Linear-Time Sequence Modeling with Selective State "
                "Spaces, arXiv:2312.00752")
_SFMNIST_DATA = {"dataset": "fashion_mnist", "split": "train (60,000)",
                 "input": "float32 [N, 784, 1]: pixel/255, normalised mean 0.2860 std 0.3530, "
                 "row-major pixel sequence", "classes": 10}

#: model id → sha256, bytes, parameters, claimed metrics {protocol: {metric: value}}, card text.
SHIPPED: dict[str, dict[str, Any]] = {
    "ssm/s4d_tiny.sfmnist": {
        "sha256": "8a7a2af3ea1f2dba3920377d52638284782d10a8acc203b368bbf158a87a1129",
        "num_bytes": 90_816,
        "num_params": 21_706,
        "metrics": {
            "sfmnist_test": {"top1": 88.2, "nll": 0.31918},
            "ptd_robustness": {"robust_top1": 54.925, "top1_clean": 89.05,
                               "top1_low_0.25": 52.15, "top1_low_0.5": 33.7, "top1_low_1": 22.1,
                               "top1_high_0.25": 84.8, "top1_high_0.5": 77.35,
                               "top1_high_1": 59.45},
        },
        "train_budget": "4 epochs x 938 steps of 64 (3,752 steps), one thread: 2,165 s "
        "(36.1 min) on a 2-core CPU shared with other jobs (load 2-5)",
        "recipe": "subspace_ssm.recipes.s4d_sfmnist:train",
        "paper": _S4D_PAPER,
        "data": _SFMNIST_DATA,
        "description": "S4D-LegS classifier (d_model=32, 4 layers, d_state=32, 21.7k params) "
        "trained on sequential Fashion-MNIST (pixel by pixel, L=784), 4 epochs on CPU.",
    },
    "ssm/s5_ptd_tiny.sfmnist": {
        "sha256": "bf7a1217575605ff871e8a80fcddf39e19ba493aa55818f5e99ea224e81571a0",
        "num_bytes": 76_680,
        "num_params": 18_198,
        "metrics": {
            "sfmnist_test": {"top1": 82.55, "nll": 0.487803},
            "ptd_robustness": {"robust_top1": 41.341667, "top1_clean": 83.25,
                               "top1_low_0.25": 42.5, "top1_low_0.5": 31.45, "top1_low_1": 21.8,
                               "top1_high_0.25": 70.0, "top1_high_0.5": 49.85,
                               "top1_high_1": 32.45},
        },
        "train_budget": "1 epoch x 938 steps of 64, one thread: 1,555 s (25.9 min) on a "
        "2-core CPU shared with other jobs (load 4-6)",
        "recipe": "subspace_ssm.recipes.classifier:train_s5_ptd_tiny_sfmnist",
        "paper": _PTD_PAPER,
        "data": _SFMNIST_DATA,
        "description": "S5-PTD classifier (MIMO diagonal SSM with the perturb-then-diagonalise "
        "HiPPO-LegS init; d_model=32, 4 layers, d_state=32, 18.2k params) trained on sequential "
        "Fashion-MNIST (L=784), 1 epoch on CPU. Half the S4D checkpoint's epochs: compare "
        "the two under equal budgets with `subzoo bench ssm/accuracy`, not from these cards.",
    },
    "ssm/mamba_tiny.sfmnist14": {
        "sha256": "2b134616a7dbcefeb26488a809b8e070aca52af864d8a6cb3cae8c853b46d11a",
        "num_bytes": 141_440,
        "num_params": 34_250,
        "metrics": {"sfmnist14_test": {"top1": 84.08, "nll": 0.44202}},
        "train_budget": "2 epochs x 938 steps of 64 (1,876 steps), one thread: 2,195 s "
        "(36.6 min) on a 2-core CPU shared with other jobs (load 3-6)",
        "recipe": "subspace_ssm.recipes.classifier:train_mamba_tiny_sfmnist14",
        "paper": _MAMBA_PAPER,
        "data": {"dataset": "fashion_mnist", "split": "train (60,000)",
                 "input": "float32 [N, 196, 1]: 2x2 average-pooled image (rounded to uint8), "
                 "pixel/255, normalised mean 0.2860 std 0.3530, row-major", "classes": 10},
        "description": "Mamba-1 classifier (selective scan, d_model=32, 4 blocks, d_state=8, "
        "34.3k params) trained on sequential Fashion-MNIST at 14x14 (L=196), 2 epochs on CPU. "
        "L=196 rather than 784 because the CPU selective scan (subspace_core.ops."
        "selective_scan reference) loops over time.",
    },
}


def _register(model_id: str, cfg: dict[str, Any]) -> None:
    preset = PRESETS[model_id]

    def builder(**overrides) -> nn.Module:
        return build(preset.arch, preset.task, **overrides)

    builder.__name__ = model_id.split("/", 1)[1].replace(".", "_")
    register_model(
        model_id,
        pretrained_cfg=PretrainedCfg(
            file=checkpoint_file(model_id), sha256=cfg["sha256"], num_bytes=cfg["num_bytes"],
            num_params=cfg["num_params"], license="Apache-2.0", paper=cfg["paper"],
            recipe=cfg["recipe"], metrics=cfg["metrics"], data=cfg["data"],
            train_budget=cfg["train_budget"], package="subspace_ssm.weights",
            notes=cfg.get("notes", "")),
        protocols=PROTOCOLS[preset.task],
        description=cfg["description"],
    )(builder)


for _model_id, _cfg in SHIPPED.items():
    _register(_model_id, _cfg)
