"""Weight-subspace adapters: the abstraction every method folder builds on.

An *adapter* replaces chosen ``nn.Linear`` layers of a model by :class:`AdapterLayer`
wrappers whose effective weight is the pretrained weight ``W0 [out, in]`` plus a structured
change, and freezes everything else. This module owns what does not depend on the method:

* **Target selection** (:func:`find_targets`): each pattern is a regular expression matched
  against a module's qualified name (``dict(model.named_modules())`` keys) as a *whole
  dotted suffix*: ``re.fullmatch(r"(?:.*\\.)?(?:PATTERN)", name)``. So ``"query"`` selects
  every module whose last name component is ``query``, and the MiniLM pattern
  :data:`subspace_peft.finetune.methods.ENCODER_LINEARS` selects the 36 encoder matrices
  of a bare ``BertModel`` (``encoder.layer.0...``) as well as of a classifier that holds it
  (``encoder.encoder.layer.0...``). Only ``nn.Linear`` modules can be targets; a pattern
  that selects anything else, or nothing, raises.
* **Wrapping and freezing** (:class:`AdapterModel`): every parameter of the model is
  frozen, each target is swapped for its adapter layer, and the modules named by
  ``modules_to_save`` (e.g. a classification head) stay trainable in full.
* **Merging** (:meth:`AdapterModel.merge_and_unload`, :meth:`AdapterModel.unload`): the
  adapted layers become plain ``nn.Linear`` again, with the merged or the original weight.
* **LoRA form** (:meth:`AdapterModel.lora_factors`): every adapted layer reports its change
  with respect to the weight it had when it was wrapped as ``(B [out, k], A [k, in])`` with
  ``ΔW = B @ A`` (the form Hugging Face ``peft`` stores; see :mod:`..export`).
* **Saving** (:meth:`AdapterModel.save_adapter`, :func:`load_adapter`): one safetensors file
  (through :func:`subspace_core.zoo.save_state_dict`: atomic write, sha256 sidecar) holding
  only each layer's trainable tensors and what its method needs to rebuild the layer on top
  of the *original* base model, the ``modules_to_save`` parameters, and JSON metadata (method,
  config, per-layer shape and a fingerprint of the base weight, so that an adapter applied
  to other base weights is refused).
* **Calibration statistics** (:func:`collect_input_covariance`): ``XᵀX`` of the inputs of
  chosen linears over a few forward passes (forward hooks), used by CorDA and by
  activation-aware methods such as EoRA.

A method provides an :class:`AdapterConfig` subclass, an :class:`AdapterLayer` subclass and
an :class:`AdapterModel` subclass and registers the latter with
:func:`register_adapter_method` so that :func:`load_adapter` can rebuild it by name.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import re
from abc import abstractmethod
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "ADAPTER_FORMAT",
    "AdapterConfig",
    "AdapterLayer",
    "AdapterModel",
    "InputCovariance",
    "LayerFactory",
    "adapter_methods",
    "collect_input_covariance",
    "find_targets",
    "iter_linear_names",
    "load_adapter",
    "lowrank_forward",
    "name_matches",
    "read_adapter_file",
    "register_adapter_method",
]

#: ``format`` field of the metadata of every adapter file this module writes.
ADAPTER_FORMAT = "subspace_peft.adapter/1"

_REGISTRY: dict[str, type[AdapterModel]] = {}


# --------------------------------------------------------------------------- selection
def check_patterns(name: str, value: str | Sequence[str]) -> tuple[str, ...]:
    """Normalise a pattern argument to a tuple of compiled-checked regex strings."""
    items = (value,) if isinstance(value, str) else tuple(value)
    if not items or not all(isinstance(p, str) and p for p in items):
        raise ValueError(f"{name}: expected a non-empty regex string or a sequence of them, "
                         f"got {value!r}")
    for p in items:
        try:
            re.compile(p)
        except re.error as err:
            raise ValueError(f"{name}: {p!r} is not a valid regular expression ({err})") from err
    return items


def name_matches(name: str, patterns: str | Sequence[str]) -> bool:
    """Whether qualified module ``name`` matches one of ``patterns`` as a whole dotted suffix
    (``re.fullmatch(r"(?:.*\\.)?(?:p)", name)``; see the module docstring)."""
    items = (patterns,) if isinstance(patterns, str) else patterns
    return any(re.fullmatch(rf"(?:.*\.)?(?:{p})", name) for p in items)


def find_targets(model: nn.Module, patterns: str | Sequence[str],
                 types: tuple[type[nn.Module], ...] = (nn.Linear,)) -> list[str]:
    """Qualified names (in ``named_modules`` order) of the modules of ``model`` selected by
    ``patterns``; each must be an instance of one of ``types`` (``nn.Linear`` by default).

    Raises:
        ValueError: a pattern is invalid, or nothing matched, or the root module matched.
        TypeError: a pattern selected a module of another type (or an adapter layer).
    """
    items = check_patterns("target_modules", patterns)
    expected = " / ".join(f"nn.{t.__name__}" for t in types)
    names = []
    for name, module in model.named_modules():
        if not name_matches(name, items):
            continue
        if isinstance(module, AdapterLayer):
            raise TypeError(f"target_modules: {name!r} is already an adapter layer "
                            f"({type(module).__name__}); unload or merge the adapter first")
        if not isinstance(module, types):
            raise TypeError(f"target_modules: {name!r} matched a {type(module).__name__}, "
                            f"expected {expected} (make the pattern select that module itself)")
        names.append(name)
    if "" in names:
        raise ValueError("target_modules: the model itself is the target; wrap it in a "
                         "container module (e.g. nn.Sequential) first")
    if not names:
        found = [n for n, m in model.named_modules() if isinstance(m, types)][:6]
        raise ValueError(f"target_modules: {items} matched no {expected} of the "
                         f"{type(model).__name__}; candidates are named like {found}")
    return names


# --------------------------------------------------------------------------- calibration
@dataclass
class InputCovariance:
    """Accumulated input statistics of one linear layer.

    Attributes:
        xtx: ``[in, in]`` float64 sum over calls of ``X̃ᵀ X̃`` with ``X [rows_call, in]`` the
            call's input flattened over its leading dimensions and ``X̃ = X / max|X|``
            when collected with ``normalize=True`` (else ``X̃ = X``).
        calls: forward calls seen (batches, for a module used once per forward).
        rows: input rows seen (tokens).
    """

    xtx: torch.Tensor
    calls: int
    rows: int

    def mean_per_call(self) -> torch.Tensor:
        """``xtx / calls``: what Hugging Face ``peft``'s CorDA uses as the covariance."""
        return self.xtx / max(1, self.calls)

    def second_moment(self) -> torch.Tensor:
        """``xtx / rows``: the per-row second moment ``E[x xᵀ]``."""
        return self.xtx / max(1, self.rows)


