"""Any scikit-learn scorer from a fold's outputs, and the baseline beside every score
(tasks.metrics)."""

import numpy as np
import pytest
from sklearn.metrics import (
    balanced_accuracy_score,
    f1_score,
    get_scorer,
    make_scorer,
    matthews_corrcoef,
    mean_absolute_error,
    precision_score,
)

from tasks.errors import ConfigError
from tasks.metrics import (
    BASELINE_KIND,
    ScorerSpec,
    baseline_scores,
    extra_scores,
    refit_metric_for,
    score_outputs,
    scorer_key,
    scorer_names_for,
    scorer_spec,
    scorers_fingerprint,
    scorers_for,
    with_user_labels,
)
from tasks.records import Fold

RNG = np.random.default_rng(3)


def module_level_score(y_true, y_pred):
    return float(np.mean(y_true == y_pred)) * 2


def test_every_scikit_learn_scorer_that_applies_to_the_task_is_offered():
    binary, multiclass = scorer_names_for("binary"), scorer_names_for("multiclass")
    regression = scorer_names_for("regression")
    for name in ("balanced_accuracy", "average_precision", "precision", "recall", "f1_weighted",
                 "matthews_corrcoef", "neg_brier_score"):  # fmt: skip
        assert name in binary
    assert "precision" not in multiclass and "f1_weighted" in multiclass
    for name in ("neg_mean_absolute_error", "neg_mean_absolute_percentage_error",
                 "explained_variance"):  # fmt: skip
        assert name in regression and name not in binary
    assert "adjusted_rand_score" not in binary  # clustering: not a model's score


def test_extra_scores_equal_scikit_learns_scorers_on_the_same_outputs():
    truth = RNG.integers(0, 2, 300)
    p = np.clip(truth * 0.3 + RNG.random(300) * 0.7, 0, 1)
    specs = scorers_for("binary", ["balanced_accuracy", "precision", "matthews_corrcoef"])
    scores = extra_scores("binary", specs, truth, p)
    predicted = (p > 0.5).astype(int)
    assert scores["balanced_accuracy"] == pytest.approx(balanced_accuracy_score(truth, predicted))
    assert scores["precision"] == pytest.approx(precision_score(truth, predicted))
    assert scores["matthews_corrcoef"] == pytest.approx(matthews_corrcoef(truth, predicted))
    values = RNG.normal(size=50)
    guesses = values + RNG.normal(scale=0.3, size=50)
    [mae] = scorers_for("regression", ["neg_mean_absolute_error"])
    assert extra_scores("regression", [mae], values, guesses)["neg_mean_absolute_error"] == (
        pytest.approx(-mean_absolute_error(values, guesses))
    )


def test_multiclass_probability_scorers_get_every_class_even_when_a_fold_lacks_one():
    truth = np.array([0, 1, 0, 1])
    rows = np.array([[0.7, 0.2, 0.1], [0.2, 0.7, 0.1], [0.5, 0.3, 0.2], [0.3, 0.6, 0.1]])
    specs = scorers_for("multiclass", ["neg_brier_score", "top_k_accuracy"])
    scores = extra_scores("multiclass", specs, truth, rows)
    assert np.isfinite(scores["neg_brier_score"]) and scores["top_k_accuracy"] == 1.0


def test_the_tasks_own_metrics_and_their_aliases_are_not_computed_twice():
    assert scorers_for("binary", ["accuracy", "neg_log_loss", "roc_auc"]) == []
    assert scorer_key("neg_log_loss", "binary") == ("log_loss", -1.0)
    assert scorer_key("neg_root_mean_squared_error", "regression") == ("rmse", -1.0)
    assert scorer_key("balanced_accuracy", "binary") == ("balanced_accuracy", 1.0)


def test_the_refit_metric_is_scored_even_when_scoring_does_not_name_it():
    assert [s.name for s in scorers_for("binary", [], "balanced_accuracy")] == ["balanced_accuracy"]


def test_a_scorer_that_does_not_apply_to_the_task_is_refused_naming_those_that_do():
    with pytest.raises(ConfigError, match="'precision' is not a scikit-learn scorer of a "
                       "multiclass task; choose from .*precision_macro"):  # fmt: skip
        scorers_for("multiclass", ["precision"])
    with pytest.raises(ConfigError, match="neg_mean_absolute_error"):
        scorers_for("binary", ["neg_mean_absolute_error"])


def test_a_make_scorer_of_a_module_level_function_travels_as_its_import_path():
    spec = scorer_spec("double", make_scorer(module_level_score, greater_is_better=False))
    assert spec.function.endswith(":module_level_score") and spec.sign == -1.0
    truth = np.array([0, 1, 1, 0])
    assert extra_scores("binary", [spec], truth, np.array([0.1, 0.9, 0.2, 0.3])) == {"double": -1.5}
    proba = scorer_spec("auc", get_scorer("roc_auc"))
    assert proba.uses == "probabilities" and ScorerSpec.model_validate(proba.model_dump()) == proba


