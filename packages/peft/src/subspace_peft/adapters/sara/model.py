"""SaRA on a whole model (:class:`SaRAModel`): targets, penalty, progressive re-selection."""

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
from subspace_peft.adapters.sara.config import SaRAConfig
from subspace_peft.adapters.sara.layer import SARA_TARGET_TYPES, SaRALayer

__all__ = ["SaRAModel", "find_sara_targets"]


def find_sara_targets(model: nn.Module, patterns: str | Sequence[str]) -> list[str]:
    """Qualified names of the modules SaRA adapts: :func:`~subspace_peft.adapters.base.
    find_targets` with ``nn.Linear`` / ``nn.Conv{1,2,3}d`` matches allowed."""
    return find_targets(model, patterns, SARA_TARGET_TYPES)


@register_adapter_method
class SaRAModel(AdapterModel):
    """``model`` with every target replaced by a :class:`SaRALayer` (sparse update on the
    smallest-magnitude weights, see :mod:`.layer`).

    Only the ``values`` vectors (``k`` scalars per target) and ``config.modules_to_save`` are
    trainable. A training loop adds :meth:`nuclear_norm_penalty` to its loss and calls
    :meth:`maybe_reselect` after each optimizer step::

        adapted = SaRAModel(net, SaRAConfig(target_modules=r"fc\\d", fraction=0.1))
        opt = torch.optim.AdamW([p for p in adapted.parameters() if p.requires_grad], 1e-3)
        for step in range(total):
            loss = task_loss(adapted(x), y) + adapted.nuclear_norm_penalty()
            opt.zero_grad(); loss.backward(); opt.step()
            adapted.maybe_reselect(step + 1, total, opt)

    :meth:`lora_factors` raises (a sparse update has no exact LoRA form, so the Hugging Face
    ``peft`` export refuses it); :meth:`lowrank_factors` approximates it explicitly.
    """

    method = "sara"
    config_class = SaRAConfig
    target_types = SARA_TARGET_TYPES

    def __init__(self, model: nn.Module, config: SaRAConfig) -> None:
        super().__init__(model, config, lambda name, module: SaRALayer(
            module, fraction=config.fraction, threshold=config.threshold))
        self._reselected_at: int | None = None

    # ------------------------------------------------------------------ facts
    def trainable_counts(self) -> dict[str, int]:
        """``{layer name: k}`` entries trained now."""
        return {n: layer.num_trainable for n, layer in self.adapter_layers().items()}

    def delta_weights(self) -> dict[str, torch.Tensor]:
        """``{layer name: ΔW}`` in each weight's shape (detached)."""
        return {n: layer.delta_weight().detach() for n, layer in self.adapter_layers().items()}

    # ------------------------------------------------------------------ penalty
    def nuclear_norm_penalty(self, names: Sequence[str] | None = None) -> torch.Tensor:
        """``λ Σ_l ||ΔW_l||_*`` over the adapted layers (or only ``names``), with ``λ =
        config.nuclear_weight`` and the norm of ``config.nuclear_target``; a differentiable
        scalar (0 when ``λ = 0``). The reference code penalises one random large layer per
        step to save SVDs; pass ``names`` to do the same."""
        self._check_live()
        layers = self.adapter_layers()
        chosen = list(layers) if names is None else list(names)
        unknown = [n for n in chosen if n not in layers]
        if unknown:
            raise ValueError(f"names: {unknown[:4]} are not adapted layers; known: "
                             f"{list(layers)[:6]}")
        lam = self.config.nuclear_weight
        ref = next(iter(layers.values())).values
        total = torch.zeros((), dtype=ref.dtype, device=ref.device)
        if lam == 0.0:
            return total
        for n in chosen:
            total = total + layers[n].nuclear_norm(self.config.nuclear_target)
        return lam * total

    # ------------------------------------------------------------------ progressive
    def reselect(self, optimizer: torch.optim.Optimizer | None = None) -> dict[str, int]:
        """Progressive parameter adjustment on every layer (:meth:`SaRALayer.reselect`):
        entries whose magnitude reached the layer's threshold are frozen, the rest keep
        training. The model's outputs are unchanged.

        ``optimizer`` (if given) must hold the current ``values`` parameters: each is replaced
        in its param group by the new, smaller one and its state is dropped (the reference
        implementation restarts its optimizer at this point). Without it, build a new
        optimizer from :meth:`~AdapterModel.adapter_parameters` afterwards.

        Returns:
            ``{layer name: entries frozen by this call}``.
        """
        self._check_live()
        if optimizer is not None:
            held = {id(p) for g in optimizer.param_groups for p in g["params"]}
            missing = [n for n, layer in self.adapter_layers().items()
                       if id(layer.values) not in held]
            if missing:
                raise ValueError(f"optimizer: does not hold the trainable values of {missing[:4]}"
                                 f" ({len(missing)} layers); pass the optimizer that trains "
                                 "this adapter, or none and build a new one afterwards")
        frozen = {}
        for name, layer in self.adapter_layers().items():
            before = layer.num_trainable
            old, new = layer.reselect()
            frozen[name] = before - layer.num_trainable
            if optimizer is not None:
                optimizer.state.pop(old, None)
                for group in optimizer.param_groups:
                    group["params"] = [new if p is old else p for p in group["params"]]
        return frozen

    def maybe_reselect(self, step: int, total_steps: int,
                       optimizer: torch.optim.Optimizer | None = None) -> dict[str, int] | None:
        """Call after optimizer step number ``step`` (1-based) of ``total_steps``: runs
        :meth:`reselect` once, at the first step ``>= round(progressive_at · total_steps)``;
        returns its result then, else None (also when ``config.progressive_at`` is None)."""
        if isinstance(step, bool) or not isinstance(step, int) or step < 0:
            raise ValueError(f"step: expected an int >= 0, got {step!r}")
        if isinstance(total_steps, bool) or not isinstance(total_steps, int) or total_steps < 1:
            raise ValueError(f"total_steps: expected an int >= 1, got {total_steps!r}")
        at = self.config.progressive_at
        if at is None or self._reselected_at is not None:
            return None
        if step >= max(1, round(at * total_steps)):
            self._reselected_at = step
            return self.reselect(optimizer)
        return None

    # ------------------------------------------------------------------ export
    def lora_factors(self) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        """Not defined for SaRA (no exact LoRA form).

        Raises:
            TypeError: always; use :meth:`lowrank_factors` (approximate) or
                :meth:`~AdapterModel.merge_and_unload` (exact).
        """
        raise TypeError("SaRAModel.lora_factors: a sparse update has no exact LoRA form, so "
                        "SaRA adapters are not exported to Hugging Face peft; use "
                        "lowrank_factors(rank) for an explicit truncated-SVD approximation or "
                        "merge_and_unload() for the exact merged model")

    def lowrank_factors(self, rank: int) -> dict[str, tuple[torch.Tensor, torch.Tensor, float]]:
        """``{name: (B, A, relative_error)}``: the best rank-``rank`` approximation of every
        layer's (unfolded) update (:meth:`SaRALayer.lowrank_factors`)."""
        self._check_live()
        return {n: layer.lowrank_factors(rank) for n, layer in self.adapter_layers().items()}

    # ------------------------------------------------------------------ load
    @classmethod
    def _saved_layer_factory(cls, config: SaRAConfig,
                             states: Mapping[str, Mapping[str, torch.Tensor]],
                             layer_meta: Mapping[str, Mapping[str, Any]]) -> LayerFactory:
        def build(name: str, module: nn.Module) -> SaRALayer:
            # the selection is rebuilt from the (fingerprint-checked) base weight, then the
            # saved index sets replace it in load_adapter_state
            layer = SaRALayer(module, fraction=config.fraction, threshold=config.threshold)
            layer.reselections = int(layer_meta[name].get("reselections", 0))
            return layer

        return build

    @classmethod
    def from_saved(cls, model, config, states, layer_meta, saved_modules) -> SaRAModel:
        self = super().from_saved(model, config, states, layer_meta, saved_modules)
        # a re-selected adapter must not be re-selected again by maybe_reselect
        done = any(int(m.get("reselections", 0)) for m in layer_meta.values())
        self._reselected_at = 0 if done else None
        return self
