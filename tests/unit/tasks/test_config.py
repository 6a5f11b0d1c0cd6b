import pytest
import yaml
from pydantic import ValidationError

from tasks.config import (
    DEFAULT_DATASET_SPEC,
    DEFAULT_GRID_FILE,
    CVConfig,
    GridSearchConfig,
    GridSpec,
    ModelParams,
    RunSettings,
    with_overrides,
)
from tasks.dataset_spec import DatasetSpec
from tasks.errors import ConfigError
from tasks.model.factory import build_mlp
from tests.support import TUTORIAL, combinations


def test_tutorial_grid_expands_in_scikit_learn_order():
    checked = combinations(GridSpec.from_yaml(DEFAULT_GRID_FILE).param_grid, source=TUTORIAL)
    assert len(checked) == 54
    first = checked[0]
    assert first.routed == {
        "batch_size": 5,
        "epochs": 50,
        "model__init": "glorot_uniform",
        "model__optimizer": "rmsprop",
    }
    assert (first.model.batch_size, first.model.epochs, first.model.arguments["optimizer"]) == (
        5,
        50,
        "rmsprop",
    )
    assert checked[-1].routed["batch_size"] == 20


def test_dataset_spec_names_the_pima_columns():
    spec = DatasetSpec.from_yaml(DEFAULT_DATASET_SPEC)
    assert spec.feature_columns[:2] == ["pregnancies", "glucose"]
    assert spec.target == "outcome" and len(spec.columns) == 9


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("epochs: [1]\nlearning_rat: [0.1]\n", "grid key 'learning_rat' is neither a parameter"),
        ("epochs: []\n", "'epochs' has an empty list"),
        ("epochs: 5\n", "'epochs' must be a list"),
        ("epochs: [one]\n", "epochs.*integer"),
        ("model__optimizer: [adam, sgdd]\n", "unknown optimizer 'sgdd'"),
        ("model__init: [glorot]\n", "unknown init 'glorot'"),
        ("- epochs\n", "must hold a mapping"),
        ("epochs: [1\n", "not valid YAML"),
        ("!!python/object/apply:os.system ['true']\n", "not valid YAML"),
    ],
)
def test_bad_grid_files_are_refused_with_the_key(tmp_path, text, message):
    """The file's shape is checked as it is read; keys and values once routed to the MLP."""
    path = tmp_path / "grid.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message):
        combinations(GridSpec.from_yaml(path).param_grid)


@pytest.mark.parametrize("name", ["../evil", "a/b", "..", "", "x" * 101])
def test_run_and_dataset_names_cannot_steer_paths(name):
    with pytest.raises(ValueError):
        RunSettings(run_name=name)
    with pytest.raises((ValueError, ConfigError)):
        DatasetSpec(name=name, url="https://x", columns=["a", "b"], target="b")


def test_epochs_are_left_out_of_the_trajectory_key():
    assert ModelParams(epochs=50).trajectory_key() == ModelParams(epochs=150).trajectory_key()
    assert ModelParams(batch_size=5).trajectory_key() != ModelParams().trajectory_key()


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"target": "y"}, "a CSV without a header row needs `columns`"),
        ({"format": "parquet", "header": True, "target": "y"}, "header applies to CSV only"),
        ({"columns": ["a", "y"], "target": "z"}, "target 'z' is not among the columns"),
        ({"columns": ["a", "y"], "target": "y", "features": ["b"]}, r"\['b'\] are not among"),
        ({"header": True, "target": "y", "features": ["y"]}, "'y' is also listed among the"),
        ({"header": True, "target": "y", "features": ["a", "a"]}, r"\['a'\] appear more than"),
        ({"header": True, "target": "y", "task": "ranking"}, "task: Input should be 'binary'"),
        ({"header": True, "target": "y", "format": "xlsx"}, "format: Input should be 'csv'"),
        ({"columns": ["a", "y"], "target": "y", "impossible_zero_columns": ["y"]}, "cannot be"),
    ],
)
def test_bad_dataset_specs_are_refused_naming_the_field(tmp_path, fields, message):
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump({"name": "d", "url": "https://example.invalid/d", **fields}))
    with pytest.raises(ConfigError, match=message):
        DatasetSpec.from_yaml(path)


def test_preprocessing_is_routed_by_grid_keys_and_checked():
    grid = GridSpec.from_mapping({"preprocess__scaling": ["none", "standard"], "epochs": [1]})
    [raw, scaled] = combinations(grid.param_grid)
    assert scaled.routed == {"epochs": 1, "preprocess__scaling": "standard"}
    assert (raw.model.scaling, scaled.model.scaling) == ("none", "standard")
    with pytest.raises(ConfigError, match="scaling: Input should be 'none', 'standard'"):
        combinations(GridSpec.from_mapping({"preprocess__scaling": ["quantile"]}).param_grid)


def test_the_loss_follows_the_task_unless_it_does_not_fit():
    def loss_of(task, **arguments):
        return build_mlp({"n_features_in_": 8, "n_classes_": 3, "task": task}, **arguments).loss

    assert loss_of("binary") == "binary_crossentropy"
    assert loss_of("multiclass") == "sparse_categorical_crossentropy"
    assert loss_of("regression") == "mse"
    assert loss_of("regression", loss="mae") == "mae"
    with pytest.raises(ConfigError, match="loss 'mae' does not fit a binary task"):
        combinations(None, base={"loss": "mae"})


def test_candidates_are_evaluated_as_listed_and_counted_without_a_product():
    spec = GridSpec(candidates=[{"model__units": [4, 2]}, {"optimizer": "sgd"}])
    assert spec.expand() == [{"model__units": (4, 2)}, {"optimizer": "sgd"}]
    assert spec.n_combinations == 2
    with pytest.raises(ValidationError, match="candidates is empty"):
        GridSpec(candidates=[])


def test_explicit_splits_must_match_n_splits():
    split = {"train": [0, 1], "test": [2]}
    with pytest.raises(ValidationError, match="1 explicit split"):
        RunSettings(n_splits=2, splits=[split])


def test_overrides_change_only_the_fields_they_name():
    config = GridSearchConfig()
    merged = with_overrides(config, {"run": {"seed": 3}, "grid": {"param_grid": {"epochs": [1]}}})
    assert merged.run.seed == 3 and merged.run.n_splits == config.run.n_splits
    assert merged.grid.param_grid["epochs"] == [1]
    assert merged.grid.param_grid["batch_size"] == [5, 10, 20]  # kept from the config


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"run": {"engine": "fastt"}}, r"overrides: run\.engine: Input should be 'auto'"),
        ({"rnu": {}}, "overrides: rnu: Extra inputs are not permitted"),
        ("seed=3", "overrides must be a mapping"),
    ],
)
def test_overrides_are_checked_like_the_config(overrides, message):
    with pytest.raises(ConfigError, match=message):
        with_overrides(CVConfig(), overrides)


def test_the_shared_vocabulary_imports_no_subpackage_not_even_lazily():
    """tasks/config.py is imported by every subpackage: an import of one of them, even
    inside a function, would close a cycle (config -> search.spaces -> model.routing ->
    config was one)."""
    import ast
    import inspect

    import tasks.config

    tree = ast.parse(inspect.getsource(tasks.config))
    imported = [node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)]
    imported += [a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names]
    subpackages = ("tasks.data", "tasks.model", "tasks.train", "tasks.search", "tasks.results")
    assert not [
        name
        for name in imported
        if name and any(name == p or name.startswith(p + ".") for p in subpackages)
    ]
