"""Training plumbing shared by recipes: resumable training state and the recipe runner.

A recipe is a function ``train(out_dir: Path, *, quick: bool, progress: bool) -> Path``
that writes ``out_dir/<checkpoint file>`` (via :func:`~subspace_core.zoo.save_state_dict`,
so a ``.sha256`` sidecar sits beside it) and returns that path. Recipes save their state
with :func:`save_training_state` after each epoch and resume from it when re-run on the
same ``out_dir``, so an interrupted run loses at most one epoch.
"""

from __future__ import annotations

import importlib
import json
import math
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from subspace_core.io import atomic_path

__all__ = ["checkpoint_file", "import_recipe", "load_training_state", "save_training_state",
           "warmup_cosine"]

TRAINING_STATE = "training_state.safetensors"


def checkpoint_file(model_id: str) -> str:
    """The checkpoint file name of a model id: ``ssl/gcr_tiny.fmnist`` → ``gcr_tiny.fmnist.safetensors``."""
    if "/" not in model_id:
        raise ValueError(f"model_id: expected '<area>/<arch>_<size>.<tag>', got {model_id!r}")
    return model_id.split("/", 1)[1] + ".safetensors"


def warmup_cosine(step: int, total: int, warmup: int) -> float:
    """Learning-rate factor of step ``step``: linear warm-up over ``warmup`` steps (to 1 at
    ``step = warmup − 1``), then cosine decay to 0 at ``total``."""
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def import_recipe(recipe: str):
    """Import ``module:function`` and return the function."""
    module_name, _, func_name = recipe.partition(":")
    if not func_name:
        raise ValueError(f"recipe: expected 'module:function', got {recipe!r}")
    return getattr(importlib.import_module(module_name), func_name)


def _flatten(value: Any, tensors: dict[str, torch.Tensor], prefix: str) -> Any:
    """JSON-able skeleton of ``value`` with each tensor moved into ``tensors``.

    Dicts become ``{"__dict__": [[key, value], ...]}`` so integer keys (optimizer state is
    keyed by parameter index) survive JSON; tuples and lists stay lists.
    """
    if torch.is_tensor(value):
        tensors[prefix] = value.detach().cpu().contiguous().clone()
        return {"__tensor__": prefix}
    if isinstance(value, dict):
        return {"__dict__": [[k, _flatten(v, tensors, f"{prefix}.{k}")] for k, v in value.items()]}
    if isinstance(value, list | tuple):
        return [_flatten(v, tensors, f"{prefix}.{i}") for i, v in enumerate(value)]
    if value is None or isinstance(value, bool | int | float | str):
        return value
    raise TypeError(
        f"optimizer state at {prefix}: expected tensors, numbers, strings, lists or dicts, "
        f"got {type(value).__name__} (it cannot be saved without pickling)"
    )


def _unflatten(value: Any, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(value, dict):
        if "__tensor__" in value:
            return tensors[value["__tensor__"]]
        return {k: _unflatten(v, tensors) for k, v in value["__dict__"]}
    if isinstance(value, list):
        return [_unflatten(v, tensors) for v in value]
    return value


def save_training_state(
    out_dir: str | Path,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    *,
    epoch: int,
    extra: dict[str, Any] | None = None,
) -> Path:
    """Atomically write model + optimizer state + progress to ``out_dir/training_state.safetensors``.

    Every tensor of the optimizer's (possibly nested) state dict is stored as a safetensors
    entry ``optim.<path>``; the rest of its structure goes in the JSON metadata, so the file
    loads without unpickling anything. State holding other objects raises ``TypeError``.
    """
    tensors = {f"model.{k}": v.detach().cpu().contiguous().clone()
               for k, v in model.state_dict().items()}
    skeleton = _flatten(optimizer.state_dict(), tensors, "optim")
    tensors["rng.torch"] = torch.get_rng_state()
    if torch.cuda.is_available():
        for i, state in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"rng.cuda.{i}"] = state
    meta = {"epoch": str(epoch), "optimizer": json.dumps(skeleton),
            "extra": json.dumps(extra or {})}
    path = Path(out_dir) / TRAINING_STATE
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=meta)
    return path


def load_training_state(
    out_dir: str | Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer
) -> tuple[int, dict[str, Any]] | None:
    """Restore what :func:`save_training_state` wrote; returns ``(epoch, extra)`` or None."""
    path = Path(out_dir) / TRAINING_STATE
    if not path.is_file():
        return None
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as fh:
        meta = fh.metadata()
    tensors = load_file(str(path))
    model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
    optimizer.load_state_dict(_unflatten(json.loads(meta["optimizer"]), tensors))
    torch.set_rng_state(tensors["rng.torch"])
    cuda_states = [tensors[k] for k in sorted(tensors) if k.startswith("rng.cuda.")]
    if cuda_states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(cuda_states)
    return int(meta["epoch"]), json.loads(meta["extra"])