@torch.no_grad()
def collect_input_covariance(
    model: nn.Module,
    target_modules: str | Sequence[str],
    run: Callable[[], Any],
    *,
    normalize: bool = False,
) -> dict[str, InputCovariance]:
    """Accumulate ``XᵀX`` of the inputs of the selected linears while ``run()`` executes.

    ``run`` should push a few calibration batches through ``model`` (it is called once,
    without arguments, with gradients disabled and ``model`` in eval mode; the mode is
    restored afterwards). Every token position counts, padding included, as in Hugging Face
    ``peft``'s CorDA.

    Args:
        model: the module whose linears are hooked.
        target_modules: pattern(s) as in :func:`find_targets`.
        run: callable that runs the model on the calibration data.
        normalize: divide each call's input by its largest absolute entry before the product
            (CorDA's reference code does this so that long sequences and large activations do
            not overflow; it changes the scale of ``C``, not which directions it weighs).

    Returns:
        ``{name: InputCovariance}`` for every selected linear.

    Raises:
        RuntimeError: a selected layer was never called, or saw a non-finite input.
    """
    names = find_targets(model, target_modules)
    modules = dict(model.named_modules())
    stats: dict[str, InputCovariance] = {}
    handles = []

    def make_hook(name: str, in_features: int):
        def hook(module: nn.Module, args: tuple, output: Any) -> None:
            x = args[0].detach().reshape(-1, in_features).to(torch.float64)
            if not bool(torch.isfinite(x).all()):
                raise RuntimeError(f"collect_input_covariance: non-finite input to {name!r}")
            if normalize:
                peak = x.abs().max()
                if peak > 0:
                    x = x / peak
            entry = stats.get(name)
            if entry is None:
                entry = stats[name] = InputCovariance(
                    torch.zeros(in_features, in_features, dtype=torch.float64,
                                device=x.device), 0, 0)
            entry.xtx.addmm_(x.T, x)
            entry.calls += 1
            entry.rows += x.shape[0]
        return hook

    was_training = model.training
    model.eval()
    try:
        for name in names:
            handles.append(modules[name].register_forward_hook(
                make_hook(name, modules[name].in_features)))
        run()
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    missing = [n for n in names if n not in stats]
    if missing:
        raise RuntimeError(f"collect_input_covariance: run() never called {missing[:5]} "
                           f"({len(missing)} of {len(names)} selected layers)")
    return stats


