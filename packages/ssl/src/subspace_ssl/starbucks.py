"""Starbucks: 2D Matryoshka embeddings (sub-layers x sub-dimensions) for all-MiniLM-L6-v2.

Zhuang, Wang, Koopman & Zuccon 2024, "Starbucks: Improved Training for 2D Matryoshka
Embeddings" (arXiv:2410.13230). A 2D Matryoshka encoder gives a usable sentence embedding
at every (layer ``l``, dimension ``d``) pair: run only the first ``l`` transformer layers,
pool, keep the first ``d`` coordinates. Starbucks' fine-tuning ("Starbucks Representation
Learning") replaces 2DMSE's random sampling of one sub-model per step by a *fixed* list of
(layer, dim) pairs ordered from small to large, and averages the loss over all of them every
step; each smaller pair also matches the full-size pair's similarity distribution (a KL
term, teacher = the full pair's detached scores).

Definitions (what :func:`pair_embedding` and the tests pin down):

* pooled states ``P [L, B, D]``: ``P[l-1]`` is the attention-mask-aware mean over tokens
  of the hidden state *after* transformer layer ``l`` (1-based; the embedding layer's
  output is not a sub-model). One forward pass with ``output_hidden_states`` gives all
  ``L`` of them (:func:`pooled_layers`).
* the embedding at ``(l, d)``: ``normalize(P[l-1, :, :d])`` -- truncate, *then*
  L2-normalise (sentence-transformers' Matryoshka convention: cosine similarity of the
  truncated vectors).

Schedule (:data:`STARBUCKS_SCHEDULE`). The paper's BERT-base list is
``(2,32),(4,64),(6,128),(8,256),(10,512),(12,768)``: six pairs on the diagonal, layers
evenly spaced up to the full depth, dims doubling from 32 except the last step (x1.5, capped
by the model width). MiniLM has 6 layers and 384 dims, so the layers are 1..6; 32 -> 384 is
only 3.6 doublings, so we keep the paper's smallest size (32, below which embeddings are too
coarse to be useful) and its doubling for the first three steps, then grow by <= x1.5 per
layer like the paper's last step: ``(1,32),(2,64),(3,128),(4,192),(5,256),(6,384)``. Every
pair but (4,192) lies on the evaluation grid (layers 1..6 x dims {32,64,128,256,384});
the alternative exact rescaling of the paper's ratios, ``(1,16),...,(6,384)``, would spend
a sixth of the loss on 16-dim embeddings nobody evaluates.

Loss (:func:`starbucks_loss`): for each pair ``(l, d)`` of the schedule, symmetric in-batch
InfoNCE between the two views' embeddings at ``(l, d)`` (temperature ``tau``), plus, for
every pair but the full one, ``kl_weight * KL(softmax(S_full / tau) || softmax(S_ld / tau))``
row-wise (the reference code's retrieval variant; the teacher scores ``S_full`` are
detached); the total is the *mean* over the pairs (the reference sums; a mean keeps the
learning rate independent of the schedule's length). An optional extension (off by
default, ``distill_pairs``/``distill_weight``) adds the same full-size self-distillation
for pairs off the schedule (the rest of the evaluation grid): the schedule trains only the
diagonal, and fine-tuning the lower layers moves what the untrained pairs (e.g. layer 6
truncated to 32 dims) inherited from the pretrained model.

Adapter (:class:`StarbucksMiniLM`): the base MiniLM stays frozen and is loaded from its
verified package files (:mod:`subspace_core.text_encoders`); what differs is LoRA (Hu et
al. 2021) on the attention and feed-forward linears of every layer, ``W x + (alpha/r) B A x``
with ``A`` random and ``B = 0`` at initialisation (so a fresh adapter changes nothing). Only
the LoRA factors are in the module's ``state_dict`` (the zoo checkpoint: rank 8 on all six
linears of the six layers = 331,776 parameters, 1.3 MB as float32 safetensors).
"""

from __future__ import annotations

