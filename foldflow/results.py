"""scikit-learn's scorers as foldflow's metrics, and the flow's cv_results as the records
scikit-learn's searches format into `cv_results_` (`_fit_and_score`'s shape)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from tasks.errors import ConfigError

# scikit-learn scorer name -> (foldflow metric, sign): foldflow scores every metric of the
# task on every fold; `neg_*` scorers are the metric negated, as scikit-learn reports them.
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
    """cv_results_ name -> scikit-learn scorer name: {'score': 'accuracy'} for one metric."""
    if scoring is None:
        return {"score": DEFAULT_SCORER[task]}
    if isinstance(scoring, str):
        names = {"score": scoring}
    elif isinstance(scoring, list | tuple | set):
        names = {name: name for name in scoring}
    elif isinstance(scoring, dict):
        names = dict(scoring)
    else:
        raise ConfigError(
            f"scoring={scoring!r}: foldflow scores every fold inside its flow, where a callable "
            "cannot reach the fold's model; give a scorer name "
            f"({', '.join(sorted({n for names in SCORERS.values() for n in names}))}), a list "
            "or a dict of names, or use scikit-learn's search for a custom scorer"
        )
    for name in names.values():
        if not isinstance(name, str) or name not in SCORERS[task]:
            raise ConfigError(
                f"scoring {name!r} is not a {task} metric foldflow scores; "
                f"choose from {', '.join(SCORERS[task])}"
            )
    return names


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
            metric, sign = SCORERS[task][scorer]
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
