"""foldflow's halving searches: scikit-learn's schedule over epochs, and everything foldflow's
halving does not do refused by name before any data is stored or fitted (no fits)."""

from __future__ import annotations

import numpy as np
import pytest
from keras.wrappers import SKLearnClassifier
from scikeras.wrappers import KerasClassifier
from scipy.stats import norm, randint
from sklearn.base import clone
from sklearn.experimental import enable_halving_search_cv  # noqa: F401
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import HalvingGridSearchCV, HalvingRandomSearchCV

import foldflow
from foldflow.estimators import plan_estimator
from foldflow.halving import _flow_dimension
from tasks.errors import ConfigError

X = np.random.default_rng(0).normal(size=(40, 3))
Y = np.arange(40) % 2


def build(optimizer="adam", units=8):
    """A stand-in model function (never called here)."""
    return np.zeros(units), optimizer


def estimator(epochs=9):
    return KerasClassifier(model=build, epochs=epochs)


GRID = {"model__units": [2, 4, 8, 16], "model__optimizer": ["adam", "sgd"]}


def refused(search, match):
    with pytest.raises(ConfigError, match=match):
        search.fit(X, Y)


@pytest.mark.parametrize("resource", ["n_samples", "batch_size"])
def test_a_resource_other_than_epochs_is_refused(resource):
    search = foldflow.HalvingGridSearchCV(estimator(), GRID, resource=resource)
    refused(search, "foldflow halves over epochs")


def test_epochs_is_the_default_resource_and_the_search_clones():
    search = foldflow.HalvingGridSearchCV(estimator(), GRID, factor=2, max_resources=8)
    assert search.get_params()["resource"] == "epochs"
    assert clone(search).get_params()["max_resources"] == 8


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"aggressive_elimination": True, "min_resources": 5, "max_resources": 9}, "repeat"),
        ({"min_resources": 10, "max_resources": 9}, "greater than max_resources_"),
        ({"min_resources": 0}, "positive number of epochs"),
        ({"max_resources": "all"}, "positive number of epochs"),
        ({"factor": 1}, "int >= 2"),
        ({"factor": 1.5}, "int >= 2"),
        ({"refit": "accuracy"}, "refit as a bool"),
        ({"scoring": ["accuracy", "f1"]}, "one metric"),
        ({"scoring": "neg_log_loss"}, "cannot rank by a loss"),
        ({"scoring": "r2"}, "not a binary metric"),  # precision is scored since issue 25
    ],
)
def test_what_foldflows_halving_does_not_do_is_refused(options, match):
    refused(foldflow.HalvingGridSearchCV(estimator(), GRID, **options), match)


def test_max_resources_auto_needs_the_estimators_epochs():
    refused(foldflow.HalvingGridSearchCV(build, {"units": [2, 4]}), "sets none")
    search = foldflow.HalvingGridSearchCV(estimator(epochs=9), GRID, factor=2)
    assert search._schedule(8, plan_estimator(search.estimator)).max_resources == 9


def test_grids_and_spaces_foldflow_cannot_search_are_refused():
    refused(
        foldflow.HalvingGridSearchCV(estimator(), [{"model__units": [2]}, {"model__units": [4]}]),
        "a list of several grids",
    )
    refused(foldflow.HalvingGridSearchCV(estimator(), {"epochs": [1, 2]}), "part of the searched")
    refused(foldflow.HalvingGridSearchCV(estimator(), {"model__units": 4}), "a list of values")
    keras_own = SKLearnClassifier(model=build)
    refused(foldflow.HalvingGridSearchCV(keras_own, {"model_kwargs": [{}]}), "fit_kwargs")
    refused(
        foldflow.HalvingRandomSearchCV(estimator(), {"model__units": norm(8, 2)}),
        "randint, uniform and loguniform",
    )
    refused(
        foldflow.HalvingRandomSearchCV(estimator(), GRID, min_resources="exhaust"),
        "both 'exhaust'",
    )


def test_scipy_distributions_become_the_flows_space_dimensions():
    from scipy.stats import loguniform, uniform

    assert _flow_dimension("d", "k", randint(2, 9)) == {"randint": [2, 8]}
    assert _flow_dimension("d", "k", uniform(0.1, 0.4)) == {"uniform": [0.1, 0.5]}
    assert _flow_dimension("d", "k", loguniform(1e-4, 1e-1)) == {"loguniform": [1e-4, 1e-1]}
    assert _flow_dimension("d", "k", (4, 8)) == [4, 8]


@pytest.mark.parametrize(
    ("n_candidates", "min_resources", "max_resources", "factor", "aggressive"),
    [
        (8, 1, 9, 3, False),
        (8, "exhaust", 9, 3, False),
        (8, "smallest", 10, 2, False),
        (4, 1, 27, 3, False),
        (30, 1, 4, 3, False),
        (3, 2, 18, 3, True),
        (9, 1, 27, 3, True),
    ],
)
def test_the_schedule_is_scikit_learns(
    n_candidates, min_resources, max_resources, factor, aggressive
):
    """The epochs and candidates of every iteration, as scikit-learn's halving search over
    a LogisticRegression's max_iter (a parameter resource) computes them."""
    grid = {"C": list(np.linspace(0.1, 1, n_candidates))}
    options = dict(
        resource="max_iter",
        min_resources=min_resources,
        max_resources=max_resources,
        factor=factor,
        aggressive_elimination=aggressive,
        cv=2,
    )
    theirs = HalvingGridSearchCV(LogisticRegression(), grid, **options).fit(X, Y)
    options["resource"] = "epochs"
    ours = foldflow.HalvingGridSearchCV(estimator(), grid, **options)
    schedule = ours._schedule(n_candidates, plan_estimator(ours.estimator))
    assert schedule.resources == theirs.n_resources_
    assert schedule.min_resources == theirs.min_resources_
    assert schedule.max_resources == theirs.max_resources_
    assert schedule.n_required == theirs.n_required_iterations_
    assert schedule.n_possible == theirs.n_possible_iterations_


def test_n_candidates_exhaust_is_scikit_learns():
    options = dict(resource="max_iter", min_resources=2, max_resources=12, factor=2, cv=2)
    space = {"C": [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8]}
    theirs = HalvingRandomSearchCV(LogisticRegression(), space, **options).fit(X, Y)
    options["resource"] = "epochs"
    ours = foldflow.HalvingRandomSearchCV(estimator(), space, **options)
    schedule = ours._schedule(None, plan_estimator(ours.estimator))
    assert schedule.n_candidates == theirs.n_candidates_[0] == 6
    assert schedule.resources == theirs.n_resources_


def test_candidates_per_iteration_are_scikit_learns():
    options = dict(resource="max_iter", min_resources=1, max_resources=27, factor=3, cv=2)
    grid = {"C": list(np.linspace(0.1, 1, 10))}
    theirs = HalvingGridSearchCV(LogisticRegression(), grid, **options).fit(X, Y)
    options["resource"] = "epochs"
    ours = foldflow.HalvingGridSearchCV(estimator(), grid, **options)
    schedule = ours._schedule(10, plan_estimator(ours.estimator))
    assert [rung.n_candidates for rung in schedule.rungs] == theirs.n_candidates_