# --------------------------------------------------------------------------- config
class DictConfig:
    """Mixin of the adapter config dataclasses: a JSON-ready dict round trip (saved in the
    adapter file's metadata)."""

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready fields (tuples become lists)."""
        out = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            out[f.name] = list(value) if isinstance(value, tuple) else value
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Any:
        """Inverse of :meth:`to_dict`; unknown keys raise."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"{cls.__name__}: unknown fields {unknown}; expected a subset of "
                             f"{sorted(known)}")
        return cls(**data)


@dataclass(kw_only=True)
class AdapterConfig(DictConfig):
    """Options shared by every adapter method.

    Attributes:
        target_modules: regex(es) selecting the linears to adapt (see :func:`find_targets`).
        modules_to_save: regex(es) selecting further modules (e.g. a task head) that are
            trained in full and saved with the adapter; none by default.
    """

    method: ClassVar[str] = ""
    target_modules: str | tuple[str, ...]
    modules_to_save: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        value = self.target_modules
        self.target_modules = value if isinstance(value, str) else tuple(value)
        check_patterns("target_modules", self.target_modules)
        if isinstance(self.modules_to_save, str):
            self.modules_to_save = (self.modules_to_save,)
        self.modules_to_save = tuple(self.modules_to_save)
        if self.modules_to_save:
            check_patterns("modules_to_save", self.modules_to_save)


# --------------------------------------------------------------------------- layer
def _fingerprint(weight: torch.Tensor) -> list[float]:
    """Three float64 statistics of a weight that differ for different weights: Frobenius
    norm, plain sum, and a sum weighted by a fixed irrational-phase cosine pattern (so that
    permuted or sign-flipped weights with equal norm and sum still differ)."""
    w = weight.detach().to(torch.float64)
    idx = torch.arange(w.numel(), dtype=torch.float64, device=w.device)
    pattern = torch.cos(idx * 0.6180339887498949).reshape(w.shape)
    return [float(w.norm()), float(w.sum()), float((w * pattern).sum())]


def _check_fingerprint(name: str, expected: Sequence[float], weight: torch.Tensor) -> None:
    actual = _fingerprint(weight)
    scale = max(abs(expected[0]), 1e-12)
    tol = 1e-5 * scale * (1.0 + math.sqrt(weight.numel()) * 1e-3)
    if any(abs(a - e) > tol for a, e in zip(actual, expected, strict=True)):
        raise ValueError(
            f"load_adapter: the base weight of {name!r} differs from the one the adapter was "
            f"made for (fingerprint expected {list(expected)}, actual {actual}); load it on the "
            "same pretrained model"
        )


