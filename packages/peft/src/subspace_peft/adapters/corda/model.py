"""CorDA on a whole model (:class:`CorDAModel`)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import nn

from subspace_peft.adapters.base import (
    AdapterModel,
    InputCovariance,
    LayerFactory,
    collect_input_covariance,
    find_targets,
    register_adapter_method,
)
from subspace_peft.adapters.corda.config import CorDAConfig
from subspace_peft.adapters.corda.layer import CorDALinear, corda_decompose

__all__ = ["CorDAModel"]


@register_adapter_method
class CorDAModel(AdapterModel):
    """``model`` with every target linear replaced by a :class:`CorDALinear` initialised from
    the context-oriented decomposition of its weight under its input covariance.

    Build it with :meth:`calibrate` (runs the calibration forward passes) or directly from
    covariances you collected with :func:`~subspace_peft.adapters.base.collect_input_covariance`
    (``{name: InputCovariance | Tensor [in, in]}``; an ``InputCovariance`` contributes
    ``xtx / calls``, as peft). Only ``lora_A``/``lora_B`` (``r (in + out)`` scalars per
    target) and ``config.modules_to_save`` are trainable. Which data to calibrate on is
    part of the method: CorDA's knowledge-preserved mode uses samples of the knowledge to
    keep (e.g. general QA), its instruction-previewed mode samples of the downstream task.
    """

    method = "corda"
    config_class = CorDAConfig

    def __init__(self, model: nn.Module, config: CorDAConfig,
                 covariances: Mapping[str, InputCovariance | torch.Tensor]) -> None:
        targets = find_targets(model, config.target_modules)
        missing = [n for n in targets if n not in covariances]
        if missing:
            raise ValueError(f"covariances: no entry for targets {missing[:5]} "
                             f"({len(missing)} of {len(targets)})")

        def build(name: str, linear: nn.Linear) -> CorDALinear:
            cov = covariances[name]
            C = cov.mean_per_call() if isinstance(cov, InputCovariance) else cov
            k = min(linear.in_features, linear.out_features)
            if config.rank > k:
                raise ValueError(f"rank: {config.rank} exceeds min(out, in) = {k} of {name!r}")
            dec = corda_decompose(linear.weight, C, damping=config.damping)
            B0, A0 = dec.factors(config.rank, config.mode, config.scaling)
            return CorDALinear(linear, A0, B0, scaling=config.scaling, dropout=config.dropout)

        super().__init__(model, config, build)

    @classmethod
    def calibrate(cls, model: nn.Module, config: CorDAConfig,
                  run: Callable[[], Any]) -> CorDAModel:
        """Collect the targets' input covariances while ``run()`` feeds calibration batches
        through ``model`` (no gradients, eval mode), then build the adapter."""
        stats = collect_input_covariance(model, config.target_modules, run,
                                         normalize=config.normalize_inputs)
        return cls(model, config, stats)

    @classmethod
    def _saved_layer_factory(cls, config: CorDAConfig,
                             states: Mapping[str, Mapping[str, torch.Tensor]],
                             layer_meta: Mapping[str, Mapping[str, Any]]) -> LayerFactory:
        return lambda name, linear: CorDALinear(
            linear, states[name]["lora_A0"], states[name]["lora_B0"],
            scaling=float(layer_meta[name]["scaling"]), dropout=config.dropout)
