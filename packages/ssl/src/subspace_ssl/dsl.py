"""Dynamic Subspace Learners (DSL): several metric learners in subspaces of one embedding.

Adiga Vasudeva, Dolz & Lombaert, "Attention-based Dynamic Subspace Learners for Medical Image
Analysis" (IEEE JBHI 2022, arXiv:2206.09068; MIDL 2022 short paper), built on Sanakoyeu et
al., "Divide and Conquer the Embedding Space for Metric Learning" (CVPR 2019, "D&C").

What is kept from the papers:

* one embedding layer ``W`` [d, C] whose output is split into ``K`` contiguous slices, one per
  learner (D&C's split: slices of ``ceil(d / K)`` dimensions, the last one shorter);
* the training data are clustered (k-means on the backbone's pooled features) into ``K``
  groups, each group assigned to one learner; a mini-batch comes from one group and trains
  its learner's slice with the margin loss (Wu et al. 2017, "Sampling matters": positive
  pairs pulled within ``β − α``, negatives pushed beyond ``β + α``, learnable ``β``, the
  nearest negatives beyond a 0.5 cut-off, like D&C's sampler); clusters are re-computed
  every epoch and matched to the previous ones (Hungarian, maximum overlap, as D&C), so a
  learner keeps "its" data;
* **dynamic**: training starts with one learner and new learners are added during training
  (:class:`LearnerSchedule`), so ``K`` need not be tuned in advance; the embedding is then
  re-split into more, smaller slices;
* **attention**: every learner has its own spatial attention map over the backbone's last
  feature map (softmax over positions, so it sums to 1 and shows where the learner looks),
  which pools the features its slice is computed from;
* a final phase trains the whole embedding on all data (D&C's fine-tuning).

Where this deviates (say so when reporting numbers):

* the learners' embeddings are combined into the final embedding by an input-dependent
  **learner attention** (a softmax gate over the active learners, weights summing to 1):
  ``e = concat_k √w_k · ê_k`` with ``ê_k`` the unit-norm learner embeddings, so ``‖e‖ = 1``
  and ``cos(e(x), e(y)) = Σ_k √(w_k(x) w_k(y)) cos(ê_k(x), ê_k(y))``. The papers concatenate
  the slices and normalise; the gate is this package's addition and is trained by a margin
  loss on ``e`` in every batch (weight ``final_weight``), not only in the fine-tuning phase;
* the attention maps sit on the last feature map (4×4 for the tiny encoder) and pool it,
  instead of masking an intermediate map and re-running the rest of the backbone per
  learner (K times the compute);
* learners are added on a fixed epoch schedule (the paper grows them during training; a
  plateau criterion would cost a validation pass per epoch on these CPUs);
* clustering uses the features recorded while training the epoch (augmented inputs,
  BatchNorm in training mode) instead of a separate inference pass over the training set,
  which would cost ~40 % of an epoch here.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "DSLCriterion",
    "DSLOutput",
    "DSLTrainer",
    "DynamicSubspaceLearners",
    "LearnerSchedule",
    "MarginLoss",
    "assign_clusters",
    "build_dsl",
    "learner_slices",
]


def learner_slices(embed_dim: int, n_learners: int) -> list[slice]:
    """D&C's split of ``embed_dim`` outputs into ``n_learners`` contiguous slices.

    Slice ``k`` covers ``[k·⌈d/K⌉, min((k+1)·⌈d/K⌉, d))``. Raises if a slice would be empty.
    """
    if not 1 <= n_learners <= embed_dim:
        raise ValueError(
            f"n_learners: expected an integer in [1, embed_dim = {embed_dim}], got {n_learners}"
        )
    width = math.ceil(embed_dim / n_learners)
    slices = [slice(k * width, min((k + 1) * width, embed_dim)) for k in range(n_learners)]
    if slices[-1].start >= embed_dim:
        raise ValueError(
            f"n_learners: {n_learners} learners leave an empty slice of a "
            f"{embed_dim}-dimensional embedding; use fewer learners"
        )
    return slices


class DSLOutput(NamedTuple):
    """Everything :meth:`DynamicSubspaceLearners.encode` computes for a batch of ``N`` images.

    Attributes:
        embedding: [N, d] the final embedding, unit norm (concatenated weighted learners).
        learners: ``K`` tensors [N, d_k], each learner's unit-norm embedding.
        learner_weights: [N, K] the learner attention (softmax: rows sum to 1).
        spatial_attention: [N, K, h, w] each learner's attention map (each sums to 1).
        features: [N, C] the backbone's global-average-pooled features (used for clustering).
    """

    embedding: torch.Tensor
    learners: tuple[torch.Tensor, ...]
    learner_weights: torch.Tensor
    spatial_attention: torch.Tensor
    features: torch.Tensor


class DynamicSubspaceLearners(nn.Module):
    """Backbone + per-learner spatial attention + one split embedding layer + learner gate.

    Args:
        encoder: a module with ``feature_map(x)`` → [N, C, h, w] and ``embed_dim = C``
            (e.g. :class:`subspace_ssl.encoders.ConvEncoder`).
        embed_dim: ``d``, the final embedding size, split among the active learners.
        max_learners: learners that can ever be active (their attention parameters are
            allocated up front, so the state dict's shapes do not change as learners are added).
        n_learners: active learners at construction (default 1).
        attention_hidden: channels of the 1×1-conv attention module.

    The number of active learners is the buffer ``n_active`` (part of the state dict, so a
    checkpoint restores it). Newly added learners start with uniform attention maps (plain
    average pooling) because the attention module's last layer is zero-initialised, and with
    equal gate weights for the same reason.

    Shapes: ``model(x)``: images [N, 1, 28, 28] → embedding [N, d] (unit norm);
    :meth:`encode` returns a :class:`DSLOutput`.
    """

    def __init__(
        self,
        encoder: nn.Module,
        embed_dim: int = 128,
        max_learners: int = 4,
        *,
        n_learners: int = 1,
        attention_hidden: int = 64,
    ):
        super().__init__()
        channels = getattr(encoder, "embed_dim", None)
        if channels is None or not hasattr(encoder, "feature_map"):
            raise ValueError(
                "encoder: expected a module with feature_map() and embed_dim "
                f"(e.g. ConvEncoder), got {type(encoder).__name__}"
            )
        if embed_dim < 1 or max_learners < 1:
            raise ValueError(
                f"embed_dim/max_learners: expected positive integers, got "
                f"{embed_dim}, {max_learners}"
            )
        learner_slices(embed_dim, max_learners)  # every learner count up to the max must fit
        self.encoder = encoder
        self.embed_dim, self.max_learners = int(embed_dim), int(max_learners)
        self.spatial = nn.Sequential(
            nn.Conv2d(channels, attention_hidden, 1),
            nn.ReLU(),
            nn.Conv2d(attention_hidden, max_learners, 1),
        )
        self.embedding = nn.Linear(channels, embed_dim)
        self.gate = nn.Linear(channels, max_learners)
        for layer in (self.spatial[-1], self.gate):
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)
        self.register_buffer("n_active", torch.tensor(0, dtype=torch.long))
        self.set_learners(n_learners)

    @property
    def n_learners(self) -> int:
        """Number of active learners ``K``."""
        return int(self.n_active)

    def set_learners(self, n_learners: int) -> None:
        """Make the first ``n_learners`` learners active (1 ≤ K ≤ ``max_learners``)."""
        if not 1 <= int(n_learners) <= self.max_learners:
            raise ValueError(
                f"n_learners: expected an integer in [1, {self.max_learners}], got {n_learners}"
            )
        self.n_active.fill_(int(n_learners))

    def add_learner(self) -> int:
        """Activate one more learner; returns the new ``K``."""
        if self.n_learners >= self.max_learners:
            raise RuntimeError(
                f"add_learner: all {self.max_learners} learners are already "
                "active; build the model with a larger max_learners"
            )
        self.set_learners(self.n_learners + 1)
        return self.n_learners

    def slices(self) -> list[slice]:
        """The active learners' slices of the embedding."""
        return learner_slices(self.embed_dim, self.n_learners)

    def encode(self, x: torch.Tensor) -> DSLOutput:
        fmap = self.encoder.feature_map(x)  # [N, C, h, w]
        n, _, h, w = fmap.shape
        k = self.n_learners
        features = fmap.mean(dim=(2, 3))
        attention = self.spatial(fmap)[:, :k].flatten(2).softmax(dim=-1)  # [N, K, h·w]
        pooled = attention @ fmap.flatten(2).mT  # [N, K, C]: attention-weighted average
        learners = tuple(
            F.normalize(
                F.linear(pooled[:, i], self.embedding.weight[s], self.embedding.bias[s]), dim=1
            )
            for i, s in enumerate(self.slices())
        )
        weights = self.gate(features)[:, :k].softmax(dim=-1)  # [N, K]
        # √w makes the concatenation unit-norm (Σ w = 1) and its cosine a w-weighted mix of
        # the learners' cosines.
        embedding = torch.cat(
            [weights[:, i : i + 1].sqrt() * e for i, e in enumerate(learners)], dim=1
        )
        return DSLOutput(embedding, learners, weights, attention.view(n, k, h, w), features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.encode(x).embedding


def build_dsl(
    encoder_size: str = "tiny",
    *,
    embed_dim: int = 128,
    max_learners: int = 4,
    n_learners: int = 1,
    seed: int | None = None,
) -> DynamicSubspaceLearners:
    """:class:`DynamicSubspaceLearners` on ``build_encoder(encoder_size)``, seeded if asked."""
    from subspace_ssl.encoders import build_encoder

    with torch.random.fork_rng(devices=[], enabled=seed is not None):
        if seed is not None:
            torch.manual_seed(seed)
        return DynamicSubspaceLearners(
            build_encoder(encoder_size), embed_dim, max_learners, n_learners=n_learners
        )


# --------------------------------------------------------------------------- loss


def _pairwise_distances(e: torch.Tensor) -> torch.Tensor:
    squared = (e.square().sum(1, keepdim=True) + e.square().sum(1) - 2 * e @ e.T).clamp_min(0)
    return (squared + 1e-8).sqrt()  # + eps: the derivative of √ at 0 is infinite


class MarginLoss(nn.Module):
    """Margin loss (Wu et al. 2017) with learnable boundaries ``β`` and D&C's negative sampling.

    For unit-norm embeddings and Euclidean distances ``D``: every positive pair ``(a, p)``
    costs ``[D_ap − β + α]₊`` and each anchor's ``n_a`` selected negatives cost
    ``[β − D_an + α]₊``, where ``n_a`` is the anchor's number of positives and the selected
    negatives are its ``n_a`` nearest ones at distance ``≥ cutoff`` (the cut-off avoids the
    noisy nearest negatives). The sum is divided by the number of non-zero terms.
    ``β`` is a vector of ``n_betas`` learnable boundaries (one per learner here), chosen by
    ``beta_index``.

    Shapes: ``embeddings`` [B, d] (normalised inside), ``labels`` [B] → scalar.
    """

    def __init__(
        self, n_betas: int = 1, *, beta: float = 1.2, margin: float = 0.2, cutoff: float = 0.5
    ):
        super().__init__()
        if n_betas < 1 or margin < 0 or cutoff < 0:
            raise ValueError(
                f"n_betas/margin/cutoff: expected >= 1, >= 0, >= 0, got "
                f"{n_betas}, {margin}, {cutoff}"
            )
        self.beta = nn.Parameter(torch.full((n_betas,), float(beta)))
        self.margin, self.cutoff = float(margin), float(cutoff)

    def forward(
        self, embeddings: torch.Tensor, labels: torch.Tensor, beta_index: int = 0
    ) -> torch.Tensor:
        if embeddings.ndim != 2 or labels.shape != embeddings.shape[:1]:
            raise ValueError(
                f"embeddings/labels: expected [B, d] and [B], got "
                f"{tuple(embeddings.shape)} and {tuple(labels.shape)}"
            )
        beta = self.beta[beta_index]
        d = _pairwise_distances(F.normalize(embeddings, dim=1))
        same = labels[:, None] == labels[None, :]
        eye = torch.eye(len(labels), dtype=torch.bool, device=d.device)
        positive = same & ~eye
        n_pos = positive.sum(1)
        pos_loss = F.relu(d[positive] - beta + self.margin)
        k = int(n_pos.max()) if len(labels) else 0
        eligible = ~same & (d.detach() >= self.cutoff)
        if k > 0 and eligible.any():
            candidates = torch.where(eligible, d.detach(), torch.inf)
            k = min(k, len(labels))
            nearest = candidates.topk(k, dim=1, largest=False).indices  # [B, k]
            rank = torch.arange(k, device=d.device)
            keep = (rank < n_pos[:, None]) & eligible.gather(1, nearest)
            neg_loss = F.relu(beta - d.gather(1, nearest)[keep] + self.margin)
        else:
            neg_loss = d.new_zeros(0)
        active = (pos_loss > 0).sum() + (neg_loss > 0).sum()
        total = pos_loss.sum() + neg_loss.sum()
        return total / active.clamp_min(1)


class DSLCriterion(nn.Module):
    """The DSL objective: margin loss of one learner's slice plus that of the final embedding.

    ``loss = final_weight · L(e, y) + L(ê_k, y)`` for a batch drawn from learner ``k``'s
    cluster (``learner=None``: only the final term — the fine-tuning phase, or ``K = 1``).
    Each learner and the final embedding have their own ``β`` (``max_learners + 1`` of them).
    """

    def __init__(
        self,
        max_learners: int,
        *,
        margin: float = 0.2,
        beta: float = 1.2,
        cutoff: float = 0.5,
        final_weight: float = 1.0,
    ):
        super().__init__()
        self.margin_loss = MarginLoss(max_learners + 1, beta=beta, margin=margin, cutoff=cutoff)
        self.max_learners, self.final_weight = int(max_learners), float(final_weight)

    def forward(
        self, output: DSLOutput, labels: torch.Tensor, learner: int | None = None
    ) -> torch.Tensor:
        loss = self.final_weight * self.margin_loss(output.embedding, labels, self.max_learners)
        if learner is not None:
            if not 0 <= learner < len(output.learners):
                raise ValueError(
                    f"learner: expected an index in [0, {len(output.learners)}), got {learner}"
                )
            loss = loss + self.margin_loss(output.learners[learner], labels, learner)
        return loss


# --------------------------------------------------------------------------- clustering


def assign_clusters(
    features: torch.Tensor, n_clusters: int, previous: torch.Tensor | None = None, *, seed: int = 0
) -> torch.Tensor:
    """k-means cluster ids [N] of ``features`` [N, C], matched to ``previous`` ids if given.

    k-means (scikit-learn, k-means++, one run) on the L2-normalised features. With
    ``previous`` (ids in ``[0, K_prev)``, ``K_prev <= n_clusters``), the new clusters are
    renumbered by a maximum-overlap matching (Hungarian algorithm) so that each old id keeps
    the new cluster sharing most samples with it; the clusters left over get the ids
    ``K_prev, K_prev + 1, ...`` — these are the data of the newly added learners.
    """
    from scipy.optimize import linear_sum_assignment
    from sklearn.cluster import KMeans

    if features.ndim != 2 or not 1 <= n_clusters <= features.shape[0]:
        raise ValueError(
            f"features/n_clusters: expected [N, C] with 1 <= n_clusters <= N, got "
            f"{tuple(features.shape)} and {n_clusters}"
        )
    if n_clusters == 1:
        return torch.zeros(features.shape[0], dtype=torch.long)
    unit = F.normalize(features.detach().float().cpu(), dim=1).numpy()
    ids = KMeans(n_clusters=n_clusters, n_init=1, random_state=seed).fit_predict(unit)
    if previous is None:
        return torch.as_tensor(ids, dtype=torch.long)
    previous = previous.detach().cpu().numpy()
    if previous.shape != ids.shape:
        raise ValueError(f"previous: expected shape {ids.shape}, got {previous.shape}")
    k_prev = int(previous.max()) + 1
    if k_prev > n_clusters:
        raise ValueError(f"previous: expected at most n_clusters = {n_clusters} ids, got {k_prev}")
    overlap = np.zeros((n_clusters, k_prev))
    np.add.at(overlap, (ids, previous), 1)
    new_rows, old_cols = linear_sum_assignment(overlap, maximize=True)
    mapping = np.full(n_clusters, -1)
    mapping[new_rows] = old_cols
    mapping[mapping < 0] = np.arange(k_prev, n_clusters)
    return torch.as_tensor(mapping[ids], dtype=torch.long)


# --------------------------------------------------------------------------- training


@dataclass(frozen=True)
class LearnerSchedule:
    """When learners are added and when the final fine-tuning starts (epochs count from 0).

    ``n_learners(e) = 1 + #{a in add_at : a <= e}``: a learner is added at the start of each
    epoch in ``add_at``. From ``finetune_from`` on (None: never) batches are drawn from all
    data and only the final embedding is trained.
    """

    add_at: tuple[int, ...] = (2, 4, 6)
    finetune_from: int | None = None

    def __post_init__(self) -> None:
        add_at = tuple(int(a) for a in self.add_at)
        if any(a < 1 for a in add_at) or list(add_at) != sorted(add_at):
            raise ValueError(f"add_at: expected ascending epochs >= 1, got {self.add_at}")
        if self.finetune_from is not None and self.finetune_from < 0:
            raise ValueError(
                f"finetune_from: expected an epoch >= 0 or None, got {self.finetune_from}"
            )
        object.__setattr__(self, "add_at", add_at)

    def n_learners(self, epoch: int) -> int:
        return 1 + sum(a <= epoch for a in self.add_at)

    def finetuning(self, epoch: int) -> bool:
        return self.finetune_from is not None and epoch >= self.finetune_from


class DSLTrainer(nn.Module):
    """Training state of DSL: model, objective (with its ``β``), cluster ids, the schedule.

    An ``nn.Module`` so that :func:`subspace_core.train.save_training_state` stores model,
    criterion and the cluster ids (buffer ``clusters`` [N]) in one go. The loop is::

        for epoch in ...:
            for learner, idx in trainer.batches(epoch, batch_size, generator):
                loss = trainer.loss(x[idx], y[idx], idx, learner)  # backward, step
            trainer.end_epoch(epoch)  # adds learners on schedule, re-clusters

    Args:
        model: the :class:`DynamicSubspaceLearners` to train.
        n_samples: size of the training set (indices passed to :meth:`loss` address it).
        schedule: when learners are added / fine-tuning starts.
        recluster_every: re-cluster after every this many epochs (and whenever ``K`` grows).
        seed: seed of the k-means runs.
        criterion_kwargs: passed to :class:`DSLCriterion`.
    """

    def __init__(
        self,
        model: DynamicSubspaceLearners,
        n_samples: int,
        schedule: LearnerSchedule,
        *,
        recluster_every: int = 1,
        seed: int = 0,
        **criterion_kwargs,
    ):
        super().__init__()
        if schedule.n_learners(10**9) > model.max_learners:
            raise ValueError(
                f"schedule: adds up to {schedule.n_learners(10**9)} learners, "
                f"expected at most model.max_learners = {model.max_learners}"
            )
        if recluster_every < 1 or n_samples < 2:
            raise ValueError(
                f"recluster_every/n_samples: expected >= 1 and >= 2, got "
                f"{recluster_every}, {n_samples}"
            )
        self.model = model
        self.criterion = DSLCriterion(model.max_learners, **criterion_kwargs)
        self.schedule, self.recluster_every, self.seed = schedule, int(recluster_every), seed
        self.register_buffer("clusters", torch.zeros(n_samples, dtype=torch.long))
        channels = model.encoder.embed_dim
        # features seen during the epoch, for the next clustering (not part of the state:
        # clustering happens before the state is saved)
        self.register_buffer("features", torch.zeros(n_samples, channels), persistent=False)
        model.set_learners(schedule.n_learners(0))

    def batches(
        self, epoch: int, batch_size: int, generator: torch.Generator
    ) -> list[tuple[int | None, torch.Tensor]]:
        """``(learner, indices)`` pairs covering every sample once, in random order.

        With ``K > 1`` learners outside fine-tuning, each batch holds samples of one cluster
        and names its learner; otherwise batches are drawn from all data with learner None.
        Batches of fewer than 2 samples are dropped (no pair to learn from).
        """
        n = self.clusters.numel()
        if self.model.n_learners == 1 or self.schedule.finetuning(epoch):
            order = torch.randperm(n, generator=generator)
            return [(None, idx) for idx in order.split(batch_size) if len(idx) >= 2]
        out: list[tuple[int | None, torch.Tensor]] = []
        for learner in range(self.model.n_learners):
            members = (self.clusters == learner).nonzero().squeeze(1)
            members = members[torch.randperm(len(members), generator=generator)]
            out += [(learner, idx) for idx in members.split(batch_size) if len(idx) >= 2]
        permutation = torch.randperm(len(out), generator=generator).tolist()
        return [out[i] for i in permutation]

    def loss(
        self, x: torch.Tensor, labels: torch.Tensor, indices: torch.Tensor, learner: int | None
    ) -> torch.Tensor:
        """Forward ``x`` [B, ...] (samples ``indices`` [B] of the training set), return the loss."""
        output = self.model.encode(x)
        self.features[indices] = output.features.detach().to(self.features.dtype)
        return self.criterion(output, labels, learner)

    @torch.no_grad()
    def end_epoch(self, epoch: int) -> None:
        """After epoch ``epoch``: add the learners due at ``epoch + 1`` and re-cluster if due."""
        nxt = epoch + 1
        grown = self.schedule.n_learners(nxt) != self.model.n_learners
        if grown:
            self.model.set_learners(self.schedule.n_learners(nxt))
        k = self.model.n_learners
        if k == 1 or self.schedule.finetuning(nxt):
            self.clusters.zero_()
        elif grown or nxt % self.recluster_every == 0:
            previous = self.clusters if int(self.clusters.max()) < k else None
            self.clusters.copy_(assign_clusters(self.features, k, previous, seed=self.seed + nxt))

    def learner_sizes(self) -> list[int]:
        """Samples assigned to each active learner."""
        return torch.bincount(self.clusters, minlength=self.model.n_learners).tolist()
