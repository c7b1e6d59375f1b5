"""Batched augmentations: identity settings, flips, determinism, ranges."""

from __future__ import annotations

import pytest
import torch

from subspace_ssl.augment import AugmentConfig, augment

IDENTITY = AugmentConfig(crop_scale=(1.0, 1.0), crop_ratio=(1.0, 1.0), p_flip=0.0,
                         p_jitter=0.0, p_erase=0.0)


def _images(n=6, seed=0):
    return torch.randint(0, 256, (n, 28, 28), generator=torch.Generator().manual_seed(seed),
                         dtype=torch.uint8)


def test_identity_settings_return_the_images():
    x = _images()
    out = augment(x, IDENTITY, generator=torch.Generator().manual_seed(0))
    assert out.shape == (6, 1, 28, 28) and out.dtype == torch.float32
    torch.testing.assert_close(out, x.float().div(255).unsqueeze(1), atol=1e-5, rtol=0)


def test_certain_flip_mirrors_horizontally():
    x = _images()
    cfg = AugmentConfig(crop_scale=(1.0, 1.0), crop_ratio=(1.0, 1.0), p_flip=1.0,
                        p_jitter=0.0, p_erase=0.0)
    out = augment(x, cfg, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(out, x.float().div(255).flip(-1).unsqueeze(1), atol=1e-5, rtol=0)


def test_certain_erasing_blanks_a_rectangle():
    x = torch.full((4, 28, 28), 200, dtype=torch.uint8)
    cfg = AugmentConfig(crop_scale=(1.0, 1.0), crop_ratio=(1.0, 1.0), p_flip=0.0,
                        p_jitter=0.0, p_erase=1.0, erase_scale=(0.1, 0.1))
    out = augment(x, cfg, generator=torch.Generator().manual_seed(0))
    zeros = (out == 0).flatten(1).sum(1)
    assert bool(((zeros > 0.05 * 784) & (zeros < 0.2 * 784)).all())


def test_same_generator_seed_gives_the_same_views_and_views_differ():
    x = _images()
    a = augment(x, generator=torch.Generator().manual_seed(5))
    b = augment(x, generator=torch.Generator().manual_seed(5))
    c = augment(x, generator=torch.Generator().manual_seed(6))
    torch.testing.assert_close(a, b)
    assert not torch.allclose(a, c)
    assert float(a.min()) >= 0.0 and float(a.max()) <= 1.0


def test_crops_zoom_in():
    # a centred bright square: a crop of a quarter of the area must enlarge it
    x = torch.zeros(1, 28, 28, dtype=torch.uint8)
    x[:, 10:18, 10:18] = 255
    cfg = AugmentConfig(crop_scale=(0.25, 0.25), crop_ratio=(1.0, 1.0), p_flip=0.0,
                        p_jitter=0.0, p_erase=0.0)
    out = augment(x.repeat(8, 1, 1), cfg, generator=torch.Generator().manual_seed(0))
    assert float((out > 0.5).flatten(1).sum(1).float().mean()) > 64 * 1.5


def test_bad_inputs_raise():
    with pytest.raises(ValueError, match="images"):
        augment(torch.zeros(2, 1, 28, 28, dtype=torch.uint8))
    with pytest.raises(ValueError, match="crop_scale"):
        AugmentConfig(crop_scale=(0.0, 1.0))
    with pytest.raises(ValueError, match="p_flip"):
        AugmentConfig(p_flip=1.5)
