"""Metrics against hand-computed values on small accuracy matrices."""

from __future__ import annotations

import math

import pytest
import torch

from subspace_continual.metrics import (
    accuracy_matrix,
    average_accuracy,
    average_accuracy_curve,
    backward_transfer,
    forgetting,
    forgetting_per_task,
    forward_transfer,
    from_avalanche_forgetting,
    learning_accuracy,
    summarize,
    to_avalanche,
)

NAN = float("nan")
# R[i, j]: accuracy (%) on task j after training task i. Task 0 improves after task 1
# (90 -> 93) so Chaudhry's forgetting (max over the past) differs from -BWT.
R = [[90.0, 10.0, 12.0],
     [93.0, 95.0, 11.0],
     [85.0, 70.0, 92.0]]
B = [10.0, 9.0, 11.0]


def test_hand_computed_values():
    assert average_accuracy(R) == pytest.approx((85 + 70 + 92) / 3)
    assert learning_accuracy(R) == pytest.approx((90 + 95 + 92) / 3)
    # BWT = ((85 - 90) + (70 - 95)) / 2
    assert backward_transfer(R) == pytest.approx(-15.0)
    # f_0 = max(90, 93) - 85 = 8, f_1 = 95 - 70 = 25
    assert forgetting_per_task(R) == pytest.approx([8.0, 25.0])
    assert forgetting(R) == pytest.approx(16.5)
    # after task 1: f_0^1 = 90 - 93 = -3 (task 0 improved)
    assert forgetting(R, k=1) == pytest.approx(-3.0)
    # FWT = ((R[0,1] - b1) + (R[1,2] - b2)) / 2 = ((10 - 9) + (11 - 11)) / 2
    assert forward_transfer(R, B) == pytest.approx(0.5)
    assert average_accuracy_curve(R) == pytest.approx([90.0, 94.0, 247 / 3])


def test_identities_hold():
    torch.manual_seed(0)
    for _ in range(20):
        T = int(torch.randint(2, 8, ()))
        M = torch.rand(T, T) * 100
        s = summarize(M, torch.rand(T) * 100)
        assert s.acc == pytest.approx(s.la + s.bwt * (T - 1) / T)
        assert s.forgetting >= -s.bwt - 1e-9
        # no task ever improves after it is learnt: forgetting == -BWT
        mono = torch.tril(torch.cummin(M, dim=0).values)
        assert forgetting(mono) == pytest.approx(-backward_transfer(mono))


def test_summarize_and_nan_upper_triangle():
    Rn = [[90.0, NAN, NAN], [93.0, 95.0, NAN], [85.0, 70.0, 92.0]]
    s = summarize(Rn, B)
    assert s.fwt is None  # the super-diagonal was not measured
    assert s.acc == pytest.approx(247 / 3) and s.bwt == pytest.approx(-15.0)
    assert s.num_tasks == 3
    with pytest.raises(ValueError, match="FWT needs finite"):
        forward_transfer(Rn, B)
    single = summarize([[77.0]])
    assert single.acc == 77.0 and single.bwt is None and single.forgetting is None


def test_avalanche_conventions():
    av = to_avalanche(R, B, test_sizes=[100, 200, 100])
    assert av.stream_accuracy == pytest.approx((85 * 100 + 70 * 200 + 92 * 100) / 400 / 100)
    assert av.experience_accuracy == pytest.approx((0.85, 0.70, 0.92))
    assert av.experience_forgetting == pytest.approx((0.05, 0.25))
    assert av.stream_forgetting == pytest.approx(0.15)
    assert av.stream_bwt == pytest.approx(-0.15)
    assert av.stream_forward_transfer == pytest.approx(0.005)
    # equal test sizes: pooled accuracy equals ACC; forgetting converts back to BWT
    assert to_avalanche(R).stream_accuracy * 100 == pytest.approx(average_accuracy(R))
    assert from_avalanche_forgetting(av.stream_forgetting) == pytest.approx(backward_transfer(R))
    assert to_avalanche([[0.5, 0.1], [0.4, 0.9]], percent=False).stream_forgetting == \
        pytest.approx(0.1)


@pytest.mark.parametrize(("bad", "match"), [
    ([[1.0, 2.0]], "square"),
    ([[1.0, 0.0], [NAN, 1.0]], r"R\[1, 0\]"),
    ([], "square"),
])
def test_bad_matrices_raise(bad, match):
    with pytest.raises(ValueError, match=match):
        accuracy_matrix(bad)


def test_bad_arguments_raise():
    with pytest.raises(ValueError, match="T >= 2"):
        backward_transfer([[50.0]])
    with pytest.raises(ValueError, match="k: expected"):
        forgetting(R, k=3)
    with pytest.raises(ValueError, match="b: expected"):
        forward_transfer(R, [1.0, 2.0])
    with pytest.raises(ValueError, match="test_sizes"):
        to_avalanche(R, test_sizes=[1, 2])
    assert math.isfinite(forgetting(R, k=2))


def test_schedule_metrics_hand_computed():
    from subspace_continual.metrics import recurrence_gain, schedule_forgetting

    schedule = [0, 1, 0, 2]
    A = [[80.0, 10.0, 10.0],
         [60.0, 90.0, 10.0],
         [85.0, 70.0, 12.0],
         [75.0, 65.0, 95.0]]
    # task 0: max(80, 60, 85) - 75 = 10; task 1: max(90, 70) - 65 = 25; task 2 first seen last
    assert schedule_forgetting(A, schedule) == pytest.approx(17.5)
    # one revisit (session 2, task 0): 85 - 60
    assert recurrence_gain(A, schedule) == pytest.approx(25.0)
    assert recurrence_gain(A[:2], schedule[:2]) is None  # no recurrence
    assert schedule_forgetting(A[:1], schedule[:1]) is None  # nothing seen before the last
    with pytest.raises(ValueError, match="schedule"):
        schedule_forgetting(A, [0, 1, 3, 2])
    with pytest.raises(ValueError, match="A"):
        recurrence_gain(A, schedule[:3])