import itertools
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from subspace_core.text_encoders import MINILM_HIDDEN, MINILM_LAYERS, mean_pool

__all__ = [
    "DEFAULT_TARGETS",
    "GRID_DIMS",
    "GRID_LAYERS",
    "LORA_TARGETS",
    "STARBUCKS_SCHEDULE",
    "LoRAWeights",
    "MiniLMAdapter",
    "StarbucksLoss",
    "StarbucksMiniLM",
    "check_schedule",
    "info_nce",
    "load_adapter",
    "pair_embedding",
    "pooled_layers",
    "save_adapter",
    "starbucks_loss",
    "starbucks_minilm",
]

#: The fixed size-ordered (layer, dim) pairs trained every step (see the module docstring).
STARBUCKS_SCHEDULE: tuple[tuple[int, int], ...] = (
    (1, 32),
    (2, 64),
    (3, 128),
    (4, 192),
    (5, 256),
    (6, 384),
)
#: The evaluation grid: every layer x these dims.
GRID_LAYERS: tuple[int, ...] = tuple(range(1, MINILM_LAYERS + 1))
GRID_DIMS: tuple[int, ...] = (32, 64, 128, 256, 384)

#: LoRA target name -> path of the ``nn.Linear`` inside one ``BertLayer``.
LORA_TARGETS: dict[str, str] = {
    "query": "attention.self.query",
    "key": "attention.self.key",
    "value": "attention.self.value",
    "attn_out": "attention.output.dense",
    "ffn_in": "intermediate.dense",
    "ffn_out": "output.dense",
}
DEFAULT_TARGETS: tuple[str, ...] = tuple(LORA_TARGETS)


def check_schedule(
    schedule: Sequence[tuple[int, int]],
    num_layers: int = MINILM_LAYERS,
    hidden: int = MINILM_HIDDEN,
) -> tuple[tuple[int, int], ...]:
    """Validate a Starbucks schedule and return it as a tuple of ``(layer, dim)`` int pairs.

    A schedule is non-empty, each ``1 <= layer <= num_layers`` and ``1 <= dim <= hidden``,
    ordered from small to large: both coordinates non-decreasing and no pair repeated
    (the paper's "from Demi to Trenta"), and it must end at the full size
    ``(num_layers, hidden)`` (the teacher of the KL term).
    """
    try:
        pairs = tuple((int(layer), int(dim)) for layer, dim in schedule)
    except (TypeError, ValueError) as exc:
        raise ValueError(
            f"schedule: expected (layer, dim) integer pairs, got {schedule!r}"
        ) from exc
    if not pairs:
        raise ValueError("schedule: expected at least one (layer, dim) pair, got none")
    for layer, dim in pairs:
        if not (1 <= layer <= num_layers and 1 <= dim <= hidden):
            raise ValueError(
                f"schedule: expected layers in [1, {num_layers}] and dims in [1, {hidden}], "
                f"got ({layer}, {dim})"
            )
    for a, b in itertools.pairwise(pairs):
        if not (b[0] >= a[0] and b[1] >= a[1] and b != a):
            raise ValueError(
                f"schedule: expected pairs ordered from small to large (layer and dim "
                f"non-decreasing, no repeats), got {a} before {b}"
            )
    if pairs[-1] != (num_layers, hidden):
        raise ValueError(
            f"schedule: expected the last pair to be the full size {(num_layers, hidden)}, "
            f"got {pairs[-1]}"
        )
    return pairs


# --------------------------------------------------------------------------------------
# embeddings
# --------------------------------------------------------------------------------------


