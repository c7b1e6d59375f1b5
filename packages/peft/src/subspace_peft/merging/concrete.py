"""Concrete subspace merging (Tang et al., 2023, arXiv:2312.06173).

Interference between task vectors is reduced by merging them inside a *shared subspace*: a
binary mask ``m`` over the entries of the task vectors, the same for every task, applied
before merging:

* **Concrete TA**: ``θ = θ_0 + λ Σ_t (m ⊙ τ_t)`` (task arithmetic, ``λ`` fixed);
* **Concrete AM**: ``θ^l = θ_0^l + Σ_t λ_t^l (m^l ⊙ τ_t^l)`` (AdaMerging's coefficients).

The mask is learned through its continuous relaxation, the binary *Concrete* (relaxed
Bernoulli, Maddison et al., 2017) distribution: with one logit ``ℓ`` per entry and
temperature ``τ``,

    ``s = σ((ℓ + log u − log(1 − u)) / τ)``,  ``u ~ U(0, 1)``,

which is differentiable in ``ℓ`` (reparameterisation), satisfies ``P(s > ½) = σ(ℓ)`` at
every temperature, and tends to a ``Bernoulli(σ(ℓ))`` sample as ``τ → 0``. ``hard=True``
uses the straight-through variant (forward ``1[s > ½]``, backward through ``s``). As in the
reference code, every sampled mask is rescaled per tensor, ``m ← m / mean(m)``, so that the
masked task vector keeps its expected size (like dropout's ``1 / keep`` scaling).

The paper poses the search as a bi-level problem on unlabeled test inputs,

    ``min_ℓ E_{m ~ Concrete(ℓ, τ)} Σ_t H_t(θ(λ*(m), m))``,
    ``λ*(m) = argmin_λ Σ_t H_t(θ(λ, m))``

(``H_t`` the mean prediction entropy on task ``t``, see :mod:`.adamerging`), solved by
gradient-based meta-learning (:func:`learn_concrete_mask`), each step:

1. sample a relaxed mask ``m`` (and rescale it);
2. inner level — Concrete TA: none (``λ`` is a hyper-parameter chosen on validation data,
   as the reference code says); Concrete AM: reset the coefficients to their initial value
   and take ``inner_steps`` gradient steps on ``Σ_t H_t`` with the mask fixed;
3. outer level: one Adam step on ``ℓ`` along ``∇_ℓ Σ_t H_t(θ(λ', m))`` on fresh batches.

Like the reference implementation, step 3 treats ``λ'`` as a constant (a *first-order*
meta-gradient, the mask detached in the inner steps); ``unrolled=True`` instead
differentiates through the inner steps (second order, exact for the truncated inner problem,
affordable at small scale). Then (:func:`concrete_merging`) the mask is binarised (by
default a ``Bernoulli(σ(ℓ))`` draw, the reference code's discrete mask; see
:meth:`ConcreteMask.binarize` for the deterministic alternatives), rescaled, and the model
merged — for Concrete AM after an AdaMerging run with that fixed mask from the
initial coefficients (the paper's second stage).

Simplifications with respect to the reference code, documented: the inner optimiser is
plain gradient descent with its own step size (the reference keeps an Adam optimiser with
learning rate 1 whose moments persist across outer steps while the coefficients are reset),
and the binarised mask is used for the final merge (the reference config evaluates a relaxed
sample, noting that the two give similar results).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import torch
from torch import nn

from subspace_peft.merging.adamerging import (
    AdaMergingConfig,
    TaskForward,
    TaskVectorMerger,
    _check_unlabeled,
    adamerging,
    merging_entropy,
    sample_batches,
)

__all__ = [
    "BINARIZE_METHODS",
    "ConcreteConfig",
    "ConcreteMask",
    "ConcreteResult",
    "concrete_merging",
    "concrete_sample",
    "keep_fraction",
    "learn_concrete_mask",
    "rescale_mask",
]

BINARIZE_METHODS = ("sample", "threshold", "expected", "topk")
_EPS = 1e-6


def concrete_sample(logits: torch.Tensor, temperature: float, *, hard: bool = False,
                    generator: torch.Generator | None = None) -> torch.Tensor:
    """A binary Concrete sample ``σ((ℓ + log u − log(1−u)) / τ)`` of ``logits`` (any shape).

    Args:
        logits: ``ℓ``, the log-odds of keeping each entry.
        temperature: ``τ > 0``; small → nearly binary, large → near ½.
        hard: straight-through: returns ``1[s > ½]`` with the gradient of ``s``.
        generator: for the uniforms (drawn on the CPU, then moved to ``logits``' device).

    Returns:
        a tensor of ``logits``' shape with values in ``(0, 1)`` (``{0, 1}`` when ``hard``).
    """
    if not temperature > 0:
        raise ValueError(f"temperature: expected > 0, got {temperature}")
    u = torch.rand(logits.shape, generator=generator, dtype=torch.float32)
    u = u.clamp(_EPS, 1 - _EPS).to(device=logits.device, dtype=logits.dtype)
    s = torch.sigmoid((logits + torch.log(u) - torch.log1p(-u)) / temperature)
    if hard:
        return (s > 0.5).to(s.dtype) - s.detach() + s
    return s


def rescale_mask(mask: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``m / mean(m)`` per tensor (the reference code's rescaling); an all-zero tensor stays
    zero. Differentiable (the mean is part of the graph)."""
    return {n: m / m.mean().clamp_min(_EPS) for n, m in mask.items()}


def keep_fraction(mask: Mapping[str, torch.Tensor]) -> float:
    """Fraction of non-zero entries over all tensors of ``mask``."""
    total = sum(m.numel() for m in mask.values())
    if total == 0:
        raise ValueError("mask: is empty")
    return sum(int((m != 0).sum()) for m in mask.values()) / total


class ConcreteMask(nn.Module):
    """Logits ``ℓ`` of a Concrete mask, one per entry of each merged parameter.

    Args:
        shapes: ``{name: shape}`` (or ``{name: tensor}``, its shape taken), e.g. a task vector.
        init_logit: initial ``ℓ`` of every entry (reference: 0, i.e. keep probability ½).
        device, dtype: of the logits.

    Attributes:
        names: the parameter names, in order; ``logits[i]`` belongs to ``names[i]``.
    """

    def __init__(self, shapes: Mapping[str, torch.Size | Sequence[int] | torch.Tensor],
                 init_logit: float = 0.0, device: torch.device | str | None = None,
                 dtype: torch.dtype | None = None) -> None:
        super().__init__()
        if not shapes:
            raise ValueError("shapes: expected at least one parameter")
        self.names = list(shapes)
        sizes = [tuple(s.shape) if isinstance(s, torch.Tensor) else tuple(s)
                 for s in shapes.values()]
        # A ParameterList (not a ParameterDict) because parameter names contain dots.
        self.logits = nn.ParameterList(
            nn.Parameter(torch.full(s, float(init_logit), device=device, dtype=dtype))
            for s in sizes)

    @classmethod
    def for_merger(cls, merger: TaskVectorMerger, init_logit: float = 0.0) -> ConcreteMask:
        """A mask over the merged parameters of ``merger`` (device and dtype of its
        coefficients)."""
        shapes = {n: merger.stacked_vector(i).shape[1:] for i, n in enumerate(merger.names)}
        return cls(shapes, init_logit, device=merger.coefficients.device,
                   dtype=merger.coefficients.dtype)

    def num_entries(self) -> int:
        return sum(p.numel() for p in self.logits)

    def probabilities(self) -> dict[str, torch.Tensor]:
        """``{name: σ(ℓ)}``, the keep probabilities."""
        return {n: torch.sigmoid(p) for n, p in zip(self.names, self.logits, strict=True)}

    def sample(self, temperature: float = 0.5, *, hard: bool = False,
               generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        """A relaxed mask ``{name: s}`` (:func:`concrete_sample`), differentiable in ``ℓ``."""
        return {n: concrete_sample(p, temperature, hard=hard, generator=generator)
                for n, p in zip(self.names, self.logits, strict=True)}

    @torch.no_grad()
    def binarize(self, method: str = "sample", keep: float | None = None,
                 generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        """A ``{0, 1}`` mask ``{name: m}``.

        Args:
            method: ``"sample"``: a ``Bernoulli(σ(ℓ))`` draw (the reference code's discrete
                mask); ``"threshold"``: ``1[ℓ ≥ 0]``, the most probable value of each entry;
                ``"expected"``: per tensor, the ``round(Σ σ(ℓ))`` entries of largest logit (the
                keep fraction the relaxed training masks had, chosen deterministically);
                ``"topk"``: per tensor the ``keep`` fraction of largest logits
                (``max(1, round(keep · n))`` entries).
            keep: the kept fraction for ``"topk"`` (in (0, 1]).
            generator: for ``"sample"``.
        """
        if method not in BINARIZE_METHODS:
            raise ValueError(f"method: expected one of {BINARIZE_METHODS}, got {method!r}")
        if method == "topk" and (keep is None or not 0 < keep <= 1):
            raise ValueError(f"keep: expected a fraction in (0, 1] for method='topk', got {keep}")
        out = {}
        for n, p in zip(self.names, self.logits, strict=True):
            if method == "threshold":
                out[n] = (p >= 0).to(p.dtype)
            elif method == "sample":
                u = torch.rand(p.shape, generator=generator).to(p)
                out[n] = (u < torch.sigmoid(p)).to(p.dtype)
            else:
                k = (round(float(torch.sigmoid(p).sum())) if method == "expected"
                     else max(1, round(keep * p.numel())))
                m = torch.zeros(p.numel(), device=p.device, dtype=p.dtype)
                if k > 0:
                    m[p.flatten().topk(k).indices] = 1.0
                out[n] = m.view_as(p)
        return out


@dataclass(frozen=True)
class ConcreteConfig:
    """Options of :func:`learn_concrete_mask` / :func:`concrete_merging`.

    Attributes:
        mode: ``"task_arithmetic"`` (Concrete TA: the merger's coefficients stay fixed) or
            ``"adamerging"`` (Concrete AM: inner AdaMerging steps, then a final AdaMerging).
        steps: outer (mask) steps; lr: Adam learning rate of the logits (reference 1e-3).
        temperature: Concrete temperature (reference 0.5); init_logit: reference 0.
        hard: straight-through samples instead of relaxed ones.
        rescale: ``m / mean(m)`` per tensor, for training and for the final mask.
        batch_size: unlabeled inputs per task and per loss evaluation (reference 16).
        inner_steps / inner_lr: gradient-descent steps of the coefficients per outer step
            (Concrete AM only; reference: 1 step, from the initial coefficients).
        unrolled: differentiate the outer loss through the inner steps (second order).
        binarize / keep: how the final mask is made binary (:meth:`ConcreteMask.binarize`).
        adamerging: the final AdaMerging run with the fixed mask (Concrete AM only).
    """

    mode: str = "task_arithmetic"
    steps: int = 1000
    lr: float = 1e-3
    temperature: float = 0.5
    init_logit: float = 0.0
    hard: bool = False
    rescale: bool = True
    batch_size: int = 16
    inner_steps: int = 1
    inner_lr: float = 0.1
    unrolled: bool = False
    binarize: str = "sample"
    keep: float | None = None
    adamerging: AdaMergingConfig = field(default_factory=AdaMergingConfig)
    seed: int = 0

    def __post_init__(self) -> None:
        if self.mode not in ("task_arithmetic", "adamerging"):
            raise ValueError(f"mode: expected 'task_arithmetic' or 'adamerging', "
                             f"got {self.mode!r}")
        if self.steps < 0 or self.lr <= 0 or self.temperature <= 0 or self.batch_size < 1:
            raise ValueError(f"ConcreteConfig: expected steps >= 0, lr > 0, temperature > 0, "
                             f"batch_size >= 1, got {self}")
        if self.inner_steps < 0 or self.inner_lr <= 0:
            raise ValueError(f"inner_steps / inner_lr: expected >= 0 / > 0, got "
                             f"{self.inner_steps} / {self.inner_lr}")
        if self.binarize not in BINARIZE_METHODS:
            raise ValueError(f"binarize: expected one of {BINARIZE_METHODS}, "
                             f"got {self.binarize!r}")


@dataclass
class ConcreteResult:
    """What :func:`concrete_merging` returns.

    Attributes:
        mask: the final mask ``{name: m}`` (binary, rescaled when ``config.rescale``).
        mask_model: the learned logits.
        keep_fraction: fraction of task-vector entries the binary mask keeps.
        coefficients: the merger's final coefficients as used (clamped), ``[T]`` or ``[L, T]``.
        merged: ``{name: θ_0 + m ⊙ Σ_t λ_t τ_t}`` (detached).
        mask_history: outer loss ``Σ_t H_t`` per mask step.
        adamerging_history: loss per step of the final AdaMerging run (Concrete AM).
    """

    mask: dict[str, torch.Tensor]
    mask_model: ConcreteMask
    keep_fraction: float
    coefficients: torch.Tensor
    merged: dict[str, torch.Tensor]
    mask_history: list[float]
    adamerging_history: list[float]


def learn_concrete_mask(merger: TaskVectorMerger, unlabeled: Mapping[str, torch.Tensor],
                        task_forward: TaskForward, config: ConcreteConfig | None = None,
                        mask_model: ConcreteMask | None = None
                        ) -> tuple[ConcreteMask, list[float]]:
    """Meta-learn the shared Concrete mask (module doc, steps 1-3); the merger's coefficients
    are left at their initial value.

    Args:
        merger: pretrained module, task vectors, initial coefficients (``λ`` for Concrete TA).
        unlabeled: ``{task: inputs [N_t, ...]}``; task_forward: see :data:`TaskForward`.
        config: see :class:`ConcreteConfig`.
        mask_model: logits to continue from (default: a new :class:`ConcreteMask`).

    Returns:
        ``(mask_model, history)``, the outer loss per step.
    """
    config = config or ConcreteConfig()
    _check_unlabeled(unlabeled)
    mask_model = mask_model or ConcreteMask.for_merger(merger, config.init_logit)
    if mask_model.names != merger.names:
        raise ValueError("mask_model: expected the merged parameter names of the merger, "
                         f"got {mask_model.names[:3]}... vs {merger.names[:3]}...")
    opt = torch.optim.Adam(mask_model.parameters(), lr=config.lr)
    gen = torch.Generator().manual_seed(config.seed)
    init = merger.coefficients.detach().clone()
    history = []
    for _ in range(config.steps):
        mask = mask_model.sample(config.temperature, hard=config.hard, generator=gen)
        if config.rescale:
            mask = rescale_mask(mask)
        coeff = init
        if config.mode == "adamerging":
            coeff = _inner_adamerging(merger, unlabeled, task_forward, mask, init, config, gen)
        batches = sample_batches(unlabeled, config.batch_size, gen)
        loss = merging_entropy(merger, batches, task_forward, mask, coeff)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        history.append(float(loss.detach()))
    return mask_model, history


def _inner_adamerging(merger: TaskVectorMerger, unlabeled: Mapping[str, torch.Tensor],
                      task_forward: TaskForward, mask: Mapping[str, torch.Tensor],
                      init: torch.Tensor, config: ConcreteConfig,
                      gen: torch.Generator) -> torch.Tensor:
    """``inner_steps`` of gradient descent on the coefficients from ``init``; the result is a
    function of the mask only when ``config.unrolled``."""
    inner_mask = mask if config.unrolled else {n: m.detach() for n, m in mask.items()}
    coeff = init.clone().requires_grad_(True)
    for _ in range(config.inner_steps):
        batches = sample_batches(unlabeled, config.batch_size, gen)
        loss = merging_entropy(merger, batches, task_forward, inner_mask, coeff)
        (grad,) = torch.autograd.grad(loss, coeff, create_graph=config.unrolled)
        coeff = coeff - config.inner_lr * grad
    return coeff if config.unrolled else coeff.detach()


def concrete_merging(merger: TaskVectorMerger, unlabeled: Mapping[str, torch.Tensor],
                     task_forward: TaskForward, config: ConcreteConfig | None = None
                     ) -> ConcreteResult:
    """Concrete TA / Concrete AM end to end: learn the mask, binarise and rescale it, (AM:
    run AdaMerging with it from the initial coefficients), merge.

    The merger's coefficients are updated in place for Concrete AM and left as they are for
    Concrete TA; load ``result.merged`` into a copy of the module with
    :func:`~.task_vectors.load_merged`, or call ``merger.merge_and_unload(result.mask)``.
    """
    config = config or ConcreteConfig()
    mask_model, history = learn_concrete_mask(merger, unlabeled, task_forward, config)
    gen = torch.Generator().manual_seed(config.seed + 1)
    binary = mask_model.binarize(config.binarize, config.keep, generator=gen)
    kept = keep_fraction(binary)
    mask = rescale_mask(binary) if config.rescale else binary
    am_history: list[float] = []
    if config.mode == "adamerging":
        am_history = adamerging(merger, unlabeled, task_forward, config.adamerging, mask=mask)
    with torch.no_grad():
        merged = {n: t.detach().clone() for n, t in merger.merged_parameters(mask).items()}
    coefficients = merger.coefficients.detach().clone()
    if merger.clamp is not None:
        coefficients = coefficients.clamp(*merger.clamp)
    return ConcreteResult(mask=mask, mask_model=mask_model, keep_fraction=kept,
                          coefficients=coefficients, merged=merged,
                          mask_history=history, adamerging_history=am_history)
