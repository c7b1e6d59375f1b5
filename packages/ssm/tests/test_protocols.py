"""Evaluation protocols: registered names, documented metric keys, metric code on oracles."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import subspace_ssm.plugin  # noqa: F401  registers the protocols
from subspace_core.eval import get_protocol
from subspace_ssm import SSMClassifier
from subspace_ssm.data import SequenceSplit, listops_evaluate
from subspace_ssm.protocols import (
    LISTOPS_TEST,
    classify,
    listops_protocol,
    noise_robustness,
    ptd_robustness_protocol,
    sfmnist_protocol,
)

SHORT_LISTOPS = dict(n=20, seed=3, max_depth=4, max_args=4, min_length=8, max_length=48)


def test_registered_protocols_and_their_metric_keys():
    assert get_protocol("sfmnist_test").metrics == ("top1", "nll")
    assert get_protocol("listops_test").metrics == ("top1", "nll")
    ptd = get_protocol("ptd_robustness")
    assert ptd.metrics == ("robust_top1", "top1_clean", "top1_low_0.25", "top1_low_0.5",
                           "top1_low_1", "top1_high_0.25", "top1_high_0.5", "top1_high_1")
    assert ptd.dataset == "fashion_mnist" and ptd.split == "test"
    assert LISTOPS_TEST["seed"] != 0  # recipes train on other seeds


class _FirstStepOracle(nn.Module):
    """Predicts the class written in the first feature of the first step."""

    def forward(self, x, mask=None):
        return 10.0 * nn.functional.one_hot(x[:, 0, 0].round().long().clamp(0, 2), 3).float()


def test_classify_scores_an_oracle_and_a_constant_model():
    y = torch.arange(30) % 3
    x = torch.randn(30, 5, 2)
    x[:, 0, 0] = y.float()
    data = SequenceSplit(x, y, 3)
    res = classify(_FirstStepOracle(), data, batch_size=7)
    assert res["top1"] == 100.0 and res["nll"] < 1e-3

    class Constant(nn.Module):
        def forward(self, x, mask=None):
            return torch.tensor([[1.0, 0.0, 0.0]]).expand(len(x), 3)

    assert classify(Constant(), data)["top1"] == pytest.approx(100 / 3)
    with pytest.raises(ValueError, match="logits"):
        classify(nn.Linear(2, 4), SequenceSplit(torch.randn(4, 2), torch.zeros(4, dtype=torch.long), 3))


def test_listops_protocol_runs_an_untrained_model_and_an_exact_oracle():
    proto = listops_protocol("listops_short", **SHORT_LISTOPS)
    torch.manual_seed(0)
    model = SSMClassifier(10, kind="s4d", encoder="embedding", vocab_size=18, d_model=8,
                          n_layers=1, d_state=8)
    res = proto.run(model, torch.device("cpu"))
    assert set(res) == {"top1", "nll"} and 0 <= res["top1"] <= 100 and res["nll"] > 0

    class Oracle(nn.Module):
        def forward(self, x, mask=None):
            assert mask is not None and mask.shape == x.shape
            values = torch.tensor([listops_evaluate(row) for row in x])
            return nn.functional.one_hot(values, 10).float() * 20

    assert proto.run(Oracle(), torch.device("cpu"))["top1"] == 100.0


class _MeanPool(nn.Module):
    """Linear model on the sequence mean: blind to noise in modes 0 < k < L (zero mean)."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.lin = nn.Linear(1, 10)

    def forward(self, x, mask=None):
        return self.lin(x.mean(1))


def test_noise_robustness_keys_and_a_noise_blind_model():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(40, 64, 1, generator=g)
    y = torch.randint(0, 10, (40,), generator=g)
    data = SequenceSplit(x, y, 10)
    res = noise_robustness(_MeanPool(), data, amplitudes=(0.5, 2.0), bands=("low", "high"),
                           width=4)
    assert list(res) == ["robust_top1", "top1_clean", "top1_low_0.5", "top1_low_2",
                         "top1_high_0.5", "top1_high_2"]
    for key in list(res)[2:]:
        assert res[key] == res["top1_clean"]  # the mean of each sinusoid is 0
    # a model that reads single steps is hurt by strong noise
    torch.manual_seed(0)
    x = torch.zeros(60, 64, 1)
    y = torch.arange(60) % 3
    x[:, 0, 0] = y.float()
    noisy = noise_robustness(_FirstStepOracle(), SequenceSplit(x, y, 3), amplitudes=(0.0, 3.0),
                             bands=("low",), width=4)
    assert noisy["top1_low_0"] == 100.0 and noisy["top1_low_3"] < 80.0
    with pytest.raises(ValueError, match=r"data\.x"):
        noise_robustness(_MeanPool(), SequenceSplit(torch.zeros(2, 4, dtype=torch.long),
                                                    torch.zeros(2, dtype=torch.long), 2))


def test_sfmnist_and_ptd_protocols_run_untrained_tiny_models():
    torch.manual_seed(0)
    model = SSMClassifier(10, kind="s4d", d_model=4, n_layers=1, d_state=4)
    try:
        res = sfmnist_protocol("sfmnist_tiny", n=40).run(model, torch.device("cpu"))
    except Exception as exc:  # data not reachable on this machine
        pytest.skip(f"fashion_mnist unavailable: {exc}")
    assert set(res) == {"top1", "nll"} and 0 <= res["top1"] <= 100
    proto = ptd_robustness_protocol("ptd_tiny", n=40, amplitudes=(0.5,), bands=("high",), width=4)
    res = proto.run(model, torch.device("cpu"))
    assert tuple(res) == proto.metrics == ("robust_top1", "top1_clean", "top1_high_0.5")
    assert res["robust_top1"] == res["top1_high_0.5"]
