"""`--repeats` through the grid flow: r x k fold columns, scikit-learn's repeated folds, and
the noise marks of the corrected repeated k-fold test (ratio 1/(k-1) over all r x k scores)."""

import numpy as np
import pandas as pd
import pytest

from flows.grid_search import grid_search_flow
from tasks.config import GridSearchConfig, GridSpec, RunSettings
from tasks.results.noise import corrected_t_test


def test_two_repeats_of_three_folds_give_six_fold_columns_and_the_repeated_test(run_settings):
    grid = GridSpec(param_grid={"batch_size": [32, 64], "epochs": [1]})
    run = RunSettings(**run_settings, n_splits=3, n_repeats=2, run_name="repeats")
    summary = grid_search_flow(GridSearchConfig(grid=grid, run=run, refit=False))
    table = pd.read_parquet(f"{summary.output_dir}/cv_results.parquet")
    folds = [f"split{k}_test_score" for k in range(6)]
    assert set(folds) <= set(table.columns) and "split6_test_score" not in table.columns
    assert summary.n_fits == 12
    scores = table[folds].to_numpy(dtype=float)
    assert np.isfinite(scores).all()
    best = int(table["rank_test_score"].idxmin())
    other = 1 - best
    # Pima's 768 rows in 3 folds: 256 test rows against 512 training rows, in every repeat.
    assert table.loc[other, "p_vs_best"] == pytest.approx(
        corrected_t_test(scores[best], scores[other], 256 / 512)[1]
    )
