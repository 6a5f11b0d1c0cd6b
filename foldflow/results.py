"""scikit-learn's scorers as foldflow's metrics, and the flow's cv_results as the records
scikit-learn's searches format into `cv_results_` (`_fit_and_score`'s shape)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from sklearn.metrics import get_scorer

from tasks.errors import ConfigError
from tasks.metrics import TASK_METRICS, scorer_names_for, scorer_spec

# scikit-learn scorer name -> (foldflow metric, sign): foldflow scores every metric of the
# task on every fold; `neg_*` scorers are the metric negated, as scikit-learn reports them.
# Any other scorer of the task is computed when asked for (tasks.metrics.ScorerSpec).
SCORERS: dict[str, dict[str, tuple[str, float]]] = {
    "binary": {
        "accuracy": ("accuracy", 1.0),
        "roc_auc": ("roc_auc", 1.0),
        "f1": ("f1", 1.0),
        "neg_log_loss": ("log_loss", -1.0),
    },
    "multiclass": {
        "accuracy": ("accuracy", 1.0),
        "f1_macro": ("f1_macro", 1.0),
        "neg_log_loss": ("log_loss", -1.0),
        "roc_auc_ovr": ("roc_auc_ovr", 1.0),
    },
    "regression": {
        "r2": ("r2", 1.0),
        "neg_root_mean_squared_error": ("rmse", -1.0),
    },
}
DEFAULT_SCORER = {"binary": "accuracy", "multiclass": "accuracy", "regression": "r2"}


def scorer_names(scoring: Any, task: str) -> dict[str, str]:
    """cv_results_ name -> the scorer's name among the flow's scores: {'score': 'accuracy'}
    for one metric. Any scikit-learn scorer name of the task; a picklable callable scorer
    (make_scorer of a module-level function) by a name of its own (scorer_entries)."""
    return {name: key for name, (key, _) in scorer_entries(scoring, task).items()}


def scorer_entries(scoring: Any, task: str) -> dict[str, tuple[str, Any]]:
    """cv_results_ name -> (scorer name, what the flow's `scoring` setting gets: None for the
    task's own metrics, the name for another scikit-learn scorer, a ScorerSpec's dict for a
    callable); ConfigError with the reason for anything else, before any fit."""
    if scoring is None:
        return {"score": (DEFAULT_SCORER[task], None)}
    if isinstance(scoring, str) or callable(scoring):
        asked = {"score": scoring}
    elif isinstance(scoring, list | tuple | set):
        asked = {name: name for name in scoring}
    elif isinstance(scoring, dict):
        asked = dict(scoring)
    else:
        raise ConfigError(
            f"scoring={scoring!r}: give a scorer name, a list or a dict of names, or a "
            "make_scorer of a module-level function"
        )
    applies = scorer_names_for(task)
    entries: dict[str, tuple[str, Any]] = {}
    for name, scorer in asked.items():
        if isinstance(scorer, str):
            if scorer in SCORERS[task]:
                entries[name] = (scorer, None)
            elif scorer in applies:
                entries[name] = (scorer, scorer)
            else:
                raise ConfigError(
                    f"scoring {scorer!r} is not a {task} metric (no scikit-learn scorer of a "
                    f"{task} task); "
                    f"choose from {', '.join(sorted({*SCORERS[task], *applies}))}"
                )
            continue
        own = name if name != "score" else getattr(getattr(scorer, "_score_func", None),
                                                   "__name__", "custom")  # fmt: skip
        if own in applies or own in SCORERS[task] or own in TASK_METRICS[task]:
            own = f"custom_{own}"
        spec = scorer_spec(own, scorer).model_copy(update={"users_own": True})
        entries[name] = (own, spec.model_dump(mode="json"))
    return entries


def flow_scoring(scoring: Any, task: str) -> list[str | dict[str, Any]]:
    """RunSettings.scoring for these scorers: what the task runs compute beyond the task's
    own metrics."""
    return [entry for _, entry in scorer_entries(scoring, task).values() if entry is not None]


def scorer_of(scoring: Any, name: str, scorer: str) -> Any:
    """The scorer object for `scorer_`: scikit-learn's by name, else the user's callable."""
    if isinstance(scoring, dict) and not isinstance(scoring[name], str):
        return scoring[name]
    if callable(scoring):
        return scoring
    return get_scorer(scorer)


def metric_of(task: str, scorer: str) -> tuple[str, float]:
    """(the flow's score key, sign) of a scorer name: neg_log_loss is -log_loss; any other
    scorer is scored under its own name, signed as scikit-learn signs it."""
    return SCORERS[task].get(scorer, (scorer, 1.0))


def fold_scores(
    table: pd.DataFrame,
    row: int,
    n_splits: int,
    names: dict[str, str],
    task: str,
    rows: str = "test",
) -> list[dict[str, float]]:
    """Per fold: cv_results_ name -> signed score, as a scikit-learn scorer gives it, on the
    fold's test rows (or `rows="train"`: the rows the fit trained on)."""
    folds = []
    for fold in range(n_splits):
        scores = {}
        for result_name, scorer in names.items():
            metric, sign = metric_of(task, scorer)
            scores[result_name] = sign * float(table.loc[row, f"split{fold}_{rows}_{metric}"])
        folds.append(scores)
    return folds


def scikit_learn_out(
    table: pd.DataFrame,
    n_splits: int,
    names: dict[str, str],
    task: str,
    error_score: Any,
    multimetric: bool,
    train_scores: bool = False,
) -> list[dict[str, Any]]:
    """The flow's cv_results as scikit-learn's `_fit_and_score` records, candidate-major:
    what `BaseSearchCV._format_results` turns into `cv_results_` (with `train_scores`, each
    record's `train_scores` too, as `return_train_score=True` gives them)."""
    out = []
    for row in range(len(table)):
        failed = str(table.loc[row, "error"] or "")
        on_train = fold_scores(table, row, n_splits, names, task, "train") if train_scores else None
        for fold, scores in enumerate(fold_scores(table, row, n_splits, names, task)):
            fold_error = _fold_error(failed, fold)
            train = None if on_train is None else on_train[fold]
            if fold_error:
                scores = {name: error_score for name in scores}
                train = None if train is None else {name: error_score for name in train}
            record = {
                "fit_time": float(table.loc[row, f"split{fold}_fit_time"]),
                # Scoring happens inside the fit's task run; it is not timed apart.
                "score_time": np.nan,
                "test_scores": scores if multimetric else scores["score"],
                "n_test_samples": 0,
                "fit_error": fold_error,
            }
            if train is not None:
                record["train_scores"] = train if multimetric else train["score"]
            out.append(record)
    return out


def _fold_error(errors: str, fold: int) -> str | None:
    """This fold's part of the flow's error column ("fold 0: ...; fold 2: ...")."""
    prefix = f"fold {fold}: "
    for part in errors.split("; fold "):
        part = part if part.startswith("fold ") else f"fold {part}"
        if part.startswith(prefix):
            return part.removeprefix(prefix)
    return None
