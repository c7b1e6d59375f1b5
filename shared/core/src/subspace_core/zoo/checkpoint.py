"""safetensors checkpoints: write atomically with a sha256 sidecar, read verified bytes only."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load as load_safetensors_bytes
from safetensors.torch import save_file

from subspace_core.io import ChecksumError, atomic_path, sha256_bytes, sha256_file

__all__ = ["count_parameters", "load_state_dict", "save_state_dict"]


def count_parameters(state_dict: dict[str, torch.Tensor]) -> int:
    """Number of scalars in a state dict (parameters and buffers)."""
    return int(sum(t.numel() for t in state_dict.values()))


def save_state_dict(
    state_dict: dict[str, torch.Tensor], path: str | Path, *, metadata: dict[str, str] | None = None
) -> str:
    """Write ``state_dict`` as safetensors at ``path`` atomically, plus ``<path>.sha256``.

    Returns the file's sha256. Tensors are made contiguous CPU copies; shared storage is
    broken (safetensors refuses aliased tensors). ``metadata`` is stored as one JSON string
    under the key ``subzoo`` (safetensors writes several keys in a random order), so the
    same weights and metadata always give the same bytes and the same sha256.
    """
    path = Path(path)
    tensors = {k: v.detach().to("cpu").contiguous().clone() for k, v in state_dict.items()}
    meta = {"subzoo": json.dumps(metadata or {}, sort_keys=True, default=str)}
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=meta)
    digest = sha256_file(path)
    with atomic_path(path.with_name(path.name + ".sha256")) as tmp:
        tmp.write_text(f"{digest}  {path.name}\n")
    return digest


def load_state_dict(path: str | Path, *, sha256: str) -> dict[str, torch.Tensor]:
    """Read a safetensors file, refusing it unless its bytes hash to ``sha256``.

    The bytes are hashed and parsed from the same read, so the file cannot change between
    the check and the load.
    """
    data = Path(path).read_bytes()
    actual = sha256_bytes(data)
    if actual != sha256:
        raise ChecksumError(str(path), sha256, actual)
    return load_safetensors_bytes(data)
