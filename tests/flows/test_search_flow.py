"""The search flow on a real Prefect API: halving's rung scores are the grid's at those epochs,
TPE is reproducible and resumes from the fit cache, the CLI refuses a bad space."""

import io
import json

import pandas as pd
import pytest

from flows.cli import run
from flows.grid_search import grid_search_flow
from flows.search import search_flow
from tasks.config import GridSearchConfig, GridSpec, SearchConfig
from tests.conftest import PIMA_CSV
from tests.flows.conftest import artifacts_of

TINY_SPACE = {"model__hidden_layers": [[4], [6]], "model__learning_rate": [0.01, 0.03]}


def test_halving_rung_scores_equal_the_exhaustive_grids_at_those_epochs(run_settings, tmp_path):
    run = {**run_settings, "n_splits": 2, "engine": "fast"}
    config = SearchConfig(
        strategy="halving",
        space=TINY_SPACE,
        n_candidates=4,
        min_epochs=1,
        max_epochs=4,
        factor=2,
        base_params={"batch_size": 64},
        run=run,
        refit=False,
    )
    state = search_flow(config, return_state=True)
    summary = state.result()
    halving = pd.read_csv(f"{summary.output_dir}/cv_results.csv")
    assert halving.groupby("iter")["n_resources"].first().tolist() == [1, 2, 4]
    assert halving.groupby("iter")["candidate"].count().tolist() == [4, 2, 1]
    assert halving["n_candidates"].tolist() == [4] * 4 + [2] * 2 + [1]
    last = halving[halving["iter"] == 2].iloc[0]
    assert summary.best_params == {
        **json.loads(last["params"]),
        "model__hidden_layers": tuple(json.loads(last["params"])["model__hidden_layers"]),
    }
    # Each (candidate, rung) as a grid combination at that many epochs, trained again from
    # scratch in a cache of its own.
    grid = GridSearchConfig(
        grid=GridSpec(candidates=[json.loads(p) for p in halving["params"]]),
        base_params={"batch_size": 64},
        run={**run, "cache_dir": str(tmp_path / "grid-cache"), "output_dir": str(tmp_path / "g")},
        refit=False,
    )
    exhaustive = pd.read_csv(f"{grid_search_flow(grid).output_dir}/cv_results.csv")
    scores = {row["params"]: row for _, row in exhaustive.iterrows()}
    for _, row in halving.iterrows():
        same = scores[row["params"]]
        assert same["param_epochs"] == row["n_resources"]
        assert (row["split0_test_score"], row["split1_test_score"]) == (
            same["split0_test_score"],
            same["split1_test_score"],
        )
    keys = {artifact.key for artifact in artifacts_of(state.state_details.flow_run_id)}
    assert {"search-strategy", "search-scores", "search-rungs", "search-results"} <= keys
    assert {"search-overview", "search-summary"} <= keys and "search-heatmap" not in keys


def test_tpe_seeded_twice_gives_the_same_trials_and_the_rerun_trains_nothing(run_settings):
    space = {"model__learning_rate": {"loguniform": [1e-3, 1e-1]}, "model__hidden_layers": [[4]]}
    run = {**run_settings, "n_splits": 2, "engine": "fast"}
    config = SearchConfig(
        strategy="tpe",
        space=space,
        n_candidates=4,
        ask_batch=2,
        base_params={"batch_size": 64, "epochs": 1},
        run=run,
        refit=False,
    )
    first = search_flow(config)
    second = search_flow(config)
    tables = [pd.read_csv(f"{s.output_dir}/cv_results.csv") for s in (first, second)]
    assert tables[0]["params"].tolist() == tables[1]["params"].tolist()
    assert len(set(tables[0]["params"])) == 4
    assert (first.n_fits, first.n_cached_fits) == (8, 0)
    assert (second.n_fits, second.n_cached_fits) == (8, 8)


def test_search_command_writes_a_grids_files(tmp_path):
    space = tmp_path / "space.yaml"
    space.write_text("model__learning_rate: {loguniform: [0.001, 0.1]}\nepochs: [1]\n")
    out = io.StringIO()
    arguments = [
        "search",
        "--data",
        str(PIMA_CSV),
        "--space",
        str(space),
        "--n-candidates",
        "2",
        "--folds",
        "2",
        "--param",
        "batch_size=64",
        "--engine",
        "fast",
        "--output-dir",
        str(tmp_path / "runs"),
        "--run-name",
        "s",
    ]
    assert run(arguments, out=out) == 0
    printed = out.getvalue().splitlines()
    # The baseline comes first (issue 25: a model that learned nothing is visible at once).
    assert printed[0].startswith("Baseline (majority class): accuracy ")
    # Then the top combinations (issue 29): a header, the two candidates, the run folder.
    assert printed[1].split()[:2] == ["rank", "accuracy"] and len(printed) == 5
    assert "model__learning_rate" in printed[1]
    folder = tmp_path / "runs" / "s"
    table = pd.read_csv(folder / "cv_results.csv")
    assert {"param_model__learning_rate", "param_epochs", "candidate"} <= set(table.columns)
    assert (folder / "best_model.keras").exists() and (folder / "summary.txt").exists()


@pytest.mark.parametrize(
    ("text", "strategy", "message"),
    [
        (
            "epochs: [1]\nlearning_rate: {loguniform: [-1, 1]}\n",
            "random",
            "space.yaml, line 2: key 'learning_rate': loguniform needs positive bounds",
        ),
        ("epochs: [1]\nlearning_rat: [0.1]\n", "random", "space.yaml, line 2: key 'learning_rat'"),
        ("epochs: [1, 2]\n", "halving", "space.yaml, line 1: key 'epochs': halving searches"),
        # TPE samples as it goes: every choice is still checked before any training
        ("epochs: [1]\noptimizer: [adam, adamm]\n", "tpe", "unknown optimizer 'adamm'"),
    ],
)
def test_a_bad_space_exits_2_naming_line_and_key_and_trains_nothing(
    tmp_path, text, strategy, message
):
    space = tmp_path / "space.yaml"
    space.write_text(text)
    err = io.StringIO()
    arguments = [
        "search",
        "--data",
        str(PIMA_CSV),
        "--space",
        str(space),
        "--strategy",
        strategy,
        "--output-dir",
        str(tmp_path / "runs"),
    ]
    assert run(arguments, err=err) == 2
    assert message in err.getvalue()
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


def test_nested_search_writes_outer_scores_beside_the_inner_best(run_settings):
    config = SearchConfig(
        strategy="random",
        space={"model__learning_rate": [0.01, 0.03]},
        n_candidates=2,
        base_params={"batch_size": 64, "epochs": 1},
        run={**run_settings, "n_splits": 2, "engine": "fast"},
        refit=False,
        outer_folds=2,
    )
    summary = search_flow(config)
    nested = pd.read_csv(f"{summary.output_dir}/nested_results.csv")
    assert nested["outer_fold"].tolist() == [0, 1]
    assert nested["outer_score"].between(0, 1).all()
    text = open(f"{summary.output_dir}/summary.txt").read()
    assert "Nested CV (2 outer folds, accuracy): outer " in text
    assert text.startswith("Best: ")
