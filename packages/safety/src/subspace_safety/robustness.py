"""EigenShield vs PGD on a zero-shot CLIP classifier: attack success rate and clean cost.

The classifier is a CLIP-like model's zero-shot head ``logits = s · normalize(e) Wᵀ`` with
``e`` the image embedding ``[B, D]``, ``W`` the class weights ``[C, D]`` (prompt ensembles)
and ``s = exp(logit_scale)``. The defence ``f`` — identity (undefended),
:class:`~subspace_safety.eigenshield.EigenShield`, or :class:`PCAProjection` at the same
rank — acts in one of two spaces (``space``):

* ``"features"`` (default): the image tower's features ``h`` (1,280-d), ``e =
  proj(f(h))``. With 20,000 fit samples this space has a genuine Marchenko–Pastur noise bulk
  (452 of 1,280 eigenvalues clear the edge on Fashion-MNIST), which is what EigenShield
  separates from.
* ``"embedding"``: the normalised 256-d embedding, ``e' = f(e)`` before the cosine. The
  trained projection already concentrated the class signal there (111 of 256 eigenvalues
  are spikes, and the 9-d span of the class-weight differences has 95 % of its energy in
  the top 100), so a projection there barely changes the classifier.

The filters are differentiable, so the adaptive attack goes through them.

Calibration perturbations (``calibration``) default to uniform L∞ noise: PGD-perturbed
calibration images move the embedding mostly along the class-discriminative spikes, so
the RbNS then ranks exactly those as "non-robust" and discards them (measured in the
embedding space: clean top-1 88.1 % -> 71.2 % with 256 PGD-perturbed calibration images).

:func:`evaluate_eigenshield_pgd` runs the whole evaluation on Fashion-MNIST:

* **fit**: clean vectors (tower features or embeddings, from the cached tower features) of
  the first ``n_fit`` Fashion-MNIST training images (the subset the LiT projections were
  trained on; no test image);
* **calibration**: ``n_cal`` *other* training images (indices from 50,000 on, never used to
  train the projections), clean and perturbed (``calibration="pgd"``: PGD on the undefended
  classifier at ``cal_eps``; ``"noise"``: uniform noise of that L∞ size), for the RbNS;
* **clean accuracy** of the three classifiers on the full test split (10,000 images);
* **ASR** on ``n_attack`` seeded random test images, counted per classifier over the images
  it classifies correctly clean: the fraction whose adversarial version it misclassifies.
  Two threat models: ``"transfer"`` (the attacker does not know the defence: PGD on the
  undefended classifier, the same adversarial images scored by all three) and
  ``"adaptive"`` (white-box: PGD through each defence's filter, with early stop at the
  first misclassified iterate).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

from subspace_safety.attacks import pgd_linf
from subspace_safety.eigenshield import EigenShield, PCAProjection

__all__ = [
    "EigenShieldEvalConfig",
    "attack_success_rate",
    "clean_accuracy",
    "evaluate_eigenshield_pgd",
    "fit_defenses",
    "zero_shot_head",
    "zero_shot_logits",
    "zero_shot_model_fn",
]

#: Training images from this index on were never used to fit the LiT projections (which
#: saw 18,000 of the first 20,000), so they serve as calibration data.
CALIBRATION_START = 50_000
#: The fit pool: the first 20,000 training images (their tower features are cached).
FIT_POOL = 20_000
#: Where a defence can act: the normalised shared embedding or the image tower's features.
SPACES = ("embedding", "features")


def zero_shot_logits(embeddings: torch.Tensor, classifier: torch.Tensor, logit_scale: float,
                     defense: nn.Module | None = None) -> torch.Tensor:
    """Zero-shot logits ``s · normalize(defense(e)) Wᵀ``.

    Args:
        embeddings: image embeddings ``[B, D]``.
        classifier: class weights ``[C, D]`` (unit rows).
        logit_scale: the multiplier ``s`` (e.g. ``model.logit_scale.exp()``).
        defense: optional ``[B, D] -> [B, D]`` filter applied before the cosine.

    Returns:
        logits ``[B, C]``.
    """
    if embeddings.dim() != 2 or classifier.dim() != 2 \
            or embeddings.shape[1] != classifier.shape[1]:
        raise ValueError(f"embeddings, classifier: expected [B, D] and [C, D], got "
                         f"{list(embeddings.shape)} and {list(classifier.shape)}")
    filtered = embeddings if defense is None else defense(embeddings)
    return float(logit_scale) * F.normalize(filtered, dim=-1) @ classifier.to(filtered.dtype).T


def zero_shot_head(model: nn.Module, classifier: torch.Tensor, defense: nn.Module | None = None,
                   *, space: str = "embedding") -> Callable[[torch.Tensor], torch.Tensor]:
    """``tower features [B, F] -> logits [B, C]`` of ``model``'s zero-shot head with
    ``defense`` applied in ``space``: ``"embedding"`` (the normalised ``D``-dim image
    embedding, before the cosine) or ``"features"`` (the image tower's ``F``-dim features,
    before ``model.embed_image_features``)."""
    if space not in SPACES:
        raise ValueError(f"space: expected one of {SPACES}, got {space!r}")
    if not hasattr(model, "embed_image_features"):
        raise TypeError(f"model: expected a CLIP-like module with embed_image_features, got "
                        f"{type(model).__name__}")
    scale = float(model.logit_scale.detach().exp()) if hasattr(model, "logit_scale") else 1.0

    def logits(features: torch.Tensor) -> torch.Tensor:
        if space == "features" and defense is not None:
            return zero_shot_logits(model.embed_image_features(defense(features)), classifier,
                                    scale)
        return zero_shot_logits(model.embed_image_features(features), classifier, scale,
                                defense)

    return logits


def zero_shot_model_fn(model: nn.Module, classifier: torch.Tensor,
                       defense: nn.Module | None = None, *, space: str = "embedding"
                       ) -> Callable[[torch.Tensor], torch.Tensor]:
    """``images [B, 1|3, H, W] in [0, 1] -> logits [B, C]``: :func:`zero_shot_head` after
    ``model.image_tower``; differentiable in the pixels and through ``defense``."""
    head = zero_shot_head(model, classifier, defense, space=space)
    if not hasattr(model, "image_tower"):
        raise TypeError(f"model: expected a CLIP-like module with image_tower, got "
                        f"{type(model).__name__}")

    def logits(images: torch.Tensor) -> torch.Tensor:
        return head(model.image_tower(images))

    return logits


def _check_pair(logits: torch.Tensor, labels: torch.Tensor, name: str = "logits") -> None:
    if logits.dim() != 2 or labels.shape != (logits.shape[0],):
        raise ValueError(f"{name}, labels: expected [N, C] and [N], got {list(logits.shape)} "
                         f"and {list(labels.shape)}")


def clean_accuracy(logits: torch.Tensor, labels: torch.Tensor) -> float:
    """Top-1 accuracy of ``logits`` ``[N, C]`` against ``labels`` ``[N]``."""
    _check_pair(logits, labels)
    if len(labels) == 0:
        raise ValueError("labels: expected at least one example, got 0")
    return float((logits.argmax(1) == labels.to(logits.device)).float().mean())


def attack_success_rate(clean_logits: torch.Tensor, adv_logits: torch.Tensor,
                        labels: torch.Tensor) -> tuple[float, int]:
    """Fraction of the correctly classified clean examples whose adversarial version is
    misclassified.

    Args:
        clean_logits, adv_logits: ``[N, C]`` logits of the clean and attacked images.
        labels: true classes ``[N]``.

    Returns:
        ``(asr, n_correct)``: ``asr`` is NaN when no clean example is correct.
    """
    _check_pair(clean_logits, labels, "clean_logits")
    _check_pair(adv_logits, labels, "adv_logits")
    labels = labels.to(clean_logits.device)
    correct = clean_logits.argmax(1) == labels
    flipped = correct & (adv_logits.to(clean_logits.device).argmax(1) != labels)
    n_correct = int(correct.sum())
    return (float(flipped.sum()) / n_correct if n_correct else math.nan), n_correct


@dataclass(frozen=True)
class EigenShieldEvalConfig:
    """Sizes of :func:`evaluate_eigenshield_pgd` (defaults: the full run).

    Attributes:
        n_fit: clean training embeddings the filters are fitted on.
        n_cal: calibration training images (clean + perturbed) for the RbNS.
        n_attack: test images attacked (seeded random subset of the 10,000).
        eps: L∞ radii on the ``[0, 1]`` pixel scale.
        steps: PGD steps; the step size is ``step_ratio · eps``.
        step_ratio: step size as a fraction of ``eps`` (2.5 · eps / steps is Madry's rule
            for 10 steps -> 0.25).
        quantile: EigenShield's fraction of candidate directions kept.
        calibration: ``"pgd"`` or ``"noise"`` perturbations of the calibration images.
        space: where the filters act: ``"embedding"`` (the normalised 256-d shared space the
            classifier reads) or ``"features"`` (the 1,280-d image-tower features, before
            the trained projection).
        cal_eps: L∞ radius of the calibration perturbations.
        threat_models: subset of ``("transfer", "adaptive")``.
        batch_size: images per attack batch.
        seed: seed of the test subset and of the PGD random starts.
    """

    n_fit: int = 20_000
    n_cal: int = 256
    n_attack: int = 150
    eps: tuple[float, ...] = (2 / 255, 4 / 255, 8 / 255)
    steps: int = 10
    step_ratio: float = 0.25
    quantile: float = 0.9
    calibration: str = "noise"
    space: str = "features"
    cal_eps: float = 4 / 255
    threat_models: tuple[str, ...] = ("transfer", "adaptive")
    batch_size: int = 50
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("n_fit", "n_cal", "n_attack", "steps", "batch_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name}: expected a positive int, got {value!r}")
        if self.calibration not in ("pgd", "noise"):
            raise ValueError(f"calibration: expected 'pgd' or 'noise', got "
                             f"{self.calibration!r}")
        if self.space not in SPACES:
            raise ValueError(f"space: expected one of {SPACES}, got {self.space!r}")
        unknown = set(self.threat_models) - {"transfer", "adaptive"}
        if unknown or not self.threat_models:
            raise ValueError(f"threat_models: expected a non-empty subset of ('transfer', "
                             f"'adaptive'), got {self.threat_models!r}")
        if not self.eps or any(not 0 < e <= 1 for e in self.eps):
            raise ValueError(f"eps: expected radii in (0, 1], got {self.eps!r}")


def _images(x: torch.Tensor) -> torch.Tensor:
    """uint8 ``[N, 28, 28]`` -> float ``[N, 1, 28, 28]`` in ``[0, 1]``."""
    return x.float().div(255).unsqueeze(1)


def _batched(fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor,
             batch_size: int) -> torch.Tensor:
    return torch.cat([fn(chunk) for chunk in x.split(batch_size)])


def _attack(model_fn, images, labels, eps, config: EigenShieldEvalConfig, *,
            stop_on_success: bool) -> torch.Tensor:
    out = []
    for i, (x, y) in enumerate(zip(images.split(config.batch_size),
                                   labels.split(config.batch_size), strict=True)):
        out.append(pgd_linf(model_fn, x, y, eps, config.step_ratio * eps, config.steps,
                            seed=config.seed + i, stop_on_success=stop_on_success))
    return torch.cat(out)


def _represent(model: nn.Module, space: str) -> Callable[[torch.Tensor], torch.Tensor]:
    """images -> the vectors the defence filters (tower features or normalised embeddings)."""
    if space == "features":
        return model.image_tower
    return model.encode_image


def fit_defenses(model: nn.Module, classifier: torch.Tensor, config: EigenShieldEvalConfig,
                 *, fit_vectors: torch.Tensor, cal_images: torch.Tensor,
                 cal_labels: torch.Tensor) -> tuple[EigenShield, PCAProjection, dict]:
    """Fit EigenShield (with perturbed calibration) and the same-rank PCA baseline.

    Args:
        model: CLIP-like model (``image_tower``, ``encode_image``, ``embed_image_features``).
        classifier: zero-shot class weights ``[C, D]`` (for PGD calibration perturbations).
        config: sizes, ``space`` and calibration mode.
        fit_vectors: clean vectors ``[n, D]`` (``config.space``: embeddings, or tower
            features ``[n, F]``) to fit on.
        cal_images: calibration images ``[m, 1|3, H, W]`` in ``[0, 1]`` (not test images).
        cal_labels: their labels ``[m]``.

    Returns:
        ``(shield, pca, info)`` with ``info`` the candidates, rank and calibration cost.
    """
    start = time.perf_counter()
    represent = _represent(model, config.space)
    with torch.no_grad():
        cal_clean = _batched(represent, cal_images, config.batch_size)
    if config.calibration == "pgd":
        perturbed_images = _attack(zero_shot_model_fn(model, classifier), cal_images,
                                   cal_labels, config.cal_eps, config, stop_on_success=False)
    else:
        gen = torch.Generator().manual_seed(config.seed + 10_000)
        noise = (torch.rand(cal_images.shape, generator=gen) * 2 - 1) * config.cal_eps
        perturbed_images = (cal_images + noise).clamp(0, 1)
    with torch.no_grad():
        cal_perturbed = _batched(represent, perturbed_images, config.batch_size)
    shield = EigenShield().fit(fit_vectors, calibration=cal_clean, perturbed=cal_perturbed,
                               quantile=config.quantile)
    pca = PCAProjection().fit(fit_vectors, rank=shield.rank)
    info = {"space": config.space, "dim": shield.dim,
            "candidates": int(shield.candidate_eigenvalues.numel()), "rank": shield.rank,
            "calibration_s": time.perf_counter() - start}
    return shield, pca, info


def evaluate_eigenshield_pgd(model: nn.Module | None = None,
                             config: EigenShieldEvalConfig | None = None, *,
                             verbose: bool = False) -> dict:
    """The EigenShield-vs-PGD evaluation on Fashion-MNIST (see the module docstring).

    Args:
        model: CLIP-like model; default the shipped
            ``safety/lit_clip_mnv2_minilm.fmnist_mnist``.
        config: sizes (default :class:`EigenShieldEvalConfig`).
        verbose: print progress.

    Returns:
        dict with ``config``, ``defense`` (space, candidates, rank), ``clean_acc``
        (``{"none", "eigenshield", "pca"}`` on the full test split), ``asr``
        (``{threat: {"k/255": {defense: asr}}}``), ``n_correct`` (same nesting, the ASR
        denominators) and ``wall_s``.
    """
    from subspace_core.data import load_dataset
    from subspace_safety.embeddings_cache import image_features
    from subspace_safety.zoo import EVAL_TEMPLATES, FMNIST_CLASSES

    config = config or EigenShieldEvalConfig()
    start = time.perf_counter()
    if model is None:
        from subspace_core.zoo import create_model

        model = create_model("safety/lit_clip_mnv2_minilm.fmnist_mnist", pretrained=True)
    model = model.eval()
    classifier = model.zero_shot_classifier(FMNIST_CLASSES, EVAL_TEMPLATES["fashion_mnist"])

    def log(msg: str) -> None:
        if verbose:
            print(f"[eigenshield_pgd {time.perf_counter() - start:6.0f} s] {msg}", flush=True)

    if config.n_fit > FIT_POOL:
        raise ValueError(f"n_fit: expected <= {FIT_POOL} (the cached training features), got "
                         f"{config.n_fit}")
    # the first 20,000 training images: the cached subset the LiT recipe computed
    train_feats, _ = image_features(model.image_tower, "fashion_mnist", "train",
                                    limit=FIT_POOL)
    test_feats, test_labels = image_features(model.image_tower, "fashion_mnist", "test")
    train = load_dataset("fashion_mnist", "train")
    test = load_dataset("fashion_mnist", "test")
    with torch.no_grad():
        fit_vectors = train_feats[:config.n_fit]
        if config.space == "embedding":
            fit_vectors = model.embed_image_features(fit_vectors)
    cal_slice = slice(CALIBRATION_START, CALIBRATION_START + config.n_cal)
    cal_images = _images(torch.as_tensor(train.x[cal_slice]))
    cal_labels = torch.as_tensor(train.y[cal_slice], dtype=torch.int64)
    shield, pca, info = fit_defenses(model, classifier, config, fit_vectors=fit_vectors,
                                     cal_images=cal_images, cal_labels=cal_labels)
    defenses: dict[str, nn.Module | None] = {"none": None, "eigenshield": shield, "pca": pca}
    heads = {name: zero_shot_head(model, classifier, d, space=config.space)
             for name, d in defenses.items()}
    log(f"filters fitted: {info}")

    with torch.no_grad():
        clean_acc = {name: clean_accuracy(head(test_feats), test_labels)
                     for name, head in heads.items()}
    log(f"clean accuracy (10,000 test images): {clean_acc}")

    gen = torch.Generator().manual_seed(config.seed)
    subset = torch.randperm(len(test_labels), generator=gen)[:config.n_attack]
    images = _images(torch.as_tensor(test.x)[subset])
    labels = torch.as_tensor(test.y, dtype=torch.int64)[subset]
    fns = {name: zero_shot_model_fn(model, classifier, d, space=config.space)
           for name, d in defenses.items()}
    with torch.no_grad():
        feats = _batched(model.image_tower, images, config.batch_size)
        clean_logits = {name: head(feats) for name, head in heads.items()}

    asr: dict[str, dict[str, dict[str, float]]] = {t: {} for t in config.threat_models}
    n_correct: dict[str, dict[str, dict[str, int]]] = {t: {} for t in config.threat_models}
    for eps in config.eps:
        key = f"{round(eps * 255)}/255"
        for threat in config.threat_models:
            asr[threat][key], n_correct[threat][key] = {}, {}
            for name in defenses:
                if threat == "transfer" and name != "none":
                    continue  # scored on the undefended attack's images below
                adv = _attack(fns[name], images, labels, eps, config,
                              stop_on_success=threat == "adaptive")
                with torch.no_grad():
                    adv_feats = _batched(model.image_tower, adv, config.batch_size)
                    targets = defenses if threat == "transfer" else [name]
                    for target in targets:
                        rate, count = attack_success_rate(clean_logits[target],
                                                          heads[target](adv_feats), labels)
                        asr[threat][key][target], n_correct[threat][key][target] = rate, count
            log(f"eps {key} {threat}: ASR {asr[threat][key]}")
    return {"config": asdict(config), "defense": info, "clean_acc": clean_acc, "asr": asr,
            "n_correct": n_correct, "wall_s": time.perf_counter() - start}