class AdapterLayer(nn.Module):
    """Base of the method layers: wraps one frozen ``nn.Linear`` (``base_layer``).

    Subclasses implement :meth:`forward`, :meth:`original_weight`, :meth:`lora_factors` and
    list in :attr:`trainable_names` / :attr:`rebuild_names` the attribute names of their
    trainable tensors and of the frozen tensors needed to rebuild them from the original
    base layer. Shapes: ``x [..., in] -> y [..., out]``; weights ``[out, in]``.
    """

    trainable_names: ClassVar[tuple[str, ...]] = ()
    rebuild_names: ClassVar[tuple[str, ...]] = ()
    #: module types the method can wrap (a method adapting convolutions widens it)
    target_types: ClassVar[tuple[type[nn.Module], ...]] = (nn.Linear,)

    def __init__(self, base_layer: nn.Module) -> None:
        super().__init__()
        if not isinstance(base_layer, self.target_types):
            raise TypeError(f"base_layer: expected one of "
                            f"{[t.__name__ for t in self.target_types]}, got "
                            f"{type(base_layer).__name__}")
        self.base_layer = base_layer
        for p in base_layer.parameters():
            p.requires_grad_(False)
        # a convolution's channel counts play the role of a linear's feature counts
        self.in_features = getattr(base_layer, "in_features", None) or base_layer.in_channels
        self.out_features = getattr(base_layer, "out_features", None) or base_layer.out_channels

    # Code written for nn.Linear (e.g. dtype look-ups in transformers) reads these.
    @property
    def weight(self) -> torch.Tensor:
        return self.base_layer.weight

    @property
    def bias(self) -> torch.Tensor | None:
        return self.base_layer.bias

    @property
    @abstractmethod
    def rank(self) -> int:
        """Rank ``k`` of the LoRA form (columns of ``B``)."""

    @abstractmethod
    def original_weight(self) -> torch.Tensor:
        """``W0 [out, in]``: the weight the wrapped linear had (no gradient)."""

    @abstractmethod
    def lora_factors(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(B [out, k], A [k, in])`` with ``merged_weight() - original_weight() = B @ A``
        (detached, in the base weight's dtype)."""

    def extra_metadata(self) -> dict[str, Any]:
        """JSON-ready per-layer facts saved with the adapter (e.g. the rank)."""
        return {"rank": self.rank}

    @torch.no_grad()
    def merged_weight(self) -> torch.Tensor:
        """Effective weight ``W0 + B A`` ``[out, in]`` (float64 sum, base dtype; no grad)."""
        B, A = self.lora_factors()
        w = self.original_weight().to(torch.float64) + B.to(torch.float64) @ A.to(torch.float64)
        return w.to(self.base_layer.weight.dtype)

    def _module_with(self, weight: torch.Tensor) -> nn.Module:
        """A plain module of the base layer's type with ``weight`` and the base's bias."""
        base = self.base_layer
        if type(base) is not nn.Linear:  # convs etc.: keep every setting (stride, padding...)
            out = copy.deepcopy(base)
            with torch.no_grad():
                out.weight.copy_(weight)
            return out
        out = nn.Linear(self.in_features, self.out_features, bias=base.bias is not None,
                        device=base.weight.device, dtype=base.weight.dtype)
        with torch.no_grad():
            out.weight.copy_(weight)
            if base.bias is not None:
                out.bias.copy_(base.bias)
        return out

    def merge(self) -> nn.Module:
        """A plain module of the base layer's type computing this layer's current map."""
        return self._module_with(self.merged_weight())

    def unmerge(self) -> nn.Module:
        """A plain module of the base layer's type with the original weight and bias."""
        return self._module_with(self.original_weight())

    def adapter_state(self) -> dict[str, torch.Tensor]:
        """The tensors to save: trainable ones and those needed to rebuild the layer."""
        return {n: getattr(self, n).detach() for n in self.trainable_names + self.rebuild_names}

    @torch.no_grad()
    def load_adapter_state(self, state: Mapping[str, torch.Tensor]) -> None:
        """Copy the trainable tensors of ``state`` (as written by :meth:`adapter_state`) in
        place, checking names and shapes."""
        expected = set(self.trainable_names + self.rebuild_names)
        if set(state) != expected:
            raise ValueError(f"{type(self).__name__}: expected tensors {sorted(expected)}, "
                             f"got {sorted(state)}")
        for n in self.trainable_names:
            target = getattr(self, n)
            if tuple(state[n].shape) != tuple(target.shape):
                raise ValueError(f"{type(self).__name__}.{n}: expected shape "
                                 f"{tuple(target.shape)}, got {tuple(state[n].shape)}")
            target.copy_(state[n])

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, " \
               f"rank={self.rank}"


def lowrank_forward(x: torch.Tensor, A: torch.Tensor, B: torch.Tensor) -> torch.Tensor:
    """``x Aᵀ Bᵀ`` for ``x [..., in]``, ``A [k, in]``, ``B [out, k]`` (two thin matmuls)."""
    return F.linear(F.linear(x, A), B)


# --------------------------------------------------------------------------- model
LayerFactory = Callable[[str, nn.Linear], AdapterLayer]


class AdapterModel(nn.Module):
    """A model whose target linears are adapter layers; everything else is frozen except
    ``modules_to_save``. Calls are forwarded to the wrapped model (``self.model``).

    Subclasses call ``super().__init__(model, config, layer_factory)`` with a factory that
    builds the method's layer for one ``(name, linear)``, and implement
    :meth:`_saved_layer_factory` (rebuild a layer from the tensors of a saved adapter).
    ``model`` is modified in place (its linears are replaced).
    """

    method: ClassVar[str] = ""
    config_class: ClassVar[type[AdapterConfig]] = AdapterConfig
    #: module types :func:`find_targets` may select for this method
    target_types: ClassVar[tuple[type[nn.Module], ...]] = (nn.Linear,)

    def __init__(self, model: nn.Module, config: AdapterConfig,
                 layer_factory: LayerFactory) -> None:
        super().__init__()
        if not isinstance(config, self.config_class):
            raise TypeError(f"config: expected {self.config_class.__name__}, got "
                            f"{type(config).__name__}")
        names = find_targets(model, config.target_modules, self.target_types)
        saved = self._find_modules_to_save(model, config, names)
        self.model = model
        self.config = config
        # Flags to restore on unload/merge: adapters freeze the whole model.
        self._requires_grad = {n: p.requires_grad for n, p in model.named_parameters()}
        for p in model.parameters():
            p.requires_grad_(False)
        self._layer_names = tuple(names)
        self._saved_names = tuple(saved)
        self._fingerprints: dict[str, list[float]] = {}
        modules = dict(model.named_modules())
        for name in names:
            linear = modules[name]
            self._fingerprints[name] = _fingerprint(linear.weight)
            layer = layer_factory(name, linear)
            if not isinstance(layer, AdapterLayer):  # pragma: no cover - programming error
                raise TypeError(f"layer_factory returned {type(layer).__name__}")
            model.set_submodule(name, layer)
        for name in saved:
            for p in modules[name].parameters():
                p.requires_grad_(True)
        self._unloaded = False

    @staticmethod
    def _find_modules_to_save(model: nn.Module, config: AdapterConfig,
                              targets: Sequence[str]) -> list[str]:
        found: list[str] = []
        for pattern in config.modules_to_save:
            hits = [n for n, _ in model.named_modules() if n and name_matches(n, pattern)]
            # keep outermost matches only (a head and its sub-linear would be saved twice)
            hits = [n for n in hits if not any(n.startswith(h + ".") for h in hits)]
            if not hits:
                raise ValueError(f"modules_to_save: {pattern!r} matched no module")
            for n in hits:
                clash = [t for t in targets if t == n or t.startswith(n + ".")]
                if clash:
                    raise ValueError(f"modules_to_save: {n!r} contains adapter targets "
                                     f"{clash[:3]}; a module is either adapted or saved")
                if n not in found:
                    found.append(n)
        return found

    # ------------------------------------------------------------------ access
    def forward(self, *args: Any, **kwargs: Any) -> Any:
        self._check_live()
        return self.model(*args, **kwargs)

    def _check_live(self) -> None:
        if self._unloaded:
            raise RuntimeError(f"{type(self).__name__}: the adapter was merged or unloaded; "
                               "use the model that call returned")

    def adapter_layers(self) -> dict[str, AdapterLayer]:
        """``{qualified name: adapter layer}`` in model order."""
        modules = dict(self.model.named_modules())
        return {n: modules[n] for n in self._layer_names}

    @property
    def modules_to_save(self) -> tuple[str, ...]:
        """Qualified names of the modules trained in full and saved with the adapter."""
        return self._saved_names

    def adapter_parameters(self) -> list[nn.Parameter]:
        """The trainable tensors of the adapter layers (``modules_to_save`` excluded)."""
        return [p for layer in self.adapter_layers().values() for p in layer.parameters()
                if p.requires_grad]

    def num_adapter_parameters(self) -> int:
        """Scalars in :meth:`adapter_parameters`."""
        return sum(p.numel() for p in self.adapter_parameters())

    def num_trainable_parameters(self) -> int:
        """Scalars with ``requires_grad`` (adapter + ``modules_to_save``; shared counted once)."""
        seen: dict[int, int] = {}
        for p in self.parameters():
            if p.requires_grad:
                seen[id(p)] = p.numel()
        return sum(seen.values())

    def lora_factors(self) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        """``{name: (B [out, k], A [k, in])}`` with merged − original weight = ``B @ A``."""
        self._check_live()
        return {n: layer.lora_factors() for n, layer in self.adapter_layers().items()}

    # ------------------------------------------------------------------ unwrap
    def _replace_all(self, build: Callable[[AdapterLayer], nn.Linear]) -> nn.Module:
        self._check_live()
        for name, layer in self.adapter_layers().items():
            self.model.set_submodule(name, build(layer))
        for n, p in self.model.named_parameters():
            if n in self._requires_grad:
                p.requires_grad_(self._requires_grad[n])
        self._unloaded = True
        return self.model

    def merge_and_unload(self) -> nn.Module:
        """Replace every adapter layer by an ``nn.Linear`` holding its merged weight and
        return the plain model (``requires_grad`` flags restored). This wrapper is unusable
        afterwards."""
        return self._replace_all(lambda layer: layer.merge())

    def unload(self) -> nn.Module:
        """Like :meth:`merge_and_unload` but restoring the original weights."""
        return self._replace_all(lambda layer: layer.unmerge())

    # ------------------------------------------------------------------ save / load
    def adapter_state_dict(self) -> dict[str, torch.Tensor]:
        """Flat ``{key: tensor}`` of what :meth:`save_adapter` writes: ``"<layer>.<tensor>"``
        for adapter layers, ``"modules_to_save.<module>.<param>"`` for saved modules."""
        self._check_live()
        out: dict[str, torch.Tensor] = {}
        for name, layer in self.adapter_layers().items():
            for key, value in layer.adapter_state().items():
                out[f"{name}.{key}"] = value
        modules = dict(self.model.named_modules())
        for name in self._saved_names:
            for key, value in modules[name].state_dict().items():
                out[f"modules_to_save.{name}.{key}"] = value.detach()
        return out

    def load_adapter_state_dict(self, state: Mapping[str, torch.Tensor]) -> None:
        """Inverse of :meth:`adapter_state_dict` on this (already built) adapter: copy every
        layer's trainable tensors and the saved modules' state in place (strict: names and
        shapes must match)."""
        self._check_live()
        states, saved = _split_state(state, list(self._layer_names), list(self._saved_names))
        with torch.no_grad():
            for name, layer in self.adapter_layers().items():
                layer.load_adapter_state(states[name])
        modules = dict(self.model.named_modules())
        for name in self._saved_names:
            modules[name].load_state_dict(saved[name], strict=True)

    def adapter_metadata(self) -> dict[str, Any]:
        """JSON-ready description written next to the tensors."""
        layers = self.adapter_layers()
        return {
            "format": ADAPTER_FORMAT,
            "method": self.method,
            "config": self.config.to_dict(),
            "layers": {n: {"shape": [layer.out_features, layer.in_features],
                           "fingerprint": self._fingerprints[n], **layer.extra_metadata()}
                       for n, layer in layers.items()},
            "modules_to_save": list(self._saved_names),
        }

    def save_adapter(self, path: str | Path, *, metadata: Mapping[str, Any] | None = None
                     ) -> str:
        """Write the adapter to ``path`` (safetensors + ``<path>.sha256``); returns the sha256.

        ``metadata`` (JSON-ready) is stored under ``"user"``.
        """
        from subspace_core.zoo import save_state_dict

        meta = self.adapter_metadata()
        if metadata:
            meta["user"] = dict(metadata)
        return save_state_dict(self.adapter_state_dict(), path, metadata=meta)

    @classmethod
    @abstractmethod
    def _saved_layer_factory(cls, config: AdapterConfig,
                             states: Mapping[str, Mapping[str, torch.Tensor]],
                             layer_meta: Mapping[str, Mapping[str, Any]]) -> LayerFactory:
        """A factory rebuilding the layers from saved tensors (no calibration, no training)."""

    @classmethod
    def from_saved(cls, model: nn.Module, config: AdapterConfig,
                   states: Mapping[str, Mapping[str, torch.Tensor]],
                   layer_meta: Mapping[str, Mapping[str, Any]],
                   saved_modules: Mapping[str, Mapping[str, torch.Tensor]]) -> AdapterModel:
        """Rebuild on ``model`` (the original base) from per-layer saved tensors."""
        targets = find_targets(model, config.target_modules, cls.target_types)
        if sorted(targets) != sorted(states):
            raise ValueError(f"load_adapter: the adapter holds layers {sorted(states)[:4]}... "
                             f"({len(states)}) but the config selects {sorted(targets)[:4]}... "
                             f"({len(targets)}) in this model")
        modules = dict(model.named_modules())
        for name in targets:
            expected = layer_meta[name].get("weight_shape")
            actual = list(modules[name].weight.shape)
            if expected is not None and actual != [int(n) for n in expected]:
                raise ValueError(f"load_adapter: {name!r} has a weight of shape {actual}, the "
                                 f"adapter was made for {expected}")
            _check_fingerprint(name, layer_meta[name]["fingerprint"], modules[name].weight)
        self = cls.__new__(cls)
        AdapterModel.__init__(self, model, config, cls._saved_layer_factory(config, states,
                                                                          layer_meta))
        for name, layer in self.adapter_layers().items():
            layer.load_adapter_state(states[name])
        if sorted(saved_modules) != sorted(self._saved_names):
            raise ValueError(f"load_adapter: saved modules {sorted(saved_modules)} differ from "
                             f"those the config selects {sorted(self._saved_names)}")
        mods = dict(self.model.named_modules())
        for name, state in saved_modules.items():
            mods[name].load_state_dict(dict(state))
        return self


def register_adapter_method(cls: type[AdapterModel]) -> type[AdapterModel]:
    """Class decorator: make :func:`load_adapter` able to rebuild ``cls.method`` adapters."""
    if not cls.method:
        raise ValueError(f"{cls.__name__}: set the class attribute `method` before registering")
    other = _REGISTRY.get(cls.method)
    if other is not None and other is not cls:
        raise ValueError(f"adapter method {cls.method!r} is already registered by "
                         f"{other.__module__}.{other.__qualname__}")
    _REGISTRY[cls.method] = cls
    return cls


def adapter_methods() -> tuple[str, ...]:
    """Names of the registered adapter methods."""
    return tuple(sorted(_REGISTRY))


def _split_state(tensors: Mapping[str, torch.Tensor], layer_names: Sequence[str],
                 saved_names: Sequence[str]) -> tuple[dict, dict]:
    layers: dict[str, dict[str, torch.Tensor]] = {n: {} for n in layer_names}
    saved: dict[str, dict[str, torch.Tensor]] = {n: {} for n in saved_names}
    leftovers = []
    for key, value in tensors.items():
        if key.startswith("modules_to_save."):
            rest = key[len("modules_to_save."):]
            owner = next((n for n in saved_names if rest.startswith(n + ".")), None)
            if owner is None:
                leftovers.append(key)
            else:
                saved[owner][rest[len(owner) + 1:]] = value
            continue
        owner, _, tensor = key.rpartition(".")
        if owner in layers:
            layers[owner][tensor] = value
        else:
            leftovers.append(key)
    if leftovers:
        raise ValueError(f"load_adapter: tensors {leftovers[:5]} belong to no layer named in the "
                         "metadata; the file is inconsistent")
    return layers, saved


def read_adapter_file(path: str | Path, *, sha256: str | None = None
                      ) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Verified tensors and metadata of an adapter file (``sha256`` default: the sidecar)."""
    from safetensors import safe_open

    from subspace_core.zoo import load_state_dict

    path = Path(path)
    if sha256 is None:
        sidecar = path.with_name(path.name + ".sha256")
        if not sidecar.is_file():
            raise FileNotFoundError(f"{path}: pass sha256= or keep the {sidecar.name} sidecar")
        sha256 = sidecar.read_text().split()[0]
    tensors = load_state_dict(path, sha256=sha256)  # refuses bytes that do not match
    with safe_open(str(path), framework="pt") as fh:
        meta = json.loads((fh.metadata() or {}).get("subzoo", "{}"))
    if meta.get("format") != ADAPTER_FORMAT:
        raise ValueError(f"{path}: not a subspace-peft adapter (metadata format "
                         f"{meta.get('format')!r}, expected {ADAPTER_FORMAT!r})")
    return tensors, meta


def load_adapter(model: nn.Module, path: str | Path, *, sha256: str | None = None
                 ) -> AdapterModel:
    """Rebuild the adapter saved at ``path`` on ``model`` (the original pretrained model,
    modified in place) and return the :class:`AdapterModel`.

    The file is verified against ``sha256`` (default: its ``.sha256`` sidecar, which catches
    corruption; pass the hash you trust to also catch tampering); the method's classes must
    be registered (importing :mod:`subspace_peft.adapters` registers the built-in ones); each
    target's base weight must match the fingerprint recorded at save time.
    """
    tensors, meta = read_adapter_file(path, sha256=sha256)
    method = meta.get("method")
    if method not in _REGISTRY:
        raise ValueError(f"{path}: adapter method {method!r} is not registered; known: "
                         f"{adapter_methods()} (import its package first)")
    cls = _REGISTRY[method]
    config = cls.config_class.from_dict(meta["config"])
    layer_meta = meta["layers"]
    states, saved = _split_state(tensors, list(layer_meta), meta.get("modules_to_save", []))
    return cls.from_saved(model, config, states, layer_meta, saved)


def iter_linear_names(model: nn.Module) -> Iterator[str]:
    """Qualified names of every ``nn.Linear`` of ``model`` (helps writing target patterns)."""
    for name, module in model.named_modules():
        if isinstance(module, nn.Linear):
            yield name