def pooled_layers(
    encoder: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor
) -> torch.Tensor:
    """Mean-pooled hidden states of every transformer layer, ``[L, B, D]``, in one pass.

    ``encoder`` is a ``transformers`` BERT-style model; ``input_ids``/``attention_mask`` are
    ``[B, T]``. ``out[l - 1]`` pools the output of layer ``l`` over the positions where the
    mask is 1 (the embedding layer's output, ``hidden_states[0]``, is skipped).
    """
    if input_ids.dim() != 2 or attention_mask.shape != input_ids.shape:
        raise ValueError(
            f"input_ids/attention_mask: expected two [B, T] tensors of one shape, got "
            f"{tuple(input_ids.shape)} and {tuple(attention_mask.shape)}"
        )
    out = encoder(input_ids=input_ids, attention_mask=attention_mask, output_hidden_states=True)
    return torch.stack([mean_pool(h, attention_mask) for h in out.hidden_states[1:]])


def pair_embedding(pooled: torch.Tensor, layer: int, dim: int) -> torch.Tensor:
    """The (``layer``, ``dim``) embedding ``[B, dim]`` of pooled states ``[L, B, D]``.

    ``normalize(pooled[layer - 1, :, :dim])``: the first ``dim`` coordinates of layer
    ``layer``'s mean pool (1-based), L2-normalised after the truncation.
    """
    if pooled.dim() != 3:
        raise ValueError(f"pooled: expected [L, B, D], got {tuple(pooled.shape)}")
    num_layers, _, hidden = pooled.shape
    if not (1 <= layer <= num_layers and 1 <= dim <= hidden):
        raise ValueError(
            f"(layer, dim): expected layer in [1, {num_layers}] and dim in [1, {hidden}], "
            f"got ({layer}, {dim})"
        )
    return F.normalize(pooled[layer - 1, :, :dim], dim=-1)


# --------------------------------------------------------------------------------------
# loss
# --------------------------------------------------------------------------------------


def info_nce(a: torch.Tensor, b: torch.Tensor, temperature: float) -> torch.Tensor:
    """Symmetric in-batch InfoNCE of L2-normalised views ``a``, ``b`` ``[B, d]`` (scalar).

    Row ``i`` of ``a`` is positive with row ``i`` of ``b``; every other row of the other
    view is a negative. Mean of the two directions' cross-entropies over ``a @ b.T / tau``.
    """
    if a.shape != b.shape or a.dim() != 2:
        raise ValueError(
            f"a, b: expected two [B, d] tensors of one shape, got {tuple(a.shape)} and "
            f"{tuple(b.shape)}"
        )
    logits = a @ b.T / temperature
    target = torch.arange(len(a), device=a.device)
    return 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target))


@dataclass(frozen=True)
class StarbucksLoss:
    """The Starbucks loss and its parts (floats, for logging): ``contrastive[(l, d)]`` and
    ``kl[(l, d)]`` per schedule pair (no KL entry for the full pair)."""

    loss: torch.Tensor
    contrastive: dict[tuple[int, int], float]
    kl: dict[tuple[int, int], float]


