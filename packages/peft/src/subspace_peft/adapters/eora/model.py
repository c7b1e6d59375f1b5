"""EoRA on a whole (compressed) model (:class:`EoRAModel`).

Workflow (training-free)::

    from subspace_peft.adapters.base import collect_input_covariance
    from subspace_peft.adapters.compress import (CompressionConfig, compress_model,
                                                 snapshot_weights)
    from subspace_peft.adapters.eora import EoRAConfig, EoRAModel

    stats = collect_input_covariance(model, LLAMA_LINEARS, lambda: [model(b) for b in calib])
    originals = snapshot_weights(model, LLAMA_LINEARS)          # W, before compression
    compress_model(model, CompressionConfig("rtn", bits=4))      # W -> W_c in place
    eora = EoRAModel(model, EoRAConfig(rank=64), original_weights=originals,
                     covariances=stats)                          # W_c x + B (A x)

The covariances are those of the *uncompressed* model's layer inputs (one calibration pass
serves every compression); they can be given as ``InputCovariance`` objects, ``[in, in]``
tensors or precomputed :class:`~subspace_peft.adapters.eora.layer.EigenScaling` (so several
compressions share one eigendecomposition per layer). ``compensation="svd"`` fits the plain
SVD baseline through the same layer type (no covariances needed).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from subspace_peft.adapters.base import (
    AdapterModel,
    InputCovariance,
    LayerFactory,
    register_adapter_method,
)
from subspace_peft.adapters.eora.config import EoRAConfig
from subspace_peft.adapters.eora.layer import (
    EigenScaling,
    EoRALinear,
    LowRankFit,
    eora_fit,
    svd_fit,
)

__all__ = ["EoRAModel"]

Covariance = InputCovariance | torch.Tensor | EigenScaling


@register_adapter_method
class EoRAModel(AdapterModel):
    """``model`` (already compressed, modified in place) with every target linear replaced by
    an :class:`EoRALinear` ``W_c x + B (A x)``, ``B A`` fitted to ``ΔW = W - W_c``.

    Args:
        model: the compressed model.
        config: :class:`EoRAConfig` (rank, compensation ``"eora"``/``"svd"``, eigenvalue
            handling).
        original_weights: ``{name: W [out, in]}`` of every target before compression
            (:func:`~subspace_peft.adapters.compress.snapshot_weights`).
        covariances: ``{name: X̃ [in, in]}`` of every target's input (``compensation="eora"``
            only): :class:`~subspace_peft.adapters.base.InputCovariance`, tensor or
            :class:`EigenScaling`.

    The rank-``config.rank`` fits are kept (:attr:`fits`), so :meth:`set_rank` switches every
    layer to a smaller rank without refitting (truncated SVDs are nested).
    """

    method = "eora"
    config_class = EoRAConfig

    def __init__(self, model: nn.Module, config: EoRAConfig, *,
                 original_weights: Mapping[str, torch.Tensor],
                 covariances: Mapping[str, Covariance] | None = None) -> None:
        if not isinstance(config, EoRAConfig):
            raise TypeError(f"config: expected EoRAConfig, got {type(config).__name__}")
        if config.compensation == "eora" and covariances is None:
            raise ValueError("covariances: EoRA needs the input covariance of every target "
                             "(collect_input_covariance); got None")
        fits: dict[str, LowRankFit] = {}

        def build(name: str, linear: nn.Linear) -> EoRALinear:
            if name not in original_weights:
                raise ValueError(f"original_weights: no weight for target {name!r}")
            w = original_weights[name]
            if tuple(w.shape) != tuple(linear.weight.shape):
                raise ValueError(f"original_weights[{name!r}]: expected shape "
                                 f"{tuple(linear.weight.shape)}, got {tuple(w.shape)}")
            delta = w.detach().to(torch.float64) - linear.weight.detach().to(
                device=w.device, dtype=torch.float64)
            if config.compensation == "svd":
                fit = svd_fit(delta, config.rank)
            else:
                if name not in covariances:
                    raise ValueError(f"covariances: no input covariance for target {name!r}")
                fit = eora_fit(delta, covariances[name], config.rank,
                               eig_floor=config.eig_floor, damp=config.damp,
                               solver=config.solver)
            fits[name] = fit
            B, A = fit.factors()
            return EoRALinear(linear, B, A, compensation=config.compensation)

        super().__init__(model, config, build)
        self._fits = fits

    @property
    def fits(self) -> dict[str, LowRankFit]:
        """``{name: LowRankFit}`` at the fitted rank (empty for an adapter loaded from a
        file)."""
        return dict(self._fits)

    def ranks(self) -> dict[str, int]:
        """``{layer name: current rank}``."""
        return {n: layer.rank for n, layer in self.adapter_layers().items()}

    def set_rank(self, rank: int) -> None:
        """Use the rank-``rank`` truncation of every fit (``rank <= config.rank``; layers whose
        fit was capped at ``min(out, in)`` keep their full rank)."""
        self._check_live()
        if isinstance(rank, bool) or not isinstance(rank, int) or rank < 1:
            raise ValueError(f"rank: expected an int >= 1, got {rank!r}")
        if rank > self.config.rank:
            raise ValueError(f"rank: expected at most the fitted rank {self.config.rank}, "
                             f"got {rank}")
        if not self._fits:
            raise RuntimeError("set_rank: this adapter was loaded from a file and holds no "
                               "fits; refit it with EoRAModel(...)")
        for name, layer in self.adapter_layers().items():
            fit = self._fits[name]
            B, A = fit.factors(min(rank, fit.rank))
            layer.set_factors(B, A)

    @classmethod
    def _saved_layer_factory(cls, config: EoRAConfig,
                             states: Mapping[str, Mapping[str, torch.Tensor]],
                             layer_meta: Mapping[str, Mapping[str, Any]]) -> LayerFactory:
        # Zero factors of the saved shapes; load_adapter_state then copies the saved values.
        def build(name: str, linear: nn.Linear) -> EoRALinear:
            r = int(layer_meta[name]["rank"])
            w = linear.weight
            return EoRALinear(linear, torch.zeros(linear.out_features, r, dtype=w.dtype),
                              torch.zeros(r, linear.in_features, dtype=w.dtype),
                              compensation=str(layer_meta[name].get("compensation",
                                                                    config.compensation)))
        return build

    @classmethod
    def from_saved(cls, *args: Any, **kwargs: Any) -> EoRAModel:
        self = super().from_saved(*args, **kwargs)
        self._fits = {}
        return self
