"""CTR models over one shared embedding module: Wide & Deep, DeepFM and DCN-v2.

Every model owns its embedding module(s), made by ``embedding_factory(dim) -> module``
(a :class:`~subspace_recsys.table.CollisionlessEmbedding`, a
:class:`~subspace_recsys.hashed.HashedEmbedding`, or a wrapper of either), so the same
model class runs on a collisionless or a hashed table. Inputs are global feature ids
(:func:`subspace_recsys.data.global_ids`): one table holds every field.

``model(ids, dense=None, now=None) -> logits``: ``ids`` int64 ``[B, F]``, ``dense`` float
``[B, dense_dim]`` (required iff ``dense_dim > 0``), ``now`` the event time forwarded to
the table (admission/expiry bookkeeping); returns float32 logits ``[B]``.

First-order terms: Wide & Deep and DeepFM ask the factory for ONE table of ``embed_dim + 1``
columns; column 0 is the id's first-order (linear) weight and columns ``1..embed_dim`` its
embedding. One lookup per id serves both, and both live and die together when the table
admits or expires the id (two tables would keep two admission states of the same id).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn

__all__ = [
    "CrossLayerV2",
    "CrossNetworkV2",
    "DCNv2",
    "DeepFM",
    "WideAndDeep",
    "fm_interaction",
]

EmbeddingFactory = Callable[[int], nn.Module]


def fm_interaction(embeddings: torch.Tensor) -> torch.Tensor:
    """Second-order factorisation-machine term ``sum_{i<j} <e_i, e_j>`` per example.

    Computed with Rendle's identity ``0.5 * sum_d ((sum_i e_id)^2 - sum_i e_id^2)`` in
    ``O(F * D)`` instead of ``O(F^2 * D)``.

    Args:
        embeddings: ``[B, F, D]`` field embeddings.

    Returns:
        ``[B]``.
    """
    if not isinstance(embeddings, torch.Tensor) or embeddings.dim() != 3:
        raise ValueError(
            f"embeddings: expected a [B, F, D] tensor, got {getattr(embeddings, 'shape', None)}"
        )
    square_of_sum = embeddings.sum(dim=1).pow(2)
    sum_of_squares = embeddings.pow(2).sum(dim=1)
    return 0.5 * (square_of_sum - sum_of_squares).sum(dim=1)


def _mlp(in_dim: int, hidden: Sequence[int], dropout: float) -> tuple[nn.Sequential, int]:
    layers: list[nn.Module] = []
    for width in hidden:
        layers += [nn.Linear(in_dim, width), nn.ReLU()]
        if dropout > 0:
            layers.append(nn.Dropout(dropout))
        in_dim = width
    return nn.Sequential(*layers), in_dim


def _check_hidden(hidden: Sequence[int]) -> tuple[int, ...]:
    if isinstance(hidden, int) or not all(
        isinstance(h, int) and not isinstance(h, bool) and h > 0 for h in hidden
    ):
        raise ValueError(f"hidden: expected a sequence of positive ints, got {hidden!r}")
    return tuple(hidden)


class _CTRModel(nn.Module):
    """Input checks and the embedding lookup shared by the models."""

    def __init__(
        self,
        num_fields: int,
        embed_dim: int,
        dense_dim: int,
        embedding_factory: EmbeddingFactory,
        table_dim: int,
        dropout: float,
    ) -> None:
        super().__init__()
        for name, value, low in (("num_fields", num_fields, 1), ("embed_dim", embed_dim, 1),
                                 ("dense_dim", dense_dim, 0)):  # fmt: skip
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f"{name}: expected an int >= {low}, got {value!r}")
        if not callable(embedding_factory):
            raise TypeError(
                f"embedding_factory: expected a callable dim -> module, "
                f"got {type(embedding_factory).__name__}"
            )
        if not 0 <= dropout < 1:
            raise ValueError(f"dropout: expected a float in [0, 1), got {dropout!r}")
        self.num_fields = num_fields
        self.embed_dim = embed_dim
        self.dense_dim = dense_dim
        self.table_dim = table_dim
        table = embedding_factory(table_dim)
        if not isinstance(table, nn.Module):
            raise TypeError(
                f"embedding_factory: expected it to return an nn.Module, got {type(table).__name__}"
            )
        self.embedding = table

    def _lookup(
        self, ids: torch.Tensor, dense: torch.Tensor | None, now: float | None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Check the inputs; return the table rows ``[B, F, table_dim]`` and ``dense`` in the
        rows' dtype."""
        if not isinstance(ids, torch.Tensor) or ids.dtype != torch.int64:
            raise TypeError(
                f"ids: expected a torch.int64 tensor, got {getattr(ids, 'dtype', type(ids).__name__)}"
            )
        if ids.dim() != 2 or ids.shape[1] != self.num_fields:
            raise ValueError(f"ids: expected shape [B, {self.num_fields}], got {tuple(ids.shape)}")
        if self.dense_dim:
            if dense is None:
                raise ValueError(f"dense: expected a [B, {self.dense_dim}] tensor, got None")
            if not isinstance(dense, torch.Tensor) or not dense.dtype.is_floating_point:
                raise TypeError(
                    f"dense: expected a floating-point tensor, "
                    f"got {getattr(dense, 'dtype', type(dense).__name__)}"
                )
            if tuple(dense.shape) != (ids.shape[0], self.dense_dim):
                raise ValueError(
                    f"dense: expected shape [{ids.shape[0]}, {self.dense_dim}], "
                    f"got {tuple(dense.shape)}"
                )
        elif dense is not None:
            raise ValueError("dense: this model was built with dense_dim=0, got a dense tensor")
        rows = self.embedding(ids, now=now)
        expected = (*ids.shape, self.table_dim)
        if tuple(rows.shape) != expected:
            raise ValueError(
                f"embedding_factory: its module returned shape {tuple(rows.shape)} for ids "
                f"{tuple(ids.shape)}, expected {expected}"
            )
        return rows, None if dense is None else dense.to(rows.dtype)