def starbucks_loss(
    pooled_a: torch.Tensor,
    pooled_b: torch.Tensor,
    schedule: Sequence[tuple[int, int]] = STARBUCKS_SCHEDULE,
    *,
    temperature: float = 0.05,
    kl_weight: float = 1.0,
    distill_pairs: Sequence[tuple[int, int]] = (),
    distill_weight: float = 0.0,
) -> StarbucksLoss:
    """Starbucks' loss of two views' pooled states ``[L, B, D]`` (see the module docstring).

    ``mean over (l, d) in schedule of [InfoNCE(e_a, e_b) + kl_weight * KL_ld]``, with
    ``e = pair_embedding(pooled, l, d)``; ``KL_ld`` (0 for the last, full-size pair) is the
    batch-mean KL divergence of the rows of ``softmax(e_a e_b^T / tau)`` at ``(l, d)`` from
    the detached full-size ones, both directions averaged.

    Optional extension (off by default): ``distill_weight * mean over distill_pairs of
    KL_ld`` for pairs *off* the schedule (e.g. the rest of an evaluation grid), the same
    full-size self-distillation without a contrastive term. The forward pass already gives
    every layer, so the extra cost is a few ``B x B`` score matrices; pairs that are in the
    schedule are skipped.
    """
    if pooled_a.shape != pooled_b.shape or pooled_a.dim() != 3:
        raise ValueError(
            f"pooled_a, pooled_b: expected two [L, B, D] tensors of one shape, got "
            f"{tuple(pooled_a.shape)} and {tuple(pooled_b.shape)}"
        )
    if temperature <= 0:
        raise ValueError(f"temperature: expected > 0, got {temperature}")
    if kl_weight < 0 or distill_weight < 0:
        raise ValueError(
            f"kl_weight, distill_weight: expected >= 0, got {kl_weight}, {distill_weight}"
        )
    num_layers, _, hidden = pooled_a.shape
    pairs = check_schedule(schedule, num_layers, hidden)
    extra = []
    for layer, dim in distill_pairs:
        pair = (int(layer), int(dim))
        if not (1 <= pair[0] <= num_layers and 1 <= pair[1] <= hidden):
            raise ValueError(
                f"distill_pairs: expected layers in [1, {num_layers}] and dims in "
                f"[1, {hidden}], got {pair}"
            )
        if pair not in pairs and pair not in extra:
            extra.append(pair)
    full = pairs[-1]
    with torch.no_grad():  # the teacher: full-size scores, no gradient (reference code)
        fa, fb = pair_embedding(pooled_a, *full), pair_embedding(pooled_b, *full)
        teacher = fa @ fb.T / temperature
        teacher_rows = (F.log_softmax(teacher, dim=1), F.log_softmax(teacher.T, dim=1))

    def kl_to_teacher(ea: torch.Tensor, eb: torch.Tensor) -> torch.Tensor:
        scores = ea @ eb.T / temperature
        return 0.5 * sum(
            F.kl_div(F.log_softmax(s, dim=1), t, reduction="batchmean", log_target=True)
            for s, t in zip((scores, scores.T), teacher_rows, strict=True)
        )

    total = pooled_a.new_zeros(())
    contrastive: dict[tuple[int, int], float] = {}
    kl: dict[tuple[int, int], float] = {}
    for pair in pairs:
        ea, eb = pair_embedding(pooled_a, *pair), pair_embedding(pooled_b, *pair)
        term = info_nce(ea, eb, temperature)
        contrastive[pair] = float(term.detach())
        if pair != full and kl_weight > 0:
            div = kl_to_teacher(ea, eb)
            kl[pair] = float(div.detach())
            term = term + kl_weight * div
        total = total + term
    total = total / len(pairs)
    if extra and distill_weight > 0:
        distill = pooled_a.new_zeros(())
        for pair in extra:
            div = kl_to_teacher(pair_embedding(pooled_a, *pair), pair_embedding(pooled_b, *pair))
            kl[pair] = float(div.detach())
            distill = distill + div
        total = total + distill_weight * distill / len(extra)
    return StarbucksLoss(total, contrastive, kl)


# --------------------------------------------------------------------------------------
# the LoRA adapter
# --------------------------------------------------------------------------------------


class LoRAWeights(nn.Module):
    """One LoRA update ``delta(x) = (alpha / r) * x A^T B^T`` of a linear ``in -> out``.

    ``A`` ``[r, in]`` is drawn like ``nn.Linear``'s weight (Kaiming-uniform, a = sqrt(5)),
    ``B`` ``[out, r]`` starts at zero, so the update is exactly 0 until ``B`` is trained.
    """

    def __init__(self, in_features: int, out_features: int, rank: int, alpha: float) -> None:
        super().__init__()
        self.scale = alpha / rank
        self.A = nn.Parameter(torch.empty(rank, in_features))
        self.B = nn.Parameter(torch.zeros(out_features, rank))
        nn.init.kaiming_uniform_(self.A, a=math.sqrt(5))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(F.linear(x, self.A), self.B) * self.scale


