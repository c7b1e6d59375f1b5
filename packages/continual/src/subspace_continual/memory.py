"""``SubspaceMemory``: per-layer input-space bases and orthogonal gradient/update projection.

Gradient Projection Memory (Saha, Garg & Roy, ICLR 2021). For a layer ``y = W x (+ b)``
the weight gradient is ``∇W = Σ δ xᵀ``: its rows lie in the span of the layer's inputs.
If an update ``ΔW`` satisfies ``ΔW x = 0`` for every input ``x`` an old task feeds the layer,
the layer's outputs on that task do not change. GPM keeps, per layer, an orthonormal basis
``U`` [m, k] of (most of) the old tasks' input space and trains new tasks with

    ``ΔW ← ΔW − (ΔW U) Uᵀ``  (rows of ``ΔW`` projected on the complement of ``span(U)``).

Layers and their input vectors ``x ∈ R^m``:

* ``nn.Linear(in, out)``: ``x`` is the input row, ``m = in``; the weight is [out, in].
* ``nn.Conv2d``: ``x`` is an unfolded input patch (``F.unfold``, ``m = C·kh·kw``); the weight
  reshaped to [out, m] acts on patches exactly like a Linear layer.
* with a bias (and ``include_bias=True``) the input is augmented with a constant 1,
  ``x̃ = [x; 1]`` (``m + 1``), and the projection acts on ``[W, b]``: then the bias is
  protected too and the guarantee "old outputs unchanged" is exact.

Bases are grown per task by GPM's energy criterion (core
:func:`~subspace_core.linalg.extend_basis_by_energy`): for the new task's representation
matrix ``R`` [m, n], the energy ``‖Uᵀ R‖²`` the stored basis already captures counts towards the
``threshold``; only the smallest number of new directions of the residual ``R − U Uᵀ R`` that
reach ``threshold · ‖R‖²`` are added.

Optimizers. Projecting the *gradient* before ``step()`` (``mode="gradient"``, GPM) keeps the
update in the complement for SGD (with or without momentum, whose buffer is a combination
of projected gradients) but NOT for Adam/AdamW/weight decay, whose element-wise scaling
rotates the update out of the complement. ``mode="update"`` projects the parameter change
each ``step()`` made, ``Δ ← Δ − Δ U Uᵀ``, which is exact for every optimizer; it is the
default of :meth:`SubspaceMemory.attach`.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from subspace_core.linalg import basis_union, extend_basis_by_energy

__all__ = ["LayerUpdate", "ProjectionHandle", "SubspaceMemory", "layer_inputs"]

_MODES = ("update", "gradient")


@dataclass(frozen=True)
class LayerUpdate:
    """What :meth:`SubspaceMemory.update` did to one layer.

    Attributes:
        added: directions added for this task.
        size: basis size after the update (``k``).
        dim: input dimension ``m`` (with the bias coordinate when protected).
        captured_before: fraction of the task's activation energy the old basis captured.
        captured: fraction the new basis captures (``>= threshold`` unless the space is full).
        samples: number of input vectors (rows) seen for this task.
    """

    added: int
    size: int
    dim: int
    captured_before: float
    captured: float
    samples: int


def _conv_padding(conv: nn.Conv2d) -> tuple[int, int]:
    if conv.padding_mode != "zeros":
        raise ValueError(f"layers: Conv2d with padding_mode={conv.padding_mode!r} is not "
                         "supported (expected 'zeros')")
    if isinstance(conv.padding, str):
        if conv.padding == "valid":
            return (0, 0)
        raise ValueError(f"layers: Conv2d with padding={conv.padding!r} is not supported "
                         "(expected ints or 'valid')")
    return tuple(conv.padding)  # type: ignore[return-value]


def layer_inputs(module: nn.Module, x: torch.Tensor, include_bias: bool) -> torch.Tensor:
    """The input vectors ``module`` applies its weight to, as rows: [n, m] (or [n, m + 1]).

    Linear: ``x`` [..., in] → [prod(...), in]. Conv2d: ``x`` [N, C, H, W] → unfolded patches
    [N·L, C·kh·kw] (``L`` = output positions). With ``include_bias`` and a bias, a column of
    ones is appended.
    """
    if isinstance(module, nn.Linear):
        rows = x.reshape(-1, x.shape[-1])
    elif isinstance(module, nn.Conv2d):
        patches = F.unfold(x, module.kernel_size, dilation=module.dilation,
                           padding=_conv_padding(module), stride=module.stride)
        rows = patches.transpose(1, 2).reshape(-1, patches.shape[1])
    else:
        raise TypeError(f"module: expected nn.Linear or nn.Conv2d, got {type(module).__name__}")
    if include_bias and module.bias is not None:
        rows = torch.cat([rows, rows.new_ones(rows.shape[0], 1)], dim=1)
    return rows


class ProjectionHandle:
    """Returned by :meth:`SubspaceMemory.attach`; ``remove()`` detaches the projection."""

    def __init__(self, handles: list[Any]):
        self._handles = handles

    def remove(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles = []


class SubspaceMemory:
    """Per-layer orthonormal bases of old tasks' layer inputs, and projections against them.

    Args:
        model: the network; the protected layers are looked up in it by name.
        layers: names (as in ``model.named_modules()``) of ``nn.Linear``/``nn.Conv2d`` layers
            to protect; default every Linear and Conv2d layer.
        threshold: GPM energy threshold in ``(0, 1]``, one float or ``{layer: float}``.
        include_bias: protect biases by augmenting inputs with a constant 1 (see module doc).
        dtype: dtype of the stored bases (the SVDs run in float64 regardless).

    Typical use (one task after another)::

        memory = SubspaceMemory(model, threshold={"0": 0.95, "2": 0.99, "4": 0.99})
        for task in tasks:
            handle = memory.attach(optimizer)       # no-op while the memory is empty
            train(model, optimizer, task)
            handle.remove()
            with memory.collect(max_samples=300):  # record layer inputs
                model(task.x_train[:300])
            memory.update()                         # grow the bases by energy
    """

    def __init__(self, model: nn.Module, layers: Sequence[str] | None = None, *,
                 threshold: float | Mapping[str, float] = 0.97, include_bias: bool = True,
                 dtype: torch.dtype = torch.float32):
        if not isinstance(model, nn.Module):
            raise TypeError(f"model: expected an nn.Module, got {type(model).__name__}")
        modules = dict(model.named_modules())
        if layers is None:
            layers = [n for n, m in modules.items() if isinstance(m, (nn.Linear, nn.Conv2d))]
            if not layers:
                raise ValueError("model: expected at least one nn.Linear or nn.Conv2d layer")
        self.layers: dict[str, nn.Module] = {}
        for name in layers:
            if name not in modules:
                raise KeyError(f"layers: {name!r} is not a module of the model; known: "
                               f"{sorted(n for n in modules if n)}")
            module = modules[name]
            if not isinstance(module, (nn.Linear, nn.Conv2d)):
                raise TypeError(f"layers: {name!r} is a {type(module).__name__}; expected "
                                "nn.Linear or nn.Conv2d")
            if isinstance(module, nn.Conv2d):
                if module.groups != 1:
                    raise ValueError(f"layers: {name!r} is a grouped Conv2d (groups="
                                     f"{module.groups}); only groups=1 is supported")
                _conv_padding(module)
            self.layers[name] = module
        self.include_bias = bool(include_bias)
        self.dtype = dtype
        self.thresholds = self._thresholds(threshold)
        self.bases: dict[str, torch.Tensor] = {
            n: torch.zeros(self.dim(n), 0, dtype=dtype, device=m.weight.device)
            for n, m in self.layers.items()}
        self._sketch: dict[str, torch.Tensor] = {}
        self._seen: dict[str, int] = {}
        self._collecting = False

    # ----------------------------------------------------------------- configuration
    def _thresholds(self, threshold: float | Mapping[str, float]) -> dict[str, float]:
        if isinstance(threshold, Mapping):
            missing = set(self.layers) - set(threshold)
            extra = set(threshold) - set(self.layers)
            if missing or extra:
                raise ValueError(f"threshold: expected one value per layer {list(self.layers)}; "
                                 f"missing {sorted(missing)}, unknown {sorted(extra)}")
            values = dict(threshold)
        else:
            values = dict.fromkeys(self.layers, threshold)
        for name, t in values.items():
            if isinstance(t, bool) or not isinstance(t, (int, float)) or not 0 < t <= 1:
                raise ValueError(f"threshold: expected floats in (0, 1], got {t!r} for {name!r}")
        return {n: float(values[n]) for n in self.layers}

    def _has_bias(self, name: str) -> bool:
        return self.include_bias and self.layers[name].bias is not None

    def dim(self, name: str) -> int:
        """Input dimension ``m`` of layer ``name`` (+1 when its bias is protected)."""
        module = self.layers[name]
        w = module.weight
        m = w.shape[1] if isinstance(module, nn.Linear) else w[0].numel()
        return m + int(self._has_bias(name))

    def basis_sizes(self) -> dict[str, int]:
        """``{layer: k}``, the number of protected directions per layer."""
        return {n: int(U.shape[1]) for n, U in self.bases.items()}

    def is_empty(self) -> bool:
        return all(U.shape[1] == 0 for U in self.bases.values())

    def uncovered_parameters(self, model: nn.Module) -> list[str]:
        """Trainable parameters of ``model`` the memory does not protect (e.g. per-task heads,
        normalisation layers, or biases when ``include_bias=False``)."""
        covered = set()
        for m in self.layers.values():
            covered.add(id(m.weight))
            if self._has_bias_module(m):
                covered.add(id(m.bias))
        return [n for n, p in model.named_parameters() if p.requires_grad and id(p) not in covered]

    def _has_bias_module(self, module: nn.Module) -> bool:
        return self.include_bias and module.bias is not None

    # ----------------------------------------------------------------- activations
    @contextmanager
    def collect(self, max_samples: int | None = None) -> Iterator[SubspaceMemory]:
        """Record the protected layers' inputs during forward passes inside the block.

        Inputs are accumulated as a compressed sketch ``S`` [m, ≤m] with ``S Sᵀ = Σ x xᵀ``
        (float64), so any number of batches fits in ``O(m²)`` memory. ``max_samples`` caps
        the number of *examples* (first dimension of the layer input) recorded per layer.
        Call :meth:`update` afterwards to grow the bases.
        """
        if max_samples is not None and (isinstance(max_samples, bool)
                                        or not isinstance(max_samples, int) or max_samples < 1):
            raise ValueError(f"max_samples: expected a positive int or None, got {max_samples!r}")
        if self._collecting:
            raise RuntimeError("collect: already collecting (nested collect() blocks)")
        taken: dict[str, int] = dict.fromkeys(self.layers, 0)
        handles = []
        for name, module in self.layers.items():
            def hook(mod: nn.Module, args: tuple, name: str = name) -> None:
                x = args[0].detach()
                if max_samples is not None:
                    room = max_samples - taken[name]
                    if room <= 0:
                        return
                    x = x[:room]
                taken[name] += x.shape[0]
                self._accumulate(name, layer_inputs(mod, x, self._has_bias(name)))
            handles.append(module.register_forward_pre_hook(hook))
        self._collecting = True
        try:
            yield self
        finally:
            self._collecting = False
            for h in handles:
                h.remove()

    def _accumulate(self, name: str, rows: torch.Tensor) -> None:
        rows = rows.to(torch.float64)
        self._seen[name] = self._seen.get(name, 0) + rows.shape[0]
        old = self._sketch.get(name)
        S = rows.T if old is None else torch.cat([old, rows.T], dim=1)
        m = S.shape[0]
        if S.shape[1] > m:
            # S Sᵀ = (Qr)ᵀ(Qr) with Sᵀ = Q r: r ᵀ [m, m] has the same Gram, hence the same
            # left singular vectors and energies.
            S = torch.linalg.qr(S.T, mode="r").R.T
        self._sketch[name] = S

    def add_activations(self, name: str, rows: torch.Tensor) -> None:
        """Record input vectors ``rows`` [n, m] of layer ``name`` directly (no forward pass)."""
        if name not in self.layers:
            raise KeyError(f"name: {name!r} is not a protected layer; known: {list(self.layers)}")
        if rows.ndim != 2 or rows.shape[1] != self.dim(name):
            raise ValueError(f"rows: expected [n, {self.dim(name)}] for layer {name!r}, got "
                             f"shape {tuple(rows.shape)}")
        self._accumulate(name, rows.detach())

    def representation(self, name: str) -> torch.Tensor:
        """The collected sketch ``S`` [m, r] of layer ``name`` (``S Sᵀ`` = sum of ``x xᵀ``)."""
        if name not in self._sketch:
            raise RuntimeError(f"representation: layer {name!r} recorded no inputs; run the "
                               "model on the task's data inside memory.collect() first")
        return self._sketch[name]

    def clear_activations(self) -> None:
        self._sketch.clear()
        self._seen.clear()

    # ----------------------------------------------------------------- bases
    def update(self, threshold: float | Mapping[str, float] | None = None
               ) -> dict[str, LayerUpdate]:
        """Grow every layer's basis from the recorded inputs by GPM's energy criterion.

        Args:
            threshold: override the thresholds for this update (a float or per-layer dict);
                they are not stored.

        Returns:
            ``{layer: LayerUpdate}``. Clears the recorded inputs. Raises RuntimeError when
            a protected layer recorded nothing (a projection that silently stopped growing).
        """
        thresholds = self.thresholds if threshold is None else self._thresholds(threshold)
        missing = [n for n in self.layers if n not in self._sketch]
        if missing:
            raise RuntimeError(f"update: layers {missing} recorded no inputs; run the model on "
                               "the task's data inside memory.collect() first")
        report = {}
        for name in self.layers:
            R = self._sketch[name]
            old = self.bases[name].to(torch.float64)
            total = float((R * R).sum())
            before = float(((old.T @ R) ** 2).sum()) / total if total > 0 else 1.0
            result = extend_basis_by_energy(R, thresholds[name], old)
            self.bases[name] = result.basis.to(self.dtype)
            report[name] = LayerUpdate(added=int(result.new.shape[1]),
                                       size=int(result.basis.shape[1]), dim=R.shape[0],
                                       captured_before=min(before, 1.0),
                                       captured=result.captured, samples=self._seen[name])
        self.clear_activations()
        return report

    def merge(self, bases: Mapping[str, torch.Tensor]) -> dict[str, int]:
        """Union the stored bases with ``bases`` ({layer: [m, l]}, any spanning sets): the old
        columns stay first, new directions are orthonormalised (core ``basis_union``).

        Returns ``{layer: directions added}``.
        """
        added = {}
        for name, V in bases.items():
            if name not in self.layers:
                raise KeyError(f"bases: {name!r} is not a protected layer; known: "
                               f"{list(self.layers)}")
            if V.ndim != 2 or V.shape[0] != self.dim(name):
                raise ValueError(f"bases[{name!r}]: expected [{self.dim(name)}, l], got shape "
                                 f"{tuple(V.shape)}")
            U = self.bases[name].to(torch.float64)
            merged = basis_union(U, V.to(U.device, torch.float64))
            added[name] = int(merged.shape[1] - U.shape[1])
            self.bases[name] = merged.to(self.dtype)
        return added

    def state_dict(self) -> dict[str, torch.Tensor]:
        """``{"<layer>": basis [m, k]}`` (safetensors-friendly: flat names, plain tensors)."""
        return {name: U.detach().clone().contiguous() for name, U in self.bases.items()}

    def load_state_dict(self, state: Mapping[str, torch.Tensor]) -> None:
        if set(state) != set(self.layers):
            raise KeyError(f"state: expected bases for {sorted(self.layers)}, got {sorted(state)}")
        for name, U in state.items():
            if U.ndim != 2 or U.shape[0] != self.dim(name):
                raise ValueError(f"state[{name!r}]: expected [{self.dim(name)}, k], got "
                                 f"{tuple(U.shape)}")
            self.bases[name] = U.to(self.layers[name].weight.device, self.dtype).clone()

    # ----------------------------------------------------------------- projection
    def _flat(self, name: str, w: torch.Tensor, b: torch.Tensor | None) -> torch.Tensor:
        flat = w.reshape(w.shape[0], -1)
        if b is not None:
            flat = torch.cat([flat, b.reshape(-1, 1)], dim=1)
        return flat

    def _project_pair(self, name: str, w: torch.Tensor, b: torch.Tensor | None) -> None:
        """In place: rows of ``[w, b]`` ← rows − (rows U) Uᵀ."""
        U = self.bases[name]
        if U.shape[1] == 0:
            return
        U = U.to(w.device, w.dtype)
        flat = self._flat(name, w, b)
        flat = flat - (flat @ U) @ U.T
        m = w[0].numel()
        w.copy_(flat[:, :m].reshape(w.shape))
        if b is not None:
            b.copy_(flat[:, m])

    @torch.no_grad()
    def project_(self, tensors: Mapping[str, tuple[torch.Tensor, torch.Tensor | None]]) -> None:
        """Project ``{layer: (weight-shaped, bias-shaped or None)}`` tensors in place."""
        for name, (w, b) in tensors.items():
            self._project_pair(name, w, b if self._has_bias(name) else None)

    @torch.no_grad()
    def project_gradients(self) -> None:
        """``.grad ← .grad − (.grad U) Uᵀ`` for every protected layer (call after
        ``backward()``, before ``optimizer.step()``). Layers without a gradient are skipped."""
        for name, module in self.layers.items():
            gw = module.weight.grad
            gb = module.bias.grad if self._has_bias(name) else None
            if gw is None:
                continue
            if self._has_bias(name) and gb is None:
                gb = torch.zeros_like(module.bias)
                module.bias.grad = gb
            self._project_pair(name, gw, gb)

    def attach(self, optimizer: torch.optim.Optimizer, mode: str = "update") -> ProjectionHandle:
        """Project every ``optimizer.step()`` against the stored bases.

        Args:
            optimizer: any ``torch.optim.Optimizer`` holding the protected layers' parameters.
            mode: ``"update"`` (default) projects the parameter change each step made (exact
                for every optimizer, weight decay included); ``"gradient"`` projects the
                gradients before the step (GPM; exact for SGD without weight decay).

        The bases are read at each step, so a memory updated after ``attach`` takes effect
        immediately. Returns a handle; call ``handle.remove()`` to detach.
        """
        if mode not in _MODES:
            raise ValueError(f"mode: expected one of {_MODES}, got {mode!r}")
        owned = {id(p) for g in optimizer.param_groups for p in g["params"]}
        missing = [n for n, m in self.layers.items() if id(m.weight) not in owned]
        if missing:
            raise ValueError(f"optimizer: does not hold the weights of protected layers {missing}")
        if mode == "gradient":
            return ProjectionHandle([optimizer.register_step_pre_hook(
                lambda opt, args, kwargs: self.project_gradients())])
        saved: dict[str, tuple[torch.Tensor, torch.Tensor | None]] = {}

        def before(opt: Any, args: Any, kwargs: Any) -> None:
            saved.clear()
            for name, module in self.layers.items():
                if self.bases[name].shape[1] == 0:
                    continue
                b = module.bias.detach().clone() if self._has_bias(name) else None
                saved[name] = (module.weight.detach().clone(), b)

        @torch.no_grad()
        def after(opt: Any, args: Any, kwargs: Any) -> None:
            for name, (w0, b0) in saved.items():
                module = self.layers[name]
                dw = module.weight - w0
                db = module.bias - b0 if b0 is not None else None
                self._project_pair(name, dw, db)
                module.weight.copy_(w0 + dw)
                if db is not None:
                    module.bias.copy_(b0 + db)
            saved.clear()

        return ProjectionHandle([optimizer.register_step_pre_hook(before),
                                 optimizer.register_step_post_hook(after)])
