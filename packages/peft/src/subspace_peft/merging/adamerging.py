"""AdaMerging (Yang et al., 2023, arXiv:2310.02575): merging coefficients learned without labels.

Task arithmetic with coefficients that are learned instead of tuned:

* **task-wise**: ``θ = θ_0 + Σ_t λ_t τ_t`` (``T`` coefficients);
* **layer-wise**: ``θ^l = θ_0^l + Σ_t λ_t^l τ_t^l`` (``L × T``; a "layer" is one merged
  parameter tensor, as in the reference code),

optionally with a mask ``m`` shared by the tasks (``θ^l = θ_0^l + m^l ⊙ Σ_t λ_t^l τ_t^l``,
the Concrete AdaMerging of :mod:`.concrete`). The coefficients minimise the Shannon entropy
of the merged model's predictions on *unlabeled* test inputs of every task,
``Σ_t E_{x∈X_t} H(softmax(f_t(x; θ)))``, each task with its own (frozen, unmerged)
classification head ``f_t``; the paper initialises every coefficient at 0.3, clamps them to
``[0, 1]``, and runs Adam (lr 1e-3) for 500 steps on batches of 16 inputs per task.

:class:`TaskVectorMerger` holds the pretrained module, the stacked task vectors and the
coefficients; the merged weights are a differentiable function of the coefficients (and of
the mask), and the module is called with them through ``torch.func.functional_call``, so a
training step builds one set of merged tensors and never copies the model.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from subspace_peft.merging.task_vectors import check_task_vectors

__all__ = [
    "AdaMergingConfig",
    "TaskForward",
    "TaskVectorMerger",
    "adamerging",
    "entropy_loss",
    "merging_entropy",
    "sample_batches",
]

#: ``task_forward(model, task, x) -> logits [B, C]``: runs the merged ``model`` (a callable
#: with the pretrained module's signature) on inputs ``x`` of ``task`` and applies that task's
#: head, e.g. ``lambda model, task, x: heads[task](model(x))``.
TaskForward = Callable[[Callable[..., Any], str, torch.Tensor], torch.Tensor]


def entropy_loss(logits: torch.Tensor) -> torch.Tensor:
    """Mean Shannon entropy (nats) of ``softmax(logits)``: ``logits [B, C]`` → scalar."""
    if logits.ndim != 2:
        raise ValueError(f"logits: expected shape [B, C], got {tuple(logits.shape)}")
    # Half-precision logits are promoted for a stable log-softmax; float64 stays float64.
    if logits.dtype not in (torch.float32, torch.float64):
        logits = logits.float()
    logp = torch.log_softmax(logits, dim=-1)
    return -(logp.exp() * logp).sum(-1).mean()


class TaskVectorMerger(nn.Module):
    """A pretrained module whose parameters are ``θ_0 + m ⊙ Σ_t λ_t τ_t``, differentiable in
    the coefficients ``λ`` and the mask ``m``.

    Args:
        module: the pretrained model (``θ_0``); kept (not copied) and frozen.
        vectors: ``T`` task vectors (:func:`~.task_vectors.task_vectors`) whose names are
            parameters of ``module``; the ``L`` names merged, in that order.
        granularity: ``"task"`` (``coefficients [T]``) or ``"layer"`` (``[L, T]``).
        init: initial value of every coefficient (paper: 0.3), or a tensor of the shape.
        clamp: ``(low, high)`` the coefficients are clamped to when used (paper: (0, 1));
            ``None``: unclamped.

    Attributes:
        coefficients: ``nn.Parameter`` ``[T]`` or ``[L, T]``.
        names: the ``L`` merged parameter names.
    """

    def __init__(self, module: nn.Module, vectors: Sequence[Mapping[str, torch.Tensor]], *,
                 granularity: str = "layer", init: float | torch.Tensor = 0.3,
                 clamp: tuple[float, float] | None = (0.0, 1.0)) -> None:
        super().__init__()
        if granularity not in ("task", "layer"):
            raise ValueError(f"granularity: expected 'task' or 'layer', got {granularity!r}")
        if clamp is not None and not clamp[0] < clamp[1]:
            raise ValueError(f"clamp: expected (low, high) with low < high, got {clamp}")
        names = check_task_vectors(vectors)
        params = dict(module.named_parameters())
        for n in names:
            if n not in params:
                raise KeyError(f"vectors: {n!r} is not a parameter of the "
                               f"{type(module).__name__}")
            if params[n].shape != vectors[0][n].shape:
                raise ValueError(f"vectors[*][{n!r}]: expected shape {tuple(params[n].shape)}, "
                                 f"got {tuple(vectors[0][n].shape)}")
        module.requires_grad_(False)
        self.module = module
        self.names = names
        self.granularity = granularity
        self.clamp = clamp
        self.num_tasks = len(vectors)
        # One buffer per merged tensor, τ stacked over tasks: [T, *shape]; buffers follow
        # .to(device) and are not trained.
        for i, n in enumerate(names):
            stacked = torch.stack([v[n].detach().to(params[n]) for v in vectors])
            self.register_buffer(f"tau_{i}", stacked, persistent=False)
        shape = (self.num_tasks,) if granularity == "task" else (len(names), self.num_tasks)
        ref = params[names[0]]
        # float32 coefficients for half-precision models (Adam on them), float64 for float64.
        dtype = torch.float64 if ref.dtype == torch.float64 else torch.float32
        if isinstance(init, torch.Tensor):
            if tuple(init.shape) != shape:
                raise ValueError(f"init: expected shape {shape}, got {tuple(init.shape)}")
            value = init.detach().to(device=ref.device, dtype=dtype).clone()
        else:
            value = torch.full(shape, float(init), device=ref.device, dtype=dtype)
        self.coefficients = nn.Parameter(value)

    def stacked_vector(self, i: int) -> torch.Tensor:
        """Task vectors of the ``i``-th merged parameter, ``[T, *shape]``."""
        return getattr(self, f"tau_{i}")

    def coefficient_matrix(self, coefficients: torch.Tensor | None = None) -> torch.Tensor:
        """The (clamped) coefficients as ``[L, T]`` (task-wise ones repeated over layers)."""
        c = self.coefficients if coefficients is None else coefficients
        if c.shape != self.coefficients.shape:
            raise ValueError(f"coefficients: expected shape {tuple(self.coefficients.shape)}, "
                             f"got {tuple(c.shape)}")
        if self.clamp is not None:
            c = c.clamp(*self.clamp)
        return c.expand(len(self.names), -1) if c.ndim == 1 else c

    def merged_parameters(self, mask: Mapping[str, torch.Tensor] | None = None,
                          coefficients: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """``{name: θ_0 + m ⊙ Σ_t λ_t τ_t}`` (differentiable in ``coefficients`` and ``mask``).

        Args:
            mask: ``{name: m}`` each the parameter's shape, shared by the tasks (None: 1).
            coefficients: overrides :attr:`coefficients` (same shape), for functional updates.
        """
        lam = self.coefficient_matrix(coefficients)
        params = dict(self.module.named_parameters())
        out = {}
        for i, n in enumerate(self.names):
            tau = self.stacked_vector(i)
            delta = torch.tensordot(lam[i].to(tau.dtype), tau, dims=1)  # [*shape]
            if mask is not None:
                if n not in mask:
                    raise KeyError(f"mask: lacks the merged parameter {n!r}")
                if mask[n].shape != delta.shape:
                    raise ValueError(f"mask[{n!r}]: expected shape {tuple(delta.shape)}, got "
                                     f"{tuple(mask[n].shape)}")
                delta = mask[n].to(delta.dtype) * delta
            out[n] = params[n] + delta
        return out

    def call(self, params: Mapping[str, torch.Tensor], *args: Any, **kwargs: Any) -> Any:
        """Run the module with ``params`` in place of its merged parameters."""
        return torch.func.functional_call(self.module, dict(params), args, kwargs)

    def bind(self, params: Mapping[str, torch.Tensor]) -> Callable[..., Any]:
        """A callable with the module's signature that runs it with ``params``."""
        return lambda *args, **kwargs: self.call(params, *args, **kwargs)

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        """The module with the merged weights at the current coefficients (no mask)."""
        return self.call(self.merged_parameters(), *args, **kwargs)

    @torch.no_grad()
    def merge_and_unload(self, mask: Mapping[str, torch.Tensor] | None = None) -> nn.Module:
        """A copy of the module holding the merged weights (current coefficients, ``mask``);
        its parameters are frozen like the module's (``requires_grad_(True)`` to train it)."""
        merged = self.merged_parameters(mask)
        out = copy.deepcopy(self.module)
        params = dict(out.named_parameters())
        for n, t in merged.items():
            params[n].copy_(t)
        return out


