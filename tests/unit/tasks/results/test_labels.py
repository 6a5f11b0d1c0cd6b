from tasks.config import CVConfig, GridSearchConfig, RunSettings, SearchConfig
from tasks.dataset_spec import DatasetSpec
from tasks.results.labels import run_tags, run_title, safe_title


def test_a_grid_run_is_named_for_dataset_size_and_the_keys_it_searches():
    assert run_title("grid", GridSearchConfig()) == (
        "grid-pima-indians-diabetes-54x3-optimizer-init-epochs-batch_size"
    )


def test_a_cv_run_is_named_for_its_model_folds_and_params():
    config = CVConfig(
        model="models/tutorial.py:create_model",
        params={"optimizer": "adam", "epochs": 150, "batch_size": 10},
    )
    assert run_title("cv", config) == (
        "cv-create_model-pima-indians-diabetes-folds_10-optimizer_adam-epochs_150-batch_size_10"
    )


def test_the_users_run_name_wins_and_titles_stay_safe_file_names():
    assert run_title("cv", CVConfig(run=RunSettings(run_name="nightly-7"))) == "nightly-7"
    assert safe_title("cv-a b/../c") == "cv-a-b-c"
    assert len(safe_title("x" * 300)) == 100


def test_tags_name_the_flow_dataset_and_engine():
    spec = DatasetSpec(name="wine", url="https://example.org/w.csv", header=True, target="y")
    config = CVConfig(run=RunSettings(dataset=spec, engine="fast"))
    assert run_tags("cv", config) == ["foldflow", "cv", "wine", "engine:fast"]


def test_a_search_is_named_for_the_candidates_it_will_have_with_keys_beside_values():
    space = {"model__optimizer": ["adam", "sgd"], "model__hidden_layers": [[4], [8, 4], [8]]}
    halving = SearchConfig(strategy="halving", space=space, n_candidates=20, min_epochs=1,
                           max_epochs=9, factor=3)  # fmt: skip
    assert run_title("search", halving) == (
        "search-pima-indians-diabetes-halving-candidates_6-folds_3-epochs_1-9-factor_3"
    )  # 6 distinct candidates in the space, not the default 20
    tpe = SearchConfig(strategy="tpe", space={"model__learning_rate": {"loguniform": [1e-4, 1]}})
    assert run_title("search", tpe) == "search-pima-indians-diabetes-tpe-candidates_20-folds_3"


def test_repeated_folds_are_named_in_the_run_title():
    run = RunSettings(n_splits=3, n_repeats=2)
    grid = GridSearchConfig(run=run)
    assert run_title("grid", grid) == (
        "grid-pima-indians-diabetes-54x3-repeats_2-optimizer-init-epochs-batch_size"
    )
    assert run_title("cv", CVConfig(run=run)).endswith("-folds_3-repeats_2")
