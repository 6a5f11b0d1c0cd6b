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


def _checked_binary(truth, p):
    """The binary scores through scikit-learn's own checked functions."""
    predicted = (p > (np.float32(1) - p)).astype(np.int64)
    return {
        "accuracy": float(np.mean(predicted == truth)),
        "roc_auc": float(roc_auc_score(truth, p)),
        "f1": float(f1_score(truth, predicted, zero_division=0.0)),
        "log_loss": float(log_loss(truth, np.clip(p, 1e-7, 1 - 1e-7), labels=[0, 1])),
    }


def _checked_multiclass(truth, p):
    labels = list(range(p.shape[1]))
    rows = np.clip(p.astype(np.float64), 1e-7, 1.0)
    rows /= rows.sum(axis=1, keepdims=True)
    predicted = np.argmax(p, axis=1)
    return {
        "accuracy": float(np.mean(predicted == truth)),
        "f1_macro": float(
            f1_score(truth, predicted, labels=labels, average="macro", zero_division=0.0)
        ),
        "log_loss": float(log_loss(truth, rows, labels=labels)),
        "roc_auc_ovr": float(roc_auc_score(truth, rows, multi_class="ovr", labels=labels)),
    }


def _outputs(rng, n_rows, n_columns, ties):
    """Model-like float32 outputs: some folds' outputs are rounded (ties), some saturate."""
    raw = rng.normal(size=(n_rows, n_columns)) * rng.choice([0.1, 1.0, 30.0])
    if ties:
        raw = np.round(raw, 1)
    if n_columns == 1:
        return (1 / (1 + np.exp(-raw[:, 0]))).astype(np.float32)
    exp = np.exp(raw - raw.max(axis=1, keepdims=True))
    return (exp / exp.sum(axis=1, keepdims=True)).astype(np.float32)


def test_the_unchecked_scores_equal_scikit_learns_to_the_last_bit():
    """The engine scores every fit without scikit-learn's input checks: the numbers must be
    the very numbers scikit-learn gives (sizes, ties, saturated and constant outputs)."""
    for case in range(100):
        _assert_scores_equal_scikit_learns(case)


def _assert_scores_equal_scikit_learns(case):
    rng = np.random.default_rng(case)
    n_rows = int(rng.integers(4, 400))
    ties = case % 3 == 0
    truth = rng.integers(0, 2, n_rows)
    truth[:2] = [0, 1]
    p = _outputs(rng, n_rows, 1, ties)
    if case % 25 == 1:
        p[:] = np.float32(0.5)  # a model that learned nothing
    assert binary_scores(truth, p) == _checked_binary(truth, p)
    n_classes = int(rng.integers(3, 11))
    truth = np.concatenate([np.arange(n_classes), rng.integers(0, n_classes, n_rows)])
    p = _outputs(rng, len(truth), n_classes, ties)
    assert multiclass_scores(truth, p) == _checked_multiclass(truth, p)


def test_scores_of_a_fold_missing_a_class_or_of_non_finite_outputs_are_scikit_learns():
    truth = np.zeros(10, dtype=np.int64)
    p = np.linspace(0.1, 0.9, 10).astype(np.float32)
    with pytest.warns(Warning):
        assert np.isnan(binary_scores(truth, p)["roc_auc"])
    truth[0] = 1
    p[3] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        binary_scores(truth, p)
