"""OptFS: learn which *feature ids* a CTR model needs, then deny the rest admission.

OptFS (Lyu et al., "Optimizing Feature Set for Click-Through Rate Prediction", WWW 2023)
gives every feature (every id, i.e. every embedding row -- not every field) a gate and
learns the gates jointly with the model:

* gate logit ``m(id)``, initialised to ``init`` (0.5);
* during the search the id's embedding (and, in our models, its first-order weight, which
  lives in the same table row) is multiplied by
  ``g(id) = sigmoid(T * m(id)) / sigmoid(init)`` (so every gate starts at exactly 1);
* the temperature ``T`` grows geometrically from 1 to ``final_temperature`` over the search
  epochs (``T_e = final ** (e / (E - 1))``, as the reference implementation), which turns
  ``g`` into a step function: continuous sparsification. A penalty
  ``lambda * sum_ids sigmoid(T * m(id))`` over *every* stored gate (an L1 norm of the
  relaxed gates) pushes unused gates down;
* afterwards a feature is kept iff ``m(id) > 0``. Since the FM/cross terms multiply
  embeddings, an interaction survives only when both of its features are kept.
* re-training: a fresh model is trained with the dropped ids mapped to zero rows
  (:class:`MaskedEmbedding`; the reference rewinds to early weights, re-training from the
  same initialisation is the ``rewind = 0`` case).

Gate storage is a dim-1 embedding module keyed by the same ids as the model's table
(``gate_table``), so the gates follow whatever table the model uses: a dim-1
:class:`~subspace_recsys.table.CollisionlessEmbedding` (one gate per admitted id, trained
by the table's own sparse optimizer; the penalty reads every admitted id) or a dim-1
:class:`~subspace_recsys.hashed.HashedEmbedding` with ``init_std=0`` and the model table's
``num_rows`` and ``seed`` (one gate per bucket, the same buckets as the embeddings; a
dense Parameter trained by the dense optimizer).

The selection becomes an admission rule: :class:`MaskedEmbedding` never passes a denied id
to the wrapped table, so a collisionless table does not even admit it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from subspace_recsys.batch import evaluate_ctr, train_ctr
from subspace_recsys.data import CTRBatch, _check_ids, field_of
from subspace_recsys.hashed import HashedEmbedding

__all__ = [
    "FeatureGate",
    "GatedEmbedding",
    "MaskedEmbedding",
    "OptFS",
    "OptFSResult",
    "optfs_movielens",
    "selection_by_field",
]


def _is_keyed_table(table: nn.Module) -> bool:
    return all(hasattr(table, a) for a in ("keys", "lookup_rows", "gather_rows"))


class FeatureGate(nn.Module):
    """Per-feature gates ``g(id) = sigmoid(T * m(id)) / sigmoid(init)`` with
    ``m(id) = init + table(id)``.

    Args:
        table: a dim-1 embedding module keyed by feature id: a collisionless table (anything
            with ``keys``/``lookup_rows``/``gather_rows``) or a :class:`HashedEmbedding`.
            Its rows are offsets from ``init`` (so rows starting near 0 start every gate at
            1).
        init: initial gate logit (the reference's ``mask_init``, 0.5).

    ``temperature`` is a plain attribute (``T``); ``hard = True`` switches to the 0/1 gate
    ``(m > 0) / sigmoid(init)``.
    """

    def __init__(self, table: nn.Module, *, init: float = 0.5) -> None:
        super().__init__()
        if not isinstance(table, nn.Module):
            raise TypeError(f"table: expected an nn.Module, got {type(table).__name__}")
        if not (_is_keyed_table(table) or isinstance(table, HashedEmbedding)):
            raise TypeError(
                "table: expected a CollisionlessEmbedding-like module (keys, lookup_rows, "
                f"gather_rows) or a HashedEmbedding, got {type(table).__name__}"
            )
        if getattr(table, "dim", 1) != 1:
            raise ValueError(f"table: expected a dim-1 table, got dim={table.dim}")
        if not (isinstance(init, int | float) and math.isfinite(init)):
            raise ValueError(f"init: expected a finite float, got {init!r}")
        self.table = table
        self.init = float(init)
        self.temperature = 1.0
        self.hard = False

    def logits(self, ids: torch.Tensor, now: float | None = None) -> torch.Tensor:
        """Gate logits ``m(id)``, shape ``ids.shape`` (differentiable into the table)."""
        _check_ids(ids)
        return self.init + self.table(ids, now=now)[..., 0]

    def forward(self, ids: torch.Tensor, now: float | None = None) -> torch.Tensor:
        """Gate values ``g(id)``, shape ``ids.shape``."""
        m = self.logits(ids, now=now)
        scale = 1.0 / (1.0 / (1.0 + math.exp(-self.init)))
        if self.hard:
            return (m > 0).to(m.dtype) * scale
        return torch.sigmoid(self.temperature * m) * scale

    def stored_logits(self) -> torch.Tensor:
        """Logits of every stored gate ``[R]`` (every admitted id of a collisionless table,
        every bucket of a hashed one), differentiable."""
        if isinstance(self.table, HashedEmbedding):
            return self.init + self.table.weight[:, 0]
        keys = self.table.keys()
        rows = self.table.lookup_rows(keys, insert=False)
        return self.init + self.table.gather_rows(rows)[..., 0]

    def penalty(self) -> torch.Tensor:
        """``sum sigmoid(T * m)`` over every stored gate (scalar)."""
        return torch.sigmoid(self.temperature * self.stored_logits()).sum()

    @torch.no_grad()
    def kept(self, candidates: torch.Tensor | None = None) -> torch.Tensor:
        """Sorted unique ids among ``candidates`` whose gate logit is > 0.

        ``candidates`` (int64, any shape) defaults to the table's admitted ids; a hashed
        table has no id list, so it needs them (e.g. every id of the training data).
        """
        if candidates is None:
            if not _is_keyed_table(self.table):
                raise ValueError(
                    "candidates: a HashedEmbedding gate keeps no id list; pass the ids to judge"
                )
            candidates = self.table.keys()
        candidates = torch.unique(_check_ids(candidates, "candidates").reshape(-1))
        was_training = self.training
        self.eval()  # reading gates must not count as seeing the ids
        try:
            m = self.logits(candidates)
        finally:
            self.train(was_training)
        return candidates[m > 0]


class GatedEmbedding(nn.Module):
    """``inner(ids) * gate(ids)[..., None]``: an embedding module seen through a
    :class:`FeatureGate` (several wrappers may share one gate)."""

    def __init__(self, inner: nn.Module, gate: FeatureGate) -> None:
        super().__init__()
        if not isinstance(gate, FeatureGate):
            raise TypeError(f"gate: expected a FeatureGate, got {type(gate).__name__}")
        self.inner = inner
        self.gate = gate

    def forward(self, ids: torch.Tensor, now: float | None = None) -> torch.Tensor:
        return self.inner(ids, now=now) * self.gate(ids, now=now).unsqueeze(-1)


class MaskedEmbedding(nn.Module):
    """An embedding module that only lets some ids through; the others read zeros.

    Exactly one of ``allowed_ids`` (an allow-list: everything else, including ids never
    seen before, is dropped) or ``denied_ids`` (a deny-list: only these are dropped) is
    given. Dropped ids are never passed to ``inner``, so a collisionless table neither
    counts nor admits them (they cost no memory), and they get no gradient.

    ``forward(ids, now=None) -> [*ids.shape, dim]``; the id list is a buffer (saved in
    ``state_dict``).
    """

    def __init__(
        self,
        inner: nn.Module,
        *,
        allowed_ids: torch.Tensor | None = None,
        denied_ids: torch.Tensor | None = None,
    ) -> None:
        super().__init__()
        if (allowed_ids is None) == (denied_ids is None):
            raise ValueError("allowed_ids/denied_ids: expected exactly one of them")
        ids = allowed_ids if allowed_ids is not None else denied_ids
        name = "allowed_ids" if allowed_ids is not None else "denied_ids"
        ids = torch.unique(_check_ids(ids, name).reshape(-1))  # sorted
        self.inner = inner
        self.allow = allowed_ids is not None
        self.register_buffer("listed_ids", ids)

    def passes(self, ids: torch.Tensor) -> torch.Tensor:
        """BoolTensor ``[*ids.shape]``: which ids reach the inner table."""
        _check_ids(ids)
        listed = self.listed_ids
        if listed.numel() == 0:
            return torch.full(ids.shape, not self.allow, dtype=torch.bool, device=ids.device)
        pos = torch.searchsorted(listed, ids).clamp_(max=listed.numel() - 1)
        found = listed[pos] == ids
        return found if self.allow else ~found

    def forward(self, ids: torch.Tensor, now: float | None = None) -> torch.Tensor:
        keep = self.passes(ids)
        rows = self.inner(ids[keep], now=now)
        out = rows.new_zeros((*ids.shape, rows.shape[-1]))
        out[keep] = rows
        return out


@dataclass(frozen=True)
class OptFSResult:
    """What :func:`optfs_movielens` measured.

    ``kept_ids``/``dropped_ids``: sorted int64 ids among the training data's distinct ids;
    ``removed_fraction``: ``len(dropped_ids) / num_candidates``; ``baseline`` and
    ``retrained``: test ``{"auc", "logloss"}`` at the epoch with the best validation AUC
    (plus that ``"val_auc"`` and ``"epoch"``);
    ``relative_auc_drop``: ``(baseline_auc - retrained_auc) / baseline_auc``;
    ``by_field``: ``{field: (distinct ids, kept ids)}``; ``settings``: the run's arguments.
    """

    kept_ids: torch.Tensor
    dropped_ids: torch.Tensor
    num_candidates: int
    removed_fraction: float
    baseline: dict[str, float]
    retrained: dict[str, float]
    relative_auc_drop: float
    by_field: dict[str, tuple[int, int]]
    settings: dict[str, object]


class OptFS:
    """The OptFS search: gates, temperature schedule, penalty, selection.

    Args:
        gate_table: dim-1 table holding the gate offsets (see the module docstring).
        init: initial gate logit.
        final_temperature: ``T`` of the last search epoch.
        penalty_weight: ``lambda`` of the gate penalty. The reference uses 1e-9..1e-8 on
            Criteo/Avazu (millions of ids, batch 4096); with Adam on the gates what counts
            is ``lambda`` against the per-id data gradient, so small data sets need more
            (MovieLens-100K: about 1e-5, see :func:`optfs_movielens`).

    Use: build the model with ``embedding_factory=optfs.wrap(factory)``, run
    :meth:`search`, then :meth:`select_features`.
    """

    def __init__(
        self,
        gate_table: nn.Module,
        *,
        init: float = 0.5,
        final_temperature: float = 200.0,
        penalty_weight: float = 1e-8,
    ) -> None:
        if not (isinstance(final_temperature, int | float) and final_temperature >= 1):
            raise ValueError(f"final_temperature: expected a float >= 1, got {final_temperature!r}")
        if not (isinstance(penalty_weight, int | float) and penalty_weight >= 0):
            raise ValueError(f"penalty_weight: expected a float >= 0, got {penalty_weight!r}")
        self.gate = FeatureGate(gate_table, init=init)
        self.final_temperature = float(final_temperature)
        self.penalty_weight = float(penalty_weight)

    def wrap(self, embedding_factory: Callable[[int], nn.Module]) -> Callable[[int], nn.Module]:
        """A factory giving ``GatedEmbedding(embedding_factory(dim), self.gate)``."""
        if not callable(embedding_factory):
            raise TypeError(
                f"embedding_factory: expected a callable, got {type(embedding_factory).__name__}"
            )
        return lambda dim: GatedEmbedding(embedding_factory(dim), self.gate)

    def temperature_at(self, epoch: int, epochs: int) -> float:
        """``final ** (epoch / (epochs - 1))`` (1 at the first epoch, ``final`` at the last)."""
        if epochs < 1 or not 0 <= epoch < epochs:
            raise ValueError(f"epoch/epochs: expected 0 <= epoch < epochs, got {epoch}, {epochs}")
        return 1.0 if epochs == 1 else self.final_temperature ** (epoch / (epochs - 1))

    def regulariser(self, model: nn.Module | None = None) -> torch.Tensor:
        """``penalty_weight * gate.penalty()`` (``model`` ignored: for ``extra_loss``)."""
        return self.penalty_weight * self.gate.penalty()

    def optimizer(
        self, model: nn.Module, *, dense_lr: float, gate_lr: float, weight_decay: float = 0.0
    ) -> torch.optim.Optimizer:
        """Adam over ``model``'s parameters; the gate's own parameters (a hashed gate table)
        get ``gate_lr`` and no weight decay (decay would pull every gate back to ``init``)."""
        gate_params = {id(p) for p in self.gate.parameters()}
        rest = [p for p in model.parameters() if p.requires_grad and id(p) not in gate_params]
        groups = [{"params": rest, "weight_decay": weight_decay}]
        gates = [p for p in self.gate.parameters() if p.requires_grad]
        if gates:
            groups.append({"params": gates, "lr": gate_lr, "weight_decay": 0.0})
        return torch.optim.Adam(groups, lr=dense_lr)

    def search(
        self,
        model: nn.Module,
        train: CTRBatch | Callable[[int], Iterable[CTRBatch]],
        *,
        epochs: int,
        batch_size: int = 1024,
        dense_lr: float = 1e-3,
        gate_lr: float = 1e-3,
        weight_decay: float = 0.0,
        seed: int = 0,
        on_epoch_end: Callable[[int, nn.Module, float], object] | None = None,
    ) -> list[float]:
        """Train ``model`` (built with :meth:`wrap`) and the gates for ``epochs`` epochs,
        annealing the temperature per epoch; returns the mean train log loss per epoch."""
        if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1:
            raise ValueError(f"epochs: expected a positive int, got {epochs!r}")
        if not any(m is self.gate for m in model.modules()):
            raise ValueError("model: expected a model built with embedding_factory=optfs.wrap(...)")
        self.gate.hard = False
        self.gate.temperature = self.temperature_at(0, epochs)

        def next_epoch(epoch: int, m: nn.Module, loss: float) -> object:
            if epoch + 1 < epochs:
                self.gate.temperature = self.temperature_at(epoch + 1, epochs)
            return None if on_epoch_end is None else on_epoch_end(epoch, m, loss)

        opt = self.optimizer(model, dense_lr=dense_lr, gate_lr=gate_lr, weight_decay=weight_decay)
        return train_ctr(
            model, train, epochs=epochs, batch_size=batch_size, seed=seed, optimizer=opt,
            extra_loss=self.regulariser, on_epoch_end=next_epoch,
        )  # fmt: skip

    def select_features(self, candidates: torch.Tensor | None = None) -> torch.Tensor:
        """Kept ids (sorted int64): ``candidates`` (default: the gate table's ids) whose gate
        logit is > 0."""
        return self.gate.kept(candidates)


def selection_by_field(
    candidates: torch.Tensor, kept: torch.Tensor, field_names: Sequence[str]
) -> dict[str, tuple[int, int]]:
    """``{field name: (distinct candidate ids, kept ids)}`` for global ids."""
    candidates = torch.unique(_check_ids(candidates, "candidates").reshape(-1))
    kept_mask = torch.isin(candidates, _check_ids(kept, "kept"))
    fields = field_of(candidates)
    out = {}
    for f, name in enumerate(field_names):
        in_field = fields == f
        out[name] = (int(in_field.sum()), int((in_field & kept_mask).sum()))
    return out


def _train_best(model, train, val, test, *, epochs, batch_size, dense_lr, weight_decay, seed):
    """Train; return test metrics at the epoch of best validation AUC."""
    best: dict[str, float] = {"val_auc": -1.0}

    def record(epoch: int, m: nn.Module, loss: float) -> None:
        v = evaluate_ctr(m, val)
        if v["auc"] > best["val_auc"]:
            t = evaluate_ctr(m, test)
            best.update(val_auc=v["auc"], auc=t["auc"], logloss=t["logloss"], epoch=epoch)

    train_ctr(model, train, epochs=epochs, batch_size=batch_size, dense_lr=dense_lr,
              weight_decay=weight_decay, seed=seed, on_epoch_end=record)  # fmt: skip
    return best


def optfs_movielens(
    *,
    embed_dim: int = 16,
    hidden: Sequence[int] = (64, 32),
    num_rows: int = 1 << 16,
    batch_size: int = 512,
    dense_lr: float = 1e-3,
    weight_decay: float = 0.0,
    train_epochs: int = 3,
    search_epochs: int = 8,
    gate_lr: float = 1e-2,
    penalty_weight: float = 1e-5,
    final_temperature: float = 200.0,
    seed: int = 0,
) -> OptFSResult:
    """OptFS with DeepFM on MovieLens-100K CTR (time-ordered split), hashed tables.

    1. baseline: DeepFM on ``HashedEmbedding(num_rows, embed_dim + 1, seed=seed)`` trained
       ``train_epochs`` epochs; test metrics at the best validation-AUC epoch;
    2. search: the same model with OptFS gates (a dim-1 hashed gate table, same buckets),
       ``search_epochs`` epochs;
    3. selection over the training data's distinct ids; re-training from the baseline's
       initialisation with the dropped ids denied (:class:`MaskedEmbedding`), evaluated
       like the baseline.
    """
    from subspace_recsys.data import load_movielens_ctr
    from subspace_recsys.models import DeepFM

    train, val, test = (load_movielens_ctr(s) for s in ("train", "validation", "test"))
    num_fields = train.num_fields

    def table(dim: int) -> HashedEmbedding:
        return HashedEmbedding(num_rows, dim, seed=seed)

    def deepfm(factory) -> DeepFM:
        torch.manual_seed(seed)  # the same dense initialisation for every run
        return DeepFM(num_fields, embed_dim, hidden=hidden, embedding_factory=factory)

    common = dict(batch_size=batch_size, dense_lr=dense_lr, weight_decay=weight_decay, seed=seed)
    baseline = _train_best(deepfm(table), train, val, test, epochs=train_epochs, **common)

    optfs = OptFS(HashedEmbedding(num_rows, 1, seed=seed, init_std=0.0),
                  final_temperature=final_temperature, penalty_weight=penalty_weight)  # fmt: skip
    searched = deepfm(optfs.wrap(table))
    optfs.search(searched, train, epochs=search_epochs, gate_lr=gate_lr, **common)
    candidates = torch.unique(train.ids)
    kept = optfs.select_features(candidates)
    dropped = candidates[~torch.isin(candidates, kept)]

    masked = deepfm(lambda dim: MaskedEmbedding(table(dim), denied_ids=dropped))
    retrained = _train_best(masked, train, val, test, epochs=train_epochs, **common)
    return OptFSResult(
        kept_ids=kept,
        dropped_ids=dropped,
        num_candidates=len(candidates),
        removed_fraction=len(dropped) / len(candidates),
        baseline=baseline,
        retrained=retrained,
        relative_auc_drop=(baseline["auc"] - retrained["auc"]) / baseline["auc"],
        by_field=selection_by_field(candidates, kept, train.field_names),
        settings=dict(
            embed_dim=embed_dim,
            hidden=tuple(hidden),
            num_rows=num_rows,
            search_epochs=search_epochs,
            train_epochs=train_epochs,
            gate_lr=gate_lr,
            penalty_weight=penalty_weight,
            final_temperature=final_temperature,
            **common,
        ),
    )
