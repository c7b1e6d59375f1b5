"""Evaluation protocols: a named, fixed recipe (dataset, split, preprocessing, metrics)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from subspace_core.plugins import load_plugins

__all__ = ["Protocol", "get_protocol", "list_protocols", "protocol_doc", "register_protocol"]

_PROTOCOLS: dict[str, Protocol] = {}


@dataclass(frozen=True)
class Protocol:
    """A standard evaluation: ``run(model, device)`` returns ``{metric: value}``.

    Attributes:
        name: unique id, e.g. ``fmnist_test``.
        dataset, split: the data it reads (names in :mod:`subspace_core.data`).
        preprocessing: human-readable description of the input transform (for cards).
        metrics: names of the metrics ``run`` returns, the headline one first.
        higher_is_better: per metric, for leaderboards and comparisons.
        run: the metric code; must not depend on anything but the model and device.
        slow: its first run takes minutes on CPU (e.g. it trains generators to make its
            test data); the catalog test that re-runs every shipped card runs such
            protocols only under ``-m slow`` (``subzoo eval`` runs them as any other).
    """

    name: str
    dataset: str
    split: str
    preprocessing: str
    metrics: tuple[str, ...]
    higher_is_better: tuple[bool, ...]
    run: Callable[[nn.Module, torch.device], dict[str, float]]
    description: str = ""
    slow: bool = False

    def __post_init__(self) -> None:
        if len(self.metrics) != len(self.higher_is_better):
            raise ValueError(
                f"higher_is_better: expected {len(self.metrics)} flags (one per metric), "
                f"got {len(self.higher_is_better)}"
            )

    def to_dict(self) -> dict:
        return {
            "name": self.name,
            "dataset": self.dataset,
            "split": self.split,
            "preprocessing": self.preprocessing,
            "metrics": list(self.metrics),
            "description": self.description,
        }


def register_protocol(protocol: Protocol) -> Protocol:
    """Add ``protocol`` to the registry; a second protocol with the same name is an error."""
    if protocol.name in _PROTOCOLS:
        raise ValueError(f"protocol: {protocol.name!r} is already registered")
    _PROTOCOLS[protocol.name] = protocol
    return protocol


def get_protocol(name: str) -> Protocol:
    """The protocol called ``name`` (imports installed plugins if it is not known yet)."""
    if name not in _PROTOCOLS:
        load_plugins()
    if name not in _PROTOCOLS:
        raise KeyError(f"protocol: {name!r} is not registered; known: {sorted(_PROTOCOLS)}")
    return _PROTOCOLS[name]


def list_protocols() -> list[str]:
    """Names of all registered protocols (after importing every installed plugin)."""
    load_plugins()
    return sorted(_PROTOCOLS)


def protocol_doc(module_doc: str | None, name: str) -> str:
    """The paragraph of ``module_doc`` that documents protocol ``name``: the text after its
    ``**Protocol ``name``**`` heading up to the next blank line, without a leading colon.

    Zoo modules describe their protocols in their docstring and register them with
    ``description=protocol_doc(__doc__, name)``, so the card text and the code doc agree.
    """
    heading = f"**Protocol ``{name}``**"
    if not module_doc or heading not in module_doc:
        raise ValueError(f"module_doc: expected a paragraph starting with {heading}, found none")
    return module_doc.split(heading, 1)[1].split("\n\n")[0].strip(": \n")
