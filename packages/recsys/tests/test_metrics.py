import pytest
import torch
from sklearn.metrics import log_loss, roc_auc_score

from subspace_recsys.metrics import SlidingWindowAUC, auc, logloss


def test_auc_matches_sklearn_with_ties():
    g = torch.Generator().manual_seed(0)
    labels = (torch.rand(500, generator=g) < 0.3).double()
    scores = torch.randint(0, 20, (500,), generator=g).double() + labels  # many ties
    assert auc(scores, labels) == pytest.approx(roc_auc_score(labels, scores), abs=1e-12)


def test_auc_extremes_and_missing_class():
    labels = torch.tensor([0, 0, 1, 1])
    assert auc(torch.tensor([0.1, 0.2, 0.3, 0.4]), labels) == 1.0
    assert auc(torch.tensor([0.4, 0.3, 0.2, 0.1]), labels) == 0.0
    assert auc(torch.ones(4), labels) == 0.5
    assert torch.isnan(torch.tensor(auc(torch.ones(3), torch.ones(3))))


def test_logloss_matches_sklearn():
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(200, generator=g)
    labels = (torch.rand(200, generator=g) < 0.5).double()
    ref = log_loss(labels, torch.sigmoid(logits).double())
    assert logloss(logits, labels) == pytest.approx(ref, rel=1e-6)


def test_sliding_window_keeps_only_the_last_events():
    metric = SlidingWindowAUC(window=4)
    metric.update(torch.tensor([5.0, -5.0]), torch.tensor([0, 1]))  # perfectly wrong
    metric.update(torch.tensor([-1.0, 1.0, -2.0, 2.0]), torch.tensor([0, 1, 0, 1]))
    assert len(metric) == 4
    assert metric.auc() == 1.0  # the wrong pair fell out of the window


def test_bad_input_is_refused():
    with pytest.raises(ValueError, match="same number"):
        auc(torch.ones(3), torch.ones(2))
    with pytest.raises(ValueError, match="0/1"):
        auc(torch.ones(2), torch.tensor([0, 2]))
    with pytest.raises(ValueError, match="window"):
        SlidingWindowAUC(window=0)
