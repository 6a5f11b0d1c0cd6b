"""Typed configuration: dataset spec, model hyperparameters, grids and run settings.

Everything is validated here, before any training starts, with messages that name the key
and the value received.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any, Literal, TypeVar

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from tasks.cache_home import cache_home
from tasks.dataset_spec import DatasetSpec, pydantic_message, safe_name
from tasks.errors import ConfigError
from tasks.limits import DEFAULT_MAX_FITS, MIN_SPLITS, check_fit_count, count_combinations
from tasks.memory import parse_memory_size
from tasks.messages import bounded_repr
from tasks.yaml_input import read_yaml_mapping

PROJECT_ROOT = Path(__file__).resolve().parents[1]
# Installed from a wheel, the checkout's data/, grids/, models/, examples/ and prefect.yaml
# are package data of foldflow._data (pyproject.toml), beside the code.
PACKAGED_ROOT = PROJECT_ROOT / "foldflow" / "_data"
HOME_VARIABLE = "FOLDFLOW_HOME"


def foldflow_home() -> Path:
    """Where relative paths, outputs and the cache go: $FOLDFLOW_HOME, else the current
    folder (deployments' pull step sets it to the checkout); never the installed package."""
    configured = os.environ.get(HOME_VARIABLE)
    return Path(configured).expanduser().resolve() if configured else Path.cwd()


def shipped_file(relative: str | Path) -> Path:
    """A file foldflow ships (the default spec, the tutorial grid, example models): the
    user's own copy at that relative path first, then the checkout's, then the wheel's."""
    relative = Path(relative)
    for root in (foldflow_home(), PROJECT_ROOT, PACKAGED_ROOT):
        if (root / relative).exists():
            return root / relative
    return foldflow_home() / relative


DEFAULT_DATASET_SPEC = shipped_file("data/pima-indians-diabetes.yaml")
DEFAULT_GRID_FILE = shipped_file("grids/tutorial.yaml")
DEFAULT_OUTPUT_DIR = Path("runs")


OPTIMIZERS = ("rmsprop", "adam", "sgd", "adagrad", "adadelta", "adamax", "nadam")
INITIALIZERS = (
    "glorot_uniform",
    "glorot_normal",
    "he_uniform",
    "he_normal",
    "lecun_uniform",
    "lecun_normal",
    "normal",
    "uniform",
    "zeros",
    "ones",
)
ACTIVATIONS = ("relu", "tanh", "sigmoid", "elu", "selu", "softplus", "gelu", "linear")
# foldflow's MLP (tasks.model.factory.build_mlp) takes these names; the loss fixes its output
# layer, so each task has its own.
TASK_LOSSES: dict[str, tuple[str, ...]] = {
    "binary": ("binary_crossentropy",),
    "multiclass": ("sparse_categorical_crossentropy",),
    "regression": ("mse", "mae"),
}
LOSSES = tuple(loss for losses in TASK_LOSSES.values() for loss in losses)

Engine = Literal["auto", "fast", "reference"]
Runner = Literal["threads", "processes", "dask"]
Scaling = Literal["none", "standard", "minmax", "robust"]
NumericImpute = Literal["median", "mean", "constant"]
CategoricalImpute = Literal["missing", "most_frequent"]
CategoricalEncoding = Literal["onehot", "ordinal"]
Monitor = Literal["val_loss", "val_accuracy", "loss"]
# The validation part early stopping carves from each fold's training rows when the run
# gives no `fit__validation_split` (Keras' own examples use 0.1 to 0.2).
DEFAULT_EARLY_STOPPING_VALIDATION = 0.2


class ModelParams(BaseModel):
    """What one fit depends on besides data, fold and seed: the model function's arguments
    (bound with its defaults, as it receives them), training length and batch, Keras `fit`
    options and the per-fold preprocessing. Built by routing (tasks.model.routing)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    arguments: dict[str, Any] = Field(
        default_factory=dict, description="keyword arguments the model function receives"
    )
    epochs: int = Field(default=150, ge=1, le=100_000)
    batch_size: int = Field(default=10, ge=1, le=1_000_000)
    # Keras `fit` options (`fit__shuffle`, ...): the validation rows come from the fold's
    # training rows only (tasks.records.split_validation).
    shuffle: bool = True
    class_weight: dict[str, float] | None = Field(
        default=None, description="class label -> weight of its rows in the training loss"
    )
    validation_split: float = Field(default=0.0, ge=0.0, lt=1.0)
    # Preprocessing, fitted on each fold's training rows only (tasks.data.preprocess).
    scaling: Scaling = Field(default="none", description="none, standard, minmax or robust")
    impute_zeros: bool = Field(
        default=False,
        description="zeros in the spec's impossible_zero_columns -> training rows' median",
    )
    numeric_impute: NumericImpute = Field(
        default="median", description="missing numbers -> training rows' median, mean or constant"
    )
    numeric_fill: float = Field(default=0.0, description="the constant of numeric_impute")
    missing_indicator: bool = Field(
        default=False, description="a 0/1 column per numeric column that has missing cells"
    )
    categorical_impute: CategoricalImpute = Field(
        default="missing", description="missing categories: a category of their own, or the mode"
    )
    categorical_encoding: CategoricalEncoding = Field(
        default="onehot", description="onehot (a column per category) or ordinal (the code)"
    )
    min_frequency: int | float | None = Field(
        default=None,
        gt=0,
        description="onehot: categories seen fewer times (or a smaller fraction of the training "
        "rows, below 1) share one column",
    )
    transformer: str | None = Field(default=None, repr=False)  # tasks.data.user_transformer
    transformer_params: dict[str, Any] = Field(default_factory=dict)  # `transformer__pre__...`
    # The transformer's output width when every fold gives the same one (set by the flow
    # before planning: the fast engine then trains the Keras step); None: known per fold only.
    transformer_width: int | None = Field(default=None, ge=1)
    # Early stopping (`early_stopping__patience`, ...), Keras' EarlyStopping semantics; off
    # while patience is None. Monitoring val_* needs a validation part (`validation_split`).
    patience: int | None = Field(default=None, ge=0, le=100_000)
    monitor: Monitor = "val_loss"
    min_delta: float = Field(default=0.0, ge=0.0)
    restore_best_weights: bool = False

    @model_validator(mode="after")
    def _validation_for_early_stopping(self) -> ModelParams:
        if self.early_stopping and self.monitor.startswith("val_") and not self.validation_split:
            raise ValueError(
                f"early stopping monitors {self.monitor!r} but there is no validation part: "
                "set fit__validation_split"
            )
        return self

    @property
    def early_stopping(self) -> bool:
        return self.patience is not None

    @field_validator("class_weight", mode="before")
    @classmethod
    def _labels_as_text(cls, value: Any) -> Any:
        """YAML gives `{0: 1.0, 1: 2.0}`; labels are matched by their text (`0`, `yes`)."""
        if isinstance(value, dict):
            return {str(label): weight for label, weight in value.items()}
        return value

    def transformer_key(self) -> str | None:
        """Names the user's transformer with its step parameters (None without one): fits
        with equal keys see equal fold matrices."""
        if self.transformer is None:
            return None
        text = json.dumps([self.transformer, self.transformer_params], sort_keys=True, default=repr)
        return hashlib.sha256(text.encode()).hexdigest()

    def trajectory_key(self) -> dict[str, Any]:
        """Everything that shapes training except its length: epochs are prefixes of one run."""
        return self.model_dump(exclude={"epochs"}, mode="json")

    def seed_key(self) -> dict[str, Any]:
        """What a fit's seed depends on: the arguments the model function receives."""
        return self.model_dump(include={"arguments"}, mode="json")

    @property
    def preprocessing(self) -> dict[str, Any]:
        return self.model_dump(include=set(PREPROCESSING_FIELDS))


PREPROCESSING_FIELDS = (
    "scaling", "impute_zeros", "numeric_impute", "numeric_fill", "missing_indicator",
    "categorical_impute", "categorical_encoding", "min_frequency",
)  # fmt: skip
# The model reference that names foldflow's own MLP (tasks.model.factory.build_mlp).
BUILTIN_MODEL = "mlp"


def load_yaml_mapping(path: Path) -> dict[str, Any]:
    """Read a YAML mapping safely (no Python objects), naming the file on any problem."""
    return read_yaml_mapping(path)


class GridSpec(BaseModel):
    """A hyperparameter grid: routed key -> list of values, expanded like scikit-learn's."""

    model_config = ConfigDict(extra="forbid")

    param_grid: dict[str, list[Any]] = Field(
        default_factory=lambda: {
            "model__optimizer": ["rmsprop", "adam"],
            "model__init": ["glorot_uniform", "normal", "uniform"],
            "epochs": [50, 100, 150],
            "batch_size": [5, 10, 20],
        }
    )

    candidates: list[dict[str, Any]] | None = Field(
        default=None,
        description="explicit combinations (a sampled search's, or a list of grids expanded), "
        "evaluated in this order instead of param_grid's product",
    )

    @field_validator("candidates")
    @classmethod
    def _some_candidates(cls, value: list[dict[str, Any]] | None) -> list[dict[str, Any]] | None:
        if value is not None and not value:
            raise ValueError("candidates is empty: give at least one combination")
        return value

    @property
    def n_combinations(self) -> int:
        """Counted from list lengths (or the candidates), never expanded."""
        if self.candidates is not None:
            return len(self.candidates)
        return count_combinations(self.param_grid)

    @field_validator("param_grid")
    @classmethod
    def _non_empty_lists(cls, value: dict[str, list[Any]]) -> dict[str, list[Any]]:
        if not value:
            raise ValueError("the grid is empty: give at least one key with a list of values")
        for key, values in value.items():
            if not values:
                raise ValueError(f"grid key {key!r} has an empty list of values")
        return value

    @classmethod
    def from_yaml(
        cls, path: str | Path, *, n_splits: int = MIN_SPLITS, max_fits: int = DEFAULT_MAX_FITS
    ) -> GridSpec:
        path = Path(path)
        raw = load_yaml_mapping(path)
        for key, values in raw.items():
            if not isinstance(values, list):
                raise ConfigError(
                    f"{path}: grid key {key!r} must be a list of values, got {bounded_repr(values)}"
                )
        return cls.from_mapping(raw, source=str(path), n_splits=n_splits, max_fits=max_fits)

    @classmethod
    def from_mapping(
        cls,
        grid: dict[str, Any],
        source: str = "grid",
        *,
        n_splits: int = MIN_SPLITS,
        max_fits: int = DEFAULT_MAX_FITS,
    ) -> GridSpec:
        """The grid, checked: its shape, then its size (from list lengths, never expanded).
        Each combination is checked against the model function when a run starts."""
        try:
            spec = cls(param_grid=grid)
        except ValidationError as error:
            raise ConfigError(pydantic_message(error, source)) from None
        check_fit_count(count_combinations(spec.param_grid), n_splits, max_fits, source)
        return spec

    def expand(self) -> list[dict[str, Any]]:
        """Every combination of routed keys, in scikit-learn's deterministic order, or the
        candidates in their order (lists of values such as layer widths become tuples)."""
        if self.candidates is not None:
            return [
                {key: tuple(v) if isinstance(v, list) else v for key, v in candidate.items()}
                for candidate in self.candidates
            ]
        # Imported here: scikit-learn takes ~1 s to import, which `foldflow --help` and
        # `foldflow server` (they read PROJECT_ROOT from this module) do not need.
        from sklearn.model_selection import ParameterGrid

        grid = {
            key: [tuple(v) if isinstance(v, list) else v for v in values]
            for key, values in self.param_grid.items()
        }
        return list(ParameterGrid(grid))


class ExplicitSplit(BaseModel):
    """One train/test split given by row index (a scikit-learn splitter's output)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    train: list[int] = Field(min_length=1)
    test: list[int] = Field(min_length=1)


class RunSettings(BaseModel):
    """How a run executes: seed, folds, engine, parallelism and where files go."""

    model_config = ConfigDict(extra="forbid")

    seed: int = Field(default=7, ge=0, le=2**31 - 1)
    n_splits: int = Field(default=10, ge=2, le=1000)
    n_repeats: int = Field(
        default=1,
        ge=1,
        le=100,
        description="repeated k-fold: the k folds drawn this many times, each time shuffled "
        "anew (scikit-learn's RepeatedStratifiedKFold, RepeatedKFold for a regression); "
        "r x k fold scores when one split is too noisy to tell candidates apart",
    )
    engine: Engine = "auto"
    workers: int = Field(default=2, ge=1, le=256, description="parallel task runs")
    runner: Runner = Field(
        default="threads", description="where mapped fits run: threads, processes or dask"
    )
    dask_address: str | None = Field(
        default=None,
        description="scheduler of an existing Dask cluster (tcp://host:port); "
        "without it, --runner dask starts a local cluster of worker processes",
    )
    dataset_spec: str = "data/pima-indians-diabetes.yaml"
    dataset: DatasetSpec | None = Field(
        default=None, description="the dataset spec itself; when given, dataset_spec is unused"
    )
    source: str | None = Field(
        default=None,
        description="URL or local path of the CSV or Parquet file; defaults to the spec's URL",
    )
    splits: list[ExplicitSplit] | None = Field(
        default=None,
        description="explicit train/test rows per fold (from a scikit-learn splitter); "
        "without them folds are StratifiedKFold (KFold for a regression), shuffled and seeded",
    )
    splits_file: str | None = Field(
        default=None,
        description="explicit splits in a file named by its SHA-256 (tasks.data.folds."
        "store_splits: what the Python API writes for a scikit-learn splitter)",
    )
    cache_dir: str | None = Field(
        default=None,
        description="default: the cache home ($FOLDFLOW_CACHE, else $FOLDFLOW_HOME/cache, else "
        "the user's cache folder: tasks.cache_home); relative paths are taken from "
        "$FOLDFLOW_HOME, else the working folder",
    )
    output_dir: str = Field(
        default=str(DEFAULT_OUTPUT_DIR),
        description="relative paths are taken from $FOLDFLOW_HOME, else the working folder",
    )
    run_name: str | None = None
    allow_insecure_http: bool = Field(
        default=False, description="allow plain http downloads from hosts other than loopback"
    )
    fresh: bool = Field(default=False, description="retrain even where a cached fit exists")
    train_scores: bool = Field(
        default=False,
        description="also write every fit's scores on its own training rows into cv_results "
        "(split{k}_train_*, mean_train_*, std_train_*: scikit-learn's return_train_score)",
    )
    refit_metric: str | None = Field(
        default=None,
        description="metric that ranks combinations and picks the best "
        "(default: accuracy for classification, r2 for regression; any scorer of --scoring)",
    )
    scoring: list[str | dict[str, Any]] = Field(
        default=[],
        description="scikit-learn scorer names scored on every fold beside the task's own "
        "metrics (balanced_accuracy, average_precision, neg_mean_absolute_error, ...); "
        "from Python also a make_scorer of a module-level function (tasks.metrics.ScorerSpec)",
    )
    warn_above_fits: int = Field(default=5000, ge=1, description="warn when a run has more fits")
    max_fits: int = Field(
        default=DEFAULT_MAX_FITS,
        ge=1,
        description="refuse a run with more fits (combinations x folds) before building any",
    )
    overwrite: bool = Field(
        default=False,
        description="replace an existing run folder of the same name (else the run is refused)",
    )
    # Guards of the reference engine's fits (tasks.train.fit_workers): each runs in a worker
    # process that is watched, stopped when over a bound, and replaced now and then.
    max_memory: str | None = Field(
        default=None,
        description="memory one fit may add to its worker process, e.g. 2GB; a fit that needs "
        "more is stopped and recorded as failed (default: 80% of this machine's memory, or of "
        "its cgroup's limit, split between the workers)",
    )
    fit_timeout: float | None = Field(
        default=None,
        gt=0,
        description="seconds one fit may take; a longer one is stopped and recorded as failed "
        "(default: no limit)",
    )
    recycle_after_fits: int = Field(
        default=200,
        ge=1,
        le=1_000_000,
        description="a fit worker process is replaced after this many fits (Keras keeps a few "
        "MB of every model it builds)",
    )
    recycle_above_memory: str = Field(
        default="1GB",
        description="a fit worker process is replaced once it has grown by this much since it "
        "started",
    )

    @model_validator(mode="after")
    def _splits_match_n_splits(self) -> RunSettings:
        if self.splits is not None and len(self.splits) != self.n_splits:
            raise ConfigError(
                f"run settings: {len(self.splits)} explicit split(s) but n_splits={self.n_splits}"
            )
        if self.n_repeats > 1 and (self.splits is not None or self.splits_file is not None):
            raise ConfigError(
                f"run settings: n_repeats={self.n_repeats} with explicit splits "
                "(repeat them in the splitter instead, e.g. RepeatedStratifiedKFold)"
            )
        return self

    @property
    def n_folds(self) -> int:
        """Fold scores per candidate: n_splits, times n_repeats for repeated k-fold."""
        return self.n_splits * self.n_repeats

    @field_validator("max_memory", "recycle_above_memory")
    @classmethod
    def _memory_size(cls, value: str | None) -> str | None:
        try:
            if value is not None:
                parse_memory_size(value)
        except ValueError:  # not a value_error: the refusal then names the option (--max-memory)
            raise PydanticCustomError(
                "memory_size", "not a memory size above zero: write e.g. 300MB, 2GB or 2GiB"
            ) from None
        return value

    @property
    def max_memory_bytes(self) -> int | None:
        """`max_memory` in bytes; None: the default share, worked out where the fits run."""
        return None if self.max_memory is None else parse_memory_size(self.max_memory)

    @property
    def recycle_above_bytes(self) -> int:
        return parse_memory_size(self.recycle_above_memory)

    @field_validator("run_name")
    @classmethod
    def _run_name_is_safe(cls, value: str | None) -> str | None:
        return None if value is None else safe_name(value, "run name")

    def dataset_spec_model(self) -> DatasetSpec:
        """The inline spec if there is one, else the spec file's."""
        if self.dataset is not None:
            return self.dataset
        path = Path(self.dataset_spec).expanduser()
        return DatasetSpec.from_yaml(path if path.is_absolute() else shipped_file(path))

    def cache_folder(self) -> Path:
        """The run's cache: `cache_dir` when given, else the cache home (tasks.cache_home)."""
        return self.resolve(self.cache_dir) if self.cache_dir else cache_home()

    def resolve(self, path: str) -> Path:
        """Relative paths are taken from $FOLDFLOW_HOME, else the working folder (deployments
        run in the checkout: their pull step sets it), never from the installed package."""
        candidate = Path(path).expanduser()
        return candidate if candidate.is_absolute() else foldflow_home() / candidate


MODEL_FIELD_HELP = (
    "model function: PATH.py:FUNCTION, package.module:FUNCTION, or mlp (foldflow's MLP)"
)


class CVConfig(BaseModel):
    """Parameters of the cross-validation flow (shown as a form in the Prefect UI)."""

    model_config = ConfigDict(extra="forbid")

    model: str = Field(default=BUILTIN_MODEL, description=MODEL_FIELD_HELP)
    params: dict[str, Any] = Field(
        default_factory=dict,
        description="one value per routed key: the function's arguments (optimizer, "
        "model__init, ...), epochs, batch_size, fit__shuffle, preprocess__scaling, ...",
    )
    run: RunSettings = RunSettings()

    @model_validator(mode="after")
    def _fits_within_limit(self) -> CVConfig:
        check_fit_count(1, self.run.n_folds, self.run.max_fits, "cv")
        return self


ConfigT = TypeVar("ConfigT", bound=BaseModel)


def deep_merge(base: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """`overrides` over `base`: mappings merge key by key, anything else replaces."""
    merged = dict(base)
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def with_overrides(config: ConfigT, overrides: dict[str, Any] | None) -> ConfigT:
    """A flow's config with a run's `overrides` merged over it, checked like the config itself.

    Prefect replaces a deployment's parameter whole (`--param config=...` drops the rest of
    `prefect.yaml`'s config); `overrides` changes only the fields it names, e.g.
    `{"run": {"source": "data.csv"}}` or `{"grid": {"param_grid": {"epochs": [1, 2]}}}`.
    """
    if not overrides:
        return config
    if not isinstance(overrides, dict):
        raise ConfigError(f"overrides must be a mapping, got {bounded_repr(overrides)}")
    try:
        return type(config).model_validate(deep_merge(config.model_dump(), overrides))
    except ValidationError as error:
        raise ConfigError(pydantic_message(error, "overrides")) from None


class GridSearchConfig(BaseModel):
    """Parameters of the grid-search flow (shown as a form in the Prefect UI)."""

    model_config = ConfigDict(extra="forbid")

    model: str = Field(default=BUILTIN_MODEL, description=MODEL_FIELD_HELP)
    base_params: dict[str, Any] = Field(
        default_factory=dict, description="values every combination shares (routed keys)"
    )
    grid: GridSpec = GridSpec()
    run: RunSettings = RunSettings(n_splits=3)
    refit: bool = True

    @model_validator(mode="after")
    def _fits_within_limit(self) -> GridSearchConfig:
        """Counted from list lengths, so a flow parameter is refused before its grid expands."""
        combinations = self.grid.n_combinations
        check_fit_count(combinations, self.run.n_folds, self.run.max_fits, "grid")
        return self


Strategy = Literal["random", "halving", "tpe"]
DEFAULT_SPACE_FILE = "grids/random-tutorial.yaml"


class SearchConfig(BaseModel):
    """Parameters of the search flow: a strategy over a search space (tasks.search.spaces)."""

    model_config = ConfigDict(extra="forbid")

    strategy: Strategy = Field(default="random", description="random, halving or tpe")
    space: str | dict[str, Any] = Field(
        default=DEFAULT_SPACE_FILE,
        description="search-space YAML (path) or the space itself: key -> list of choices or "
        "{loguniform|uniform|randint|choice: [...]}",
    )
    n_candidates: int = Field(default=20, ge=1, le=100_000, description="candidates to try")
    min_epochs: int = Field(default=5, ge=1, le=100_000, description="halving: first rung")
    max_epochs: int = Field(default=150, ge=1, le=100_000, description="halving: last rung")
    factor: int = Field(default=3, ge=2, le=100, description="halving: 1/factor survive")
    ask_batch: int | None = Field(
        default=None,
        ge=1,
        le=10_000,
        description="tpe: candidates asked per batch (default: twice the workers)",
    )
    model: str = Field(default=BUILTIN_MODEL, description=MODEL_FIELD_HELP)
    base_params: dict[str, Any] = Field(
        default_factory=dict, description="values every candidate shares (routed keys)"
    )
    run: RunSettings = RunSettings(n_splits=3)
    refit: bool = True
    outer_folds: int | None = Field(
        default=None,
        ge=2,
        le=100,
        description="nested CV: outer folds, each running the whole search on its training "
        "rows (inner folds: run.n_splits) and scoring its best on its test rows",
    )

    @model_validator(mode="after")
    def _checked(self) -> SearchConfig:
        if self.strategy == "halving" and self.min_epochs > self.max_epochs:
            raise ConfigError(
                f"search: min_epochs={self.min_epochs} is above max_epochs={self.max_epochs}"
            )
        if self.outer_folds and self.run.n_repeats > 1:
            raise ConfigError(
                f"search: n_repeats={self.run.n_repeats} with outer_folds={self.outer_folds} "
                "(nested CV's inner folds are not repeated)"
            )
        check_fit_count(self.n_candidates, self.run.n_folds, self.run.max_fits, "search")
        return self