class _FirstOrderModel(_CTRModel):
    """What Wide & Deep and DeepFM share: one ``embed_dim + 1`` table (first-order weight
    and embedding of each id), a linear map of the dense features, a bias, and an MLP over
    ``[e_1, ..., e_F, dense]``."""

    def __init__(
        self,
        num_fields: int,
        embed_dim: int,
        *,
        dense_dim: int = 0,
        hidden: Sequence[int] = (128, 64),
        embedding_factory: EmbeddingFactory,
        dropout: float = 0.0,
    ) -> None:
        super().__init__(num_fields, embed_dim, dense_dim, embedding_factory, embed_dim + 1,
                         dropout)  # fmt: skip
        self.deep, width = _mlp(num_fields * embed_dim + dense_dim, _check_hidden(hidden), dropout)
        self.deep_out = nn.Linear(width, 1)
        self.dense_linear = nn.Linear(dense_dim, 1, bias=False) if dense_dim else None
        self.bias = nn.Parameter(torch.zeros(()))

    def _logit(
        self,
        ids: torch.Tensor,
        dense: torch.Tensor | None,
        now: float | None,
        pairwise: Callable[[torch.Tensor], torch.Tensor] | None,
    ) -> torch.Tensor:
        """``b + sum_f w[id_f] (+ pairwise(e [B, F, D])) + v . dense + MLP([e, dense])``
        -> ``[B]``, summed in that order."""
        rows, dense = self._lookup(ids, dense, now)
        first_order, emb = rows[..., 0], rows[..., 1:]
        deep_in = emb.flatten(1)
        logit = self.bias + first_order.sum(1)
        if pairwise is not None:
            logit = logit + pairwise(emb)
        if self.dense_linear is not None:
            logit = logit + self.dense_linear(dense).squeeze(-1)
            deep_in = torch.cat([deep_in, dense], dim=1)
        return logit + self.deep_out(self.deep(deep_in)).squeeze(-1)