class MiniLMAdapter(nn.Module):
    """LoRA factors for ``targets`` of every layer: ``layers[i][target]`` is a
    :class:`LoRAWeights` (state-dict keys ``layers.<i>.<target>.A`` / ``.B``)."""

    def __init__(
        self,
        num_layers: int = MINILM_LAYERS,
        hidden: int = MINILM_HIDDEN,
        intermediate: int = 4 * MINILM_HIDDEN,
        *,
        rank: int = 8,
        alpha: float = 16.0,
        targets: Sequence[str] = DEFAULT_TARGETS,
    ) -> None:
        super().__init__()
        if rank < 1:
            raise ValueError(f"rank: expected an integer >= 1, got {rank!r}")
        if alpha <= 0:
            raise ValueError(f"alpha: expected > 0, got {alpha!r}")
        unknown = [t for t in targets if t not in LORA_TARGETS]
        if unknown or not targets or len(set(targets)) != len(targets):
            raise ValueError(
                f"targets: expected distinct names among {list(LORA_TARGETS)}, got {list(targets)}"
            )
        self.rank, self.alpha, self.targets = int(rank), float(alpha), tuple(targets)
        shapes = {
            "query": (hidden, hidden),
            "key": (hidden, hidden),
            "value": (hidden, hidden),
            "attn_out": (hidden, hidden),
            "ffn_in": (hidden, intermediate),
            "ffn_out": (intermediate, hidden),
        }
        self.layers = nn.ModuleList(
            nn.ModuleDict({t: LoRAWeights(*shapes[t], self.rank, self.alpha) for t in self.targets})
            for _ in range(num_layers)
        )

    def config(self) -> dict[str, Any]:
        """The constructor arguments (stored in checkpoints' metadata)."""
        return {"rank": self.rank, "alpha": self.alpha, "targets": list(self.targets),
                "num_layers": len(self.layers)}  # fmt: skip


class _LoRAHook:
    """Forward hook adding a LoRA update to a frozen linear's output.

    A class rather than a closure so that ``copy.deepcopy`` of a :class:`StarbucksMiniLM`
    rewires the copied encoder's hooks to the copied adapter (closures are not copied).
    """

    def __init__(self, weights: LoRAWeights) -> None:
        self.weights = weights

    def __call__(self, module: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor):
        return output + self.weights(inputs[0])


