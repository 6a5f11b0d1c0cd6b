"""Scores of one fold's predictions: every metric of the task, computed the same way whichever
engine trained the model, so engines can be compared score by score."""

from __future__ import annotations

import functools
import hashlib
import importlib
import inspect
import json
import warnings
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict
from sklearn.metrics import (
    f1_score,
    get_scorer,
    get_scorer_names,
    log_loss,
    mean_squared_error,
    r2_score,
    roc_auc_score,
)

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


def refit_metric_for(task: str, requested: str | None, scorers: tuple | list = ()) -> str:
    """The metric that ranks combinations (its key in the fits' scores): the one asked for,
    if the task has it or a scorer of the run computes it (scikit-learn's neg_log_loss
    ranks as log_loss does)."""
    if requested is None:
        return DEFAULT_REFIT_METRIC[task]
    metric = scorer_key(requested, task)[0]
    extra = [spec.name for spec in scorers]
    if metric not in TASK_METRICS[task] and metric not in extra:
        raise ConfigError(
            f"refit_metric {requested!r} is not a metric of a {task} task; "
            f"choose one of {', '.join([*TASK_METRICS[task], *extra])} or any scikit-learn "
            "scorer of the task"
        )
    return metric


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


# --- any scikit-learn scorer ---------------------------------------------------------------
# Scorer names the task's own metrics answer (name -> (metric, sign)): never computed twice.
SCORER_ALIASES: dict[str, tuple[str, float]] = {
    "neg_log_loss": ("log_loss", -1.0),
    "neg_root_mean_squared_error": ("rmse", -1.0),
}
# Scikit-learn's clustering scorers compare two labellings up to renaming: not a classifier's
# score, so they are not offered.
_NOT_SCORES_OF_A_MODEL = "sklearn.metrics.cluster"


class ScorerSpec(BaseModel):
    """A scikit-learn scorer as a task run computes it from a fold's outputs, without the
    model: its score function (by import path, so it travels to any worker), its kwargs and
    sign, and whether it reads predictions or probabilities (scikit-learn's response method).

    Classifiers' truth and predictions are class indices (0..k-1, the classes sorted; class 1
    is the positive class of a binary task); probabilities are P(class 1) for a binary task,
    one column per class otherwise."""

    model_config = ConfigDict(frozen=True)

    name: str  # its key in a fit's scores and its cv_results_ name
    function: str  # module:qualname
    sign: float = 1.0
    kwargs: dict[str, Any] = {}
    uses: Literal["predictions", "probabilities"] = "predictions"
    # A scorer object the user made (make_scorer), not one of scikit-learn's by name: it gets
    # truth and predictions in the user's labels (`labels`: the classes in encoding order), as
    # scikit-learn's search would give them (with_user_labels).
    users_own: bool = False
    labels: list[Any] | None = None


def with_user_labels(scorers: list[ScorerSpec], classes: list[Any] | None) -> list[ScorerSpec]:
    """The scorers, the user's own given the classes' labels (None for a regression); those
    named by scikit-learn's names keep class numbers, class 1 being the dataset's positive
    label (`precision`, `f1`... score the positive class the spec names)."""
    return [
        spec.model_copy(update={"labels": classes if spec.users_own else None}) for spec in scorers
    ]


def scorer_key(name: str, task: str) -> tuple[str, float]:
    """(the fit's scores key, sign) a scikit-learn scorer name reads: the task's own metric
    for its names and aliases (neg_log_loss is -log_loss), else the scorer's own name."""
    if name in TASK_METRICS[task]:
        return name, 1.0
    if name in SCORER_ALIASES and SCORER_ALIASES[name][0] in TASK_METRICS[task]:
        return SCORER_ALIASES[name]
    return name, 1.0


