"""Detector: AUC against a brute-force pairwise count, what each adaptation mode trains,
frozen parts stay frozen, and a few steps separate an easy toy real/fake set."""

from __future__ import annotations

import itertools

import pytest
import torch
from torch import nn

from subspace_safety.detector import (
    MODES,
    FakeDetector,
    LoRAConv1x1,
    accuracy,
    adapt,
    detector_scores,
    pointwise_convs,
    roc_auc,
    train_detector,
    trainable_parameters,
)
from subspace_safety.effort import EffortConv1x1

BLOCKS = 4  # stem + 3 inverted-residual blocks: 5 pointwise convs, fast


def _brute_force_auc(scores, labels) -> float:
    pos = [s for s, y in zip(scores, labels, strict=True) if y == 1]
    neg = [s for s, y in zip(scores, labels, strict=True) if y == 0]
    wins = sum(1.0 if p > n else 0.5 if p == n else 0.0 for p, n in itertools.product(pos, neg))
    return wins / (len(pos) * len(neg))


def test_auc_known_cases():
    y = torch.tensor([0, 0, 1, 1])
    assert roc_auc(torch.tensor([0.1, 0.2, 0.3, 0.4]), y) == 1.0
    assert roc_auc(torch.tensor([0.4, 0.3, 0.2, 0.1]), y) == 0.0
    assert roc_auc(torch.zeros(4), y) == 0.5
    # one of four pairs inverted
    assert roc_auc(torch.tensor([0.1, 0.35, 0.3, 0.4]), y) == 0.75


@pytest.mark.parametrize("seed", range(5))
def test_auc_matches_pairwise_count_with_ties(seed):
    gen = torch.Generator().manual_seed(seed)
    scores = torch.randint(0, 6, (37,), generator=gen).float()  # many ties
    labels = torch.randint(0, 2, (37,), generator=gen)
    labels[:2] = torch.tensor([0, 1])
    expected = _brute_force_auc(scores.tolist(), labels.tolist())
    assert roc_auc(scores, labels) == pytest.approx(expected, abs=1e-12)


def test_accuracy_and_bad_inputs():
    s, y = torch.tensor([-1.0, 2.0, 0.5, -0.2]), torch.tensor([0, 1, 0, 0])
    assert accuracy(s, y) == 0.75
    assert accuracy(s, y, threshold=1.0) == 1.0
    with pytest.raises(ValueError, match="labels"):
        roc_auc(torch.zeros(3), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="labels"):
        roc_auc(torch.zeros(3), torch.tensor([0, 1, 2]))
    with pytest.raises(ValueError, match="both classes"):
        roc_auc(torch.zeros(3), torch.ones(3))


def _detector(seed: int = 0) -> FakeDetector:
    torch.manual_seed(seed)
    return FakeDetector(blocks=BLOCKS, pretrained=False)


def _trainable_names(model: nn.Module) -> set[str]:
    return {n for n, p in model.named_parameters() if p.requires_grad}


def test_modes_train_only_what_they_should():
    convs = {n: _detector().features.get_submodule(n) for n in pointwise_convs(_detector().features)}
    assert len(convs) == 5
    head = {"head.weight", "head.bias"}
    head_size = 24 + 1  # stage 2 ends with 24 channels
    r = 3

    probe = _detector()
    assert adapt(probe, "probe") == [] and _trainable_names(probe) == head
    assert trainable_parameters(probe) == head_size

    full = _detector()
    assert adapt(full, "full") == []
    assert trainable_parameters(full) == sum(p.numel() for p in full.parameters())

    effort = _detector()
    names = adapt(effort, "effort", residual_rank=r)
    assert names == [f"features.{n}" for n in convs]
    expected = head | {f"features.{n}.{f}" for n in convs for f in ("U_res", "S_res", "V_res")}
    assert _trainable_names(effort) == expected
    assert trainable_parameters(effort) == head_size + sum(
        r * (c.in_channels + c.out_channels + 1) for c in convs.values())
    assert all(isinstance(effort.features.get_submodule(n), EffortConv1x1) for n in convs)

    lora = _detector()
    adapt(lora, "lora", residual_rank=r)
    expected = head | {f"features.{n}.{f}" for n in convs for f in ("A", "B")}
    assert _trainable_names(lora) == expected
    assert trainable_parameters(lora) == head_size + sum(
        r * (c.in_channels + c.out_channels) for c in convs.values())


@pytest.mark.parametrize("mode", MODES)
def test_adapted_tower_equals_the_original_at_init(mode):
    x = torch.rand(3, 1, 28, 28)
    from subspace_core.backbones import preprocess

    base, adapted = _detector(), _detector()
    adapt(adapted, mode, residual_rank=2)
    with torch.no_grad():
        want, got = base.features(preprocess(x, size=32)), adapted.features(preprocess(x, size=32))
    assert torch.allclose(got, want, rtol=1e-4, atol=1e-4)


