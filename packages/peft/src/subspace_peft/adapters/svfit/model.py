"""SVFit on a whole model (:class:`SVFitModel`)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from subspace_peft.adapters.base import AdapterModel, LayerFactory, register_adapter_method
from subspace_peft.adapters.svfit.config import SVFitConfig
from subspace_peft.adapters.svfit.layer import SVFitLinear

__all__ = ["SVFitModel"]


@register_adapter_method
class SVFitModel(AdapterModel):
    """``model`` with every target linear replaced by an :class:`SVFitLinear`.

    Only the ``delta_s`` vectors (``r`` scalars per target) and ``config.modules_to_save``
    are trainable. Example::

        from subspace_peft.finetune.methods import ENCODER_LINEARS
        adapted = SVFitModel(classifier, SVFitConfig(target_modules=ENCODER_LINEARS,
                                                     modules_to_save=("head",)))
        opt = torch.optim.AdamW([p for p in adapted.parameters() if p.requires_grad], lr=5e-3)
    """

    method = "svfit"
    config_class = SVFitConfig

    def __init__(self, model: nn.Module, config: SVFitConfig) -> None:
        super().__init__(model, config, lambda name, linear: SVFitLinear(
            linear, rank=config.rank, energy=config.energy))

    def ranks(self) -> dict[str, int]:
        """``{layer name: r}``."""
        return {n: layer.rank for n, layer in self.adapter_layers().items()}

    @classmethod
    def _saved_layer_factory(cls, config: SVFitConfig,
                             states: Mapping[str, Mapping[str, torch.Tensor]],
                             layer_meta: Mapping[str, Mapping[str, Any]]) -> LayerFactory:
        # The saved rank is authoritative (an energy-selected rank is not re-derived).
        return lambda name, linear: SVFitLinear(linear, rank=int(layer_meta[name]["rank"]))