def scorer_spec(name: str, scorer: Any) -> ScorerSpec:
    """A scikit-learn scorer object (get_scorer, make_scorer) as a ScorerSpec; ConfigError
    with the reason when a task run could not compute it from a fold's outputs."""
    function = getattr(scorer, "_score_func", None)
    if function is None or not hasattr(scorer, "_sign"):
        raise ConfigError(
            f"scoring {name!r} ({scorer!r}): foldflow scores each fold inside its task run from "
            "the fold's predictions, where a plain callable cannot reach the fold's model; wrap "
            "a module-level function of (y_true, y_pred) in sklearn.metrics.make_scorer"
        )
    module, qualname = getattr(function, "__module__", None), getattr(function, "__qualname__", "")
    if not module or "<" in qualname or _imported(f"{module}:{qualname}") is not function:
        raise ConfigError(
            f"scoring {name!r}: its score function {qualname or function!r} is not a "
            "module-level function (a lambda or a nested function cannot travel to the task "
            "runs); define it at the top of a module"
        )
    kwargs = dict(getattr(scorer, "_kwargs", {}) or {})
    try:
        json.dumps(kwargs)
    except TypeError as error:
        raise ConfigError(f"scoring {name!r}: its keyword arguments {kwargs!r}: {error}") from None
    response = getattr(scorer, "_response_method", "predict")
    methods = (response,) if isinstance(response, str) else tuple(response)
    uses = "predictions" if methods == ("predict",) else "probabilities"
    return ScorerSpec(
        name=name,
        function=f"{module}:{qualname}",
        sign=float(scorer._sign),
        kwargs=kwargs,
        uses=uses,
    )


def _imported(path: str) -> Any:
    module, _, qualname = path.partition(":")
    try:
        found: Any = importlib.import_module(module)
        for part in qualname.split("."):
            found = getattr(found, part)
    except (ImportError, AttributeError):
        return None
    return found


@functools.cache
def scorer_names_for(task: str) -> tuple[str, ...]:
    """Every scikit-learn scorer name that applies to the task: its function scores a
    classifier's labels or probabilities (or a regressor's predictions) and accepts a small
    example of the task's outputs."""
    names = []
    for name in get_scorer_names():
        scorer = get_scorer(name)
        module = scorer._score_func.__module__
        regression = module.endswith("_regression")
        if module.startswith(_NOT_SCORES_OF_A_MODEL) or regression != (task == "regression"):
            continue
        spec = scorer_spec(name, scorer)
        truth, outputs = _EXAMPLES[task]
        if np.isfinite(extra_scores(task, (spec,), truth, outputs, quiet=False).get(name, np.nan)):
            names.append(name)
    return tuple(names)


_EXAMPLES = {
    "binary": (np.array([0, 1, 0, 1, 1, 0]), np.array([0.2, 0.7, 0.6, 0.9, 0.4, 0.1])),
    "multiclass": (
        np.array([0, 1, 2, 0, 1, 2]),
        np.array([[0.6, 0.3, 0.1], [0.2, 0.5, 0.3], [0.1, 0.2, 0.7]] * 2),
    ),
    "regression": (np.array([1.0, 2.0, 3.0, 4.0]), np.array([1.5, 1.8, 3.2, 3.7])),
}


def scorers_for(
    task: str, scoring: list[str | ScorerSpec | dict], refit_metric: str | None = None
) -> list[ScorerSpec]:
    """The scorers a run computes beyond the task's own metrics (scikit-learn names, specs or
    their dicts: RunSettings.scoring), the refit metric's among them if it names one;
    ConfigError, with the names that apply, for a name that does not apply to the task."""
    asked: list[str | ScorerSpec | dict] = list(scoring)
    if refit_metric is not None and refit_metric in scorer_names_for(task):
        asked.append(refit_metric)  # else refit_metric_for says why it is refused
    specs: dict[str, ScorerSpec] = {}
    for entry in asked:
        if isinstance(entry, ScorerSpec | dict):
            spec = ScorerSpec.model_validate(entry)
            specs.setdefault(spec.name, spec)
            continue
        if scorer_key(entry, task)[0] in TASK_METRICS[task] or entry in specs:
            continue
        if entry not in scorer_names_for(task):
            raise ConfigError(
                f"scoring {entry!r} is not a scikit-learn scorer of a {task} task; choose from "
                f"{', '.join(sorted({*TASK_METRICS[task], *scorer_names_for(task)}))}"
            )
        specs[entry] = scorer_spec(entry, get_scorer(entry))
    return list(specs.values())


