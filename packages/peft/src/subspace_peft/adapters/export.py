"""Export a LoRA-form adapter as a Hugging Face ``peft`` LoRA adapter folder.

Every :class:`~subspace_peft.adapters.base.AdapterModel` reports, per adapted layer, its
change with respect to the **original** pretrained weight as ``ΔW = B @ A``
(:meth:`~subspace_peft.adapters.base.AdapterModel.lora_factors`). :func:`export_peft_lora`
writes those factors as a standard ``peft`` LoRA adapter (``adapter_config.json`` +
``adapter_model.safetensors``) with ``lora_alpha = r`` per layer (scaling 1, no dropout), so

    PeftModel.from_pretrained(original_base_model, folder)

computes ``x (W0 + B A)ᵀ + b`` for each layer: the adapted model's outputs, on the untouched
pretrained model.

Why the change against the original weight, and not the method's own factors:

* SVFit's frozen weight *is* the original, so its factors are simply
  ``B = U_r diag(δ)``, ``A = V_rᵀ`` (rank ``r``; the LoRA form holds ``r (in + out)`` numbers
  where SVFit's native file holds ``2r``: export is for interoperability, not storage).
* CorDA (like PiSSA) trains ``B A`` on top of a *residual* base ``W − c B0 A0``. Exporting
  ``(c B, A)`` alone would need that residual base, i.e. shipping a modified copy of every
  target weight. Instead the export uses ``W_res + c B A = W0 + c (B A − B0 A0)`` and writes
  the rank-``2r`` pair ``[c B, −c B0] @ [A; A0]``, which applies to the original weights
  (the same conversion peft performs for PiSSA/CorDA when saving with
  ``path_initial_model_for_weight_conversion``). It doubles the rank and the adapter size and
  is exact up to float rounding.

``modules_to_save`` (e.g. a trained head) are exported as peft ``modules_to_save`` with
their trained values.
"""

from __future__ import annotations

import copy
import re
from pathlib import Path

import torch

from subspace_peft.adapters.base import AdapterModel

__all__ = ["export_peft_lora", "peft_lora_config"]


def peft_lora_config(adapter: AdapterModel, *, base_model_name_or_path: str | None = None):
    """The ``peft.LoraConfig`` describing ``adapter``'s LoRA form (exact module names, per-layer
    ranks through ``rank_pattern``/``alpha_pattern`` with ``alpha = rank``)."""
    try:
        from peft import LoraConfig
    except ImportError as exc:  # pragma: no cover - the hf extra is in the dev group
        raise ImportError("export_peft_lora needs Hugging Face peft: install "
                          "`pip install 'subspace-peft[hf]'`") from exc
    ranks = {name: int(B.shape[1]) for name, (B, _) in adapter.lora_factors().items()}
    default = max(set(ranks.values()), key=list(ranks.values()).count)
    # Full names, escaped: peft matches rank_pattern keys as regexes on a dotted suffix.
    pattern = {re.escape(n): r for n, r in ranks.items() if r != default}
    return LoraConfig(
        r=default,
        lora_alpha=default,
        rank_pattern=pattern,
        alpha_pattern=dict(pattern),
        target_modules=sorted(ranks),
        modules_to_save=list(adapter.modules_to_save) or None,
        lora_dropout=0.0,
        bias="none",
        base_model_name_or_path=base_model_name_or_path,
    )


@torch.no_grad()
def export_peft_lora(adapter: AdapterModel, folder: str | Path, *,
                     base_model_name_or_path: str | None = None) -> Path:
    """Write ``adapter`` as a Hugging Face ``peft`` LoRA adapter in ``folder``; returns it.

    Loads with ``peft.PeftModel.from_pretrained(base, folder)`` where ``base`` is the
    original pretrained model (not the adapted one). Works on a deep copy; ``adapter`` is
    not modified.
    """
    from peft import get_peft_model

    factors = adapter.lora_factors()
    config = peft_lora_config(adapter, base_model_name_or_path=base_model_name_or_path)
    base = copy.deepcopy(adapter).unload()  # original weights, trained modules_to_save
    peft_model = get_peft_model(base, config)
    inner = peft_model.base_model.model
    for name, (B, A) in factors.items():
        layer = inner.get_submodule(name)
        lora_A, lora_B = layer.lora_A["default"].weight, layer.lora_B["default"].weight
        if tuple(lora_A.shape) != tuple(A.shape) or tuple(lora_B.shape) != tuple(B.shape):
            raise RuntimeError(f"export_peft_lora: peft built {name!r} with A {tuple(lora_A.shape)}"
                               f", B {tuple(lora_B.shape)}; expected {tuple(A.shape)}, "
                               f"{tuple(B.shape)}")
        if layer.scaling["default"] != 1.0:
            raise RuntimeError(f"export_peft_lora: peft scaling of {name!r} is "
                               f"{layer.scaling['default']}, expected 1")
        lora_A.copy_(A.to(lora_A.dtype))
        lora_B.copy_(B.to(lora_B.dtype))
    folder = Path(folder)
    peft_model.save_pretrained(str(folder))
    return folder
