"""Discovery of Subspace Zoo plugins.

Every package registers its models, datasets, protocols and benchmarks by exposing a
module in the entry-point group ``subzoo.plugins``; the entry-point name is the package
area (``core``, ``ssm``, ``peft``, ...), which is also the prefix of its model ids.
Importing that module performs the registrations. Plugins are imported lazily: only
when a registry lookup needs them, and only the ones it needs.
"""

from __future__ import annotations

import importlib
from importlib.metadata import EntryPoint, entry_points

__all__ = ["PluginError", "available_plugins", "load_plugin", "load_plugins"]

ENTRY_POINT_GROUP = "subzoo.plugins"

_loaded: set[str] = set()


class PluginError(RuntimeError):
    """A plugin was asked for that is not installed, or failed to import."""


def _entry_points() -> dict[str, EntryPoint]:
    return {ep.name: ep for ep in entry_points(group=ENTRY_POINT_GROUP)}


def available_plugins() -> list[str]:
    """Names (areas) of the installed plugins, sorted, without importing them."""
    return sorted(_entry_points())


def load_plugin(name: str) -> None:
    """Import the plugin of area ``name`` once, so that its registrations run."""
    if name in _loaded:
        return
    eps = _entry_points()
    if name not in eps:
        raise PluginError(
            f"plugin {name!r}: not installed; installed plugins are {sorted(eps)} "
            f"(install the package 'subspace-{name}')"
        )
    try:
        importlib.import_module(eps[name].value.split(":")[0])
    except Exception as exc:  # surface which plugin broke, keep the cause
        raise PluginError(f"plugin {name!r} ({eps[name].value}) failed to import: {exc}") from exc
    _loaded.add(name)


def load_plugins(names: list[str] | None = None) -> None:
    """Import the named plugins (all installed ones when ``names`` is None)."""
    for name in available_plugins() if names is None else names:
        load_plugin(name)
