"""FLoRA on a whole model (:class:`FLoRAModel`) and its target selection."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from subspace_peft.adapters.base import (
    AdapterModel,
    LayerFactory,
    find_targets,
    register_adapter_method,
)
from subspace_peft.adapters.flora.config import FLoRAConfig
from subspace_peft.adapters.flora.layer import FLORA_TARGET_TYPES, FLoRALayer, flora_ranks

__all__ = ["FLoRAModel", "find_flora_targets"]


def find_flora_targets(model: nn.Module, patterns: str | Sequence[str]) -> list[str]:
    """Qualified names (``named_modules`` order) of the modules FLoRA adapts: the rule of
    :func:`~subspace_peft.adapters.base.find_targets` with ``nn.Linear`` / ``nn.Conv{1,2,3}d``
    matches allowed."""
    return find_targets(model, patterns, FLORA_TARGET_TYPES)


@register_adapter_method
class FLoRAModel(AdapterModel):
    """``model`` with every target linear / conv replaced by a :class:`FLoRALayer`.

    Only the cores and factors (:func:`~.layer.flora_parameter_count` scalars per target)
    and ``config.modules_to_save`` are trainable. Example (a conv net)::

        adapted = FLoRAModel(net, FLoRAConfig(target_modules=r"conv\\d", rank=8,
                                              modules_to_save=("fc",)))
        opt = torch.optim.AdamW([p for p in adapted.parameters() if p.requires_grad], 1e-3)

    Merging, unloading and saving work as for every adapter of the shared base
    (:meth:`merge_and_unload` returns plain modules of the original types).
    :meth:`lora_factors` (and so the Hugging Face ``peft`` export) is only defined when every
    target is an ``nn.Linear``.
    """

    method = "flora"
    config_class = FLoRAConfig
    target_types = FLORA_TARGET_TYPES

    def __init__(self, model: nn.Module, config: FLoRAConfig) -> None:
        def build(name: str, module: nn.Module) -> FLoRALayer:
            ranks = flora_ranks(module.weight.shape, config.rank, config.kernel_rank)
            return FLoRALayer(module, ranks, scale=config.scale)

        super().__init__(model, config, build)

    def ranks(self) -> dict[str, tuple[int, ...]]:
        """``{layer name: core shape}``."""
        return {n: layer.ranks for n, layer in self.adapter_layers().items()}

    def delta_weights(self) -> dict[str, torch.Tensor]:
        """``{layer name: ΔW}`` in each weight's shape (detached)."""
        return {n: layer.delta_weight().detach() for n, layer in self.adapter_layers().items()}

    def lora_factors(self) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        """``{name: (B, A)}`` for an adapter whose targets are all ``nn.Linear``.

        Raises:
            TypeError: a target is a convolution (no LoRA form; not exported to ``peft``).
        """
        convs = [n for n, layer in self.adapter_layers().items() if layer.is_conv]
        if convs:
            raise TypeError(f"FLoRAModel.lora_factors: targets {convs[:4]} are convolutions, "
                            "whose Tucker updates have no LoRA form here (and are not exported "
                            "to Hugging Face peft); use merge_and_unload() or delta_weights()")
        return super().lora_factors()

    @classmethod
    def _saved_layer_factory(cls, config: FLoRAConfig,
                             states: Mapping[str, Mapping[str, torch.Tensor]],
                             layer_meta: Mapping[str, Mapping[str, Any]]) -> LayerFactory:
        # Ranks and scale come from the file (they were fixed when the adapter was made).
        return lambda name, module: FLoRALayer(
            module, tuple(int(r) for r in layer_meta[name]["ranks"]),
            scale=float(layer_meta[name]["scale"]))
