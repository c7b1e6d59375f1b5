"""Generated ("fake") Fashion-MNIST images for the Effort evaluation, cached on disk.

A :class:`FakeRecipe` fixes everything that determines a set of fakes: the generator family
(:data:`~subspace_safety.generators.GENERATORS`: ``"vae"``, ``"dcgan"``, ``"ddpm"``), its
constructor arguments, the training budget (steps, batch size, learning rate, seed), how
many training images it sees, and how many images are sampled with which seed.
:func:`make_fakes` trains the generator on the images and samples; :func:`cached_fakes`
does the same on the first ``train_images`` Fashion-MNIST training images and keeps the
result as ``$SUBZOO_HOME/cache/subspace_safety/fakes/<sha256 of key>.safetensors``
(``{"images": uint8 [n, 28, 28]}``, the key stored in the metadata and checked on read), so
a benchmark or protocol reruns in seconds.

The key (:func:`cache_key`) holds the recipe, the sha256 of the training pixels, the torch
version and :data:`CACHE_VERSION`: any change of these yields a new file. Training runs on
one CPU thread's worth of deterministic torch ops with fixed seeds, so a recipe regenerates
the same fakes on the same torch build (bit-identity across torch versions or CPUs is not
promised, hence the torch version in the key).

Fakes are quantised to ``uint8`` like the real images: a detector must not be able to tell
real from fake by the 256-level pixel grid alone.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

__all__ = [
    "CACHE_VERSION",
    "FakeRecipe",
    "cache_dir",
    "cache_key",
    "cache_path",
    "cached_fakes",
    "make_fakes",
    "to_uint8",
]

#: Bumped when the way fakes are produced changes (invalidates every cache file).
CACHE_VERSION = 1


@dataclass(frozen=True)
class FakeRecipe:
    """Everything that determines one set of fakes.

    Attributes:
        generator: ``"vae"``, ``"dcgan"`` or ``"ddpm"``.
        steps, batch_size, lr, seed: the generator's ``fit`` budget (``lr=None``: the
            class's default learning rate).
        train_images: how many Fashion-MNIST training images (the first ones) it sees
            (:func:`cached_fakes`; :func:`make_fakes` takes the images themselves).
        samples: number of fakes; ``sample_seed``: seed of ``sample``.
        kwargs: constructor arguments, as sorted ``(name, value)`` pairs (hashable), e.g.
            ``(("timesteps", 50),)`` for a DDPM.
    """

    generator: str
    steps: int
    samples: int
    batch_size: int = 64
    lr: float | None = None
    seed: int = 0
    sample_seed: int = 1
    train_images: int = 10_000
    kwargs: tuple[tuple[str, object], ...] = field(default_factory=tuple)

    def __post_init__(self) -> None:
        from subspace_safety.generators import GENERATORS

        if self.generator not in GENERATORS:
            raise ValueError(f"generator: expected one of {sorted(GENERATORS)}, got "
                             f"{self.generator!r}")
        for name in ("steps", "samples", "batch_size", "train_images"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name}: expected a positive int, got {value!r}")
        for name in ("seed", "sample_seed"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"{name}: expected a non-negative int, got {value!r}")
        if self.lr is not None and not (isinstance(self.lr, float) and self.lr > 0):
            raise ValueError(f"lr: expected None or a positive float, got {self.lr!r}")
        if not isinstance(self.kwargs, tuple) or not all(
                isinstance(p, tuple) and len(p) == 2 and isinstance(p[0], str)
                for p in self.kwargs):
            raise TypeError(f"kwargs: expected a tuple of (name, value) pairs, got "
                            f"{self.kwargs!r}")
        object.__setattr__(self, "kwargs", tuple(sorted(self.kwargs)))

    def build(self) -> torch.nn.Module:
        """A fresh generator of this recipe (initialised from torch's global RNG)."""
        from subspace_safety.generators import GENERATORS

        return GENERATORS[self.generator](**dict(self.kwargs))


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """float ``[n, 1, 28, 28]`` in ``[0, 1]`` -> ``uint8 [n, 28, 28]`` (round to nearest)."""
    if images.ndim != 4 or images.shape[1] != 1:
        raise ValueError(f"images: expected [n, 1, H, W], got {tuple(images.shape)}")
    return (images[:, 0].clamp(0, 1) * 255).round().to(torch.uint8)


def make_fakes(recipe: FakeRecipe, images: torch.Tensor) -> torch.Tensor:
    """Train ``recipe``'s generator on ``images`` and sample ``recipe.samples`` fakes.

    Args:
        recipe: the generator, budget and seeds.
        images: training images, ``uint8 [N, 28, 28]`` or float ``[N(, 1), 28, 28]`` in
            ``[0, 1]``.

    Returns:
        ``uint8 [samples, 28, 28]``.
    """
    if not isinstance(recipe, FakeRecipe):
        raise TypeError(f"recipe: expected a FakeRecipe, got {type(recipe).__name__}")
    torch.manual_seed(recipe.seed)  # the initial weights
    model = recipe.build()
    fit_kwargs: dict[str, object] = {"steps": recipe.steps, "batch_size": recipe.batch_size,
                                     "seed": recipe.seed}
    if recipe.lr is not None:
        fit_kwargs["lr"] = recipe.lr
    model.fit(images, **fit_kwargs)
    return to_uint8(model.sample(recipe.samples, seed=recipe.sample_seed))


def cache_dir() -> Path:
    """``$SUBZOO_HOME/cache/subspace_safety/fakes``."""
    from subspace_core.io import subzoo_home

    return subzoo_home() / "cache" / "subspace_safety" / "fakes"


def _pixels_sha256(images: torch.Tensor) -> str:
    data = images.detach().cpu().contiguous()
    return hashlib.sha256(f"{data.dtype}{tuple(data.shape)}".encode()
                          + data.view(torch.uint8).numpy().tobytes()).hexdigest()


def cache_key(recipe: FakeRecipe, images: torch.Tensor) -> dict:
    """The JSON-able key of ``recipe`` trained on ``images``."""
    return {"version": CACHE_VERSION, "recipe": asdict(recipe),
            "images_sha256": _pixels_sha256(images),
            "torch": torch.__version__.split("+")[0]}


def cache_path(key: dict) -> Path:
    """Where the fakes of ``key`` are cached."""
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()
    return cache_dir() / f"{digest[:32]}.safetensors"


def _fashion_mnist_train(count: int) -> torch.Tensor:
    from subspace_core.data import load_dataset

    x = torch.as_tensor(load_dataset("fashion_mnist", "train").x)
    if count > x.shape[0]:
        raise ValueError(f"train_images: expected <= {x.shape[0]}, got {count}")
    return x[:count]


def cached_fakes(recipe: FakeRecipe, images: torch.Tensor | None = None, *,
                 cache: bool = True) -> torch.Tensor:
    """:func:`make_fakes`, read from / written to the cache.

    Args:
        recipe: see :class:`FakeRecipe`.
        images: the generator's training images; ``None`` (default): the first
            ``recipe.train_images`` Fashion-MNIST training images.
        cache: ``False`` computes without touching the cache.

    Returns:
        ``uint8 [recipe.samples, 28, 28]``.
    """
    from safetensors import safe_open
    from safetensors.torch import save_file

    from subspace_core.io import atomic_path

    if images is None:
        images = _fashion_mnist_train(recipe.train_images)
    if not isinstance(images, torch.Tensor):
        raise TypeError(f"images: expected a torch.Tensor or None, got {type(images).__name__}")
    if not cache:
        return make_fakes(recipe, images)
    key = cache_key(recipe, images)
    path = cache_path(key)
    key_text = json.dumps(key, sort_keys=True)  # compared as text: JSON turns tuples to lists
    if path.exists():
        with safe_open(str(path), framework="pt") as fh:
            if (fh.metadata() or {}).get("key") == key_text:
                return fh.get_tensor("images")
    fakes = make_fakes(recipe, images)
    with atomic_path(path) as tmp:
        save_file({"images": fakes.contiguous()}, str(tmp),
                  metadata={"key": key_text})
    return fakes
