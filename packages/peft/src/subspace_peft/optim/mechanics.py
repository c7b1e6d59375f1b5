"""Training mechanics: parameter groups by module name, per-layer stepping, update guard.

* :func:`galore_param_groups` — galore-torch-style groups from module-name patterns (plain
  ``nn.Module`` and Hugging Face transformers models alike: selection is by module name).
* :class:`PerLayerStepper` — in-backward ("per-layer") stepping with one optimizer per
  parameter, fired from ``Tensor.register_post_accumulate_grad_hook``, that steps only on
  the **last** micro-batch of each accumulation window (galore-torch's per-layer mode steps
  on every micro-batch and silently breaks gradient accumulation, GaLore#78).
* :class:`UpdateGuard` — raises, naming them, when parameters that are meant to be trained
  never receive a gradient (Q-GaLore#12: 7 parameters were never updated).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import torch
from torch import nn

__all__ = ["PerLayerStepper", "UpdateGuard", "galore_param_groups"]


def galore_param_groups(
    model: nn.Module,
    target_modules: str | Sequence[str] = ("attn", "mlp"),
    *,
    rank: int = 128,
    update_proj_gap: int = 200,
    scale: float = 0.25,
    proj_type: str = "std",
    tensor_weights: bool = False,
    **options: Any,
) -> list[dict[str, Any]]:
    """Two parameter groups: the 2-D ``weight`` of matching modules (projected) and the rest.

    With ``tensor_weights=True`` the N-d weights of matching modules (conv kernels) are
    projected too (Tucker projection in :class:`~subspace_peft.optim.GaLoreAdamW`).

    A module matches when any pattern of ``target_modules`` is found in its qualified name
    by ``re.search`` (so ``"attn"`` matches ``layers.0.attn.q_proj``, and ``r"\\.(q|v)_proj$"``
    is a regex). Only parameters with ``requires_grad`` are returned; a parameter shared by
    several modules (tied weights) appears once, projected if any of its modules matches.
    ``options`` (e.g. ``fira=True``, ``quant_bits=4``, ``lr``) go into the projected group.

    Raises ValueError when no 2-D weight matches (instead of silently training plain AdamW).
    """
    if isinstance(target_modules, str):
        target_modules = (target_modules,)
    patterns = [re.compile(p) for p in target_modules]
    if not patterns:
        raise ValueError("target_modules: expected at least one name pattern, got none")
    targets: dict[int, nn.Parameter] = {}
    for name, module in model.named_modules():
        if not name or not any(p.search(name) for p in patterns):
            continue
        weight = getattr(module, "weight", None)
        if not isinstance(weight, nn.Parameter) or not weight.requires_grad:
            continue
        if weight.dim() == 2 or (tensor_weights and weight.dim() > 2):
            targets[id(weight)] = weight
    if not targets:
        names = [n for n, _ in model.named_modules() if n][:20]
        raise ValueError(
            f"target_modules: no module with a trainable 2-D weight matches {list(target_modules)}"
            f"; module names are e.g. {names}"
        )
    seen: set[int] = set()
    rest: list[nn.Parameter] = []
    projected: list[nn.Parameter] = []
    for p in model.parameters():
        if id(p) in seen or not p.requires_grad:
            continue
        seen.add(id(p))
        (projected if id(p) in targets else rest).append(p)
    groups: list[dict[str, Any]] = []
    if rest:
        groups.append({"params": rest})
    groups.append({"params": projected, "rank": rank, "update_proj_gap": update_proj_gap,
                   "scale": scale, "proj_type": proj_type, **options})
    return groups


def _names(source: nn.Module | Mapping[str, torch.Tensor] | None) -> dict[int, str]:
    if source is None:
        return {}
    items = source.named_parameters() if isinstance(source, nn.Module) else source.items()
    names: dict[int, str] = {}
    for name, p in items:
        names.setdefault(id(p), name)
    return names


class UpdateGuard:
    """Raise when a parameter meant to be trained gets no gradient within ``patience`` steps.

    Tracks ``params`` (those with ``requires_grad``). Each optimizer step, the parameters
    that had a gradient are recorded (:meth:`record`); from step ``patience`` on,
    :meth:`end_step` raises ``RuntimeError`` listing every tracked parameter that has never
    had one. Use :meth:`attach` to do both from an optimizer's step hooks.

    Args:
        params: ``{name: parameter}``, a module (its named parameters), or parameters.
        patience: steps after which a never-updated parameter is an error (``>= 1``).
        names: where to take names from when ``params`` is a plain iterable.
    """

    def __init__(
        self,
        params: nn.Module | Mapping[str, torch.Tensor] | Iterable[torch.Tensor],
        patience: int = 3,
        *,
        names: nn.Module | Mapping[str, torch.Tensor] | None = None,
    ) -> None:
        if isinstance(patience, bool) or not isinstance(patience, int) or patience < 1:
            raise ValueError(f"patience: expected an int >= 1, got {patience!r}")
        self.patience = patience
        if isinstance(params, nn.Module | Mapping):
            named = _names(params)
            tensors = (params.parameters() if isinstance(params, nn.Module)
                       else params.values())
        else:
            tensors = list(params)
            named = _names(names)
        self._params: dict[int, torch.Tensor] = {}
        self._labels: dict[int, str] = {}
        for i, p in enumerate(tensors):
            if p.requires_grad and id(p) not in self._params:
                self._params[id(p)] = p
                self._labels[id(p)] = named.get(id(p), f"<parameter {i}, shape {tuple(p.shape)}>")
        self._seen: set[int] = set()
        self.steps = 0

    def attach(self, optimizer: torch.optim.Optimizer) -> UpdateGuard:
        """Record gradients before and check after every ``optimizer.step()``."""

        def pre(opt, args, kwargs):
            self.record(p for g in opt.param_groups for p in g["params"]
                        if p.grad is not None)

        def post(opt, args, kwargs):
            self.end_step()

        optimizer.register_step_pre_hook(pre)
        optimizer.register_step_post_hook(post)
        return self

    def record(self, params: Iterable[torch.Tensor]) -> None:
        """Mark ``params`` as having received a gradient this step."""
        self._seen.update(id(p) for p in params)

    @property
    def missing(self) -> list[str]:
        """Names of tracked parameters that never had a gradient."""
        return [self._labels[i] for i in self._params if i not in self._seen]

    def end_step(self) -> None:
        self.steps += 1
        if self.steps >= self.patience:
            missing = self.missing
            if missing:
                raise RuntimeError(
                    f"UpdateGuard: {len(missing)} parameter(s) meant to be trained "
                    f"(requires_grad=True and in the optimizer) received no gradient in "
                    f"{self.steps} step(s): {', '.join(missing)}. Freeze them "
                    "(requires_grad_(False)), remove them from the optimizer, or fix the "
                    "forward pass that skips them."
                )


def _is_wrapped(model: nn.Module) -> str | None:
    from torch.nn.parallel import DistributedDataParallel

    if isinstance(model, DistributedDataParallel):
        return "DistributedDataParallel"
    if any(type(m).__name__.startswith("FSDP") for m in model.modules()):
        return "FSDP"
    return None


class PerLayerStepper:
    """Step each parameter inside backward, once per accumulation window.

    One optimizer per parameter (``make_optimizer(groups)`` is called with a one-parameter
    group list that keeps the group's options, e.g. ``lambda g: GaLoreAdamW(g, lr=1e-3)``),
    stepped by a post-accumulate-grad hook as soon as that parameter's gradient is complete
    — but only during the backward of the **last** micro-batch of a window of
    ``accumulation_steps``; earlier micro-batches just accumulate into ``.grad``. After a
    parameter steps, its ``.grad`` is set to None (freeing it is the point of the mode).

    Usage (the losses are the micro-batch losses divided by ``accumulation_steps``)::

        stepper = PerLayerStepper(galore_param_groups(model, ...), make_opt, accumulation_steps=4)
        for x, y in micro_batches:
            (loss_fn(model(x), y) / 4).backward()
            stepper.step()        # counts micro-batches; do NOT call model.zero_grad()

    A parameter that got gradients in the window but none in its last micro-batch is
    stepped by :meth:`step` at the window's end, so nothing accumulated is lost.

    Args:
        params: a model (its trainable parameters, one plain group), parameter groups
            (dicts), or parameters.
        make_optimizer: builds an optimizer from a list of parameter-group dicts.
        accumulation_steps: micro-batches per optimizer step (``k >= 1``).
        guard_patience: if set, an :class:`UpdateGuard` raises after this many windows when
            a trainable parameter never received a gradient.
        names: a module or mapping to name parameters in error messages.

    Not for DDP/FSDP-wrapped models: the hooks fire before the gradient all-reduce, so each
    rank would step with its local gradient; wrapping is refused with a ValueError.
    """

    def __init__(
        self,
        params: nn.Module | Iterable[dict[str, Any]] | Iterable[torch.Tensor],
        make_optimizer: Callable[[list[dict[str, Any]]], torch.optim.Optimizer],
        accumulation_steps: int = 1,
        *,
        guard_patience: int | None = None,
        names: nn.Module | Mapping[str, torch.Tensor] | None = None,
    ) -> None:
        if (isinstance(accumulation_steps, bool) or not isinstance(accumulation_steps, int)
                or accumulation_steps < 1):
            raise ValueError(f"accumulation_steps: expected an int >= 1, got "
                             f"{accumulation_steps!r}")
        self.accumulation_steps = accumulation_steps
        if isinstance(params, nn.Module):
            wrapped = _is_wrapped(params)
            if wrapped:
                raise ValueError(
                    f"params: per-layer stepping cannot run under {wrapped}: its hooks fire "
                    "before the gradient all-reduce; use a regular optimizer.step() instead"
                )
            names = names if names is not None else params
            groups = [{"params": [p for p in params.parameters() if p.requires_grad]}]
        else:
            items = list(params)
            groups = (items if items and isinstance(items[0], dict)
                      else [{"params": items}])
        self.optimizers: list[torch.optim.Optimizer] = []
        self._params: list[torch.Tensor] = []
        self._opt_of: dict[int, torch.optim.Optimizer] = {}
        self._handles = []
        for group in groups:
            options = {k: v for k, v in group.items() if k != "params"}
            plist = group["params"]
            plist = [plist] if isinstance(plist, torch.Tensor) else list(plist)
            for p in plist:
                if id(p) in self._opt_of:
                    raise ValueError("params: a parameter appears in more than one group")
                opt = make_optimizer([{"params": [p], **options}])
                self.optimizers.append(opt)
                self._params.append(p)
                self._opt_of[id(p)] = opt
                self._handles.append(p.register_post_accumulate_grad_hook(self._hook))
        if not self._params:
            raise ValueError("params: no parameters to train")
        self.guard = (UpdateGuard(self._params, guard_patience, names=names)
                      if guard_patience is not None else None)
        self.micro_step = 0
        self._stepped: set[int] = set()

    @property
    def is_last_micro_batch(self) -> bool:
        return self.micro_step == self.accumulation_steps - 1

    def _step_param(self, p: torch.Tensor) -> None:
        opt = self._opt_of[id(p)]
        opt.step()
        opt.zero_grad(set_to_none=True)
        self._stepped.add(id(p))

    def _hook(self, p: torch.Tensor) -> None:
        if self.is_last_micro_batch:
            self._step_param(p)

    def step(self) -> bool:
        """Call once after each micro-batch's ``backward()``; True when a window ended."""
        if not self.is_last_micro_batch:
            self.micro_step += 1
            return False
        for p in self._params:  # gradients from earlier micro-batches only
            if id(p) not in self._stepped and p.grad is not None:
                self._step_param(p)
        if self.guard is not None:
            self.guard.record(p for p in self._params if id(p) in self._stepped)
        self._stepped.clear()
        self.micro_step = 0
        if self.guard is not None:
            self.guard.end_step()
        return True

    def zero_grad(self) -> None:
        """Drop partially accumulated gradients and restart the window."""
        for p in self._params:
            p.grad = None
        self.micro_step = 0
        self._stepped.clear()

    def remove(self) -> None:
        """Remove the hooks (the parameters then no longer step in backward)."""
        for h in self._handles:
            h.remove()
        self._handles.clear()

    def state_dict(self) -> dict[str, Any]:
        """Plain-tensor state (``weights_only``-loadable): window position and optimizers."""
        return {"micro_step": self.micro_step,
                "optimizers": [opt.state_dict() for opt in self.optimizers]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if len(state["optimizers"]) != len(self.optimizers):
            raise ValueError(f"state: expected {len(self.optimizers)} optimizer states, got "
                             f"{len(state['optimizers'])}")
        for opt, sd in zip(self.optimizers, state["optimizers"], strict=True):
            opt.load_state_dict(sd)
        self.micro_step = int(state["micro_step"])