def test_bad_arguments():
    with pytest.raises(ValueError, match="mode"):
        adapt(_detector(), "prompt")
    with pytest.raises(ValueError, match="residual_rank"):
        adapt(_detector(), "effort", residual_rank=16)  # features.1's projection is 32 -> 16
    with pytest.raises(TypeError, match="detector"):
        adapt(nn.Linear(2, 2), "full")
    with pytest.raises(ValueError, match="blocks"):
        FakeDetector(blocks=20, pretrained=False)
    with pytest.raises(ValueError, match="batch_size"):
        train_detector(_detector(), torch.zeros(2, 28, 28), torch.zeros(2, 28, 28), batch_size=3)
    with pytest.raises(TypeError, match="conv"):
        LoRAConv1x1(nn.Conv2d(4, 4, 3), rank=2)


def _toy_set(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Real: smooth blobs; fake: the same blobs plus a 2-pixel checkerboard (an upsampling-like
    artefact)."""
    gen = torch.Generator().manual_seed(seed)
    blobs = torch.nn.functional.interpolate(torch.rand(n, 1, 7, 7, generator=gen), size=28,
                                            mode="bilinear", align_corners=False)[:, 0] * 0.6
    checker = ((torch.arange(28)[:, None] // 2 + torch.arange(28)[None] // 2) % 2).float()
    return blobs, (blobs + 0.3 * checker).clamp(0, 1)


@pytest.mark.slow  # torch.optim imports torch._dynamo on first use (10-20 s here)
@pytest.mark.parametrize("mode", MODES)
def test_a_few_steps_separate_an_easy_toy_set(mode):
    real, fake = _toy_set(64, seed=0)
    test_real, test_fake = _toy_set(32, seed=1)
    detector = _detector()
    adapt(detector, mode, residual_rank=2)
    frozen = {n: b.clone() for n, b in detector.named_buffers()}
    frozen |= {n: p.detach().clone() for n, p in detector.named_parameters()
               if not p.requires_grad}
    losses = train_detector(detector, real, fake, steps=25, batch_size=16, lr=1e-2)
    assert losses[-1] < losses[0]
    scores = detector_scores(detector, torch.cat([test_real, test_fake]))
    labels = torch.cat([torch.zeros(32), torch.ones(32)])
    assert roc_auc(scores, labels) > 0.95
    for name, value in detector.state_dict().items():
        if name in frozen:
            assert torch.equal(value, frozen[name]), name


def _effort_detector(seed: int = 0):
    from subspace_safety.detector import EffortFakeDetector

    torch.manual_seed(seed)  # the random tower stands in for ImageNet's: same seed, same tower
    return EffortFakeDetector(residual_rank=2, blocks=BLOCKS, pretrained=False)


def test_effort_detector_state_dict_holds_only_the_trained_tensors():
    model = _effort_detector()
    state = model.state_dict()
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert set(state) == trainable == model.delta_names
    assert {n.rsplit(".", 1)[-1] for n in state} == {"U_res", "S_res", "V_res", "weight", "bias"}
    assert all(n.startswith("head.") for n in state if n.rsplit(".", 1)[-1] in ("weight", "bias"))


def test_effort_detector_delta_round_trips_to_identical_outputs(tmp_path):
    from subspace_core.io import sha256_file
    from subspace_core.zoo import load_state_dict, save_state_dict

    trained = _effort_detector()
    with torch.no_grad():  # stand-in for training: move every stored tensor
        for p in trained.parameters():
            if p.requires_grad:
                p.add_(0.01 * torch.randn_like(p))
    path = tmp_path / "delta.safetensors"
    save_state_dict(trained.state_dict(), path)
    fresh = _effort_detector()
    x = torch.rand(3, 28, 28)
    assert not torch.allclose(fresh.eval()(x), trained.eval()(x))
    fresh.load_state_dict(load_state_dict(path, sha256=sha256_file(path)), strict=True)
    torch.testing.assert_close(fresh.eval()(x), trained.eval()(x), rtol=0, atol=0)


def test_effort_detector_strict_load_still_names_missing_and_unexpected_delta_keys():
    model = _effort_detector()
    state = model.state_dict()
    dropped = next(iter(state))
    with pytest.raises(RuntimeError, match="Missing key"):
        model.load_state_dict({k: v for k, v in state.items() if k != dropped})
    with pytest.raises(RuntimeError, match="Unexpected key"):
        model.load_state_dict({**state, "head.extra": torch.zeros(1)})
