"""Scores of one fold's predictions: every metric of the task, computed the same way whichever
engine trained the model, so engines can be compared score by score."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from sklearn.metrics import f1_score, log_loss, mean_squared_error, r2_score, roc_auc_score

from tasks.errors import ConfigError


@dataclass(frozen=True)
class Metric:
    label: str  # as printed: "Accuracy: 0.770833 (0.041667)"
    greater_is_better: bool


METRICS = {
    "accuracy": Metric("Accuracy", True),
    "roc_auc": Metric("ROC AUC", True),
    "f1": Metric("F1", True),
    "f1_macro": Metric("F1 macro", True),
    "roc_auc_ovr": Metric("ROC AUC ovr", True),
    "log_loss": Metric("Log loss", False),
    "r2": Metric("R2", True),
    "rmse": Metric("RMSE", False),
}
TASK_METRICS: dict[str, tuple[str, ...]] = {
    "binary": ("accuracy", "roc_auc", "f1", "log_loss"),
    "multiclass": ("accuracy", "f1_macro", "log_loss", "roc_auc_ovr"),
    "regression": ("r2", "rmse"),
}
DEFAULT_REFIT_METRIC = {"binary": "accuracy", "multiclass": "accuracy", "regression": "r2"}
PROBABILITY_CLIP = 1e-7  # as Keras clips its own cross-entropy


def refit_metric_for(task: str, requested: str | None) -> str:
    """The metric that ranks combinations: the one asked for, if the task has it."""
    if requested is None:
        return DEFAULT_REFIT_METRIC[task]
    if requested not in TASK_METRICS[task]:
        raise ConfigError(
            f"refit_metric {requested!r} is not a metric of a {task} task; "
            f"choose one of {', '.join(TASK_METRICS[task])}"
        )
    return requested


def binary_log_loss(labels: np.ndarray, probabilities: np.ndarray) -> float:
    clipped = np.clip(probabilities, PROBABILITY_CLIP, 1 - PROBABILITY_CLIP)
    return float(log_loss(labels, clipped, labels=[0, 1]))


def binary_scores(truth: np.ndarray, probabilities: np.ndarray) -> dict[str, float]:
    """Encoded 0/1 truth and P(class 1), as scikeras' predict_proba gives it (float32)."""
    # scikeras' rule: class 1 where p > 1 - p (argmax of [1 - p, p]; ties go to class 0).
    predicted = (probabilities > (np.float32(1) - probabilities)).astype(np.int64)
    plain = _plain_case(truth, probabilities, 2)
    clipped = np.clip(probabilities, PROBABILITY_CLIP, 1 - PROBABILITY_CLIP)
    return {
        "accuracy": float(np.mean(predicted == truth)),
        "roc_auc": _roc_auc(truth == 1, probabilities)
        if plain
        else float(roc_auc_score(truth, probabilities)),
        "f1": _f1_scores(truth, predicted, 2)[1]
        if plain
        else float(f1_score(truth, predicted, zero_division=0.0)),
        "log_loss": _log_loss(truth, np.stack([1 - clipped, clipped], axis=1))
        if plain
        else binary_log_loss(truth, probabilities),
    }


def multiclass_scores(truth: np.ndarray, probabilities: np.ndarray) -> dict[str, float]:
    """Encoded class indices and one probability column per class (softmax rows)."""
    n_classes = probabilities.shape[1]
    labels = list(range(n_classes))
    predicted = np.argmax(probabilities, axis=1)
    rows = np.clip(probabilities.astype(np.float64), PROBABILITY_CLIP, 1.0)
    rows /= rows.sum(axis=1, keepdims=True)
    plain = _plain_case(truth, probabilities, n_classes)
    return {
        "accuracy": float(np.mean(predicted == truth)),
        "f1_macro": float(np.mean(_f1_scores(truth, predicted, n_classes)))
        if plain
        else float(f1_score(truth, predicted, labels=labels, average="macro", zero_division=0.0)),
        "log_loss": _log_loss(truth, rows)
        if plain
        else float(log_loss(truth, rows, labels=labels)),
        "roc_auc_ovr": float(
            np.mean([_roc_auc(truth == label, rows[:, label]) for label in labels])
        )
        if plain
        else float(roc_auc_score(truth, rows, multi_class="ovr", labels=labels)),
    }


