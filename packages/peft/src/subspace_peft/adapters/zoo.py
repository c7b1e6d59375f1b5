"""Adapters as zoo checkpoints: only the adapter is stored, the base loads from its package.

The zoo's loader (:func:`subspace_core.zoo.create_model`) builds a model and calls
``model.load_state_dict(file, strict=True)``. :class:`ShippedAdapter` makes an
:class:`~subspace_peft.adapters.base.AdapterModel` fit that contract while its
``state_dict()`` holds only :meth:`~AdapterModel.adapter_state_dict` (the trained adapter
tensors and ``modules_to_save``), so a shipped checkpoint is kilobytes, not the base model.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from subspace_peft.adapters.base import AdapterModel
from subspace_peft.adapters.matryoshka_kv import MatryoshkaKVModel

__all__ = ["ShippedAdapter"]


class ShippedAdapter(nn.Module):
    """Wraps ``adapter``; calls go to the adapted model, the state is the adapter's only."""

    def __init__(self, adapter: AdapterModel | MatryoshkaKVModel) -> None:
        super().__init__()
        if not isinstance(adapter, AdapterModel | MatryoshkaKVModel):
            raise TypeError(f"adapter: expected an AdapterModel or a MatryoshkaKVModel, got "
                            f"{type(adapter).__name__}")
        self.adapter = adapter

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        return self.adapter(*args, **kwargs)

    def state_dict(self, *args: Any, **kwargs: Any) -> dict[str, torch.Tensor]:  # type: ignore[override]
        """The adapter's tensors (:meth:`AdapterModel.adapter_state_dict`), detached clones."""
        return {k: v.detach().clone() for k, v in self.adapter.adapter_state_dict().items()}

    def load_state_dict(self, state_dict: Mapping[str, torch.Tensor], strict: bool = True,
                        assign: bool = False) -> Any:
        """Load a :meth:`state_dict`; always strict (a partial adapter is an error)."""
        if not strict or assign:
            raise ValueError(f"ShippedAdapter.load_state_dict: only strict=True, assign=False "
                             f"is supported, got strict={strict}, assign={assign}")
        self.adapter.load_adapter_state_dict(state_dict)
        return nn.modules.module._IncompatibleKeys([], [])
