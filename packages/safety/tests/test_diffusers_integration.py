"""SAFREE in a tiny, randomly initialised Stable Diffusion pipeline built from configs (offline)."""

from __future__ import annotations

import json

import pytest
import torch

diffusers = pytest.importorskip("diffusers")
transformers = pytest.importorskip("transformers")

from subspace_safety.concept import ConceptSubspace  # noqa: E402
from subspace_safety.diffusers_integration import (  # noqa: E402
    SafreeSettings,
    SafreeStableDiffusion,
)
from subspace_safety.safree import HFTextEncoder  # noqa: E402

WORDS = ["a", "photo", "of", "cat", "dog", "naked", "nude", "person", "red"]
MAX_LEN = 12


def _bpe_files(tmp_path):
    """A CLIP BPE vocabulary in which every word of WORDS is reachable by merges."""
    letters = sorted({ch for w in WORDS for ch in w})
    vocab: dict[str, int] = {}
    for tok in [*letters, *(ch + "</w>" for ch in letters)]:
        vocab.setdefault(tok, len(vocab))
    merges: list[str] = []
    for word in WORDS:
        pieces = [*word[:-1], word[-1] + "</w>"]
        while len(pieces) > 1:
            merge = f"{pieces[0]} {pieces[1]}"
            if merge not in merges:
                merges.append(merge)
            pieces = [pieces[0] + pieces[1], *pieces[2:]]
            vocab.setdefault(pieces[0], len(vocab))
    vocab["<|startoftext|>"] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)
    (tmp_path / "vocab.json").write_text(json.dumps(vocab))
    (tmp_path / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n")
    return tmp_path / "vocab.json", tmp_path / "merges.txt", vocab


@pytest.fixture(scope="module")
def pipe(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("tiny_clip_tokenizer")
    vocab_file, merges_file, vocab = _bpe_files(tmp)
    tokenizer = transformers.CLIPTokenizer(str(vocab_file), str(merges_file),
                                           model_max_length=MAX_LEN)
    torch.manual_seed(0)
    text_encoder = transformers.CLIPTextModel(transformers.CLIPTextConfig(
        vocab_size=len(vocab), hidden_size=32, intermediate_size=37, num_hidden_layers=2,
        num_attention_heads=4, max_position_embeddings=MAX_LEN,
        bos_token_id=vocab["<|startoftext|>"], eos_token_id=vocab["<|endoftext|>"],
        pad_token_id=vocab["<|endoftext|>"]))
    unet = diffusers.UNet2DConditionModel(
        sample_size=8, in_channels=4, out_channels=4, layers_per_block=1,
        block_out_channels=(16, 32), norm_num_groups=8, cross_attention_dim=32,
        attention_head_dim=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"))
    vae = diffusers.AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(16, 32),
        norm_num_groups=8, layers_per_block=1,
        down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
        up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"))
    scheduler = diffusers.DDIMScheduler(beta_start=0.00085, beta_end=0.012,
                                        beta_schedule="scaled_linear", clip_sample=False,
                                        set_alpha_to_one=False, steps_offset=1)
    p = diffusers.StableDiffusionPipeline(
        vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet,
        scheduler=scheduler, safety_checker=None, feature_extractor=None,
        requires_safety_checker=False)
    p.set_progress_bar_config(disable=True)
    return p


PROMPT = "a photo of naked cat"
CALL = {"num_inference_steps": 2, "height": 16, "width": 16, "output_type": "np",
        "guidance_scale": 5.0}


def _run(safe, enabled, **kw):
    return safe(PROMPT, enabled=enabled, generator=torch.Generator().manual_seed(0),
                **{**CALL, **kw}).images


def _concept_flagging(pipe, position: int) -> ConceptSubspace:
    """A concept spanned by every leave-one-out embedding except ``position``'s.

    Then d_j = 0 for j ≠ position and d_position > 0, so exactly that token is flagged.
    """
    enc = HFTextEncoder(pipe.tokenizer, pipe.text_encoder)
    _, mask = enc.encode_tokens([PROMPT])
    loo = enc.encode_leave_one_out([PROMPT])[0]
    others = [i for i in mask[0].nonzero().flatten().tolist() if i != position]
    return ConceptSubspace.from_embeddings(loo[others].double()).to(torch.float32)


def test_adapter_lines_up_with_pipeline_encoding(pipe):
    enc = HFTextEncoder(pipe.tokenizer, pipe.text_encoder)
    E, mask = enc.encode_tokens([PROMPT])
    cond, _ = pipe.encode_prompt([PROMPT], "cpu", 1, True)
    assert E.shape == cond.shape == (1, MAX_LEN, 32)
    torch.testing.assert_close(E, cond)
    # BOS, 5 words, EOS, padding: only the words are content tokens.
    assert mask[0].tolist() == [False] + [True] * 5 + [False] * (MAX_LEN - 6)


def test_unflagged_prompt_reproduces_the_plain_pipeline(pipe):
    # A huge margin flags nothing: the filtered run must equal the unfiltered one bit for bit.
    safe = SafreeStableDiffusion(pipe, ["naked", "nude person"], SafreeSettings(alpha=1e6))
    plain = pipe(PROMPT, generator=torch.Generator().manual_seed(0), **CALL).images
    off = _run(safe, enabled=False)
    on = _run(safe, enabled=True)
    assert not bool(safe.last_plan.result.flagged.any())
    assert int(safe.last_plan.steps[0]) == 0
    assert on.shape == (1, 16, 16, 3)
    assert (plain == off).all() and (on == off).all()


def test_flagged_token_changes_the_image(pipe):
    position = 4                                            # "naked"
    safe = SafreeStableDiffusion(pipe, _concept_flagging(pipe, position),
                                 SafreeSettings(reattention=False))
    off = _run(safe, enabled=False)
    on = _run(safe, enabled=True)
    plan = safe.last_plan
    assert plan.result.flagged[0].nonzero().flatten().tolist() == [position]
    assert int(plan.steps[0]) >= 2
    assert not (on == off).all()
    # Only the flagged token's embedding was touched.
    keep = ~plan.result.flagged[0]
    assert torch.equal(plan.filtered_embeds[0, keep], plan.prompt_embeds[0, keep])


def test_step_callback_swaps_back_after_t_prime_and_reattention_reruns(pipe):
    position = 4
    # gamma = 1 ⇒ t' = round(σ(β)) = 1 for β > 0: step 0 filtered, step 1 original.
    safe = SafreeStableDiffusion(pipe, _concept_flagging(pipe, position),
                                 SafreeSettings(gamma=1.0, reattention=True))
    seen: list[torch.Tensor] = []
    handle = pipe.unet.register_forward_pre_hook(
        lambda m, a, kw: seen.append(kw["encoder_hidden_states"].clone()), with_kwargs=True)
    try:
        _run(safe, enabled=True)
    finally:
        handle.remove()
    plan = safe.last_plan
    assert int(plan.steps[0]) == 1
    neg = plan.negative_prompt_embeds
    filtered = torch.cat([neg, plan.filtered_embeds])
    original = torch.cat([neg, plan.prompt_embeds])
    # Step 0: filtered call, then the re-attention hook's rerun with the original; step 1: original.
    assert len(seen) == 3
    assert torch.equal(seen[0], filtered)
    assert torch.equal(seen[1], original) and torch.equal(seen[2], original)


def test_refuses_wrong_inputs(pipe):
    with pytest.raises(TypeError, match="pipe"):
        SafreeStableDiffusion(object(), ["naked"])
    safe = SafreeStableDiffusion(pipe, ["naked"])
    with pytest.raises(TypeError, match="prompt_embeds"):
        safe(PROMPT, prompt_embeds=torch.zeros(1, MAX_LEN, 32))
    with pytest.raises(ValueError, match="concept: ambient dimension"):
        SafreeStableDiffusion(pipe, ConceptSubspace.from_embeddings(torch.randn(2, 8))).plan(
            PROMPT)


def test_batch_rows_change_only_where_flagged_with_pndm(pipe):
    pndm = diffusers.PNDMScheduler.from_config(pipe.scheduler.config, skip_prk_steps=True)
    p2 = diffusers.StableDiffusionPipeline(**{**pipe.components, "scheduler": pndm})
    p2.set_progress_bar_config(disable=True)
    safe = SafreeStableDiffusion(p2, _concept_flagging(pipe, 4))
    prompts = [PROMPT, "a red dog"]

    def run(enabled):
        return safe(prompts, enabled=enabled, num_images_per_prompt=2,
                    generator=torch.Generator().manual_seed(1), **CALL).images

    off, on = run(False), run(True)
    flagged = safe.last_plan.result.flagged.any(dim=1)
    assert bool(flagged[0])
    assert on.shape == (4, 16, 16, 3) and bool(torch.isfinite(torch.from_numpy(on)).all())
    for row in range(4):
        same = bool((on[row] == off[row]).all())
        assert same != bool(flagged[row // 2]), f"row {row}"
