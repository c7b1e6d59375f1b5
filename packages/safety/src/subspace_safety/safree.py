"""SAFREE: training-free filtering of prompt tokens that lie close to a toxic concept subspace.

Yoon et al., "SAFREE: Training-Free and Adaptive Guard for Safe Text-to-Image and Video
Generation", ICLR 2025 (arXiv:2410.12761). Everything here works on plain tensors, so any
text encoder can be used:

* token embeddings ``E`` [B, T, d] — what the generator is conditioned on (CLIP's
  ``last_hidden_state`` for Stable Diffusion, a MiniLM tower's hidden states, ...);
* a content mask [B, T] (bool) — the prompt's real tokens, i.e. not padding / BOS / EOS;
  only these can be flagged;
* leave-one-out prompt embeddings ``p_{\\i}`` [B, T, d] — the pooled embedding of the prompt
  with token ``i`` masked (row ``i``; other rows ignored). :class:`HFTextEncoder` computes
  them by re-encoding; without an encoder, :func:`leave_one_out_mean_pool` approximates them
  by mean-pooling the other tokens.

The method, step by step (``U`` the concept basis, ``P_c = U Uᵀ``):

1. *Token proximity.* ``d_i = dist(p_{\\i}, concept)``: if removing token ``i`` moves the
   prompt *away* from the concept subspace, token ``i`` carried the concept. Distances are
   relative (sine of the angle) by default so that embeddings of different norms compare.
2. *Adaptive threshold.* Token ``i`` is flagged when ``d_i > τ_i`` with
   ``τ_i = (1 + α) · mean_{j ≠ i} d_j`` (``threshold="loo_mean"``, the reference code's rule)
   or ``τ = mean_j d_j + α · std_j d_j`` (``threshold="mean_std"``, population std); means run
   over the content tokens of the same prompt.
3. *Projection within the input space.* Flagged tokens become ``(I − P_c) P_in e_i``, where
   ``P_in`` projects on the span of the prompt's own leave-one-out embeddings
   (``input_space="loo"``, reference) or of its content token embeddings
   (``input_space="tokens"``); every other token is returned *unchanged* (bit for bit).
4. *Self-validating filtering* (:func:`self_validating_steps`): with
   ``β = 1 − mean_i cos(e_i, ẽ_i)`` over content tokens (``ẽ`` = every token projected as in
   step 3), the filtered embedding conditions the first ``t' = round(γ · σ(s · (β − m)))``
   denoising steps. ``s = 1, m = 0`` is the paper's ``γ · sigmoid(1 − cos)``; the reference
   code uses ``s = 50, m = 0.5333`` (:data:`REFERENCE_SVF_SLOPE`, :data:`REFERENCE_SVF_MIDPOINT`).
5. *Adaptive latent re-attention* (:func:`fourier_reattention`): in the 2-D Fourier domain,
   low-frequency coefficients of the filtered-prompt output whose magnitude exceeds the
   original prompt's are multiplied by ``s < 1``; high frequencies are untouched.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple, Protocol, runtime_checkable

import torch

from subspace_safety.concept import ConceptSubspace

__all__ = [
    "REFERENCE_SVF_MIDPOINT",
    "REFERENCE_SVF_SLOPE",
    "HFTextEncoder",
    "SafreeResult",
    "TokenEncoder",
    "adaptive_threshold",
    "concept_subspace_from_prompts",
    "embedding_dissimilarity",
    "fourier_reattention",
    "leave_one_out_mean_pool",
    "low_frequency_band",
    "project_in_input_space",
    "safree_filter_prompts",
    "safree_filter_tokens",
    "self_validating_steps",
    "token_distances",
]

#: Slope and midpoint of the reference code's step schedule ``σ(2k(10β − t))``, k=2.5, t=5.333.
REFERENCE_SVF_SLOPE = 50.0
REFERENCE_SVF_MIDPOINT = 0.5333

_THRESHOLD_RULES = ("loo_mean", "mean_std")
_INPUT_SPACES = ("loo", "tokens")


# ------------------------------------------------------------------------------ checks
def _check_tokens(name: str, value: object) -> torch.Tensor:
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"{name}: expected a torch.Tensor [B, T, d], got {type(value).__name__}")
    if not value.dtype.is_floating_point:
        raise TypeError(f"{name}: expected a floating-point tensor, got {value.dtype}")
    if value.ndim != 3:
        raise ValueError(f"{name}: expected [B, T, d], got shape {tuple(value.shape)}")
    return value


def _check_mask(mask: object, batch_time: tuple[int, int], name: str = "mask") -> torch.Tensor:
    if not isinstance(mask, torch.Tensor):
        raise TypeError(f"{name}: expected a torch.Tensor [B, T], got {type(mask).__name__}")
    if tuple(mask.shape) != batch_time:
        raise ValueError(f"{name}: expected shape {batch_time} ([B, T] of the token "
                         f"embeddings), got {tuple(mask.shape)}")
    if mask.dtype != torch.bool:
        if mask.dtype.is_floating_point or not bool(((mask == 0) | (mask == 1)).all()):
            raise ValueError(f"{name}: expected a bool or 0/1 integer tensor, got {mask.dtype}")
        mask = mask.bool()
    return mask


def _check_concept(concept: object, d: int) -> ConceptSubspace:
    if not isinstance(concept, ConceptSubspace):
        raise TypeError(f"concept: expected a ConceptSubspace, got {type(concept).__name__}")
    if concept.dim != d:
        raise ValueError(f"concept: ambient dimension {concept.dim} does not match the "
                         f"embeddings' d = {d}")
    return concept


def _check_nonneg(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) \
            or not math.isfinite(value) or value < 0:
        raise ValueError(f"{name}: expected a finite float >= 0, got {value!r}")
    return float(value)


# ------------------------------------------------------------------------------ steps 1-3
def leave_one_out_mean_pool(token_embeddings: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Encoder-free leave-one-out prompt embeddings: mean of the *other* content tokens.

    Args:
        token_embeddings: [B, T, d].
        mask: [B, T] content mask.

    Returns:
        [B, T, d]: row ``i`` is the mean of ``E[b, j]`` over content ``j ≠ i``; zero where
        ``i`` is not a content token or no other content token exists.
    """
    E = _check_tokens("token_embeddings", token_embeddings)
    m = _check_mask(mask, tuple(E.shape[:2])).to(E.dtype).unsqueeze(-1)
    total = (E * m).sum(dim=1, keepdim=True)
    count = m.sum(dim=1, keepdim=True)
    others = count - m
    loo = (total - E * m) / others.clamp_min(1)
    return torch.where((m > 0) & (others > 0), loo, torch.zeros_like(loo))


