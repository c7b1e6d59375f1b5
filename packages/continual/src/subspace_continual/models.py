"""Small networks for the continual benchmarks, and the zoo's checkpoint model.

* :class:`MultiHeadMLP`: the harness network (GPM's 784-100-100-10 MLP by default).
* :class:`ContinualMLP`: a :class:`MultiHeadMLP` that also carries, as buffers saved in its
  state dict, the stored subspace bases of a continual run (``bases.<layer>``, ``.`` → ``_``)
  and the accuracy matrix measured during training, so one safetensors file is the complete
  final state of the method: continue training with :meth:`ContinualMLP.subspace_memory`,
  or score it with a protocol that needs the record (BWT).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

__all__ = ["BasisStore", "ContinualMLP", "MultiHeadMLP"]


class MultiHeadMLP(nn.Module):
    """ReLU MLP trunk with one head (single-head settings) or one head per task.

    ``MultiHeadMLP(784, (100, 100), (10,))`` is GPM's Permuted-MNIST network
    (784-100-100-10, no biases by default, as in GPM). Layer names: ``body.0``,
    ``body.2``, ... for the trunk's Linear layers, ``heads.<t>`` for the heads.

    Args:
        input_dim: flattened input size ``D``.
        hidden: trunk widths.
        head_sizes: output size of each head; one entry = single head.
        bias: whether the Linear layers have biases.

    ``forward(x [N, D], task=None)`` returns logits [N, head_sizes[task]]; ``task`` is
    required when there are several heads and ignored otherwise.
    """

    def __init__(self, input_dim: int = 784, hidden: Sequence[int] = (100, 100),
                 head_sizes: Sequence[int] = (10,), bias: bool = False):
        super().__init__()
        if not head_sizes:
            raise ValueError("head_sizes: expected at least one head, got none")
        layers: list[nn.Module] = []
        width = input_dim
        for h in hidden:
            layers += [nn.Linear(width, h, bias=bias), nn.ReLU()]
            width = h
        self.body = nn.Sequential(*layers)
        self.heads = nn.ModuleList(nn.Linear(width, n, bias=bias) for n in head_sizes)
        self.feature_dim = width

    @property
    def multi_head(self) -> bool:
        return len(self.heads) > 1

    def trunk_layers(self) -> list[str]:
        """Names of the trunk's Linear layers (``body.0``, ``body.2``, ...)."""
        return [f"body.{i}" for i, m in enumerate(self.body) if isinstance(m, nn.Linear)]

    def forward(self, x: torch.Tensor, task: int | None = None) -> torch.Tensor:
        h = self.body(x)
        if not self.multi_head:
            return self.heads[0](h)
        if task is None or not 0 <= task < len(self.heads):
            raise ValueError(f"task: expected a head index in [0, {len(self.heads)}) for a "
                             f"multi-head model, got {task!r}")
        return self.heads[task](h)


class BasisStore(nn.Module):
    """Per-layer basis buffers ``[m, k]`` whose ``k`` is whatever the loaded state has.

    Buffer names are layer names with ``.`` replaced by ``_`` (``body.0`` → ``body_0``).
    ``load_state_dict`` resizes a buffer to the incoming ``[m, k']`` (``m`` must match), so
    one builder loads checkpoints with any basis sizes.
    """

    def __init__(self, dims: Mapping[str, int]):
        super().__init__()
        self.layer_names: dict[str, str] = {}
        for layer, m in dims.items():
            key = layer.replace(".", "_")
            self.layer_names[key] = layer
            self.register_buffer(key, torch.zeros(int(m), 0))

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys,
                              unexpected_keys, error_msgs):
        for key in self.layer_names:
            incoming = state_dict.get(prefix + key)
            current = getattr(self, key)
            if incoming is None or incoming.shape == current.shape:
                continue
            if incoming.ndim != 2 or incoming.shape[0] != current.shape[0]:
                error_msgs.append(f"{prefix}{key}: expected a basis [{current.shape[0]}, k], "
                                  f"got {tuple(incoming.shape)}")
                continue
            setattr(self, key, current.new_zeros(incoming.shape))
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys,
                                      unexpected_keys, error_msgs)

    def as_dict(self) -> dict[str, torch.Tensor]:
        """``{layer name: basis [m, k]}``."""
        return {layer: getattr(self, key) for key, layer in self.layer_names.items()}


