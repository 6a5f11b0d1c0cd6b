"""Python's `scoring=`: any scikit-learn scorer of the task, and picklable callable scorers,
become what the flow's task runs compute (foldflow.results)."""

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import get_scorer, make_scorer

from foldflow.results import flow_scoring, fold_scores, metric_of, scorer_names, scorer_of
from tasks.errors import ConfigError


def true_rate(y_true, y_pred):
    return float(np.mean(y_pred == 1))


def test_any_scorer_of_the_task_is_asked_of_the_flow_and_read_back_under_its_name():
    scoring = ["accuracy", "balanced_accuracy", "neg_log_loss"]
    assert scorer_names(scoring, "binary") == {name: name for name in scoring}
    assert flow_scoring(scoring, "binary") == ["balanced_accuracy"]  # the others: own metrics
    assert metric_of("binary", "neg_log_loss") == ("log_loss", -1.0)
    assert metric_of("regression", "neg_mean_absolute_error") == ("neg_mean_absolute_error", 1.0)
    table = pd.DataFrame({"split0_test_balanced_accuracy": [0.6], "split0_test_log_loss": [0.5]})
    names = {"bal": "balanced_accuracy", "ll": "neg_log_loss"}
    assert fold_scores(table, 0, 1, names, "binary") == [{"bal": 0.6, "ll": -0.5}]


def test_a_make_scorer_of_a_module_level_function_is_honoured_under_a_name_of_its_own():
    mine = make_scorer(true_rate)
    assert scorer_names({"rate": mine, "acc": "accuracy"}, "binary") == {
        "rate": "rate",
        "acc": "accuracy",
    }
    [spec] = flow_scoring({"rate": mine}, "binary")
    assert spec["name"] == "rate" and spec["function"].endswith(":true_rate")
    assert scorer_names(mine, "binary") == {"score": "true_rate"}
    assert scorer_names({"accuracy": mine}, "binary") == {"accuracy": "custom_accuracy"}
    assert scorer_of({"rate": mine}, "rate", "rate") is mine
    assert repr(scorer_of("roc_auc", "score", "roc_auc")) == repr(get_scorer("roc_auc"))


@pytest.mark.parametrize(
    ("scoring", "message"),
    [
        (make_scorer(lambda t, p: 1.0), "module-level function"),
        ({"x": lambda estimator, X, y: 0.0}, "plain callable cannot reach the fold.s model"),
        ("neg_mean_absolute_error", "not a binary metric"),
        (3, "give a scorer name"),
    ],
)
def test_what_no_task_run_could_compute_is_refused_with_the_reason(scoring, message):
    with pytest.raises(ConfigError, match=message):
        scorer_names(scoring, "binary")
