"""A run's size is counted from the grid's list lengths and refused before anything is built."""

import pytest
from pydantic import ValidationError
from sklearn.model_selection import ParameterGrid

from tasks.config import CVConfig, GridSearchConfig, GridSpec, RunSettings
from tasks.errors import ConfigError
from tasks.limits import DEFAULT_MAX_FITS, check_fit_count, count_combinations

# 100 x 100 x 100 = 10**6 combinations, each of them a valid one.
MILLION_GRID = {
    "epochs": list(range(1, 101)),
    "batch_size": list(range(1, 101)),
    "model__hidden_layers": [[units] for units in range(1, 101)],
}


@pytest.mark.parametrize(
    "grid",
    [
        {"epochs": [1, 2, 3]},
        {"epochs": [1, 2, 3], "batch_size": [5, 10], "model__optimizer": ["adam"]},
        MILLION_GRID,
    ],
)
def test_combinations_are_counted_as_scikit_learn_expands_them(grid):
    assert count_combinations(grid) == len(ParameterGrid(grid))


def test_fits_are_combinations_times_folds_and_refused_above_the_limit():
    assert check_fit_count(50, n_splits=2, max_fits=100, source="grid") == 100
    with pytest.raises(ConfigError, match=r"grid: 51 combination\(s\) x 2 folds = 102 fits.*100"):
        check_fit_count(51, n_splits=2, max_fits=100, source="grid")


@pytest.fixture
def expanding_fails(monkeypatch):
    """Counting must refuse a grid: expanding it would take minutes and gigabytes."""

    def expanded(self):
        raise AssertionError("the grid was expanded before its size was checked")

    monkeypatch.setattr(GridSpec, "expand", expanded)
    monkeypatch.setattr("sklearn.model_selection.ParameterGrid.__iter__", expanded)


@pytest.mark.timeout(30)
def test_a_million_combination_grid_is_refused_by_counting(expanding_fails):
    with pytest.raises(ConfigError, match=r"1,000,000 combination\(s\) x 3 folds = 3,000,000 fits"):
        GridSpec.from_mapping(MILLION_GRID, source="big.yaml", n_splits=3)


@pytest.mark.timeout(30)
def test_a_grid_too_large_for_the_run_is_refused_when_the_config_is_built(expanding_fails):
    """A flow parameter (UI form, deployment) is checked before the flow expands the grid."""
    with pytest.raises(ValidationError, match="3,000,000 fits.*max_fits=100,000"):
        GridSearchConfig(grid=GridSpec(param_grid=MILLION_GRID), run=RunSettings(n_splits=3))


def test_max_fits_can_be_raised_or_lowered():
    grid = GridSpec(param_grid={"epochs": [1, 2], "batch_size": [5, 10]})
    GridSearchConfig(grid=grid, run=RunSettings(n_splits=3, max_fits=12))
    with pytest.raises(ValidationError, match="12 fits, more than max_fits=11"):
        GridSearchConfig(grid=grid, run=RunSettings(n_splits=3, max_fits=11))
    with pytest.raises(ValidationError, match="10 fits, more than max_fits=9"):
        CVConfig(run=RunSettings(n_splits=10, max_fits=9))
    assert RunSettings().max_fits == DEFAULT_MAX_FITS == 100_000