class ContinualMLP(MultiHeadMLP):
    """:class:`MultiHeadMLP` + the final state of a continual run, all in the state dict.

    Extra buffers:

    * ``bases.<layer>`` [m, k]: orthonormal input-space bases of the protected layers
      (``m`` = input width, +1 when the layer has a bias).
    * ``accuracy_matrix`` [T, T] (float64, %): ``R[i, j]`` measured on task ``j``'s test set
      right after training task ``i`` (NaN until loaded from a checkpoint).
    * ``init_accuracy`` [T] (float64, %): accuracy of the random initialisation.

    Args:
        input_dim, hidden, head_sizes, bias: as :class:`MultiHeadMLP`.
        protected: names of the layers whose bases are stored (default: trunk layers, plus
            the head when there is a single one).
        num_tasks: ``T``, the length of the recorded sequence.
    """

    def __init__(self, input_dim: int = 784, hidden: Sequence[int] = (100, 100),
                 head_sizes: Sequence[int] = (10,), bias: bool = False,
                 protected: Sequence[str] | None = None, num_tasks: int = 10):
        super().__init__(input_dim, hidden, head_sizes, bias)
        if isinstance(num_tasks, bool) or not isinstance(num_tasks, int) or num_tasks < 1:
            raise ValueError(f"num_tasks: expected a positive int, got {num_tasks!r}")
        if protected is None:
            protected = self.trunk_layers() + ([] if self.multi_head else ["heads.0"])
        modules = dict(self.named_modules())
        dims = {}
        for name in protected:
            layer = modules.get(name)
            if not isinstance(layer, nn.Linear):
                raise ValueError(f"protected: {name!r} is not a Linear layer of the MLP; "
                                 f"known: {self.trunk_layers() + [f'heads.{i}' for i in range(len(self.heads))]}")
            dims[name] = layer.in_features + int(layer.bias is not None)
        self.bases = BasisStore(dims)
        self.register_buffer("accuracy_matrix",
                             torch.full((num_tasks, num_tasks), float("nan"), dtype=torch.float64))
        self.register_buffer("init_accuracy",
                             torch.full((num_tasks,), float("nan"), dtype=torch.float64))

    @property
    def num_tasks(self) -> int:
        return int(self.accuracy_matrix.shape[0])

    def store_run(self, bases: Mapping[str, torch.Tensor], R: torch.Tensor,
                  b: torch.Tensor | None = None) -> None:
        """Record a finished run: ``bases`` {layer: [m, k]}, ``R`` [T, T] and ``b`` [T]."""
        known = self.bases.as_dict()
        if set(bases) != set(known):
            raise ValueError(f"bases: expected layers {sorted(known)}, got {sorted(bases)}")
        for layer, U in bases.items():
            if U.ndim != 2 or U.shape[0] != known[layer].shape[0]:
                raise ValueError(f"bases[{layer!r}]: expected [{known[layer].shape[0]}, k], got "
                                 f"{tuple(U.shape)}")
            setattr(self.bases, layer.replace(".", "_"), U.detach().to(torch.float32).clone())
        T = self.num_tasks
        if tuple(R.shape) != (T, T):
            raise ValueError(f"R: expected [{T}, {T}], got {tuple(R.shape)}")
        self.accuracy_matrix.copy_(R.to(torch.float64))
        if b is not None:
            if tuple(b.shape) != (T,):
                raise ValueError(f"b: expected [{T}], got {tuple(b.shape)}")
            self.init_accuracy.copy_(b.to(torch.float64))

    def subspace_memory(self, threshold: float | Mapping[str, float] = 0.97, **kwargs: Any):
        """A :class:`~subspace_continual.memory.SubspaceMemory` on this model holding the
        stored bases, ready to :meth:`~subspace_continual.memory.SubspaceMemory.attach` to an
        optimizer for training a further task."""
        from subspace_continual.memory import SubspaceMemory

        stored = self.bases.as_dict()
        memory = SubspaceMemory(self, list(stored), threshold=threshold, **kwargs)
        memory.load_state_dict(stored)
        return memory