def extra_scores(
    task: str,
    scorers: tuple[ScorerSpec, ...] | list[ScorerSpec],
    truth: np.ndarray,
    outputs: np.ndarray,
    quiet: bool = True,
) -> dict[str, float]:
    """Each scorer on one fold's outputs (as the engines score them: P(class 1), probability
    rows or predictions), signed as scikit-learn's scorer reports it; NaN where its function
    refuses these outputs (scikit-learn's error_score)."""
    if not scorers:
        return {}
    outputs = np.asarray(outputs, dtype=np.float64)
    if task == "binary":
        predicted = (outputs > 1 - outputs).astype(np.int64)
    elif task == "multiclass":
        predicted = np.argmax(outputs, axis=1)
    else:
        predicted = outputs.ravel()
    scores = {}
    for spec in scorers:
        function = _imported(spec.function)
        kwargs = dict(spec.kwargs)
        if spec.uses == "probabilities" and task == "multiclass" and "labels" not in kwargs:
            if "labels" in inspect.signature(function).parameters:
                kwargs["labels"] = list(range(outputs.shape[1]))
        given = outputs if spec.uses == "probabilities" else predicted
        expected = truth
        if spec.labels is not None and task != "regression":
            labels = np.asarray(spec.labels, dtype=object)
            expected = labels[np.asarray(truth, dtype=np.int64)]
            if spec.uses == "predictions":
                given = labels[np.asarray(predicted, dtype=np.int64)]
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                scores[spec.name] = spec.sign * float(function(expected, given, **kwargs))
        except Exception:
            if not quiet:
                return {}
            scores[spec.name] = float("nan")
    return scores


def score_outputs(
    task: str, truth: np.ndarray, outputs: np.ndarray, scorers: tuple | list = ()
) -> dict[str, float]:
    """Every metric of the task and each extra scorer, from one fold's outputs: encoded truth
    (class indices, or values) and P(class 1), probability rows or predictions."""
    if task == "binary":
        scores = binary_scores(truth, outputs)
    elif task == "multiclass":
        scores = multiclass_scores(truth, outputs)
    else:
        scores = regression_scores(truth, outputs)
    return scores | extra_scores(task, scorers, truth, outputs)


# --- the baseline: what a model that learned nothing scores --------------------------------
BASELINE_KIND = {
    "binary": "majority class",
    "multiclass": "majority class",
    "regression": "mean of the training targets",
}


def baseline_outputs(task: str, train_truth: np.ndarray, n_test: int, n_classes: int) -> np.ndarray:
    """What a model that learned nothing outputs for n_test rows, from the training rows
    alone (scikit-learn's DummyClassifier(strategy="prior"): the majority class, each class's
    share as its probability; DummyRegressor: the mean)."""
    if task == "regression":
        return np.full(n_test, float(np.mean(train_truth)))
    shares = np.bincount(train_truth, minlength=n_classes) / max(1, len(train_truth))
    if task == "binary":
        # the majority class must win the engines' rule (class 1 only where p > 1 - p)
        return np.full(n_test, shares[1], dtype=np.float32)
    return np.tile(shares.astype(np.float32), (n_test, 1))


def encoded_truth(task: str, labels: np.ndarray) -> tuple[np.ndarray, int]:
    """(class index per row, number of classes) in sorted order, or (values, 0)."""
    if task == "regression":
        return np.asarray(labels, dtype=np.float64), 0
    classes, encoded = np.unique(np.asarray(labels), return_inverse=True)
    return encoded.astype(np.int64), len(classes)


def baseline_scores(
    task: str, labels: np.ndarray, folds: list, scorers: tuple | list = ()
) -> dict[str, float]:
    """Every metric's mean over the folds of the baseline (baseline_outputs from each fold's
    training rows, scored on its test rows): the score a model that learned nothing gets."""
    truth, n_classes = encoded_truth(task, labels)
    per_fold = []
    for fold in folds:
        train, test = np.asarray(fold.train), np.asarray(fold.test)
        outputs = baseline_outputs(task, truth[train], len(test), n_classes)
        per_fold.append(score_outputs(task, truth[test], outputs, scorers))
    if not per_fold:
        return {}
    return {name: float(np.mean([scores[name] for scores in per_fold])) for name in per_fold[0]}


def metric_label(name: str) -> str:
    """How a metric is printed: `Accuracy`, `ROC AUC`; a scorer's own name otherwise."""
    return METRICS[name].label if name in METRICS else name


def scorers_fingerprint(scorers: tuple | list) -> str:
    """What a fit's cached scores depend on beyond foldflow's code: each scorer that is not
    scikit-learn's own (its spec and its function's source), so a custom scorer edited under
    the same name is recomputed; "" when there is none (the cache keys stay as they were)."""
    custom = [spec for spec in scorers if not spec.function.startswith("sklearn.")]
    if not custom:
        return ""
    parts = []
    for spec in custom:
        try:
            source = inspect.getsource(_imported(spec.function))
        except (OSError, TypeError):
            source = ""
        parts.append([spec.model_dump(mode="json"), source])
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:16]
