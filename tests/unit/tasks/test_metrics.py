import numpy as np
import pytest
from sklearn.metrics import accuracy_score, f1_score, log_loss, r2_score, roc_auc_score

from tasks.errors import ConfigError
from tasks.metrics import (
    TASK_METRICS,
    binary_scores,
    multiclass_scores,
    refit_metric_for,
    regression_scores,
)

RNG = np.random.default_rng(0)


def test_binary_scores_agree_with_scikit_learn():
    truth = RNG.integers(0, 2, 200)
    p = np.clip(truth * 0.3 + RNG.random(200) * 0.7, 0, 1).astype(np.float32)
    scores = binary_scores(truth, p)
    predicted = (p > 0.5).astype(int)
    assert list(scores) == list(TASK_METRICS["binary"])
    assert scores["accuracy"] == accuracy_score(truth, predicted)
    assert scores["f1"] == pytest.approx(f1_score(truth, predicted))
    assert scores["roc_auc"] == pytest.approx(roc_auc_score(truth, p))
    assert scores["log_loss"] == pytest.approx(log_loss(truth, p), rel=1e-5)


def test_multiclass_and_regression_scores_agree_with_scikit_learn():
    truth = np.repeat([0, 1, 2], 20)
    logits = RNG.normal(size=(60, 3)) + np.eye(3)[truth]
    p = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    scores = multiclass_scores(truth, p.astype(np.float32))
    assert list(scores) == list(TASK_METRICS["multiclass"])
    assert scores["accuracy"] == accuracy_score(truth, p.argmax(axis=1))
    assert scores["f1_macro"] == pytest.approx(f1_score(truth, p.argmax(1), average="macro"))
    assert scores["roc_auc_ovr"] == pytest.approx(roc_auc_score(truth, p, multi_class="ovr"))
    values = RNG.normal(size=50)
    predictions = values + RNG.normal(scale=0.5, size=50)
    regression = regression_scores(values, predictions)
    assert regression["r2"] == pytest.approx(r2_score(values, predictions))
    assert regression["rmse"] == pytest.approx(np.sqrt(np.mean((values - predictions) ** 2)))


def test_refit_metric_defaults_per_task_and_must_belong_to_it():
    assert refit_metric_for("binary", None) == "accuracy"
    assert refit_metric_for("multiclass", None) == "accuracy"
    assert refit_metric_for("regression", None) == "r2"
    assert refit_metric_for("regression", "rmse") == "rmse"
    with pytest.raises(ConfigError, match="refit_metric 'r2' is not a metric of a binary task"):
        refit_metric_for("binary", "r2")