def test_a_lambda_a_plain_callable_or_a_nested_function_is_refused_with_the_reason():
    with pytest.raises(ConfigError, match="module-level function"):
        scorer_spec("mine", make_scorer(lambda t, p: 1.0))

    def nested(t, p):
        return 1.0

    with pytest.raises(ConfigError, match="module-level function"):
        scorer_spec("mine", make_scorer(nested))
    with pytest.raises(ConfigError, match="make_scorer"):
        scorer_spec("mine", lambda estimator, X, y: 1.0)


def test_score_outputs_adds_the_extra_scorers_to_the_tasks_metrics():
    truth = np.array([0, 1, 1, 0, 1])
    scores = score_outputs("binary", truth, np.float32([0.2, 0.8, 0.4, 0.1, 0.9]),
                           scorers_for("binary", ["recall"]))  # fmt: skip
    assert list(scores) == ["accuracy", "roc_auc", "f1", "log_loss", "recall"]
    assert scores["recall"] == pytest.approx(2 / 3)


def test_the_baseline_predicts_each_folds_training_majority_class():
    labels = np.array(["no"] * 7 + ["yes"] * 3)
    folds = [Fold(index=0, train=[0, 1, 2, 3, 7], test=[4, 5, 6, 8, 9]),
             Fold(index=1, train=[4, 5, 6, 8, 9], test=[0, 1, 2, 3, 7])]  # fmt: skip
    baseline = baseline_scores("binary", labels, folds, scorers_for("binary", ["recall"]))
    # fold 0 predicts "no" (4 of 5 training rows): 3 of 5 right; fold 1 "no" too: 4 of 5
    assert baseline["accuracy"] == pytest.approx(0.7)
    assert baseline["roc_auc"] == pytest.approx(0.5) and baseline["recall"] == 0.0
    assert BASELINE_KIND["binary"] == "majority class"


def test_the_regression_baseline_predicts_the_training_mean():
    values = np.arange(10, dtype=float)
    folds = [Fold(index=0, train=list(range(5)), test=list(range(5, 10)))]
    baseline = baseline_scores("regression", values, folds, scorers_for(
        "regression", ["neg_mean_absolute_error"]))  # fmt: skip
    assert baseline["neg_mean_absolute_error"] == pytest.approx(-5.0)  # mean 2 vs 5..9
    assert baseline["rmse"] == pytest.approx(np.sqrt(np.mean((np.arange(5, 10) - 2) ** 2)))


def test_the_refit_metric_may_be_any_scorer_the_run_computes():
    scorers = scorers_for("binary", ["balanced_accuracy"])
    assert refit_metric_for("binary", "balanced_accuracy", scorers) == "balanced_accuracy"
    assert refit_metric_for("binary", "neg_log_loss") == "log_loss"
    with pytest.raises(ConfigError, match="choose one of .*balanced_accuracy"):
        refit_metric_for("binary", "recall", scorers)


def test_scorer_specs_arrive_as_dicts_from_the_run_settings():
    spec = scorer_spec("double", make_scorer(module_level_score))
    assert scorers_for("binary", [spec.model_dump(), "recall"]) == [
        spec,
        scorer_spec("recall", get_scorer("recall")),
    ]


def test_a_custom_scorer_keys_the_fit_cache_and_scikit_learns_own_do_not():
    assert scorers_fingerprint(scorers_for("binary", ["recall", "precision"])) == ""
    mine = scorer_spec("double", make_scorer(module_level_score))
    other = scorer_spec("double", make_scorer(module_level_score, greater_is_better=False))
    assert len(scorers_fingerprint([mine])) == 16
    assert scorers_fingerprint([mine]) != scorers_fingerprint([other])


def share_of_yes(y_true, y_pred):
    """A user's scorer that reads the labels as the user's data has them."""
    return float(np.mean((np.asarray(y_pred) == "yes") == (np.asarray(y_true) == "yes")))


def test_a_users_own_scorer_sees_the_users_labels_not_class_numbers():
    """As scikit-learn's search gives a scorer object: labels 'no'/'yes', not 0/1 (with 0/1
    this scorer silently scored 1.0 for any predictions; make_scorer(f1_score,
    pos_label='yes') scored NaN); scorers by scikit-learn's names keep class numbers."""
    mine = scorer_spec("yes", make_scorer(share_of_yes)).model_copy(update={"users_own": True})
    [spec] = with_user_labels([mine], ["no", "yes"])
    assert spec.labels == ["no", "yes"]
    truth = np.array([0, 1, 1, 0])
    assert extra_scores("binary", [spec], truth, np.array([0.9, 0.9, 0.2, 0.3])) == {"yes": 0.5}
    f1_yes = scorer_spec("f1_yes", make_scorer(f1_score, pos_label="yes"))
    [f1_yes] = with_user_labels([f1_yes.model_copy(update={"users_own": True})], ["no", "yes"])
    outputs = np.array([0.1, 0.9, 0.2, 0.3])
    assert extra_scores("binary", [f1_yes], truth, outputs) == {
        "f1_yes": f1_score(truth, [0, 1, 0, 0])
    }
    [builtin] = with_user_labels([scorer_spec("f1", get_scorer("f1"))], ["no", "yes"])
    assert builtin.labels is None
    assert with_user_labels([spec], None) == [spec.model_copy(update={"labels": None})]
