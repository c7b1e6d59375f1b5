"""Plugin discovery through the `subzoo.plugins` entry-point group."""

from __future__ import annotations

import pytest

from subspace_core import plugins
from subspace_core.zoo import list_models


def test_core_is_an_installed_plugin():
    assert "core" in plugins.available_plugins()


def test_loading_core_registers_the_canary():
    plugins.load_plugin("core")
    assert "core/mlp_tiny.fmnist" in list_models(package="core", pretrained=True)


def test_unknown_plugin_names_the_installed_ones():
    with pytest.raises(plugins.PluginError, match=r"'nope'.*installed plugins are \[.*'core'"):
        plugins.load_plugin("nope")


def test_unknown_package_filter_is_an_error():
    with pytest.raises(plugins.PluginError, match="package: expected one of"):
        list_models(package="nope")


def test_broken_plugin_reports_which_one(monkeypatch):
    class FakeEntryPoint:
        name, value = "broken", "subspace_core_no_such_module.plugin"

    monkeypatch.setattr(plugins, "_entry_points", lambda: {"broken": FakeEntryPoint()})
    with pytest.raises(plugins.PluginError, match=r"plugin 'broken' .* failed to import"):
        plugins.load_plugin("broken")
