"""SAFREE inside a diffusers text-to-image pipeline (Stable Diffusion 1.x/2.x style).

:class:`SafreeStableDiffusion` wraps a ``StableDiffusionPipeline`` (diffusers 0.42) without
subclassing or patching it:

1. the prompt is encoded with the pipeline's own ``encode_prompt``; leave-one-out pooled
   embeddings come from :class:`~subspace_safety.safree.HFTextEncoder` over the pipeline's
   tokenizer and text encoder (same padding, so token positions line up);
2. :func:`~subspace_safety.safree.safree_filter_tokens` replaces the flagged tokens;
3. the pipeline is called with the *filtered* ``prompt_embeds`` and a
   ``callback_on_step_end`` that, after step ``t' − 1`` (self-validating filtering, per
   prompt), returns the original embeddings. SD's pipeline lists ``prompt_embeds`` in
   ``_callback_tensor_inputs`` and reads it back from the callback's output; under
   classifier-free guidance that tensor is ``cat([negative, positive])``, and only the positive
   half is swapped;
4. latent re-attention: while filtered steps run, a forward hook on the UNet re-runs it with
   the original embeddings and replaces its output (the noise prediction) by
   :func:`~subspace_safety.safree.fourier_reattention` of the two.

Limits, honestly:

* Re-attention acts on the UNet's *output* (noise prediction), not on the decoder-block
  features that the reference code rewires FreeU-style inside the UNet; it costs one extra
  UNet pass per filtered step. Turn it off with ``reattention=False``.
* Only pipelines whose ``encode_prompt`` returns ``(prompt_embeds, negative_prompt_embeds)``
  and whose ``_callback_tensor_inputs`` include ``prompt_embeds`` are supported (SD 1.x/2.x
  and close relatives). SDXL/SD3 also condition on pooled embeddings, which are not filtered
  here, so they are refused rather than half-filtered.
* With no token flagged the filtered embeddings equal the originals bit for bit, so the
  filtered run reproduces the unfiltered one exactly (same seed).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import torch

from subspace_safety.concept import ConceptSubspace
from subspace_safety.safree import (
    HFTextEncoder,
    SafreeResult,
    TokenEncoder,
    concept_subspace_from_prompts,
    fourier_reattention,
    safree_filter_tokens,
    self_validating_steps,
)

__all__ = ["SafreePlan", "SafreeSettings", "SafreeStableDiffusion"]


@dataclass(frozen=True)
class SafreeSettings:
    """Knobs of :class:`SafreeStableDiffusion` (see :mod:`subspace_safety.safree`).

    ``alpha``/``threshold``/``relative``/``input_space`` go to ``safree_filter_tokens``;
    ``gamma``/``slope``/``midpoint`` to ``self_validating_steps`` (``self_validation=False``
    filters every step); ``reattention``/``radius``/``scale`` to ``fourier_reattention``.
    """

    alpha: float = 0.01
    threshold: str = "loo_mean"
    relative: bool = True
    input_space: str = "loo"
    self_validation: bool = True
    gamma: float = 10.0
    slope: float = 1.0
    midpoint: float = 0.0
    reattention: bool = True
    radius: int = 1
    scale: float = 0.9


class SafreePlan(NamedTuple):
    """What a SAFREE call decided, per prompt (before ``num_images_per_prompt`` repeats)."""

    prompt_embeds: torch.Tensor           #: [B, T, d] original conditioning
    filtered_embeds: torch.Tensor         #: [B, T, d] flagged tokens projected
    negative_prompt_embeds: torch.Tensor  #: [B, T, d]
    steps: torch.Tensor                   #: [B] int64, denoising steps using filtered_embeds
    result: SafreeResult                  #: flags, distances, thresholds


@dataclass
class _SwapState:
    original_cond: torch.Tensor      # [N, T, d] after num_images_per_prompt repeats
    filtered_cond: torch.Tensor      # [N, T, d]
    negative: torch.Tensor           # [N, T, d]
    steps: torch.Tensor              # [N]
    cfg: bool = True
    in_rerun: bool = field(default=False)

    def cond_for_step(self, i: int) -> torch.Tensor:
        use_filtered = (i < self.steps).view(-1, 1, 1).to(self.filtered_cond.device)
        return torch.where(use_filtered, self.filtered_cond, self.original_cond)

    def full(self, cond: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.negative, cond]) if self.cfg else cond


class SafreeStableDiffusion:
    """Run a diffusers Stable Diffusion pipeline with SAFREE (see the module docstring).

    Args:
        pipe: a ``StableDiffusionPipeline`` (or one with the same ``encode_prompt`` and
            step-callback contract).
        concept: the toxic :class:`ConceptSubspace` in the text encoder's space, or a list of
            concept prompts to build it from (pooled embeddings, full span).
        settings: :class:`SafreeSettings`.
        encoder: :class:`~subspace_safety.safree.TokenEncoder` giving content masks and
            leave-one-out embeddings aligned with ``pipe.encode_prompt``; default
            ``HFTextEncoder(pipe.tokenizer, pipe.text_encoder)``.

    Example::

        safe = SafreeStableDiffusion(pipe, ["nudity", "naked person"])
        image = safe("a photo of ...", num_inference_steps=50, generator=g).images[0]
        safe.last_plan.result.flagged  # which tokens were filtered
    """

    def __init__(self, pipe: Any, concept: ConceptSubspace | Sequence[str],
                 settings: SafreeSettings | None = None,
                 encoder: TokenEncoder | None = None) -> None:
        for attr in ("encode_prompt", "unet", "tokenizer", "text_encoder"):
            if not hasattr(pipe, attr):
                raise TypeError(f"pipe: expected a diffusers text-to-image pipeline with "
                                f"`{attr}`, got {type(pipe).__name__}")
        if "prompt_embeds" not in getattr(pipe, "_callback_tensor_inputs", ()):
            raise TypeError(f"pipe: {type(pipe).__name__} does not expose prompt_embeds to "
                            "callback_on_step_end; SAFREE's step schedule needs it")
        if type(pipe).__name__.startswith(("StableDiffusionXL", "StableDiffusion3")):
            raise TypeError(f"pipe: {type(pipe).__name__} also conditions on pooled embeddings, "
                            "which this integration does not filter")
        self.pipe = pipe
        self.settings = settings or SafreeSettings()
        if not isinstance(self.settings, SafreeSettings):
            raise TypeError(f"settings: expected SafreeSettings, got "
                            f"{type(self.settings).__name__}")
        self.encoder = encoder or HFTextEncoder(pipe.tokenizer, pipe.text_encoder)
        if not isinstance(concept, ConceptSubspace):
            concept = concept_subspace_from_prompts(self.encoder, concept)
        self.concept = concept
        self.last_plan: SafreePlan | None = None

    # ------------------------------------------------------------------ planning
    @torch.no_grad()
    def plan(self, prompt: str | Sequence[str],
             negative_prompt: str | Sequence[str] | None = None) -> SafreePlan:
        """Encode, filter and schedule ``prompt`` without generating (see :class:`SafreePlan`)."""
        prompts = [prompt] if isinstance(prompt, str) else list(prompt)
        device = self.pipe._execution_device
        cond, neg = self.pipe.encode_prompt(prompts, device, 1, True, negative_prompt)
        E, mask = self.encoder.encode_tokens(prompts)
        if E.shape[:2] != cond.shape[:2]:
            raise ValueError(f"encoder: token layout {tuple(E.shape[:2])} does not match the "
                             f"pipeline's prompt_embeds {tuple(cond.shape[:2])}")
        loo_fn = getattr(self.encoder, "encode_leave_one_out", None)
        loo = loo_fn(prompts) if loo_fn is not None else None
        s = self.settings
        # Filter in float32 at least (half-precision pipelines): unflagged tokens survive the
        # round trip bit for bit because half -> float32 -> half is exact.
        work = torch.promote_types(cond.dtype, torch.float32)
        concept = self.concept.to(device=cond.device, dtype=work)
        result = safree_filter_tokens(
            cond.to(work), mask.to(cond.device), concept,
            loo_embeddings=None if loo is None else loo.to(cond.device, work),
            alpha=s.alpha, threshold=s.threshold, relative=s.relative,
            input_space=s.input_space)
        if s.self_validation:
            steps = self_validating_steps(cond.to(work), result.projected, result.mask,
                                          gamma=s.gamma, slope=s.slope, midpoint=s.midpoint)
        else:
            steps = torch.full((len(prompts),), torch.iinfo(torch.int64).max, dtype=torch.int64)
        # A prompt without flagged tokens is conditioned on its original embedding throughout.
        steps = torch.where(result.flagged.any(dim=1).cpu(), steps.cpu(), torch.zeros_like(steps))
        return SafreePlan(cond, result.filtered.to(cond.dtype), neg, steps, result)

    # ------------------------------------------------------------------ generation
    def __call__(self, prompt: str | Sequence[str],
                 negative_prompt: str | Sequence[str] | None = None, *,
                 enabled: bool = True, num_images_per_prompt: int = 1,
                 callback_on_step_end: Callable[..., dict] | None = None,
                 callback_on_step_end_tensor_inputs: Sequence[str] = ("latents",),
                 **pipe_kwargs: Any) -> Any:
        """Generate with SAFREE (``enabled=False``: same call, original embeddings).

        Other keyword arguments go to the pipeline (``num_inference_steps``, ``generator``,
        ``guidance_scale``, ``height``, ``width``, ``output_type`` ...). A user
        ``callback_on_step_end`` runs after SAFREE's own. The plan is kept in
        :attr:`last_plan`.
        """
        for banned in ("prompt_embeds", "negative_prompt_embeds"):
            if banned in pipe_kwargs:
                raise TypeError(f"{banned}: SAFREE computes the embeddings; pass prompts")
        if isinstance(num_images_per_prompt, bool) or not isinstance(num_images_per_prompt, int) \
                or num_images_per_prompt < 1:
            raise ValueError(f"num_images_per_prompt: expected an int >= 1, "
                             f"got {num_images_per_prompt!r}")
        plan = self.plan(prompt, negative_prompt)
        self.last_plan = plan
        n = num_images_per_prompt

        def rep(x: torch.Tensor) -> torch.Tensor:
            # Prompt-major order, the layout the pipeline itself gives repeated prompts.
            return x.repeat_interleave(n, dim=0)

        unet_cfg = getattr(self.pipe.unet, "config", None)
        cfg = float(pipe_kwargs.get("guidance_scale", 7.5)) > 1 and \
            getattr(unet_cfg, "time_cond_proj_dim", None) is None
        state = _SwapState(rep(plan.prompt_embeds), rep(plan.filtered_embeds),
                           rep(plan.negative_prompt_embeds), rep(plan.steps), cfg=cfg)
        if not enabled:
            state.steps = torch.zeros_like(state.steps)
        inputs = list(dict.fromkeys([*callback_on_step_end_tensor_inputs, "prompt_embeds"]))

        def on_step_end(pipe: Any, i: int, t: Any, kwargs: dict) -> dict:
            state.cfg = bool(pipe.do_classifier_free_guidance)
            out: dict = {}
            if callback_on_step_end is not None:
                out = dict(callback_on_step_end(pipe, i, t, kwargs) or {})
            # Conditioning for the *next* step; overrides a user's prompt_embeds edit.
            out["prompt_embeds"] = state.full(state.cond_for_step(i + 1))
            return out

        hook = None
        if enabled and self.settings.reattention and bool((state.steps > 0).any()):
            hook = self.pipe.unet.register_forward_hook(self._reattention_hook(state),
                                                        with_kwargs=True)
        try:
            return self.pipe(prompt_embeds=state.cond_for_step(0),
                             negative_prompt_embeds=state.negative,
                             num_images_per_prompt=1,
                             callback_on_step_end=on_step_end,
                             callback_on_step_end_tensor_inputs=inputs, **pipe_kwargs)
        finally:
            if hook is not None:
                hook.remove()

    def _reattention_hook(self, state: _SwapState) -> Callable:
        radius, scale = self.settings.radius, self.settings.scale

        def hook(module: torch.nn.Module, args: tuple, kwargs: dict, output: Any) -> Any:
            if state.in_rerun:
                return None
            hidden = kwargs.get("encoder_hidden_states")
            if hidden is None and len(args) > 2:
                hidden = args[2]
            if hidden is None:
                return None
            original = state.full(state.original_cond)
            if original.shape != hidden.shape:
                original = state.original_cond  # no classifier-free guidance in this call
            if original.shape != hidden.shape or torch.equal(original.to(hidden), hidden):
                return None
            kwargs = {**kwargs, "encoder_hidden_states": original.to(hidden)}
            if len(args) > 2:
                args = (*args[:2], *args[3:])
            state.in_rerun = True
            try:
                reference = module(*args, **kwargs)
            finally:
                state.in_rerun = False
            sample = output[0] if isinstance(output, tuple) else output.sample
            ref = reference[0] if isinstance(reference, tuple) else reference.sample
            new = fourier_reattention(sample, ref, radius=radius, scale=scale)
            if isinstance(output, tuple):
                return (new, *output[1:])
            output.sample = new
            return output

        return hook