@dataclass(frozen=True)
class AdaMergingConfig:
    """Options of :func:`adamerging` (defaults: the paper's)."""

    steps: int = 500
    lr: float = 1e-3
    batch_size: int = 16
    seed: int = 0

    def __post_init__(self) -> None:
        if self.steps < 0 or self.batch_size < 1 or self.lr <= 0:
            raise ValueError(f"AdaMergingConfig: expected steps >= 0, batch_size >= 1, lr > 0, "
                             f"got {self}")


def sample_batches(unlabeled: Mapping[str, torch.Tensor], batch_size: int,
                   generator: torch.Generator) -> dict[str, torch.Tensor]:
    """One random batch (without replacement within it) of every task's unlabeled inputs."""
    out = {}
    for task, x in unlabeled.items():
        idx = torch.randperm(len(x), generator=generator)[:batch_size]
        out[task] = x[idx.to(x.device)]
    return out


def merging_entropy(merger: TaskVectorMerger, batches: Mapping[str, torch.Tensor],
                    task_forward: TaskForward, mask: Mapping[str, torch.Tensor] | None = None,
                    coefficients: torch.Tensor | None = None) -> torch.Tensor:
    """``Σ_t H_t``: the sum over tasks of the mean prediction entropy of the merged model on
    ``batches[t]`` (one merge of the weights shared by all tasks)."""
    model = merger.bind(merger.merged_parameters(mask, coefficients))
    return sum(entropy_loss(task_forward(model, task, x)) for task, x in batches.items())