class WideAndDeep(_FirstOrderModel):
    """Wide & Deep (Cheng et al., 2016) on global feature ids.

    ``logit = b + sum_f w[id_f] + v . dense + MLP([e_1, ..., e_F, dense])``: the wide part
    is the first-order (logistic-regression) term over every id plus a linear map of the
    dense features (the paper's hand-crafted cross-product columns are left out; DeepFM and
    DCN-v2 learn the crosses); the deep part an MLP with ReLU over the concatenated field
    embeddings and dense features. ``w`` and ``e`` share one ``embed_dim + 1`` table
    (see the module docstring).

    Args:
        num_fields: ``F``.
        embed_dim: ``D``, columns of each field embedding.
        dense_dim: number of dense features (0 = none).
        hidden: widths of the MLP's hidden layers.
        embedding_factory: ``dim -> module`` mapping ``ids [B, F]`` to ``[B, F, dim]``.
        dropout: dropout after each hidden layer.
    """

    def forward(
        self, ids: torch.Tensor, dense: torch.Tensor | None = None, now: float | None = None
    ) -> torch.Tensor:
        """Logits ``[B]`` of ``ids [B, F]`` (and ``dense [B, dense_dim]``)."""
        return self._logit(ids, dense, now, pairwise=None)


class DeepFM(_FirstOrderModel):
    """DeepFM (Guo et al., 2017) on global feature ids.

    ``logit = b + sum_f w[id_f] + v . dense + sum_{i<j} <e_i, e_j> + MLP([e_1..e_F, dense])``:
    the FM component (first-order weights plus the pairwise inner products of the field
    embeddings, :func:`fm_interaction`) and the deep component share the embeddings. Dense
    features enter the first-order term and the MLP, not the FM term. ``w`` and ``e`` share
    one ``embed_dim + 1`` table (see the module docstring). Arguments as
    :class:`WideAndDeep`.
    """

    def forward(
        self, ids: torch.Tensor, dense: torch.Tensor | None = None, now: float | None = None
    ) -> torch.Tensor:
        """Logits ``[B]`` of ``ids [B, F]`` (and ``dense [B, dense_dim]``)."""
        return self._logit(ids, dense, now, pairwise=fm_interaction)


