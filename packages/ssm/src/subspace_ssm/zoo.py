"""Zoo entries of the package: architectures (shipped checkpoints: :mod:`subspace_ssm.pretrained`).

Ids are ``ssm/<arch>_<size>.<task>``; the task fixes the input side of the classifier:

* ``sfmnist``: sequential Fashion-MNIST, one pixel per step (L = 784), 10 classes.
* ``sfmnist14``: the same images average-pooled to 14×14 (L = 196): the task the CPU-bound
  selective-scan models (Mamba) train on within an hour.
* ``listops``: ListOps token sequences, :data:`LISTOPS_VOCAB` tokens (0 = padding), 10 classes.

Every builder takes keyword overrides of :class:`~subspace_ssm.classifier.SSMClassifier`
(of :class:`~subspace_ssm.mhs.MHSClassifier` for ``mhs_*``). Each entry lists the task's
protocols (:data:`PROTOCOLS`).
"""

from __future__ import annotations

from typing import Any

from torch import nn

from subspace_core.zoo import register_model
from subspace_ssm.classifier import SSMClassifier
from subspace_ssm.mhs import MHSClassifier

__all__ = ["ARCHS", "LISTOPS_VOCAB", "PROTOCOLS", "TASKS", "build"]

#: ListOps vocabulary: padding, digits 0-9, [MIN [MAX [MED [SM, ']' (and room for two more).
LISTOPS_VOCAB = 18

#: evaluation protocols of each task (see :mod:`subspace_ssm.protocols`), default first.
PROTOCOLS: dict[str, tuple[str, ...]] = {
    "sfmnist": ("sfmnist_test", "ptd_robustness"),
    "sfmnist14": ("sfmnist14_test",),
    "listops": ("listops_test",),
}

TASKS: dict[str, dict[str, Any]] = {
    "sfmnist": {"n_classes": 10, "encoder": "linear", "d_input": 1},
    "sfmnist14": {"n_classes": 10, "encoder": "linear", "d_input": 1},
    "listops": {"n_classes": 10, "encoder": "embedding", "vocab_size": LISTOPS_VOCAB},
}

#: arch → (kind, sizes, layer kwargs); "small" = d_model 64, 4 layers; "tiny" = d_model 32,
#: 4 layers, d_state 32 (the size a 2-core CPU trains on sequential Fashion-MNIST in an hour).
ARCHS: dict[str, tuple[str, dict[str, Any], dict[str, Any]]] = {
    "s4d_tiny": ("s4d", {"d_model": 32, "n_layers": 4, "d_state": 32}, {"init": "legs"}),
    "s4d_small": ("s4d", {"d_model": 64, "n_layers": 4, "d_state": 64}, {"init": "legs"}),
    "s4d_ptd_small": ("s4d", {"d_model": 64, "n_layers": 4, "d_state": 64}, {"init": "ptd"}),
    "s4_small": ("s4", {"d_model": 64, "n_layers": 4, "d_state": 64}, {}),
    "s5_small": ("s5", {"d_model": 64, "n_layers": 4, "d_state": 64}, {"init": "legs"}),
    "s5_ptd_tiny": ("s5", {"d_model": 32, "n_layers": 4, "d_state": 32}, {"init": "ptd"}),
    "s5_ptd_small": ("s5", {"d_model": 64, "n_layers": 4, "d_state": 64}, {"init": "ptd"}),
    "mamba_tiny": ("mamba", {"d_model": 32, "n_layers": 4, "d_state": 8}, {}),
    "mamba_small": ("mamba", {"d_model": 64, "n_layers": 4, "d_state": 16}, {}),
    # MHS on the 28×28 image behind the sequence: 2×2 patches (14×14 tokens), 3 heads with
    # the raster / snake / diagonal patterns (each with reversed routes), selective scans
    "mhs_small": ("mhs", {"d_model": 48, "n_layers": 2, "d_state": 16},
                  {"n_heads": 3, "patch": 2, "image_size": (28, 28)}),
}

_REGISTERED = [
    ("s4d_small", "sfmnist"), ("s4d_small", "listops"),
    ("s4d_ptd_small", "sfmnist"), ("s4_small", "sfmnist"), ("s5_small", "sfmnist"),
    ("s5_ptd_small", "sfmnist"), ("s5_ptd_small", "listops"),
    ("mamba_small", "listops"), ("mhs_small", "sfmnist"),
    ("s4d_tiny", "listops"),
]


def build(arch: str, task: str, **overrides: Any) -> nn.Module:
    """The classifier of ``arch`` for ``task`` (``overrides`` replace any keyword)."""
    if arch not in ARCHS:
        raise ValueError(f"arch: expected one of {sorted(ARCHS)}, got {arch!r}")
    if task not in TASKS:
        raise ValueError(f"task: expected one of {sorted(TASKS)}, got {task!r}")
    kind, sizes, layer_kwargs = ARCHS[arch]
    if kind == "mhs":
        if task != "sfmnist":
            raise ValueError(f"task: MHS scans 2-D inputs; expected 'sfmnist', got {task!r}")
        return MHSClassifier(TASKS[task]["n_classes"], **{**sizes, **layer_kwargs, **overrides})
    kwargs: dict[str, Any] = {"kind": kind, **sizes, **TASKS[task]}
    kwargs["layer_kwargs"] = {**layer_kwargs, **overrides.pop("layer_kwargs", {})}
    kwargs.update(overrides)
    return SSMClassifier(**kwargs)


def _register(arch: str, task: str) -> None:
    kind, sizes, layer_kwargs = ARCHS[arch]
    init = f", init={layer_kwargs['init']}" if "init" in layer_kwargs else ""
    description = (f"{kind.upper()} classifier (d_model={sizes['d_model']}, "
                   f"{sizes['n_layers']} layers, d_state={sizes['d_state']}{init}) for "
                   f"{task}. No weights shipped yet.")

    def builder(**overrides: Any) -> nn.Module:
        return build(arch, task, **overrides)

    builder.__name__ = f"{arch}_{task}"
    register_model(f"ssm/{arch}.{task}", description=description,
                   protocols=PROTOCOLS[task])(builder)


for _arch, _task in _REGISTERED:
    _register(_arch, _task)
