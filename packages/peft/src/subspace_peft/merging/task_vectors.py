"""Task vectors, task arithmetic and TIES-merging.

A *task vector* (Ilharco et al., 2022, arXiv:2212.04089) is the change fine-tuning made to
the weights of a pretrained model, ``τ_t = θ_t − θ_0``, kept here as a dict
``{parameter name: tensor}`` over a chosen set of parameters. Merging ``T`` fine-tunes of the
same model into one multi-task model:

* **Task arithmetic**: ``θ = θ_0 + Σ_t λ_t (m ⊙ τ_t)`` with one scaling ``λ`` shared by all
  tasks (the paper's form, ``λ`` picked on validation data) or one per task, and an optional
  mask ``m`` shared by all tasks (``m = 1``: plain task arithmetic; the Concrete subspace
  methods of :mod:`.concrete` learn it).
* **TIES-merging** (Yadav et al., 2023, arXiv:2306.01708), three steps on the task vectors:

  1. *trim* (:func:`ties_trim`): keep in each ``τ_t`` its ``density`` fraction of
     largest-magnitude entries (over the whole vector, or per tensor), zero the rest → ``τ̂_t``;
  2. *elect sign* (:func:`ties_elect_sign`): per entry ``γ = sign(Σ_t τ̂_t)`` (the sign with
     the larger total mass); entries where that sum is 0 get the majority sign of ``γ`` over
     the vector (``+1`` if that is 0 too);
  3. *disjoint merge* (:func:`ties_disjoint_merge`): per entry the mean of the ``τ̂_t`` whose
     sign agrees with ``γ`` (zeros never agree), 0 where none does → ``τ_m``;

  then ``θ = θ_0 + λ τ_m``.

Parameters are selected by name with the same rule as adapter targets
(:func:`~subspace_peft.adapters.base.name_matches`: a regular expression matched against the
qualified name as a whole dotted suffix, so ``"weight"`` selects every ``*.weight``). A
model is read through ``named_parameters()`` (buffers such as batch-norm statistics are not
merged: the merged model keeps the pretrained ones); a state dict through its floating-point
tensors.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence

import torch
from torch import nn

from subspace_peft.adapters.base import check_patterns, name_matches

__all__ = [
    "StateDictLike",
    "TaskVector",
    "check_task_vectors",
    "load_merged",
    "parameter_dict",
    "task_arithmetic",
    "task_vector",
    "task_vectors",
    "ties_disjoint_merge",
    "ties_elect_sign",
    "ties_merging",
    "ties_trim",
]

#: A model or a state dict (``{name: tensor}``).
StateDictLike = nn.Module | Mapping[str, torch.Tensor]
#: A task vector: ``{parameter name: θ_t − θ_0}`` (each tensor the parameter's shape).
TaskVector = dict[str, torch.Tensor]


def parameter_dict(source: StateDictLike, include: str | Sequence[str] | None = None,
                   exclude: str | Sequence[str] | None = None) -> dict[str, torch.Tensor]:
    """The selected floating-point tensors of ``source``, detached (not copied).

    Args:
        source: a module (its ``named_parameters()``) or a state dict.
        include: name patterns to keep (``None``: all); see the module doc.
        exclude: name patterns to drop after ``include`` (``None``: none).

    Raises:
        TypeError: ``source`` is neither a module nor a mapping of tensors.
        ValueError: a pattern is invalid, or nothing is selected.
    """
    if isinstance(source, nn.Module):
        items = [(n, p.detach()) for n, p in source.named_parameters()]
    elif isinstance(source, Mapping):
        bad = [k for k, v in source.items() if not isinstance(v, torch.Tensor)]
        if bad:
            raise TypeError(f"source: expected a mapping of tensors, {bad[:3]} are not tensors")
        items = [(n, t.detach()) for n, t in source.items()]
    else:
        raise TypeError(f"source: expected an nn.Module or a state dict, got "
                        f"{type(source).__name__}")
    inc = None if include is None else check_patterns("include", include)
    exc = None if exclude is None else check_patterns("exclude", exclude)
    out = {n: t for n, t in items if t.is_floating_point()
           and (inc is None or name_matches(n, inc)) and not (exc and name_matches(n, exc))}
    if not out:
        names = [n for n, _ in items][:6]
        raise ValueError(f"include/exclude: selected no floating-point tensor (include="
                         f"{include!r}, exclude={exclude!r}); names look like {names}")
    return out


def task_vector(pretrained: StateDictLike, finetuned: StateDictLike,
                include: str | Sequence[str] | None = None,
                exclude: str | Sequence[str] | None = None) -> TaskVector:
    """``τ = θ_ft − θ_0`` over the parameters of ``pretrained`` selected by the patterns.

    Returns:
        ``{name: tensor}``, each the shape of the parameter, in ``pretrained``'s order.

    Raises:
        KeyError: ``finetuned`` lacks a selected name.
        ValueError: a shape differs between the two.
    """
    base = parameter_dict(pretrained, include, exclude)
    ft = parameter_dict(finetuned)
    missing = [n for n in base if n not in ft]
    if missing:
        raise KeyError(f"finetuned: lacks {len(missing)} selected parameters of the "
                       f"pretrained model, e.g. {missing[:3]}")
    out = {}
    for n, t0 in base.items():
        if ft[n].shape != t0.shape:
            raise ValueError(f"finetuned[{n!r}]: expected shape {tuple(t0.shape)} (pretrained), "
                             f"got {tuple(ft[n].shape)}")
        out[n] = ft[n].to(t0.dtype) - t0
    return out


def task_vectors(pretrained: StateDictLike, finetuned: Sequence[StateDictLike],
                 include: str | Sequence[str] | None = None,
                 exclude: str | Sequence[str] | None = None) -> list[TaskVector]:
    """:func:`task_vector` of each fine-tune (``T = len(finetuned)`` of them, same names)."""
    if isinstance(finetuned, (nn.Module, Mapping)) or len(finetuned) == 0:
        raise ValueError("finetuned: expected a non-empty sequence of models / state dicts")
    return [task_vector(pretrained, ft, include, exclude) for ft in finetuned]


def check_task_vectors(vectors: Sequence[Mapping[str, torch.Tensor]]) -> list[str]:
    """The common parameter names of ``vectors``; raises unless all have the same names and
    shapes (and at least one vector is given)."""
    if isinstance(vectors, Mapping) or len(vectors) == 0:
        raise ValueError("vectors: expected a non-empty sequence of task vectors")
    names = list(vectors[0])
    if not names:
        raise ValueError("vectors[0]: is empty")
    for t, vec in enumerate(vectors[1:], start=1):
        if set(vec) != set(names):
            diff = sorted(set(vec) ^ set(names))[:3]
            raise ValueError(f"vectors[{t}]: expected the names of vectors[0], differs in {diff}")
        for n in names:
            if vec[n].shape != vectors[0][n].shape:
                raise ValueError(f"vectors[{t}][{n!r}]: expected shape "
                                 f"{tuple(vectors[0][n].shape)}, got {tuple(vec[n].shape)}")
    return names


def _scalings(scaling: float | Sequence[float], T: int) -> list[float]:
    if isinstance(scaling, (int, float)):
        return [float(scaling)] * T
    values = [float(s) for s in scaling]
    if len(values) != T:
        raise ValueError(f"scaling: expected a float or {T} floats (one per task vector), "
                         f"got {len(values)}")
    return values


def _check_mask(mask: Mapping[str, torch.Tensor] | None, ref: Mapping[str, torch.Tensor]
                ) -> None:
    if mask is None:
        return
    for n, t in ref.items():
        if n not in mask:
            raise KeyError(f"mask: lacks the merged parameter {n!r}")
        if mask[n].shape != t.shape:
            raise ValueError(f"mask[{n!r}]: expected shape {tuple(t.shape)}, "
                             f"got {tuple(mask[n].shape)}")


def task_arithmetic(pretrained: StateDictLike, vectors: Sequence[Mapping[str, torch.Tensor]],
                    scaling: float | Sequence[float] = 0.3,
                    mask: Mapping[str, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
    """Task arithmetic: ``θ = θ_0 + Σ_t λ_t (m ⊙ τ_t)`` for the names of the task vectors.

    Args:
        pretrained: ``θ_0`` (a model or a state dict holding every name of ``vectors``).
        vectors: ``T`` task vectors with the same names and shapes.
        scaling: ``λ`` for every task, or ``T`` values ``λ_t``.
        mask: optional ``{name: m}`` shared by all tasks, each the parameter's shape (a
            Concrete mask, binary or relaxed, possibly rescaled; see :mod:`.concrete`).

    Returns:
        ``{name: merged tensor}`` (new tensors; load with :func:`load_merged` or
        ``module.load_state_dict(..., strict=False)``).
    """
    names = check_task_vectors(vectors)
    lams = _scalings(scaling, len(vectors))
    base = parameter_dict(pretrained)
    missing = [n for n in names if n not in base]
    if missing:
        raise KeyError(f"pretrained: lacks task-vector parameters {missing[:3]}")
    _check_mask(mask, vectors[0])
    out = {}
    for n in names:
        delta = sum(lam * vec[n] for lam, vec in zip(lams, vectors, strict=True))
        if mask is not None:
            # m ⊙ Σ_t λ_t τ_t = Σ_t λ_t (m ⊙ τ_t): the mask is shared by the tasks.
            delta = mask[n].to(delta) * delta
        out[n] = base[n] + delta.to(base[n].dtype)
    return out


# ------------------------------------------------------------------------------- TIES
def ties_trim(vector: Mapping[str, torch.Tensor], density: float, scope: str = "global"
              ) -> TaskVector:
    """TIES step 1: keep the ``density`` fraction of largest-``|τ|`` entries, zero the rest.

    ``k = max(1, int(density · n))`` entries are kept, ``n`` the number of entries of the
    whole vector (``scope="global"``, the paper's) or of each tensor (``scope="tensor"``);
    entries tied with the ``k``-th largest magnitude are kept too.
    """
    if not 0.0 < density <= 1.0:
        raise ValueError(f"density: expected a fraction in (0, 1], got {density}")
    if scope not in ("global", "tensor"):
        raise ValueError(f"scope: expected 'global' or 'tensor', got {scope!r}")
    if density == 1.0:
        return {n: t.clone() for n, t in vector.items()}

    def threshold(values: torch.Tensor) -> torch.Tensor:
        k = max(1, int(density * values.numel()))
        return values.abs().flatten().float().topk(k).values[-1]

    if scope == "global":
        thr = threshold(torch.cat([t.flatten().float() for t in vector.values()]))
        return {n: torch.where(t.abs() >= thr, t, torch.zeros_like(t)) for n, t in vector.items()}
    return {n: torch.where(t.abs() >= threshold(t), t, torch.zeros_like(t))
            for n, t in vector.items()}


def ties_elect_sign(trimmed: Sequence[Mapping[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """TIES step 2: ``γ = sign(Σ_t τ̂_t)`` per entry (values in ``{-1, +1}``); entries where the
    sum is 0 take the majority sign of ``γ`` over the whole vector (``+1`` on a tie)."""
    names = check_task_vectors(trimmed)
    signs = {n: torch.sign(sum(v[n] for v in trimmed)) for n in names}
    total = sum(float(s.sum()) for s in signs.values())
    majority = -1.0 if total < 0 else 1.0
    return {n: torch.where(s == 0, torch.full_like(s, majority), s) for n, s in signs.items()}


def ties_disjoint_merge(trimmed: Sequence[Mapping[str, torch.Tensor]],
                        signs: Mapping[str, torch.Tensor]) -> TaskVector:
    """TIES step 3: per entry the mean of the ``τ̂_t`` whose sign equals ``γ`` (a zero entry
    never counts), 0 where no task agrees."""
    names = check_task_vectors(trimmed)
    out = {}
    for n in names:
        stack = torch.stack([v[n] for v in trimmed])  # [T, *shape]
        agree = (torch.sign(stack) == signs[n].to(stack)) & (stack != 0)
        count = agree.sum(0).clamp_min(1)
        out[n] = (stack * agree).sum(0) / count
    return out


def ties_merging(pretrained: StateDictLike, vectors: Sequence[Mapping[str, torch.Tensor]],
                 density: float = 0.2, scaling: float = 1.0, scope: str = "global"
                 ) -> dict[str, torch.Tensor]:
    """TIES-merging: ``θ = θ_0 + λ · disjoint_merge(trim(τ_t), elect_sign)`` (module doc).

    Args:
        density: fraction of entries kept per task vector by the trim step (paper: 0.2).
        scaling: ``λ`` (the paper picks it on validation data, typically 0.8-1.0).
        scope: where the top-k is taken: ``"global"`` (whole vector) or ``"tensor"``.
    """
    check_task_vectors(vectors)
    trimmed = [ties_trim(v, density, scope) for v in vectors]
    merged = ties_disjoint_merge(trimmed, ties_elect_sign(trimmed))
    return task_arithmetic(pretrained, [merged], scaling)


def load_merged(module: nn.Module, merged: Mapping[str, torch.Tensor], *,
                inplace: bool = False) -> nn.Module:
    """A copy of ``module`` (or ``module`` itself when ``inplace``) with the parameters named
    in ``merged`` overwritten; raises on an unknown name or a shape mismatch."""
    target = module if inplace else copy.deepcopy(module)
    params = dict(target.named_parameters())
    for n, t in merged.items():
        if n not in params:
            raise KeyError(f"merged: {n!r} is not a parameter of the {type(module).__name__}")
        if params[n].shape != t.shape:
            raise ValueError(f"merged[{n!r}]: expected shape {tuple(params[n].shape)}, "
                             f"got {tuple(t.shape)}")
        with torch.no_grad():
            params[n].copy_(t)
    return target
