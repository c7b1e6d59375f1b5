"""The model registry: ``register_model``, ``create_model``, ``list_models``, ``load``."""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from subspace_core.plugins import PluginError, available_plugins, load_plugin, load_plugins
from subspace_core.zoo.checkpoint import load_state_dict
from subspace_core.zoo.pretrained import PretrainedCfg, resolve_checkpoint

__all__ = [
    "ModelEntry",
    "create_model",
    "get_model_entry",
    "list_models",
    "load",
    "register_model",
]

# <area>/<arch>_<size>.<tag>; arch may itself contain underscores (e.g. s4d_ptd_small).
MODEL_ID = re.compile(r"^(?P<area>[a-z0-9]+)/(?P<arch>[a-z0-9_]+)\.(?P<tag>[a-z0-9_]+)$")

_REGISTRY: dict[str, ModelEntry] = {}


@dataclass(frozen=True)
class ModelEntry:
    """One registered model id.

    Attributes:
        id: ``<area>/<arch>_<size>.<tag>``.
        builder: callable returning a freshly initialised ``nn.Module`` (kwargs override).
        pretrained_cfg: the shipped checkpoint, or None for architecture-only entries.
        protocols: evaluation protocols, the default one first.
        recipe: ``module:function`` that (re)trains this model; see :mod:`subspace_core.train`.
        description: one line for listings (default: the builder's docstring summary).
    """

    id: str
    builder: Callable[..., nn.Module]
    pretrained_cfg: PretrainedCfg | None
    protocols: tuple[str, ...]
    recipe: str | None
    description: str

    @property
    def area(self) -> str:
        return self.id.split("/", 1)[0]

    @property
    def has_pretrained(self) -> bool:
        return self.pretrained_cfg is not None

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "package": self.area,
            "description": self.description,
            "pretrained": self.has_pretrained,
            "protocols": list(self.protocols),
            "recipe": self.recipe,
            "pretrained_cfg": self.pretrained_cfg.to_dict() if self.pretrained_cfg else None,
        }


def register_model(
    model_id: str,
    *,
    pretrained_cfg: PretrainedCfg | None = None,
    protocols: tuple[str, ...] = (),
    recipe: str | None = None,
    description: str | None = None,
) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Decorator registering a model builder under ``model_id``.

    Example::

        @register_model("core/mlp_tiny.fmnist", pretrained_cfg=PretrainedCfg(...),
                        protocols=("fmnist_test",))
        def mlp_tiny_fmnist(**kwargs) -> nn.Module: ...
    """
    match = MODEL_ID.match(model_id)
    if not match:
        raise ValueError(
            f"model_id: expected '<area>/<arch>_<size>.<tag>' (lowercase), got {model_id!r}"
        )
    if pretrained_cfg is not None and not protocols:
        raise ValueError(f"protocols: {model_id} ships a checkpoint, so it needs an eval protocol")
    if pretrained_cfg is not None:
        missing = set(pretrained_cfg.metrics) - set(protocols)
        if missing:
            raise ValueError(
                f"pretrained_cfg.metrics of {model_id}: protocols {sorted(missing)} are not in "
                f"protocols={protocols}"
            )

    def decorator(builder: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        if model_id in _REGISTRY:
            raise ValueError(f"model_id: {model_id!r} is already registered")
        summary = description or next(iter((builder.__doc__ or "").strip().splitlines()), "")
        _REGISTRY[model_id] = ModelEntry(
            id=model_id,
            builder=builder,
            pretrained_cfg=pretrained_cfg,
            protocols=tuple(protocols),
            recipe=recipe or (pretrained_cfg.recipe if pretrained_cfg else None),
            description=summary,
        )
        return builder

    return decorator


def _load_area(area: str) -> None:
    if area in available_plugins():
        load_plugin(area)


def get_model_entry(model_id: str) -> ModelEntry:
    """The registry entry of ``model_id`` (imports the owning plugin on demand)."""
    if model_id not in _REGISTRY:
        _load_area(model_id.split("/", 1)[0])
    if model_id not in _REGISTRY:
        known = sorted(_REGISTRY)
        close = [m for m in known if model_id.split(".")[0] in m][:5]
        hint = f"; did you mean {close}?" if close else f"; known ids: {known}"
        raise KeyError(f"model_id: {model_id!r} is not registered{hint}")
    return _REGISTRY[model_id]


def list_models(
    pattern: str = "*", package: str | None = None, pretrained: bool | None = None
) -> list[str]:
    """Sorted model ids matching the glob ``pattern``.

    Args:
        pattern: fnmatch glob over ids, e.g. ``"ssm/*"`` or ``"*s4d*"``.
        package: only ids of this area (imports only that plugin).
        pretrained: True → only ids with a shipped checkpoint; False → only without.
    """
    if package is not None:
        if package not in available_plugins():
            raise PluginError(
                f"package: expected one of {available_plugins()}, got {package!r}"
            )
        load_plugin(package)
    else:
        load_plugins()
    ids = []
    for model_id, entry in _REGISTRY.items():
        if package is not None and entry.area != package:
            continue
        if pretrained is not None and entry.has_pretrained != pretrained:
            continue
        if fnmatch.fnmatchcase(model_id, pattern):
            ids.append(model_id)
    return sorted(ids)


def create_model(
    model_id: str,
    pretrained: bool = False,
    *,
    checkpoint_path: str | Path | None = None,
    sha256: str | None = None,
    progress: bool = True,
    **kwargs: Any,
) -> nn.Module:
    """Build ``model_id``; with ``pretrained=True`` load its verified shipped weights.

    ``checkpoint_path`` loads a specific safetensors file instead (implies pretrained); its
    sha256 is checked against ``sha256``, a ``.sha256`` sidecar, or the shipped hash.
    Builder ``kwargs`` that change the architecture cannot be combined with weights whose
    shapes differ (``load_state_dict`` is strict).
    """
    entry = get_model_entry(model_id)
    model = entry.builder(**kwargs)
    if pretrained or checkpoint_path is not None:
        cfg = entry.pretrained_cfg
        if cfg is None:
            raise ValueError(
                f"pretrained: {model_id} has no shipped checkpoint; "
                f"pretrained ids: {sorted(m for m, e in _REGISTRY.items() if e.area == entry.area and e.has_pretrained)}"
            )
        resolved = resolve_checkpoint(cfg, checkpoint_path, sha256=sha256, progress=progress)
        state = load_state_dict(resolved.path, sha256=resolved.sha256)
        model.load_state_dict(state, strict=True)
    return model


def load(
    model_id: str,
    *,
    checkpoint_path: str | Path | None = None,
    sha256: str | None = None,
    device: str | torch.device = "cpu",
) -> nn.Module:
    """Pretrained ``model_id`` in eval mode on ``device``, weights verified by sha256."""
    model = create_model(model_id, pretrained=True, checkpoint_path=checkpoint_path, sha256=sha256)
    return model.to(device).eval()