class StarbucksMiniLM(nn.Module):
    """all-MiniLM-L6-v2 (frozen) + a LoRA adapter; a 2D Matryoshka sentence encoder.

    Only :attr:`adapter` is a submodule: ``state_dict()``/``parameters()`` hold just the LoRA
    factors, so a checkpoint stores only what differs from the base model, and an optimizer
    over ``parameters()`` trains only the adapter. The base encoder is held aside (moved by
    ``.to()``, switched by ``.train()``/``.eval()`` with the wrapper) and receives the
    adapter through forward hooks on its linears; an encoder can carry one adapter only.

    Args:
        encoder: a ``transformers`` BertModel (default: :func:`load_minilm` from the verified
            package files); frozen in place. Pass a copy to build a second model.
        tokenizer: its tokenizer (default: :func:`load_minilm_tokenizer`), for
            :meth:`tokenize`/:meth:`encode`.
        rank, alpha, targets: LoRA settings (:class:`MiniLMAdapter`).
        max_length: tokens per text in :meth:`tokenize` (default 128; longer texts are cut).
    """

    def __init__(
        self,
        encoder: nn.Module | None = None,
        tokenizer: Any = None,
        *,
        rank: int = 8,
        alpha: float = 16.0,
        targets: Sequence[str] = DEFAULT_TARGETS,
        max_length: int = 128,
    ) -> None:
        super().__init__()
        from subspace_core.text_encoders import load_minilm, load_minilm_tokenizer

        encoder = load_minilm() if encoder is None else encoder
        if getattr(encoder, "_starbucks_adapter", False):
            raise ValueError(
                "encoder: it already carries a Starbucks adapter; pass copy.deepcopy(encoder)"
            )
        if max_length < 2:
            raise ValueError(f"max_length: expected >= 2 tokens (CLS and SEP), got {max_length}")
        cfg = encoder.config
        self.adapter = MiniLMAdapter(
            cfg.num_hidden_layers, cfg.hidden_size, cfg.intermediate_size,
            rank=rank, alpha=alpha, targets=targets,
        )  # fmt: skip
        encoder.requires_grad_(False)
        for i, layer in enumerate(encoder.encoder.layer):
            for target in self.adapter.targets:
                linear = layer.get_submodule(LORA_TARGETS[target])
                linear.register_forward_hook(_LoRAHook(self.adapter.layers[i][target]))
        encoder._starbucks_adapter = True
        # held outside the module tree: not in state_dict(), parameters() or children()
        object.__setattr__(self, "_encoder", encoder)
        object.__setattr__(
            self, "_tokenizer", load_minilm_tokenizer() if tokenizer is None else tokenizer
        )
        self.max_length = int(max_length)
        self.num_layers = int(cfg.num_hidden_layers)
        self.hidden = int(cfg.hidden_size)
        self.train(encoder.training)

    @property
    def encoder(self) -> nn.Module:
        """The (frozen, adapter-carrying) base encoder."""
        return self._encoder

    @property
    def tokenizer(self) -> Any:
        return self._tokenizer

    def _apply(self, fn, recurse: bool = True):
        super()._apply(fn, recurse)
        self._encoder._apply(fn, recurse)
        return self

    def train(self, mode: bool = True):
        super().train(mode)
        self._encoder.train(mode)
        return self

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Pooled states of every layer ``[L, B, D]`` (:func:`pooled_layers`, unnormalised)."""
        return pooled_layers(self._encoder, input_ids, attention_mask)

    def tokenize(
        self, texts: Sequence[str], max_length: int | None = None
    ) -> dict[str, torch.Tensor]:
        """``input_ids``/``attention_mask`` ``[B, T]`` of ``texts`` (cut at ``max_length``
        tokens including CLS/SEP, padded to the longest)."""
        if isinstance(texts, str):
            raise TypeError("texts: expected a sequence of strings, got a single str")
        batch = self._tokenizer(
            list(texts), padding=True, truncation=True,
            max_length=max_length or self.max_length, return_tensors="pt",
        )  # fmt: skip
        return {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}

    @torch.no_grad()
    def encode(
        self,
        texts: Sequence[str],
        *,
        batch_size: int = 64,
        max_length: int | None = None,
        progress: bool = False,
    ) -> torch.Tensor:
        """Pooled states ``[L, N, D]`` (float32, CPU) of ``texts``, in eval mode.

        Texts are batched by token length (padding costs compute) and returned in input
        order; ``pair_embedding(out, l, d)`` gives any sub-embedding without re-encoding.
        """
        from subspace_core.console import progress_bar

        if isinstance(texts, str):
            raise TypeError("texts: expected a sequence of strings, got a single str")
        if batch_size < 1:
            raise ValueError(f"batch_size: expected >= 1, got {batch_size}")
        max_length = max_length or self.max_length
        device = next(self.parameters()).device
        out = torch.zeros(self.num_layers, len(texts), self.hidden)
        if not len(texts):
            return out
        # tokenise once (cut at max_length), then pad each length-sorted batch
        ids = self._tokenizer(list(texts), truncation=True, max_length=max_length)["input_ids"]
        order = sorted(range(len(texts)), key=lambda i: len(ids[i]))
        was_training = self.training
        self.eval()
        try:
            with progress_bar(enabled=progress) as bar:
                task = bar.add_task("encoding", total=len(texts))
                for start in range(0, len(order), batch_size):
                    idx = order[start : start + batch_size]
                    batch = self._tokenizer.pad(
                        {"input_ids": [ids[i] for i in idx]}, return_tensors="pt"
                    )
                    batch = {k: batch[k] for k in ("input_ids", "attention_mask")}
                    pooled = self(**{k: v.to(device) for k, v in batch.items()})
                    out[:, idx] = pooled.float().cpu()
                    bar.advance(task, len(idx))
        finally:
            self.train(was_training)
        return out

    def embed(
        self, texts: Sequence[str], layer: int | None = None, dim: int | None = None, **kwargs: Any
    ) -> torch.Tensor:
        """L2-normalised (``layer``, ``dim``) embeddings ``[N, dim]`` of ``texts`` (default:
        the full size); ``kwargs`` go to :meth:`encode`."""
        layer = self.num_layers if layer is None else layer
        dim = self.hidden if dim is None else dim
        return pair_embedding(self.encode(texts, **kwargs), layer, dim)


def starbucks_minilm(
    *,
    rank: int = 8,
    alpha: float = 16.0,
    targets: Sequence[str] = DEFAULT_TARGETS,
    max_length: int = 128,
) -> StarbucksMiniLM:
    """Starbucks all-MiniLM-L6-v2 (zoo builder): the base from its package files + a fresh
    LoRA adapter (rank 8 on the six linears of each layer; outputs equal the base's)."""
    return StarbucksMiniLM(rank=rank, alpha=alpha, targets=targets, max_length=max_length)


def _base_sha256() -> str:
    from subspace_core.data.datasets.minilm import MINILM_FILES

    return next(f.sha256 for f in MINILM_FILES if f.name == "model.safetensors")


def save_adapter(
    model: StarbucksMiniLM, path: str | Path, *, metadata: Mapping[str, Any] | None = None
) -> str:
    """Write ``model``'s adapter (its whole ``state_dict``) as safetensors; returns the sha256.

    Atomic, with a ``.sha256`` sidecar (:func:`subspace_core.zoo.save_state_dict`). The
    metadata records the LoRA config, the base weights' sha256 and ``max_length``, which
    :func:`load_adapter` uses to rebuild the model.
    """
    from subspace_core.zoo import save_state_dict

    if not isinstance(model, StarbucksMiniLM):
        raise TypeError(f"model: expected a StarbucksMiniLM, got {type(model).__name__}")
    meta = {
        "format": "subspace_ssl.starbucks/1",
        "adapter": model.adapter.config(),
        "base": "all_minilm_l6_v2",
        "base_sha256": _base_sha256(),
        "max_length": model.max_length,
        **dict(metadata or {}),
    }
    return save_state_dict(model.state_dict(), path, metadata=meta)


def load_adapter(
    path: str | Path, *, sha256: str | None = None, encoder: nn.Module | None = None
) -> StarbucksMiniLM:
    """Rebuild a :class:`StarbucksMiniLM` from an adapter file written by :func:`save_adapter`.

    The file is checked against ``sha256`` (default: its ``.sha256`` sidecar) before it is
    parsed; an adapter made for other base weights is refused. ``encoder`` defaults to a
    fresh :func:`load_minilm`.
    """
    from safetensors import safe_open

    from subspace_core.zoo import load_state_dict

    path = Path(path)
    if sha256 is None:
        sidecar = path.with_name(path.name + ".sha256")
        if not sidecar.is_file():
            raise FileNotFoundError(f"{path}: pass sha256= or keep the {sidecar.name} sidecar")
        sha256 = sidecar.read_text().split()[0]
    state = load_state_dict(path, sha256=sha256)  # verifies the bytes first
    with safe_open(str(path), framework="pt") as fh:
        meta = json.loads((fh.metadata() or {}).get("subzoo", "{}"))
    if meta.get("format") != "subspace_ssl.starbucks/1":
        raise ValueError(
            f"{path}: not a Starbucks adapter (metadata format {meta.get('format')!r})"
        )
    if meta.get("base_sha256") != _base_sha256():
        raise ValueError(
            f"{path}: adapter made for base weights {meta.get('base_sha256')}, expected the "
            f"all_minilm_l6_v2 model.safetensors {_base_sha256()}"
        )
    cfg = meta["adapter"]
    model = StarbucksMiniLM(
        encoder, rank=cfg["rank"], alpha=cfg["alpha"], targets=cfg["targets"],
        max_length=int(meta.get("max_length", 128)),
    )  # fmt: skip
    model.load_state_dict(state, strict=True)
    return model
