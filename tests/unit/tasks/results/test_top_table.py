"""The end of a search in a terminal (tasks.results.top_table): the top rows, keys with values."""

import json

import numpy as np
import pandas as pd

from tasks.results.top_table import top_table_lines


def table(rows):
    return pd.DataFrame(
        {
            "params": [json.dumps(p) for p, _, _, _ in rows],
            "mean_test_score": [m for _, m, _, _ in rows],
            "std_test_score": [s for _, _, s, _ in rows],
            "rank_test_score": [r for _, _, _, r in rows],
        }
    )


def test_the_top_rows_in_rank_order_with_mean_std_and_every_key():
    results = table(
        [
            ({"batch_size": 5, "model__optimizer": "adam"}, 0.70, 0.02, 3),
            ({"batch_size": 10, "model__optimizer": "adam"}, 0.75, 0.01, 1),
            ({"batch_size": 20, "model__optimizer": "sgd"}, 0.72, 0.03, 2),
            ({"batch_size": 40, "model__optimizer": "sgd"}, np.nan, np.nan, 4),
        ]
    )
    assert top_table_lines(results, "accuracy", n=3) == [
        "rank  accuracy         batch_size  model__optimizer",
        "   1  0.7500 ± 0.0100  10          adam",
        "   2  0.7200 ± 0.0300  20          sgd",
        "   3  0.7000 ± 0.0200  5           adam",
        "(top 3 of 4 rows; all of them in cv_results.csv)",
    ]


def test_halving_shows_its_last_rung_where_the_best_is_picked():
    results = table([({"lr": 0.1}, 0.9, 0.0, 1), ({"lr": 0.2}, 0.8, 0.0, 2)])
    results["iter"] = [0, 1]
    assert top_table_lines(results, "accuracy")[1:] == [
        "   2  0.8000 ± 0.0000  0.2",
        "(top 1 of 2 rows; all of them in cv_results.csv)",
    ]
