"""Shipped concept subspaces: protocol ``safree_erasure`` and ``safety/concept_sneaker.lit_clip``.

**Protocol ``safree_erasure``**: the concept subspace (a :class:`ConceptModule`) erases its
concept from the prompts of the shipped LiT CLIP ``safety/lit_clip_mnv2_minilm.fmnist_mnist``
with gated SAFREE (leave-one-out token detection, ``alpha=0.1``; every token of a flagged
prompt projected out of the subspace); the zero-shot classifier (10 Fashion-MNIST class
names x the 4 held-out evaluation templates, the filter applied to every class prompt) is
scored on the Fashion-MNIST test set (10,000 cached image-tower features). Metrics: the erased
class's recall after erasure (chance = 0.10), the largest recall drop among the other nine
classes, the largest cosine distance a benign prompt (other classes' prompts and 50
unrelated captions) moves, the fraction of held-out paraphrase prompts flagged, and the
erased-class recall with the concept's row named by those paraphrases
(:func:`subspace_safety.erasure.evaluate_erasure`).

The checkpoint is a :meth:`ConceptSubspace.save` file (tensors ``basis`` [256, k] and
``singular_values`` [k], the prompts in its metadata); :class:`ConceptModule` holds them as
buffers so the core registry can load it strictly. :func:`make_sneaker_concept` rebuilds it.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from subspace_core.eval import Protocol, protocol_doc, register_protocol
from subspace_core.zoo import PretrainedCfg, register_model
from subspace_safety.concept import ConceptSubspace

__all__ = [
    "SAFREE_ERASURE",
    "SHIPPED_CONCEPTS",
    "ConceptModule",
    "concept_sneaker_lit_clip",
    "make_sneaker_concept",
    "safree_erasure_metrics",
]

#: Settings of the shipped concept and of the protocol.
CONCEPT_ENERGY = 0.9
SAFREE_ALPHA = 0.1
_LIT_CLIP_ID = "safety/lit_clip_mnv2_minilm.fmnist_mnist"


class ConceptModule(nn.Module):
    """A :class:`ConceptSubspace` (uncentred) as an ``nn.Module`` with buffers ``basis`` [d, k]
    and ``singular_values`` [k], so that the zoo can load a ConceptSubspace file into it.

    ``forward(x)`` is :meth:`ConceptSubspace.project_out` ([..., d] -> [..., d]).
    """

    def __init__(self, dim: int = 256, rank: int = 2) -> None:
        super().__init__()
        for name, value in (("dim", dim), ("rank", rank)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name}: expected a positive int, got {value!r}")
        if rank > dim:
            raise ValueError(f"rank: expected <= dim={dim}, got {rank}")
        self.register_buffer("basis", torch.eye(dim, rank))
        self.register_buffer("singular_values", torch.ones(rank))

    def subspace(self) -> ConceptSubspace:
        """The :class:`ConceptSubspace` of the current buffers (checks orthonormality)."""
        return ConceptSubspace(self.basis, self.singular_values)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.subspace().project_out(x)


def make_sneaker_concept(path: str | Path | None = None, *, model: nn.Module | None = None
                         ) -> ConceptSubspace:
    """Build the shipped "sneaker" concept from the shipped LiT CLIP (and save it at ``path``).

    :func:`subspace_safety.erasure.build_concept` with the default names/templates,
    uncentred, ``energy=0.9``. Seconds on CPU.
    """
    from subspace_core.zoo import create_model
    from subspace_safety.erasure import LiTTokenEncoder, build_concept

    model = model or create_model(_LIT_CLIP_ID, pretrained=True).eval()
    concept = build_concept(LiTTokenEncoder(model), energy=CONCEPT_ENERGY)
    if path is not None:
        concept.save(path, metadata={"model": _LIT_CLIP_ID, "energy": str(CONCEPT_ENERGY)})
    return concept


def safree_erasure_metrics(model: nn.Module, device: torch.device | str = "cpu"
                           ) -> dict[str, float]:
    """The ``safree_erasure`` protocol for a :class:`ConceptModule` (see module doc)."""
    from subspace_core.zoo import create_model
    from subspace_safety.embeddings_cache import image_features
    from subspace_safety.erasure import evaluate_erasure

    if not isinstance(model, ConceptModule):
        raise TypeError(f"model: expected a ConceptModule, got {type(model).__name__}")
    clip = create_model(_LIT_CLIP_ID, pretrained=True).eval()
    features, labels = image_features(clip.image_tower, "fashion_mnist", "test")
    result = evaluate_erasure(clip, model.subspace().to(torch.float32), features, labels,
                              method="safree_prompt", alpha=SAFREE_ALPHA)
    m = result.metrics()
    return {k: m[k] for k in SAFREE_ERASURE.metrics}



SAFREE_ERASURE = register_protocol(
    Protocol(
        name="safree_erasure",
        dataset="fashion_mnist",
        split="test",
        preprocessing="cached image-tower features of the shipped LiT CLIP (96 px MobileNetV2); "
        "prompts: 10 class names x 4 held-out templates, gated SAFREE (alpha=0.1) on every "
        "class prompt",
        metrics=("erased_recall_after", "others_max_drop", "benign_cos_dist_max",
                 "paraphrase_flag_rate", "paraphrase_recall_after"),
        higher_is_better=(False, False, False, True, False),
        run=safree_erasure_metrics,
        description=protocol_doc(__doc__, "safree_erasure"),
    )
)

#: Shipped concepts: id -> (sha256, bytes, rank, metrics of safree_erasure).
SHIPPED_CONCEPTS: dict[str, tuple[str, int, int, dict[str, float]]] = {
    "safety/concept_sneaker.lit_clip": (
        "76f7a6222e183c6d5966f51d8872b17d0a97534a3b51f2026f3571f1942d2492", 2_744, 2,
        {"erased_recall_after": 0.0, "others_max_drop": 0.0, "benign_cos_dist_max": 0.0,
         "paraphrase_flag_rate": 0.7777777910232544,
         "paraphrase_recall_after": 0.048555555555555546},
    ),
}
_SHA, _BYTES, _RANK, _METRICS = SHIPPED_CONCEPTS["safety/concept_sneaker.lit_clip"]


@register_model(
    "safety/concept_sneaker.lit_clip",
    pretrained_cfg=PretrainedCfg(
        file="concept_sneaker.lit_clip.safetensors",
        sha256=_SHA,
        num_bytes=_BYTES,
        num_params=256 * _RANK + _RANK,
        license="Apache-2.0 (derived from the LiT CLIP projections and all-MiniLM-L6-v2)",
        paper="Yoon et al. 2025, SAFREE: Training-Free and Adaptive Guard for Safe "
        "Text-to-Image and Video Generation, ICLR 2025, arXiv:2410.12761",
        recipe="subspace_safety.zoo_concepts:make_sneaker_concept",
        metrics={"safree_erasure": _METRICS},
        data={"space": "LiT CLIP text embedding (256-d, safety/lit_clip_mnv2_minilm."
              "fmnist_mnist)", "prompts": "'sneaker', 'sneakers', 'trainer', 'trainers' x the 8 "
              "Fashion-MNIST training caption templates (pooled, uncentred SVD)",
              "energy": CONCEPT_ENERGY},
        train_budget="no training: 32 prompts through the text tower and one SVD, seconds "
        "on one CPU core",
        package="subspace_safety.weights",
        notes="Uncentred ConceptSubspace (basis [256, k], singular values [k]); load with "
        "ConceptSubspace.load or create_model(..., pretrained=True).subspace().",
    ),
    protocols=("safree_erasure",),
    description="Concept subspace of 'sneaker' in the LiT CLIP's text space, for SAFREE.",
)
def concept_sneaker_lit_clip(**overrides) -> nn.Module:
    """:class:`ConceptModule` sized for the shipped sneaker concept (``rank`` from the file)."""
    return ConceptModule(**{"dim": 256, "rank": _RANK, **overrides})
