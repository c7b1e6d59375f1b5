"""Smoke tests of the small generators: a few steps on random data, sample shapes and ranges."""

from __future__ import annotations

import math

import pytest
import torch

from subspace_safety.generators import (
    GENERATORS,
    SmallDCGAN,
    SmallDDPM,
    SmallVAE,
    as_unit_images,
)


def _images(n: int = 32) -> torch.Tensor:
    return torch.randint(0, 256, (n, 28, 28), dtype=torch.uint8,
                         generator=torch.Generator().manual_seed(0))


SMALL = {"vae": {"width": 16}, "dcgan": {"width": 16}, "ddpm": {"width": 16, "timesteps": 10}}


def _training_loss(model, x: torch.Tensor) -> torch.Tensor:
    if isinstance(model, SmallDCGAN):
        z = torch.randn(x.shape[0], model.latent_dim)
        fake = model.generator(z)
        return model.discriminator_loss(x * 2 - 1, fake.detach()) + model.generator_loss(fake)
    return model.loss(x if isinstance(model, SmallVAE) else x * 2 - 1)


@pytest.mark.parametrize("name", sorted(GENERATORS))
def test_gradient_step_and_sample(name):
    torch.manual_seed(0)
    model = GENERATORS[name](**SMALL[name])
    x = as_unit_images(_images(8))
    for _ in range(2):
        loss = _training_loss(model, x)
        assert math.isfinite(float(loss.detach()))
        model.zero_grad()
        loss.backward()
        # a plain SGD step written out: constructing a torch.optim optimizer imports
        # torch._dynamo (10-20 s on a loaded CPU), see the slow test for fit()
        with torch.no_grad():
            for param in model.parameters():
                assert param.grad is not None and bool(torch.isfinite(param.grad).all())
                param -= 1e-3 * param.grad
    samples = model.sample(5, seed=1)
    assert samples.shape == (5, 1, 28, 28) and samples.dtype == torch.float32
    assert float(samples.min()) >= 0 and float(samples.max()) <= 1
    assert torch.equal(samples, model.sample(5, seed=1))  # seeded sampling is reproducible
    assert not torch.equal(samples, model.sample(5, seed=2))


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(GENERATORS))
def test_fit_and_sample(name):
    torch.manual_seed(0)
    model = GENERATORS[name](**SMALL[name])
    before = [p.detach().clone() for p in model.parameters()]
    losses = model.fit(_images(), steps=2, batch_size=8)
    assert len(losses) == 2 and all(math.isfinite(v) for v in losses)
    assert any(not torch.equal(a, b.detach()) for a, b in zip(before, model.parameters(),
                                                              strict=True))
    samples = model.sample(5, seed=1)
    assert samples.shape == (5, 1, 28, 28) and samples.dtype == torch.float32
    assert float(samples.min()) >= 0 and float(samples.max()) <= 1
    assert torch.equal(samples, model.sample(5, seed=1))  # seeded sampling is reproducible


def test_ddpm_schedule_and_vae_elbo():
    ddpm = SmallDDPM(timesteps=50, width=16)
    # ᾱ_t = Π(1 − β_s) decreases from ≈1 towards 0: the last step is almost pure noise
    assert float(ddpm.alpha_bars[0]) == pytest.approx(1 - 1e-4 * 1000 / 50)
    assert bool((ddpm.alpha_bars.diff() < 0).all()) and float(ddpm.alpha_bars[-1]) < 0.01
    vae = SmallVAE(width=16)
    x = as_unit_images(_images(4))
    # the negative ELBO bounds −log p(x) ≥ 0 for Bernoulli pixels: it is positive
    assert float(vae.loss(x).detach()) > 0


def test_bad_images_raise():
    with pytest.raises(ValueError, match="images"):
        as_unit_images(torch.zeros(3, 32, 32))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        as_unit_images(torch.full((2, 28, 28), 2.0))
    with pytest.raises(TypeError, match="images"):
        as_unit_images(torch.zeros(2, 28, 28, dtype=torch.int32))
    with pytest.raises(ValueError, match="width"):
        SmallDDPM(width=20)