def token_distances(loo_embeddings: torch.Tensor, mask: torch.Tensor,
                    concept: ConceptSubspace, *, relative: bool = True) -> torch.Tensor:
    """``d_i = dist(p_{\\i}, concept)`` per token: [B, T, d] -> [B, T] (0 off the mask).

    Large ``d_i`` means removing token ``i`` moves the prompt away from the concept.
    """
    P = _check_tokens("loo_embeddings", loo_embeddings)
    m = _check_mask(mask, tuple(P.shape[:2]))
    c = _check_concept(concept, P.shape[-1])
    dist = c.distance(P, relative=relative)
    return torch.where(m, dist, torch.zeros_like(dist))


def adaptive_threshold(distances: torch.Tensor, mask: torch.Tensor, *, alpha: float = 0.01,
                       rule: str = "loo_mean") -> torch.Tensor:
    """Per-token threshold ``τ`` [B, T] for :func:`token_distances` (flag where ``d > τ``).

    ``rule="loo_mean"``: ``τ_i = (1 + α) · mean_{j ≠ i} d_j`` over content tokens (``+inf``
    for a prompt with a single content token: nothing to compare with).
    ``rule="mean_std"``: ``τ = mean_j d_j + α · std_j d_j`` (population std), the same for
    every token of a prompt. Off-mask entries are ``+inf``.
    """
    if not isinstance(distances, torch.Tensor) or distances.ndim != 2 \
            or not distances.dtype.is_floating_point:
        raise ValueError(f"distances: expected a float tensor [B, T], got "
                         f"{getattr(distances, 'shape', type(distances).__name__)}")
    m = _check_mask(mask, tuple(distances.shape))
    a = _check_nonneg("alpha", alpha)
    if rule not in _THRESHOLD_RULES:
        raise ValueError(f"rule: expected one of {_THRESHOLD_RULES}, got {rule!r}")
    mf = m.to(distances.dtype)
    d = distances * mf
    count = mf.sum(dim=1, keepdim=True)
    inf = torch.full_like(distances, math.inf)
    if rule == "loo_mean":
        others = count - mf
        tau = (1 + a) * (d.sum(dim=1, keepdim=True) - d) / others.clamp_min(1)
        return torch.where(m & (others > 0), tau, inf)
    mean = d.sum(dim=1, keepdim=True) / count.clamp_min(1)
    var = ((distances - mean).square() * mf).sum(dim=1, keepdim=True) / count.clamp_min(1)
    tau = (mean + a * var.sqrt()).expand_as(distances)
    return torch.where(m, tau, inf)


