"""Repeated k-fold (`--repeats`, RunSettings.n_repeats): r x k fold scores per candidate,
counted everywhere a run counts its fits, refused where it cannot apply."""

import pytest

from flows.cli import build_parser, checked_config
from tasks.config import GridSearchConfig, RunSettings, SearchConfig


def test_repeats_multiply_the_folds_and_the_fits_counted_against_the_limit():
    run = RunSettings(n_splits=3, n_repeats=2)
    assert run.n_folds == 6 and RunSettings(n_splits=3).n_folds == 3
    grid = {"param_grid": {"epochs": [1, 2]}}
    with pytest.raises(ValueError, match="2 combination\\(s\\) x 6 folds = 12 fits"):
        GridSearchConfig(grid=grid, run=RunSettings(n_splits=3, n_repeats=2, max_fits=11))


def test_repeats_are_refused_with_explicit_splits_and_nested_cv():
    split = {"train": [0, 1], "test": [2]}
    with pytest.raises(ValueError, match="n_repeats=2 with explicit splits"):
        RunSettings(n_splits=1 + 1, splits=[split, split], n_repeats=2)
    with pytest.raises(ValueError, match="n_repeats=2 with outer_folds=3"):
        SearchConfig(run=RunSettings(n_splits=3, n_repeats=2), outer_folds=3)


def test_the_cli_passes_repeats_into_the_run_settings(tmp_path):
    args = build_parser().parse_args(
        ["grid", "--folds", "3", "--repeats", "2", "--output-dir", str(tmp_path)]
    )
    config = checked_config(args)
    assert (config.run.n_splits, config.run.n_repeats, config.run.n_folds) == (3, 2, 6)
