import pytest
import yaml

from tasks.config import (
    DEFAULT_DATASET_SPEC,
    DEFAULT_GRID_FILE,
    DatasetSpec,
    GridSpec,
    ModelParams,
    RunSettings,
)
from tasks.errors import ConfigError


def test_tutorial_grid_expands_in_scikit_learn_order():
    combinations = GridSpec.from_yaml(DEFAULT_GRID_FILE).combinations(ModelParams())
    assert len(combinations) == 54
    first_params, first_model = combinations[0]
    assert first_params == {
        "batch_size": 5,
        "epochs": 50,
        "model__init": "glorot_uniform",
        "model__optimizer": "rmsprop",
    }
    assert (first_model.batch_size, first_model.epochs, first_model.optimizer) == (5, 50, "rmsprop")
    assert combinations[-1][0]["batch_size"] == 20


def test_dataset_spec_names_the_pima_columns():
    spec = DatasetSpec.from_yaml(DEFAULT_DATASET_SPEC)
    assert spec.feature_columns[:2] == ["pregnancies", "glucose"]
    assert spec.target == "outcome" and len(spec.columns) == 9


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("epochs: [1]\nlearning_rate: [0.1]\n", "unknown grid key.*learning_rate"),
        ("epochs: []\n", "'epochs' has an empty list"),
        ("epochs: 5\n", "'epochs' must be a list"),
        ("epochs: [one]\n", "epochs.*integer"),
        ("model__optimizer: [adam, sgdd]\n", "unknown optimizer 'sgdd'"),
        ("model__init: [glorot]\n", "unknown initializer 'glorot'"),
        ("- epochs\n", "must hold a mapping"),
        ("epochs: [1\n", "not valid YAML"),
        ("!!python/object/apply:os.system ['true']\n", "not valid YAML"),
    ],
)
def test_bad_grid_files_are_refused_with_the_key(tmp_path, text, message):
    path = tmp_path / "grid.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message):
        GridSpec.from_yaml(path)


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
    [(_, raw), (routed, scaled)] = grid.combinations(ModelParams())
    assert routed == {"epochs": 1, "preprocess__scaling": "standard"}
    assert (raw.scaling, scaled.scaling) == ("none", "standard")
    with pytest.raises(ConfigError, match="scaling: Input should be 'none', 'standard'"):
        GridSpec.from_mapping({"preprocess__scaling": ["robust"]})


def test_the_loss_follows_the_task_unless_it_does_not_fit():
    assert ModelParams().for_task("binary").loss == "binary_crossentropy"
    assert ModelParams().for_task("multiclass").loss == "sparse_categorical_crossentropy"
    assert ModelParams().for_task("regression").loss == "mse"
    assert ModelParams(loss="mae").for_task("regression").loss == "mae"
    with pytest.raises(ConfigError, match="loss 'mae' does not fit a binary task"):
        ModelParams(loss="mae").for_task("binary")