# scikit-learn's metric functions check their inputs on every call (~4 ms for the binary
# set), more than the engine's training costs per fit: for finite outputs and every class
# present, the same computations run below without the checks (equal to scikit-learn's to the
# last bit: tests/unit/tasks/test_metrics.py). Anything else goes to scikit-learn itself.


def _plain_case(truth: np.ndarray, probabilities: np.ndarray, n_classes: int) -> bool:
    present = np.bincount(truth, minlength=n_classes) if truth.min(initial=0) >= 0 else None
    return (
        present is not None
        and len(present) == n_classes
        and bool(present.all())
        and bool(np.isfinite(probabilities).all())
    )


def _roc_auc(positive: np.ndarray, scores: np.ndarray) -> float:
    """scikit-learn's binary ROC AUC: roc_curve (thresholds at distinct scores, collinear
    points dropped) integrated by the trapezoidal rule."""
    order = np.argsort(-scores, kind="stable")
    ranked, hits = scores[order], positive[order].astype(np.float64)
    thresholds = np.concatenate([np.nonzero(np.diff(ranked))[0], [ranked.size - 1]])
    tps = np.cumsum(hits)[thresholds]
    fps = 1 + thresholds.astype(np.float64) - tps
    if fps.shape[0] > 2:
        keep = np.concatenate([[True], np.logical_or(np.diff(fps, 2), np.diff(tps, 2)), [True]])
        fps, tps = fps[keep], tps[keep]
    tps = np.concatenate([[0.0], tps])
    fps = np.concatenate([[0.0], fps])
    return float(np.trapezoid(tps / tps[-1], fps / fps[-1]))


def _f1_scores(truth: np.ndarray, predicted: np.ndarray, n_classes: int) -> np.ndarray:
    """Per class F1 as scikit-learn computes it: 2 tp / (true + predicted), 0 where both
    are 0 (zero_division=0)."""
    true_sum = np.bincount(truth, minlength=n_classes).astype(np.float64)
    predicted_sum = np.bincount(predicted, minlength=n_classes).astype(np.float64)
    tp_sum = np.bincount(truth[truth == predicted], minlength=n_classes).astype(np.float64)
    denominator = 1.0 * true_sum + predicted_sum
    with np.errstate(divide="ignore", invalid="ignore"):
        scores = (1 + 1.0) * tp_sum / denominator
    scores[denominator == 0] = 0.0
    return scores


def _log_loss(truth: np.ndarray, rows: np.ndarray) -> float:
    """scikit-learn's log_loss of probability rows (one column per class), in their dtype."""
    eps = np.finfo(rows.dtype).eps
    clipped = np.clip(rows, eps, 1 - eps)
    one_hot = np.eye(rows.shape[1], dtype=rows.dtype)[truth]
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = one_hot * np.log(clipped)
    terms = np.where(one_hot == 0.0, np.asarray(0.0, dtype=terms.dtype), terms)  # its xlogy
    return float(np.average(-np.sum(terms, axis=1)))


def regression_scores(truth: np.ndarray, predictions: np.ndarray) -> dict[str, float]:
    predictions = np.asarray(predictions, dtype=np.float64).ravel()
    return {
        "r2": float(r2_score(truth, predictions)),
        "rmse": float(np.sqrt(mean_squared_error(truth, predictions))),
    }


def loss_on_test_rows(task: str, scores: dict[str, float]) -> float:
    """cv_results' `test_loss`: log loss for classifiers, mean squared error for regressors."""
    return scores["rmse"] ** 2 if task == "regression" else scores["log_loss"]
