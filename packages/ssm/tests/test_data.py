"""Long-sequence tasks: ListOps, Pathfinder, sequential FMNIST, byte text, retrieval, noise."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import ndimage

from subspace_ssm import zoo
from subspace_ssm.data import (
    SequenceSplit,
    add_fourier_noise,
    draw_pathfinder,
    fourier_mode_noise,
    generate_listops,
    generate_pathfinder,
    images_to_sequences,
    listops,
    listops_decode,
    listops_encode,
    listops_evaluate,
    mode_band,
    pathfinder_images,
    retrieval_pairs,
)

# ---------------------------------------------------------------------------- ListOps

HAND_WRITTEN = [
    ("[MAX 2 9 [MIN 4 7 ] 0 ]", 9),
    ("[MIN 8 1 0 [MAX 9 7 ] ]", 0),
    ("[SM 5 6 7 ]", 8),
    ("[MED 1 2 3 4 ]", 2),        # median 2.5, truncated
    ("[MED 3 9 1 ]", 3),
    ("[MED 9 8 ]", 8),            # 8.5 -> 8
    ("[SM [MAX 1 9 ] [MIN 5 3 ] ]", 2),
    ("[MIN [SM 9 9 ] [MED 7 7 7 ] ]", 7),
    ("7", 7),
]


@pytest.mark.parametrize(("text", "value"), HAND_WRITTEN)
def test_listops_evaluator_on_hand_written_expressions(text, value):
    assert listops_evaluate(text) == value
    ids = listops_encode(text)
    assert listops_evaluate(ids) == value
    assert listops_evaluate(torch.tensor([*ids, 0, 0, 0])) == value  # padding is ignored
    assert listops_decode(ids) == text


@pytest.mark.parametrize("bad", ["[MAX 1 2", "1 ]", "[MIN ]", "1 2", "", "[MAX 1 2 ] 3"])
def test_listops_evaluator_rejects_malformed(bad):
    with pytest.raises(ValueError, match="tokens"):
        listops_evaluate(bad)


def _numpy_value(tokens: list[str]) -> int:
    """An independent recursive evaluator (LRA's semantics with numpy's median)."""
    pos = 0

    def node() -> int:
        nonlocal pos
        tok = tokens[pos]
        pos += 1
        if tok.isdigit():
            return int(tok)
        args = []
        while tokens[pos] != "]":
            args.append(node())
        pos += 1
        op = tok[1:]
        return {"MIN": min, "MAX": max, "MED": lambda a: int(np.median(a)),
                "SM": lambda a: int(np.sum(a) % 10)}[op](args)

    return node()


def test_generated_listops_are_valid_and_labelled_by_their_value():
    s = generate_listops(40, seed=3, max_depth=5, max_args=5, min_length=10, max_length=100)
    assert isinstance(s, SequenceSplit) and s.n_classes == 10
    assert s.x.shape == (40, 100) and s.x.dtype == torch.int64
    lengths = s.mask.sum(1)
    assert bool((lengths >= 10).all() and (lengths <= 100).all())
    # right padding: real tokens first, then zeros
    assert torch.equal(s.mask, torch.arange(100)[None] < lengths[:, None])
    assert int(s.x.max()) < listops.VOCAB_SIZE == zoo.LISTOPS_VOCAB
    for i in range(40):
        tokens = listops_decode(s.x[i]).split()
        assert tokens[0].startswith("[")  # the root is an operator
        assert _numpy_value(tokens) == int(s.y[i]) == listops_evaluate(s.x[i])


def test_listops_is_deterministic_and_prefix_stable():
    kw = dict(max_depth=4, max_args=4, min_length=8, max_length=64)
    a = generate_listops(12, seed=7, **kw)
    b = generate_listops(12, seed=7, **kw)
    assert torch.equal(a.x, b.x) and torch.equal(a.y, b.y)
    small = generate_listops(5, seed=7, **kw)
    assert torch.equal(small.x, a.x[:5])
    assert not torch.equal(generate_listops(12, seed=8, **kw).x, a.x)


def test_listops_balanced_classes_and_errors():
    s = generate_listops(50, seed=0, max_depth=4, max_args=4, min_length=8, max_length=64,
                         balanced=True)
    assert torch.equal(torch.bincount(s.y, minlength=10), torch.full((10,), 5))
    assert torch.equal(s.y, torch.arange(50) % 10)
    with pytest.raises(ValueError, match="min_length, max_length"):
        generate_listops(2, min_length=100, max_length=50)
    with pytest.raises(ValueError, match="pad_to"):
        generate_listops(2, max_length=64, min_length=8, pad_to=32)


@pytest.mark.slow
def test_listops_lra_lengths():
    s = generate_listops(20, seed=0)  # LRA: depth 10, 10 args, 500..2000 tokens
    lengths = s.mask.sum(1)
    assert s.x.shape == (20, 2000) and bool((lengths >= 500).all() and (lengths <= 2000).all())


# ------------------------------------------------------------------------- Pathfinder


def test_pathfinder_shapes_balance_and_determinism():
    images, labels = pathfinder_images(10, seed=1)
    assert images.shape == (10, 32, 32) and images.dtype == torch.float32
    assert set(images.unique().tolist()) == {0.0, 1.0}
    assert torch.equal(labels, torch.arange(10) % 2)
    again, _ = pathfinder_images(10, seed=1)
    assert torch.equal(images, again)
    prefix, _ = pathfinder_images(4, seed=1)
    assert torch.equal(prefix, images[:4])
    assert not torch.equal(pathfinder_images(10, seed=2)[0], images)
    s = generate_pathfinder(6, seed=1)
    assert s.x.shape == (6, 1024, 1) and s.n_classes == 2
    assert torch.equal(s.x[:, :, 0].reshape(6, 32, 32), images[:6])  # row-major pixels


def _component(image: np.ndarray, point) -> int:
    lab, _ = ndimage.label(image > 0, structure=np.ones((3, 3)))
    return int(lab[point])


@pytest.mark.parametrize("label", [0, 1])
def test_pathfinder_positive_markers_are_connected_negatives_are_not(label):
    # with gap=0 the paths are solid: connectivity of the ink is the label
    for i in range(8):
        ex = draw_pathfinder(np.random.default_rng([5, i]), label, gap=0)
        assert ex.label == label and len(ex.paths) == 4
        same_path = ex.marker_paths[0] == ex.marker_paths[1]
        assert same_path == bool(label)
        a, b = ex.markers
        connected = _component(ex.image, a) == _component(ex.image, b)
        assert connected == bool(label)
        for path in ex.paths:  # consecutive pixels 8-connected, distinct paths apart
            steps = np.abs(np.diff(np.array(path), axis=0)).max(1)
            assert steps.max() == 1
        for p in range(len(ex.paths)):
            for q in range(p + 1, len(ex.paths)):
                d = np.abs(np.array(ex.paths[p])[:, None] - np.array(ex.paths[q])[None]).max(-1)
                assert d.min() >= 3


def test_pathfinder_dashes_and_markers():
    ex = draw_pathfinder(np.random.default_rng(0), 1, dash=3, gap=2)
    path = ex.paths[0]
    for k, (r, c) in enumerate(path[2:-2], start=2):  # away from the 3×3 markers
        near_marker = any(max(abs(r - mr), abs(c - mc)) <= 1 for mr, mc in ex.markers)
        if not near_marker and k % 5 < 3:
            assert ex.image[r, c] == 1.0
    for r, c in ex.markers:
        assert ex.image[r - 1:r + 2, c - 1:c + 2].min() == 1.0
    solid = draw_pathfinder(np.random.default_rng(0), 1, gap=0)
    assert solid.image.sum() > ex.image.sum()  # same draw, gaps removed
    with pytest.raises(ValueError, match="label"):
        draw_pathfinder(np.random.default_rng(0), 2)


# ------------------------------------------------------------------ sequential FMNIST


def test_images_to_sequences_is_row_major_and_normalised():
    img = torch.zeros(2, 28, 28, dtype=torch.uint8)
    img[1, 3, 5] = 255
    x = images_to_sequences(img)
    assert x.shape == (2, 784, 1) and x.dtype == torch.float32
    from subspace_ssm.data import SFMNIST_MEAN, SFMNIST_STD

    assert torch.allclose(x[0], torch.full((784, 1), -SFMNIST_MEAN / SFMNIST_STD))
    assert int(x[1, :, 0].argmax()) == 3 * 28 + 5
    assert x[1, 3 * 28 + 5, 0].item() == pytest.approx((1 - SFMNIST_MEAN) / SFMNIST_STD)
    with pytest.raises(ValueError, match="images: expected uint8"):
        images_to_sequences(torch.zeros(2, 28, 28))


def test_load_sfmnist_fixed_subset():
    from subspace_ssm.data import load_sfmnist

    try:
        s = load_sfmnist("test", n=64, seed=0)
    except Exception as exc:  # data not reachable on this machine
        pytest.skip(f"fashion_mnist unavailable: {exc}")
    assert s.x.shape == (64, 784, 1) and s.n_classes == 10 and s.mask is None
    again = load_sfmnist("test", n=64, seed=0)
    assert torch.equal(s.x, again.x) and torch.equal(s.y, again.y)
    assert abs(float(s.x.mean())) < 0.5  # normalised
    with pytest.raises(ValueError, match="split"):
        load_sfmnist("validation")


# ------------------------------------------------------------------ text / retrieval


def test_retrieval_pairs_are_balanced_and_labelled_by_class():
    labels = torch.tensor([0, 0, 1, 1, 2, 2, 2, 3])
    idx1, idx2, y = retrieval_pairs(labels, 40, seed=0)
    assert torch.equal(y, torch.arange(40).remainder(2).eq(0).long())
    assert bool((idx1 != idx2).all())
    assert torch.equal((labels[idx1] == labels[idx2]).long(), y)
    again = retrieval_pairs(labels, 40, seed=0)
    assert all(torch.equal(p, q) for p, q in zip((idx1, idx2, y), again, strict=True))
    with pytest.raises(ValueError, match="labels"):
        retrieval_pairs(torch.tensor([0, 1, 2]), 4)


def test_byte_text_and_retrieval_from_the_registry():
    from subspace_ssm.data import load_byte_text, load_retrieval_pairs

    s = load_byte_text("reuters", "test", max_len=256, n=32, seed=0)
    assert s.x.shape == (32, 256) and s.n_classes == 8 and int(s.x.max()) < 256
    lengths = s.mask.sum(1)
    assert torch.equal(s.mask, torch.arange(256)[None] < lengths[:, None])
    assert bytes(s.x[0, : int(lengths[0])].tolist()).decode("utf-8").strip()
    pairs = load_retrieval_pairs("test", n_pairs=10, max_len=128, name="reuters")
    assert pairs.x1.shape == pairs.x2.shape == (10, 128) and pairs.y.sum() == 5
    with pytest.raises(ValueError, match="name"):
        load_byte_text("imdb")


# ---------------------------------------------------------------------- Fourier noise


def test_fourier_noise_has_the_amplitude_and_only_the_chosen_modes():
    modes = mode_band(256, "high", 8)
    assert modes == tuple(range(120, 128))
    noise = fourier_mode_noise(5, 256, 3, modes, 0.7, seed=1)
    assert noise.shape == (5, 256, 3)
    rms = noise.pow(2).mean(1).sqrt()
    torch.testing.assert_close(rms, torch.full((5, 3), 0.7), rtol=1e-4, atol=1e-5)
    power = torch.fft.rfft(noise.double(), dim=1).abs()
    inside = torch.zeros(129, dtype=torch.bool)
    inside[list(modes)] = True
    assert float(power[:, ~inside].max()) < 1e-3 * float(power[:, inside].max())
    assert torch.equal(noise, fourier_mode_noise(5, 256, 3, modes, 0.7, seed=1))
    assert not torch.equal(noise, fourier_mode_noise(5, 256, 3, modes, 0.7, seed=2))
    x = torch.randn(5, 256, 3)
    assert torch.equal(add_fourier_noise(x, 0.0, modes), x)
    torch.testing.assert_close(add_fourier_noise(x, 0.7, modes, seed=1) - x, noise)
    assert mode_band(784, "low", 4) == (1, 2, 3, 4)


def test_fourier_noise_errors():
    with pytest.raises(ValueError, match="modes"):
        fourier_mode_noise(1, 16, 1, [8], 1.0)
    with pytest.raises(ValueError, match="modes"):
        fourier_mode_noise(1, 16, 1, [2, 2], 1.0)
    with pytest.raises(ValueError, match="band"):
        mode_band(16, "ultra", 4)
    with pytest.raises(ValueError, match="x: expected float"):
        add_fourier_noise(torch.zeros(2, 3, dtype=torch.long), 1.0, [1])
