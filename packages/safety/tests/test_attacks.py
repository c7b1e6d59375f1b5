import pytest
import torch
import torch.nn.functional as F

from subspace_safety.attacks import pgd_linf


def _linear(w: torch.Tensor, b: torch.Tensor):
    """Logits [B, C] of a linear classifier on flattened images; w [C, P], b [C]."""
    return lambda x: x.flatten(1) @ w.T + b


def _setup(seed=0, n=16, c=4, side=5):
    gen = torch.Generator().manual_seed(seed)
    images = torch.rand(n, 1, side, side, generator=gen)
    w = torch.randn(c, side * side, generator=gen)
    b = torch.randn(c, generator=gen)
    labels = torch.randint(0, c, (n,), generator=gen)
    return images, labels, w, b


@pytest.mark.parametrize("random_start", [True, False])
def test_stays_in_eps_ball_and_pixel_box(random_start):
    images, labels, w, b = _setup()
    images[:, :, 0] = 0.0  # pixels on the box edges: clipping must hold them inside [0, 1]
    images[:, :, 1] = 1.0
    eps = 0.1
    adv = pgd_linf(_linear(w, b), images, labels, eps, 0.07, 7, seed=3,
                   random_start=random_start)
    assert adv.shape == images.shape
    assert (adv - images).abs().max() <= eps + 1e-6
    assert adv.min() >= 0 and adv.max() <= 1
    assert (adv - images).abs().max() > eps / 2  # it did move


def test_increases_loss_on_linear_model():
    images, labels, w, b = _setup(seed=1, n=32)
    images = 0.25 + images / 2  # interior, so the box never binds at eps 0.05
    fn = _linear(w, b)
    adv = pgd_linf(fn, images, labels, 0.05, 0.02, 10, seed=0)
    clean_loss = F.cross_entropy(fn(images), labels, reduction="none")
    adv_loss = F.cross_entropy(fn(adv), labels, reduction="none")
    assert bool((adv_loss > clean_loss).all())


def test_linear_binary_flip_matches_closed_form():
    # two-class linear model with logits [0, m(x)], m(x) = w·x + b: the L∞ ball of radius
    # eps lowers m by at most eps·||w||₁ (at x - eps·sign(w)), so an example with margin
    # below that flips and one above it cannot
    gen = torch.Generator().manual_seed(5)
    side, eps = 4, 0.05
    w = torch.randn(side * side, generator=gen)
    x = torch.full((2, 1, side, side), 0.5)  # interior: the box never binds
    reach = eps * float(w.abs().sum())
    b = torch.tensor([0.9 * reach, 1.1 * reach]) - float(w @ x[0].flatten())

    def fn(images):
        m = images.flatten(1) @ w + b
        return torch.stack([torch.zeros_like(m), m], 1)

    labels = torch.ones(2, dtype=torch.int64)
    assert bool((fn(x).argmax(1) == 1).all())
    adv = pgd_linf(fn, x, labels, eps, eps / 2, 20, seed=0)
    pred = fn(adv).argmax(1)
    assert pred.tolist() == [0, 1]
    # the optimum of the ball is the corner x - eps·sign(w): PGD reaches it exactly
    torch.testing.assert_close(adv[1], x[1] - eps * w.sign().view_as(x[1]))


def test_stop_on_success_keeps_the_flipping_iterate():
    images, labels, w, b = _setup(seed=2, n=32)
    fn = _linear(w, b)
    adv = pgd_linf(fn, images, labels, 0.3, 0.1, 10, seed=0, stop_on_success=True)
    assert (adv - images).abs().max() <= 0.3 + 1e-6
    flipped = fn(adv).argmax(1) != labels
    plain = pgd_linf(fn, images, labels, 0.3, 0.1, 10, seed=0)
    # never fewer successes than running on past the boundary
    assert int(flipped.sum()) >= int((fn(plain).argmax(1) != labels).sum())


def test_zero_eps_and_seed_reproducibility():
    images, labels, w, b = _setup()
    fn = _linear(w, b)
    assert torch.equal(pgd_linf(fn, images, labels, 0.0, 0.1, 5), images)
    a = pgd_linf(fn, images, labels, 0.1, 0.01, 1, seed=7)
    assert torch.equal(a, pgd_linf(fn, images, labels, 0.1, 0.01, 1, seed=7))
    assert not torch.equal(a, pgd_linf(fn, images, labels, 0.1, 0.01, 1, seed=8))


def test_bad_inputs_raise_clear_errors():
    images, labels, w, b = _setup()
    fn = _linear(w, b)
    with pytest.raises(ValueError, match="images: expected values in"):
        pgd_linf(fn, images * 2, labels, 0.1, 0.1, 1)
    with pytest.raises(TypeError, match="images"):
        pgd_linf(fn, (images * 255).to(torch.uint8), labels, 0.1, 0.1, 1)
    with pytest.raises(ValueError, match="images: expected shape"):
        pgd_linf(fn, images[:, 0], labels, 0.1, 0.1, 1)
    with pytest.raises(TypeError, match="labels"):
        pgd_linf(fn, images, labels.float(), 0.1, 0.1, 1)
    with pytest.raises(ValueError, match="labels: expected shape"):
        pgd_linf(fn, images, labels[:3], 0.1, 0.1, 1)
    with pytest.raises(ValueError, match="eps"):
        pgd_linf(fn, images, labels, -0.1, 0.1, 1)
    with pytest.raises(ValueError, match="step"):
        pgd_linf(fn, images, labels, 0.1, 0.0, 1)
    with pytest.raises(ValueError, match="steps"):
        pgd_linf(fn, images, labels, 0.1, 0.1, 1.5)
    with pytest.raises(ValueError, match="model_fn: expected logits"):
        pgd_linf(lambda x: x.flatten(1).sum(1), images, labels, 0.1, 0.1, 1)