class CrossLayerV2(nn.Module):
    """One DCN-v2 cross layer: ``x_{l+1} = x0 * (W x_l + b) + x_l`` (Wang et al., 2021).

    * ``rank=None``: full-rank ``W [d, d]``.
    * ``rank=r``, ``num_experts=1``: ``W = U V^T`` with ``U, V [d, r]`` (the paper's
      low-rank cross layer, ``2 d r`` weights instead of ``d^2``).
    * ``rank=r``, ``num_experts=K > 1``: the mixture of low-rank experts (DCN-Mix):
      ``x_{l+1} = sum_i G_i(x_l) * x0 * (U_i tanh(C_i tanh(V_i^T x_l)) + b) + x_l`` with
      softmax gates ``G(x_l) = softmax(g^T x_l)`` over the experts and ``C_i [r, r]``.

    ``forward(x0, x) -> [B, d]`` for ``x0, x [B, d]``.
    """

    def __init__(self, dim: int, *, rank: int | None = None, num_experts: int = 1) -> None:
        super().__init__()
        if isinstance(dim, bool) or not isinstance(dim, int) or dim < 1:
            raise ValueError(f"dim: expected a positive int, got {dim!r}")
        if rank is not None and (isinstance(rank, bool) or not isinstance(rank, int) or rank < 1):
            raise ValueError(f"rank: expected a positive int or None, got {rank!r}")
        if isinstance(num_experts, bool) or not isinstance(num_experts, int) or num_experts < 1:
            raise ValueError(f"num_experts: expected a positive int, got {num_experts!r}")
        if rank is None and num_experts != 1:
            raise ValueError(
                f"num_experts: a mixture needs a low rank; got num_experts={num_experts} with "
                "rank=None"
            )
        self.dim, self.rank, self.num_experts = dim, rank, num_experts
        self.bias = nn.Parameter(torch.zeros(dim))
        if rank is None:
            self.weight = nn.Parameter(torch.empty(dim, dim))
            nn.init.xavier_uniform_(self.weight)
            return
        self.u = nn.Parameter(torch.empty(num_experts, dim, rank))
        self.v = nn.Parameter(torch.empty(num_experts, dim, rank))
        for i in range(num_experts):
            nn.init.xavier_uniform_(self.u[i])
            nn.init.xavier_uniform_(self.v[i])
        if num_experts > 1:
            self.c = nn.Parameter(torch.empty(num_experts, rank, rank))
            for i in range(num_experts):
                nn.init.xavier_uniform_(self.c[i])
            self.gate = nn.Linear(dim, num_experts, bias=False)

    def forward(self, x0: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        if self.rank is None:
            return x0 * (x @ self.weight.T + self.bias) + x
        if self.num_experts == 1:
            return x0 * ((x @ self.v[0]) @ self.u[0].T + self.bias) + x
        low = torch.tanh(torch.einsum("bd,kdr->bkr", x, self.v))
        low = torch.tanh(torch.einsum("bkr,ksr->bks", low, self.c))
        experts = x0.unsqueeze(1) * (torch.einsum("bkr,kdr->bkd", low, self.u) + self.bias)
        weights = torch.softmax(self.gate(x), dim=-1)
        return (weights.unsqueeze(-1) * experts).sum(1) + x


class CrossNetworkV2(nn.Module):
    """``num_layers`` stacked :class:`CrossLayerV2` (all with ``x0`` = the input):
    ``[B, d] -> [B, d]``."""

    def __init__(
        self, dim: int, num_layers: int, *, rank: int | None = None, num_experts: int = 1
    ) -> None:
        super().__init__()
        if isinstance(num_layers, bool) or not isinstance(num_layers, int) or num_layers < 1:
            raise ValueError(f"num_layers: expected a positive int, got {num_layers!r}")
        self.layers = nn.ModuleList(
            CrossLayerV2(dim, rank=rank, num_experts=num_experts) for _ in range(num_layers)
        )

    def forward(self, x0: torch.Tensor) -> torch.Tensor:
        x = x0
        for layer in self.layers:
            x = layer(x0, x)
        return x


class DCNv2(_CTRModel):
    """DCN-v2 (Wang et al., 2021) on global feature ids.

    ``x0 = [e_1, ..., e_F, dense]`` (``d = F * embed_dim + dense_dim``) goes through a
    :class:`CrossNetworkV2` of ``cross_layers`` layers and an MLP:

    * ``structure="parallel"`` (default, as the paper's Criteo setting and FuxiCTR/BARS):
      ``logit = w^T [cross(x0), MLP(x0)] + b``;
    * ``structure="stacked"``: ``logit = w^T MLP(cross(x0)) + b``.

    ``cross_rank=None`` gives full-rank cross layers; an int ``r`` low-rank ones, mixed over
    ``num_experts`` experts when ``num_experts > 1`` (see :class:`CrossLayerV2`). The cross
    network already holds the first-order terms, so the table has ``embed_dim`` columns.
    Other arguments as :class:`WideAndDeep`.
    """

    def __init__(
        self,
        num_fields: int,
        embed_dim: int,
        *,
        dense_dim: int = 0,
        hidden: Sequence[int] = (128, 64),
        embedding_factory: EmbeddingFactory,
        cross_layers: int = 3,
        cross_rank: int | None = None,
        num_experts: int = 1,
        structure: str = "parallel",
        dropout: float = 0.0,
    ) -> None:
        super().__init__(num_fields, embed_dim, dense_dim, embedding_factory, embed_dim, dropout)
        if structure not in ("parallel", "stacked"):
            raise ValueError(f"structure: expected 'parallel' or 'stacked', got {structure!r}")
        self.structure = structure
        in_dim = num_fields * embed_dim + dense_dim
        self.cross = CrossNetworkV2(in_dim, cross_layers, rank=cross_rank, num_experts=num_experts)
        self.deep, width = _mlp(in_dim, _check_hidden(hidden), dropout)
        self.head = nn.Linear(width + in_dim if structure == "parallel" else width, 1)

    def forward(
        self, ids: torch.Tensor, dense: torch.Tensor | None = None, now: float | None = None
    ) -> torch.Tensor:
        rows, dense = self._lookup(ids, dense, now)
        x0 = rows.flatten(1)
        if self.dense_dim:
            x0 = torch.cat([x0, dense], dim=1)
        if self.structure == "parallel":
            out = torch.cat([self.cross(x0), self.deep(x0)], dim=1)
        else:
            out = self.deep(self.cross(x0))
        return self.head(out).squeeze(-1)
