import math

import numpy as np
import pytest
from sklearn.base import BaseEstimator
from sklearn.model_selection import RandomizedSearchCV

from tasks.errors import ConfigError
from tasks.model.factory import build_mlp
from tasks.model.routing import signature_of
from tasks.search.spaces import (
    check_space_keys,
    from_optuna,
    load_search_space,
    optuna_distributions,
    sample_candidates,
    scipy_distributions,
    space_from_mapping,
)

SPACE = {
    "learning_rate": {"loguniform": [1e-4, 1e-1]},
    "hidden_layers": [[12, 8], [32, 16], [8]],
    "optimizer": {"choice": ["adam", "rmsprop"]},
    "batch_size": {"randint": [5, 20]},
    "dropout": {"uniform": [0.0, 0.3]},
}


def write(tmp_path, text):
    path = tmp_path / "space.yaml"
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    ("text", "line", "key", "match"),
    [
        ("a: [1]\nlearning_rate: {loguniform: [0, 0.1]}\n", 2, "learning_rate", "positive"),
        ("learning_rate: {uniform: [0.5, 0.1]}\n", 1, "learning_rate", "low < high"),
        ("a: [1]\nb: [2]\nbatch_size: {randint: [5, 2.5]}\n", 3, "batch_size", "integers"),
        ("batch_size: {randint: [9, 2]}\n", 1, "batch_size", "low <= high"),
        ("learning_rate: {lognormal: [1, 2]}\n", 1, "learning_rate", "unknown distribution"),
        ("learning_rate: {uniform: [a, 2]}\n", 1, "learning_rate", "numbers"),
        ("learning_rate: {uniform: [1]}\n", 1, "learning_rate", "two bounds"),
        ("learning_rate: 0.01\n", 1, "learning_rate", "list of choices or one distribution"),
        ("optimizer: []\n", 1, "optimizer", "empty list"),
    ],
)
def test_space_errors_name_file_line_key_and_value(tmp_path, text, line, key, match):
    path = write(tmp_path, text)
    with pytest.raises(ConfigError, match=match) as raised:
        load_search_space(path)
    message = str(raised.value)
    assert f"{path}, line {line}: key '{key}'" in message
    assert "received" in message


def test_space_refuses_keys_the_model_function_does_not_take(tmp_path):
    space = load_search_space(write(tmp_path, "epochs: [1]\nlearning_rat: {uniform: [0, 1]}\n"))
    with pytest.raises(ConfigError, match=r"line 2: key 'learning_rat'.*build_mlp\("):
        check_space_keys(space, signature_of(build_mlp))


def test_same_seed_same_candidates_other_seed_others():
    space = space_from_mapping(SPACE)
    first = sample_candidates(space, 8, seed=3)
    assert first == sample_candidates(space, 8, seed=3)
    assert first != sample_candidates(space, 8, seed=4)
    assert all(5 <= c["batch_size"] <= 20 and isinstance(c["batch_size"], int) for c in first)
    assert all(1e-4 <= c["learning_rate"] <= 1e-1 for c in first)
    assert {type(c["hidden_layers"]) for c in first} == {tuple}


def test_randint_includes_its_upper_bound():
    space = space_from_mapping({"batch_size": {"randint": [1, 2]}, "x": {"uniform": [0, 1]}})
    assert {c["batch_size"] for c in sample_candidates(space, 40, seed=0)} == {1, 2}


def test_a_small_space_of_choices_gives_each_candidate_once():
    space = space_from_mapping({"a": [1, 2], "b": ["x", "y"]})
    candidates = sample_candidates(space, 10, seed=0)
    assert sorted(map(str, candidates)) == sorted(set(map(str, candidates)))
    assert len(candidates) == 4


class Recorder(BaseEstimator):
    """Takes any routed key as a parameter: RandomizedSearchCV's candidates, no training."""

    def __init__(self, **params):
        self.params = params

    def get_params(self, deep=True):
        return dict(self.params)

    def set_params(self, **params):
        self.params.update(params)
        return self

    def fit(self, X, y):
        return self

    def score(self, X, y):
        return 0.0


def test_candidates_are_randomized_search_cvs_draws():
    space = space_from_mapping(SPACE)
    search = RandomizedSearchCV(
        Recorder(), scipy_distributions(space), n_iter=12, cv=2, random_state=11
    ).fit(np.zeros((4, 1)), np.array([0, 1, 0, 1]))
    drawn = [
        {k: tuple(v) if isinstance(v, list) else v for k, v in p.items()}
        for p in search.cv_results_["params"]
    ]
    assert sample_candidates(space, 12, seed=11) == drawn


def test_optuna_space_round_trips_widths_and_choices():
    space = space_from_mapping(SPACE)
    distributions = optuna_distributions(space)
    assert distributions["learning_rate"].log
    assert (distributions["batch_size"].low, distributions["batch_size"].high) == (5, 20)
    assert distributions["hidden_layers"].choices == ("[12, 8]", "[32, 16]", "[8]")
    params = {
        "learning_rate": 0.01,
        "hidden_layers": "[32, 16]",
        "optimizer": "adam",
        "batch_size": 7,
        "dropout": 0.1,
    }
    candidate = from_optuna(space, params)
    assert candidate["hidden_layers"] == (32, 16)
    assert math.isclose(candidate["learning_rate"], 0.01)


def test_covering_candidates_hold_every_choice_and_both_bounds():
    from tasks.search.spaces import covering_candidates

    candidates = covering_candidates(space_from_mapping(SPACE))
    assert {c["hidden_layers"] for c in candidates} == {(12, 8), (32, 16), (8,)}
    assert {c["batch_size"] for c in candidates} == {5, 20}
    assert {c["learning_rate"] for c in candidates} == {1e-4, 1e-1}


def test_a_configs_space_is_read_inline_or_from_a_file_and_halving_refuses_epochs(tmp_path):
    from tasks.config import SearchConfig
    from tasks.search.spaces import configured_space

    inline = configured_space(SearchConfig(space={"model__learning_rate": [0.01, 0.1]}))
    assert inline.names == ["model__learning_rate"]
    assert configured_space(SearchConfig()).size() > 1  # the shipped default file
    path = write(tmp_path, "epochs: [1, 2]\n")
    with pytest.raises(ConfigError, match="line 1: key 'epochs': halving searches"):
        configured_space(SearchConfig(strategy="halving", space=str(path)))