def _check_unlabeled(unlabeled: Mapping[str, torch.Tensor]) -> None:
    if not isinstance(unlabeled, Mapping) or not unlabeled:
        raise ValueError("unlabeled: expected a non-empty {task: inputs [N, ...]} mapping")
    for task, x in unlabeled.items():
        if not isinstance(x, torch.Tensor) or len(x) == 0:
            raise ValueError(f"unlabeled[{task!r}]: expected a non-empty tensor of inputs")


def adamerging(merger: TaskVectorMerger, unlabeled: Mapping[str, torch.Tensor],
               task_forward: TaskForward, config: AdaMergingConfig | None = None,
               mask: Mapping[str, torch.Tensor] | None = None) -> list[float]:
    """Learn ``merger.coefficients`` by entropy minimisation (Adam), in place.

    Args:
        merger: holds the pretrained module, task vectors and initial coefficients.
        unlabeled: ``{task: inputs [N_t, ...]}`` (test inputs, labels never used).
        task_forward: see :data:`TaskForward`.
        config: steps, lr, batch size per task, seed.
        mask: optional fixed mask shared by the tasks (Concrete AdaMerging's second stage).

    Returns:
        the loss ``Σ_t H_t`` at every step (before its update).
    """
    config = config or AdaMergingConfig()
    _check_unlabeled(unlabeled)
    if mask is not None:
        mask = {n: m.detach() for n, m in mask.items()}
    merger.coefficients.requires_grad_(True)
    opt = torch.optim.Adam([merger.coefficients], lr=config.lr)
    gen = torch.Generator().manual_seed(config.seed)
    history = []
    for _ in range(config.steps):
        batches = sample_batches(unlabeled, config.batch_size, gen)
        loss = merging_entropy(merger, batches, task_forward, mask)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        history.append(float(loss.detach()))
    return history