def _input_basis(vectors: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """Orthonormal basis [d, r] of the rows ``vectors[keep]`` (numerical rank, float64)."""
    rows = vectors[keep].to(torch.float64)
    if rows.shape[0] == 0:
        return rows.new_zeros(vectors.shape[-1], 0)
    _, S, Vh = torch.linalg.svd(rows, full_matrices=False)
    if float(S[0]) == 0.0:
        return rows.new_zeros(vectors.shape[-1], 0)
    r = int((max(rows.shape) * torch.finfo(vectors.dtype).eps * S[0] < S).sum())
    return Vh[:r].T


def project_in_input_space(token_embeddings: torch.Tensor, concept: ConceptSubspace,
                           input_vectors: torch.Tensor, input_mask: torch.Tensor
                           ) -> torch.Tensor:
    """``(I − P_c) P_in e`` for every token: [B, T, d] -> [B, T, d].

    ``P_in`` projects on the span of ``input_vectors[b][input_mask[b]]`` (per prompt), the
    prompt's own input space; ``I − P_c`` removes the concept (for a centred concept, its
    :meth:`ConceptSubspace.project_out`). The result has no component along the concept basis.
    """
    E = _check_tokens("token_embeddings", token_embeddings)
    V = _check_tokens("input_vectors", input_vectors)
    if V.shape[0] != E.shape[0] or V.shape[-1] != E.shape[-1]:
        raise ValueError(f"input_vectors: expected [B, N, d] with B={E.shape[0]}, "
                         f"d={E.shape[-1]}, got {tuple(V.shape)}")
    keep = _check_mask(input_mask, tuple(V.shape[:2]), "input_mask")
    c = _check_concept(concept, E.shape[-1])
    out = []
    for b in range(E.shape[0]):
        Q = _input_basis(V[b], keep[b])
        inside = (E[b].to(torch.float64) @ Q) @ Q.T
        out.append(c.project_out(inside.to(E.dtype)))
    return torch.stack(out)


class SafreeResult(NamedTuple):
    """Output of :func:`safree_filter_tokens` (all [B, T, ...] aligned with the input)."""

    filtered: torch.Tensor     #: [B, T, d] flagged tokens projected, others bit-identical
    projected: torch.Tensor    #: [B, T, d] every token projected (used for self-validation)
    flagged: torch.Tensor      #: [B, T] bool, flagged content tokens
    distances: torch.Tensor    #: [B, T] leave-one-out distances d_i (0 off the mask)
    thresholds: torch.Tensor   #: [B, T] adaptive thresholds τ_i (+inf off the mask)
    mask: torch.Tensor         #: [B, T] bool content mask used


def safree_filter_tokens(token_embeddings: torch.Tensor, mask: torch.Tensor,
                         concept: ConceptSubspace, *,
                         loo_embeddings: torch.Tensor | None = None, alpha: float = 0.01,
                         threshold: str = "loo_mean", relative: bool = True,
                         input_space: str = "loo") -> SafreeResult:
    """SAFREE steps 1-3 on token embeddings (see the module docstring).

    Args:
        token_embeddings: ``E`` [B, T, d], the conditioning the generator sees.
        mask: [B, T] content mask (real prompt tokens; padding/BOS/EOS excluded).
        concept: toxic :class:`ConceptSubspace` in the same ``d``-space.
        loo_embeddings: [B, T, d] leave-one-out prompt embeddings; default
            :func:`leave_one_out_mean_pool` of ``E``.
        alpha: threshold margin ``α >= 0`` (reference default 0.01).
        threshold: ``"loo_mean"`` or ``"mean_std"`` (:func:`adaptive_threshold`).
        relative: compare directions (sine of the angle) rather than raw distances.
        input_space: ``"loo"`` (span of the leave-one-out embeddings, as the reference) or
            ``"tokens"`` (span of the content token embeddings).

    Returns:
        :class:`SafreeResult`. Unflagged tokens of ``filtered`` equal ``E`` exactly.
    """
    E = _check_tokens("token_embeddings", token_embeddings)
    m = _check_mask(mask, tuple(E.shape[:2]))
    _check_concept(concept, E.shape[-1])
    if input_space not in _INPUT_SPACES:
        raise ValueError(f"input_space: expected one of {_INPUT_SPACES}, got {input_space!r}")
    if loo_embeddings is None:
        loo = leave_one_out_mean_pool(E, m)
    else:
        loo = _check_tokens("loo_embeddings", loo_embeddings)
        if loo.shape != E.shape:
            raise ValueError(f"loo_embeddings: expected shape {tuple(E.shape)} (like "
                             f"token_embeddings), got {tuple(loo.shape)}")
    dist = token_distances(loo, m, concept, relative=relative)
    tau = adaptive_threshold(dist, m, alpha=alpha, rule=threshold)
    flagged = m & (dist > tau)
    space = loo if input_space == "loo" else E
    projected = project_in_input_space(E, concept, space, m)
    filtered = torch.where(flagged.unsqueeze(-1), projected, E)
    return SafreeResult(filtered, projected, flagged, dist, tau, m)


# ------------------------------------------------------------------------------ step 4
def embedding_dissimilarity(original: torch.Tensor, filtered: torch.Tensor,
                            mask: torch.Tensor) -> torch.Tensor:
    """``β = 1 − mean_i cos(e_i, ẽ_i)`` over each prompt's content tokens: [B, T, d] x2 -> [B].

    A prompt without content tokens gets ``β = 0``.
    """
    E = _check_tokens("original", original)
    F = _check_tokens("filtered", filtered)
    if F.shape != E.shape:
        raise ValueError(f"filtered: expected shape {tuple(E.shape)}, got {tuple(F.shape)}")
    m = _check_mask(mask, tuple(E.shape[:2])).to(torch.float64)
    cos = torch.nn.functional.cosine_similarity(E.double(), F.double(), dim=-1, eps=1e-12)
    mean_cos = (cos * m).sum(dim=1) / m.sum(dim=1).clamp_min(1)
    beta = torch.where(m.sum(dim=1) > 0, 1 - mean_cos, torch.zeros_like(mean_cos))
    return beta.to(E.dtype)


def self_validating_steps(original: torch.Tensor, filtered: torch.Tensor, mask: torch.Tensor,
                          *, gamma: float = 10.0, slope: float = 1.0,
                          midpoint: float = 0.0) -> torch.Tensor:
    """Number of denoising steps that use the filtered embedding, per prompt: [B] int64.

    ``t' = round(γ · σ(slope · (β − midpoint)))`` with ``β`` from
    :func:`embedding_dissimilarity`. The defaults give the paper's ``γ · sigmoid(1 − cos)``;
    pass :data:`REFERENCE_SVF_SLOPE` / :data:`REFERENCE_SVF_MIDPOINT` for the reference code's
    sharper schedule (close to 0 steps for nearly unchanged prompts). Steps ``0 … t' − 1`` use
    the filtered embedding (the reference code's loop runs ``i <= t'``, one step more).
    """
    g = _check_nonneg("gamma", gamma)
    for name, value in (("slope", slope), ("midpoint", midpoint)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) \
                or not math.isfinite(value):
            raise ValueError(f"{name}: expected a finite float, got {value!r}")
    beta = embedding_dissimilarity(original, filtered, mask).double()
    return torch.round(g * torch.sigmoid(slope * (beta - midpoint))).to(torch.int64)


# ------------------------------------------------------------------------------ step 5
def low_frequency_band(height: int, width: int, radius: int,
                       device: torch.device | str | None = None) -> torch.Tensor:
    """Bool mask [H, W] (unshifted FFT layout) of frequencies with ``|k_y|, |k_x| <= radius``.

    The band is symmetric under ``k -> −k``, so scaling it keeps a real signal real.
    """
    for name, value in (("height", height), ("width", width)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name}: expected an int >= 1, got {value!r}")
    if isinstance(radius, bool) or not isinstance(radius, int) or radius < 0:
        raise ValueError(f"radius: expected an int >= 0, got {radius!r}")
    ky = (torch.fft.fftfreq(height, device=device) * height).round().abs()
    kx = (torch.fft.fftfreq(width, device=device) * width).round().abs()
    return (ky[:, None] <= radius) & (kx[None, :] <= radius)


def fourier_reattention(filtered: torch.Tensor, original: torch.Tensor, *, radius: int = 1,
                        scale: float = 0.9) -> torch.Tensor:
    """Adaptive latent re-attention: damp low frequencies the filtered branch amplifies.

    With ``F = FFT2(filtered)``, ``O = FFT2(original)`` over the last two dims, the output is
    ``IFFT2(F')`` where ``F' = scale · F`` on the low band (:func:`low_frequency_band`) where
    ``|F| > |O|``, and ``F' = F`` everywhere else (high frequencies untouched). Where the two
    inputs are equal nothing changes.

    Args:
        filtered: [..., H, W] real tensor from the filtered prompt (e.g. its noise prediction).
        original: same shape, from the original prompt.
        radius: low-band half-width in integer frequencies (0 = DC only).
        scale: ``s`` in [0, 1].

    Returns:
        Tensor like ``filtered`` (computed in float32 at least).
    """
    if not isinstance(filtered, torch.Tensor) or not filtered.dtype.is_floating_point \
            or filtered.ndim < 2:
        raise ValueError(f"filtered: expected a real float tensor [..., H, W], got "
                         f"{getattr(filtered, 'shape', type(filtered).__name__)}")
    if not isinstance(original, torch.Tensor) or original.shape != filtered.shape:
        raise ValueError(f"original: expected shape {tuple(filtered.shape)}, got "
                         f"{getattr(original, 'shape', type(original).__name__)}")
    s = _check_nonneg("scale", scale)
    if s > 1:
        raise ValueError(f"scale: expected a float in [0, 1], got {scale!r}")
    H, W = filtered.shape[-2:]
    band = low_frequency_band(H, W, radius, device=filtered.device)
    work = torch.promote_types(filtered.dtype, torch.float32)
    Ff = torch.fft.fft2(filtered.to(work))
    Fo = torch.fft.fft2(original.to(work))
    damp = band & (Ff.abs() > Fo.abs())
    Ff = torch.where(damp, Ff * s, Ff)
    return torch.fft.ifft2(Ff).real.to(filtered.dtype)


# ------------------------------------------------------------------------------ encoders
@runtime_checkable
class TokenEncoder(Protocol):
    """What SAFREE needs from a text encoder.

    ``encode_tokens(prompts) -> (token_embeddings [B, T, d], content_mask [B, T] bool)``
    is required. Optional, used when present:
    ``encode_pooled(prompts) -> [B, d]`` (concept subspaces; default masked mean of tokens)
    and ``encode_leave_one_out(prompts) -> [B, T, d]`` (default
    :func:`leave_one_out_mean_pool`). A bare callable with ``encode_tokens``'s signature also
    works wherever an encoder is accepted.
    """

    def encode_tokens(self, prompts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]: ...


EncoderLike = TokenEncoder | Callable[[Sequence[str]], tuple[torch.Tensor, torch.Tensor]]


def _encode_tokens(encoder: EncoderLike, prompts: Sequence[str]
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    fn = getattr(encoder, "encode_tokens", None) or encoder
    if not callable(fn):
        raise TypeError(f"encoder: expected an object with encode_tokens(prompts) or a callable, "
                        f"got {type(encoder).__name__}")
    out = fn(list(prompts))
    if not (isinstance(out, tuple) and len(out) == 2):
        raise TypeError("encoder: encode_tokens must return (token_embeddings [B, T, d], "
                        f"mask [B, T]), got {type(out).__name__}")
    E = _check_tokens("encode_tokens(...)[0]", out[0])
    return E, _check_mask(out[1], tuple(E.shape[:2]), "encode_tokens(...)[1]")


def _check_prompts(name: str, prompts: object) -> list[str]:
    if isinstance(prompts, str):
        prompts = [prompts]
    if not isinstance(prompts, Sequence) or not prompts \
            or not all(isinstance(p, str) for p in prompts):
        raise TypeError(f"{name}: expected a non-empty list of strings, got {prompts!r}")
    return list(prompts)


def concept_subspace_from_prompts(encoder: EncoderLike, prompts: Sequence[str], *,
                                  rank: int | None = None, energy: float | None = None,
                                  center: bool = False,
                                  metadata: dict[str, str] | None = None) -> ConceptSubspace:
    """:class:`ConceptSubspace` of the pooled embeddings of ``prompts`` (SAFREE's toxic space).

    Uses ``encoder.encode_pooled`` when it exists, else the masked mean of
    ``encode_tokens``. The prompts are stored in the metadata (``"prompts"``, newline-joined).
    """
    prompts = _check_prompts("prompts", prompts)
    pooled_fn = getattr(encoder, "encode_pooled", None)
    with torch.no_grad():
        if pooled_fn is not None:
            pooled = pooled_fn(prompts)
        else:
            E, m = _encode_tokens(encoder, prompts)
            mf = m.to(E.dtype).unsqueeze(-1)
            pooled = (E * mf).sum(1) / mf.sum(1).clamp_min(1)
    meta = {"prompts": "\n".join(prompts), **(metadata or {})}
    return ConceptSubspace.from_embeddings(pooled.detach(), rank=rank, energy=energy,
                                           center=center, metadata=meta)


def safree_filter_prompts(encoder: EncoderLike, prompts: Sequence[str],
                          concept: ConceptSubspace, **kwargs: Any) -> SafreeResult:
    """Encode ``prompts`` and run :func:`safree_filter_tokens` (``kwargs`` are passed on).

    Leave-one-out embeddings come from ``encoder.encode_leave_one_out`` when it exists.
    """
    prompts = _check_prompts("prompts", prompts)
    with torch.no_grad():
        E, m = _encode_tokens(encoder, prompts)
        loo_fn = getattr(encoder, "encode_leave_one_out", None)
        loo = loo_fn(prompts) if loo_fn is not None else None
    return safree_filter_tokens(E, m, concept, loo_embeddings=loo, **kwargs)


class HFTextEncoder:
    """:class:`TokenEncoder` over a Hugging Face tokenizer + text encoder.

    Works with ``CLIPTextModel`` (Stable Diffusion's encoder; pooled = ``pooler_output``, the
    EOS state) and any ``transformers`` encoder such as BERT/MiniLM (pooled = mean of
    ``last_hidden_state`` over the attention mask). Token embeddings are
    ``last_hidden_state``, padded to ``max_length`` (default ``tokenizer.model_max_length``),
    like diffusers' ``encode_prompt`` with ``clip_skip=None``.

    Args:
        tokenizer: a ``transformers`` tokenizer.
        model: the text encoder (``output.last_hidden_state`` [B, T, d]).
        max_length: pad/truncate length.
        pooling: ``"auto"``, ``"pooler"`` or ``"mean"``.
        mask_token_id: id that replaces a token for the leave-one-out pass; default the
            tokenizer's mask token, else 0 (what the SAFREE reference code uses for CLIP).
        pass_attention_mask: give the model the attention mask; default False for CLIP
            models without ``config.use_attention_mask`` (as diffusers does), True otherwise.
    """

    def __init__(self, tokenizer: Any, model: torch.nn.Module, *, max_length: int | None = None,
                 pooling: str = "auto", mask_token_id: int | None = None,
                 pass_attention_mask: bool | None = None) -> None:
        if not callable(tokenizer):
            raise TypeError(f"tokenizer: expected a callable HF tokenizer, got "
                            f"{type(tokenizer).__name__}")
        if not isinstance(model, torch.nn.Module):
            raise TypeError(f"model: expected a torch.nn.Module, got {type(model).__name__}")
        if pooling not in ("auto", "pooler", "mean"):
            raise ValueError(f"pooling: expected 'auto', 'pooler' or 'mean', got {pooling!r}")
        is_clip = type(model).__name__.startswith("CLIP")
        self.tokenizer = tokenizer
        self.model = model
        self.max_length = int(max_length or tokenizer.model_max_length)
        if self.max_length > 100_000:
            raise ValueError("max_length: the tokenizer has no model_max_length; pass max_length")
        self.pooling = ("pooler" if is_clip else "mean") if pooling == "auto" else pooling
        tok_mask = getattr(tokenizer, "mask_token_id", None)
        self.mask_token_id = int(mask_token_id if mask_token_id is not None
                                 else (tok_mask if tok_mask is not None else 0))
        if pass_attention_mask is None:
            pass_attention_mask = (not is_clip) or bool(
                getattr(model.config, "use_attention_mask", False))
        self.pass_attention_mask = pass_attention_mask
        self._special = torch.tensor(sorted(set(tokenizer.all_special_ids)), dtype=torch.long)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def tokenize(self, prompts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """``(input_ids [B, T], attention_mask [B, T])`` padded to ``max_length``."""
        enc = self.tokenizer(_check_prompts("prompts", prompts), padding="max_length",
                             max_length=self.max_length, truncation=True, return_tensors="pt")
        return enc["input_ids"], enc["attention_mask"]

    def content_mask(self, input_ids: torch.Tensor, attention_mask: torch.Tensor
                     ) -> torch.Tensor:
        """[B, T] bool: attended tokens that are not special tokens (BOS/EOS/CLS/SEP/PAD)."""
        return attention_mask.bool() & ~torch.isin(input_ids, self._special)

    def forward_ids(self, input_ids: torch.Tensor, attention_mask: torch.Tensor
                    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(last_hidden_state [B, T, d], pooled [B, d])`` for token ids."""
        ids = input_ids.to(self.device)
        att = attention_mask.to(self.device)
        out = self.model(ids, attention_mask=att if self.pass_attention_mask else None)
        hidden = out.last_hidden_state
        if self.pooling == "pooler":
            pooled = getattr(out, "pooler_output", None)
            if pooled is None:
                raise ValueError(f"pooling: 'pooler' but {type(self.model).__name__} returns no "
                                 "pooler_output; use pooling='mean'")
        else:
            w = att.to(hidden.dtype).unsqueeze(-1)
            pooled = (hidden * w).sum(1) / w.sum(1).clamp_min(1)
        return hidden, pooled

    @torch.no_grad()
    def encode_tokens(self, prompts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """``(token_embeddings [B, T, d], content_mask [B, T])``."""
        ids, att = self.tokenize(prompts)
        hidden, _ = self.forward_ids(ids, att)
        return hidden, self.content_mask(ids, att).to(hidden.device)

    @torch.no_grad()
    def encode_pooled(self, prompts: Sequence[str]) -> torch.Tensor:
        """Pooled prompt embeddings [B, d]."""
        ids, att = self.tokenize(prompts)
        return self.forward_ids(ids, att)[1]

    @torch.no_grad()
    def encode_leave_one_out(self, prompts: Sequence[str]) -> torch.Tensor:
        """[B, T, d]: row ``i`` = pooled embedding with content token ``i`` replaced by
        ``mask_token_id`` (zeros for non-content rows). One encoder batch per prompt."""
        ids, att = self.tokenize(prompts)
        content = self.content_mask(ids, att)
        out: torch.Tensor | None = None
        for b in range(ids.shape[0]):
            positions = content[b].nonzero().flatten()
            if positions.numel() == 0:
                continue
            masked = ids[b].repeat(positions.numel(), 1)
            masked[torch.arange(positions.numel()), positions] = self.mask_token_id
            _, pooled = self.forward_ids(masked, att[b].repeat(positions.numel(), 1))
            if out is None:
                out = pooled.new_zeros(ids.shape[0], ids.shape[1], pooled.shape[-1])
            out[b, positions.to(out.device)] = pooled
        if out is None:
            _, pooled = self.forward_ids(ids[:1], att[:1])
            out = pooled.new_zeros(ids.shape[0], ids.shape[1], pooled.shape[-1])
        return out
