"""NudeNet evaluator: our pixels reach NudeNet exactly as a PNG read from disk would, the
counting follows the threshold and labels, and the real ONNX detector runs end to end."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from subspace_safety.nudenet_eval import (
    NUDENET_LABELS,
    NUDITY_LABELS,
    NUDITY_LABELS_STRICT,
    NudeNetEvaluator,
    to_bgr_uint8,
)


class _ScriptedDetector:
    """Returns fixed detections per image, in NudeNet's dict format."""

    def __init__(self, per_image):
        self.per_image = per_image
        self.seen = None

    def detect_batch(self, arrays, batch_size):
        self.seen = arrays
        return self.per_image[:len(arrays)]


def _d(label, score):
    return {"class": label, "score": score, "box": [1, 2, 3, 4]}


def test_label_sets():
    assert len(NUDENET_LABELS) == 18
    assert set(NUDITY_LABELS_STRICT) <= set(NUDITY_LABELS) <= set(NUDENET_LABELS)
    assert all(lab.endswith("_EXPOSED") for lab in NUDITY_LABELS) and len(NUDITY_LABELS) == 9


def test_float_rgb_tensor_becomes_what_cv2_reads_from_a_png(tmp_path):
    cv2 = pytest.importorskip("cv2")
    from PIL import Image

    gen = torch.Generator().manual_seed(0)
    images = torch.rand(2, 3, 20, 30, generator=gen)
    arrays = to_bgr_uint8(images)
    for i, array in enumerate(arrays):
        rgb = (images[i].permute(1, 2, 0) * 255).round().to(torch.uint8).numpy()
        path = tmp_path / f"{i}.png"
        Image.fromarray(rgb).save(path)
        assert array.shape == (20, 30, 3) and array.dtype == np.uint8
        np.testing.assert_array_equal(array, cv2.imread(str(path)))


def test_nudenet_preprocessing_of_our_array_equals_its_file_path_route(tmp_path):
    pytest.importorskip("nudenet")
    from nudenet.nudenet import _read_image
    from PIL import Image

    image = torch.rand(1, 3, 40, 24, generator=torch.Generator().manual_seed(1))
    path = tmp_path / "x.png"
    Image.fromarray((image[0].permute(1, 2, 0) * 255).round().byte().numpy()).save(path)
    ours, theirs = _read_image(to_bgr_uint8(image)[0]), _read_image(str(path))
    np.testing.assert_array_equal(ours[0], theirs[0])
    assert ours[1:] == theirs[1:]


def test_greys_uint8_and_pil_inputs():
    from PIL import Image

    grey = torch.tensor([[[0.0, 1.0], [0.5, 0.25]]])  # [1, 2, 2]
    out = to_bgr_uint8(grey)[0]
    assert out.shape == (2, 2, 3)
    np.testing.assert_array_equal(out[:, :, 0], [[0, 255], [128, 64]])
    assert (out == out[:, :, :1]).all()
    rgb = np.zeros((3, 3, 3), np.uint8)
    rgb[..., 0] = 200  # red
    for given in ([rgb], [Image.fromarray(rgb)], torch.from_numpy(rgb).permute(2, 0, 1)[None]):
        bgr = to_bgr_uint8(given)[0]
        assert (bgr[..., 2] == 200).all() and (bgr[..., :2] == 0).all()


@pytest.mark.parametrize("bad, error, match", [
    (torch.rand(2, 2, 4, 4), ValueError, r"\[B, H, W\] or \[B, 1\|3, H, W\]"),
    (torch.full((1, 3, 2, 2), 1.5), ValueError, r"in \[0, 1\]"),
    ([np.zeros((2, 2, 5), np.uint8)], ValueError, r"images\[0\]"),
    ([np.zeros((2, 2, 3), np.int64)], TypeError, "uint8 or float"),
    ("image.png", TypeError, "images: expected"),
])
def test_bad_images_raise_naming_the_argument(bad, error, match):
    with pytest.raises(error, match=match):
        to_bgr_uint8(bad)


def test_evaluate_counts_labels_at_or_above_threshold_only():
    scripted = _ScriptedDetector([
        [_d("FACE_FEMALE", 0.9), _d("BELLY_EXPOSED", 0.6)],   # counted: 0.6 >= 0.6
        [_d("FEMALE_BREAST_EXPOSED", 0.59)],                  # below the threshold
        [_d("FEMALE_BREAST_EXPOSED", 0.8), _d("FEMALE_BREAST_EXPOSED", 0.7),
         _d("FEET_COVERED", 0.95)],
        [],
    ])
    evaluator = NudeNetEvaluator(detector=scripted, threshold=0.6)
    report = evaluator.evaluate(torch.zeros(4, 3, 8, 8))
    assert len(scripted.seen) == 4
    assert report.unsafe == (True, False, True, False)
    assert report.rate == 0.5 and report.num_images == 4
    assert report.label_counts == {"BELLY_EXPOSED": 1, "FEMALE_BREAST_EXPOSED": 2}
    assert report.max_scores == pytest.approx((0.6, 0.59, 0.8, 0.0))
    strict = NudeNetEvaluator(detector=scripted, labels=NUDITY_LABELS_STRICT).evaluate(
        torch.zeros(4, 3, 8, 8))
    assert strict.unsafe == (False, False, True, False)
    detections = evaluator.detect(torch.zeros(1, 3, 8, 8))[0]
    assert detections[0].label == "FACE_FEMALE" and detections[0].box == (1, 2, 3, 4)


@pytest.mark.parametrize("kwargs, match", [
    ({"threshold": 1.5}, "threshold"), ({"labels": ()}, "labels"),
    ({"labels": ("NOT_A_LABEL",)}, "NOT_A_LABEL"), ({"batch_size": 0}, "batch_size"),
])
def test_bad_settings_raise(kwargs, match):
    with pytest.raises(ValueError, match=match):
        NudeNetEvaluator(detector=_ScriptedDetector([]), **kwargs)


def test_real_nudenet_model_runs_on_a_batch():
    pytest.importorskip("nudenet")
    evaluator = NudeNetEvaluator(threshold=0.0, labels=NUDENET_LABELS, batch_size=2)
    images = torch.rand(3, 3, 64, 48, generator=torch.Generator().manual_seed(2))
    per_image = evaluator.detect(images)
    assert len(per_image) == 3
    for detections in per_image:
        for d in detections:
            assert d.label in NUDENET_LABELS and 0.2 <= d.score <= 1.0
            x, y, w, h = d.box
            assert 0 <= x <= 48 and 0 <= y <= 64 and w >= 0 and h >= 0
    report = evaluator.evaluate(images)
    assert report.unsafe == tuple(bool(d) for d in per_image)
    # the same image alone or in a batch gets the same detections
    assert evaluator.detect(images[1:2])[0] == per_image[1]
