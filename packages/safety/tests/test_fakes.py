"""Fakes: deterministic recipes, cache keys that change with every input, cache round trip."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file

import subspace_safety.fakes as fakes_module
from subspace_safety.fakes import (
    FakeRecipe,
    cache_key,
    cache_path,
    cached_fakes,
    make_fakes,
    to_uint8,
)


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("SUBZOO_HOME", str(tmp_path))
    return tmp_path


def _images(seed: int = 0, n: int = 16) -> torch.Tensor:
    return torch.randint(0, 256, (n, 28, 28), dtype=torch.uint8,
                         generator=torch.Generator().manual_seed(seed))


def _stub_fakes(recipe: FakeRecipe, images: torch.Tensor) -> torch.Tensor:
    """Stands in for training (any torch.optim optimizer imports torch._dynamo: 10-20 s)."""
    gen = torch.Generator().manual_seed(recipe.seed * 1000 + recipe.sample_seed)
    return to_uint8(torch.rand(recipe.samples, 1, 28, 28, generator=gen))


@pytest.fixture
def stub(monkeypatch):
    calls = []

    def counted(recipe, images):
        calls.append(recipe)
        return _stub_fakes(recipe, images)

    monkeypatch.setattr(fakes_module, "make_fakes", counted)
    return calls


VAE = FakeRecipe("vae", steps=2, samples=3, batch_size=8, kwargs=(("latent_dim", 4),
                                                                  ("width", 4)))


def test_to_uint8_rounds_to_nearest_level():
    x = torch.tensor([0.0, 1.0, 0.5, 1 / 255 * 0.49, 1 / 255 * 0.51]).view(1, 1, 1, 5)
    assert to_uint8(x).tolist() == [[[0, 255, 128, 0, 1]]]
    with pytest.raises(ValueError, match="images"):
        to_uint8(torch.zeros(2, 28, 28))


@pytest.mark.slow
def test_make_fakes_is_deterministic_and_uint8():
    a, b = make_fakes(VAE, _images()), make_fakes(VAE, _images())
    assert a.dtype == torch.uint8 and a.shape == (3, 28, 28)
    assert torch.equal(a, b)
    other_seed = make_fakes(FakeRecipe(**{**VAE.__dict__, "sample_seed": 7}), _images())
    assert not torch.equal(a, other_seed)


def test_cache_key_changes_with_everything_that_affects_the_fakes():
    base = cache_key(VAE, _images())
    assert cache_key(VAE, _images()) == base
    # constructor kwargs are normalised (order does not matter)
    swapped = FakeRecipe("vae", steps=2, samples=3, batch_size=8,
                         kwargs=(("width", 4), ("latent_dim", 4)))
    assert cache_key(swapped, _images()) == base
    variants = [FakeRecipe(**{**VAE.__dict__, field: value}) for field, value in
                [("steps", 3), ("samples", 4), ("seed", 1), ("sample_seed", 2), ("lr", 1e-2),
                 ("batch_size", 4), ("kwargs", (("latent_dim", 5), ("width", 4))),
                 ("generator", "dcgan")]]
    paths = {cache_path(cache_key(r, _images())) for r in variants}
    paths.add(cache_path(cache_key(VAE, _images(seed=1))))  # other training pixels
    paths.add(cache_path(base))
    assert len(paths) == len(variants) + 2


def test_cache_round_trip_reads_without_retraining(home, stub):
    first = cached_fakes(VAE, _images())
    path = cache_path(cache_key(VAE, _images()))
    assert path.is_file() and path.is_relative_to(home / "cache" / "subspace_safety" / "fakes")
    assert len(stub) == 1
    again = cached_fakes(VAE, _images())
    assert len(stub) == 1, "the cached fakes should have been read, not recomputed"
    assert again.dtype == torch.uint8 and torch.equal(again, first)
    other = FakeRecipe(**{**VAE.__dict__, "seed": 5})
    assert not torch.equal(cached_fakes(other, _images()), first) and len(stub) == 2


def test_a_file_with_another_key_is_recomputed(home, stub):
    key = cache_key(VAE, _images())
    path = cache_path(key)
    path.parent.mkdir(parents=True)
    save_file({"images": torch.zeros(3, 28, 28, dtype=torch.uint8)}, str(path),
              metadata={"key": '{"stale": true}'})
    fresh = cached_fakes(VAE, _images())
    assert len(stub) == 1 and torch.equal(fresh, _stub_fakes(VAE, _images()))
    assert torch.equal(cached_fakes(VAE, _images()), fresh)  # the file was replaced
    assert len(stub) == 1


def test_cache_false_writes_nothing(home, stub):
    cached_fakes(VAE, _images(), cache=False)
    assert len(stub) == 1 and not (home / "cache").exists()


@pytest.mark.slow
@pytest.mark.parametrize("name, kwargs", [("dcgan", (("latent_dim", 4), ("width", 4))),
                                          ("ddpm", (("timesteps", 2), ("width", 16)))])
def test_other_generators(name, kwargs):
    recipe = FakeRecipe(name, steps=1, samples=2, batch_size=4, kwargs=kwargs)
    out = make_fakes(recipe, _images(n=8))
    assert out.shape == (2, 28, 28) and out.dtype == torch.uint8


@pytest.mark.parametrize("field, value, error", [
    ("generator", "flow", ValueError), ("steps", 0, ValueError), ("samples", 1.5, ValueError),
    ("seed", -1, ValueError), ("lr", 0.0, ValueError), ("kwargs", {"width": 4}, TypeError)])
def test_bad_recipes_are_refused(field, value, error):
    with pytest.raises(error, match=field):
        FakeRecipe(**{**VAE.__dict__, field: value})


def test_bad_images_are_refused():
    with pytest.raises(TypeError, match="images"):
        cached_fakes(VAE, [[0]], cache=False)
