"""Atomic single-file checkpoints: tensors in safetensors, everything else as JSON in its header.

One file means one ``os.replace``: a reader sees the previous checkpoint or the complete
new one, never a mix of two (tensors and JSON side files could disagree after a crash).
Nothing is pickled, so loading a checkpoint cannot run code.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from subspace_core.io import atomic_path

__all__ = [
    "load_checkpoint",
    "optimizer_state_from_flat",
    "optimizer_state_to_flat",
    "save_checkpoint",
]

_META_KEY = "subzoo.json"


def save_checkpoint(path: str | Path, tensors: dict[str, torch.Tensor], meta: dict) -> Path:
    """Write ``tensors`` and the JSON-serialisable ``meta`` to ``path`` atomically
    (temporary file, fsync, ``os.replace``, fsync of the directory)."""
    path = Path(path)
    try:
        text = json.dumps(meta, allow_nan=True, sort_keys=True)
    except TypeError as exc:
        raise TypeError(f"meta: expected JSON-serialisable values ({exc})") from exc
    seen: set[int] = set()
    flat: dict[str, torch.Tensor] = {}
    for name, tensor in tensors.items():
        if not isinstance(tensor, torch.Tensor):
            raise TypeError(
                f"tensors[{name!r}]: expected a torch.Tensor, got {type(tensor).__name__}"
            )
        tensor = tensor.detach().cpu().contiguous()
        # safetensors refuses tensors sharing memory (tied weights): store a copy of repeats.
        if tensor.numel() and tensor.untyped_storage().data_ptr() in seen:
            tensor = tensor.clone()
        seen.add(tensor.untyped_storage().data_ptr())
        flat[name] = tensor
    with atomic_path(path) as tmp:
        save_file(flat, str(tmp), metadata={_META_KEY: text})
    # Make the rename itself durable (a power cut could otherwise undo it).
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)
    return path


def load_checkpoint(path: str | Path) -> tuple[dict[str, torch.Tensor], dict]:
    """Read a file written by :func:`save_checkpoint`: ``(tensors, meta)``."""
    path = Path(path)
    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
            tensors = {name: handle.get_tensor(name) for name in handle.keys()}  # noqa: SIM118
    except FileNotFoundError:
        raise
    except Exception as exc:  # safetensors raises its own error types for damaged files
        raise ValueError(f"{path}: unreadable checkpoint, refused ({exc})") from exc
    if _META_KEY not in metadata:
        raise ValueError(f"{path}: not a subzoo checkpoint (no {_META_KEY!r} header entry)")
    return tensors, json.loads(metadata[_META_KEY])


def optimizer_state_to_flat(
    state: dict, prefix: str = "optim/"
) -> tuple[dict[str, torch.Tensor], dict]:
    """Split ``optimizer.state_dict()`` into tensors (``{prefix}state/<param>/<name>``) and a
    JSON-serialisable rest; inverse: :func:`optimizer_state_from_flat`."""
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for index, entry in state["state"].items():
        for name, value in entry.items():
            if isinstance(value, torch.Tensor):
                tensors[f"{prefix}state/{index}/{name}"] = value
            elif value is None or isinstance(value, bool | int | float | str):
                scalars.setdefault(str(index), {})[name] = value
            else:
                raise TypeError(
                    f"optimizer state[{index}][{name!r}]: expected a tensor or a JSON scalar, "
                    f"got {type(value).__name__}"
                )
    groups = []
    for number, group in enumerate(state["param_groups"]):
        clean = {}
        for key, value in group.items():
            if isinstance(value, torch.Tensor):
                raise TypeError(
                    f"optimizer param_groups[{number}][{key!r}]: tensor hyper-parameters are "
                    "not supported in checkpoints; use a float"
                )
            clean[key] = list(value) if isinstance(value, tuple) else value
        groups.append(clean)
    return tensors, {"scalars": scalars, "param_groups": groups}


def optimizer_state_from_flat(
    tensors: dict[str, torch.Tensor], meta: dict, like: dict, prefix: str = "optim/"
) -> dict:
    """Rebuild an optimizer ``state_dict`` from :func:`optimizer_state_to_flat` output.

    ``like`` is the live optimizer's ``state_dict()``: JSON turned its tuple
    hyper-parameters (Adam's ``betas``) into lists, and they become tuples again here.
    """
    state: dict[int, dict[str, Any]] = {}
    for key, tensor in tensors.items():
        if not key.startswith(f"{prefix}state/"):
            continue
        index, name = key[len(prefix) + len("state/") :].split("/", 1)
        state.setdefault(int(index), {})[name] = tensor
    for index, entry in meta["scalars"].items():
        state.setdefault(int(index), {}).update(entry)
    groups = []
    for saved, live in zip(meta["param_groups"], like["param_groups"], strict=False):
        groups.append(
            {
                key: tuple(value) if isinstance(live.get(key), tuple) else value
                for key, value in saved.items()
            }
        )
    groups.extend(meta["param_groups"][len(groups) :])
    return {"state": state, "param_groups": groups}
