"""Model factory: call the user's model function (or foldflow's MLP) for one fit, seeded, and
check every combination before any training.

The function is the tutorial's `create_model`: it builds and compiles a Keras model from its
arguments. foldflow routes grid keys to those arguments (tasks.model.routing), passes `meta` when
the function asks for it, builds each distinct set of arguments once on the driver to check
the model against the data and the task, and reads whether the fast engine can train it
(tasks.model.inspection).
"""

from __future__ import annotations

import random
import threading
import warnings
from collections import Counter
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np
from prefect import get_run_logger, task
from pydantic import BaseModel

from tasks.config import (
    ACTIVATIONS,
    INITIALIZERS,
    OPTIMIZERS,
    TASK_LOSSES,
    GridSpec,
    ModelParams,
)
from tasks.errors import ConfigError
from tasks.features import model_input_meta
from tasks.memory import build_memory_bounded
from tasks.model.routing import destination, route, shorten, signature_of
from tasks.model.sources import ModelSource, last_line, load_model_function, where_in_file
from tasks.records import DenseNetwork

if TYPE_CHECKING:
    import keras

# The tutorial's `Dense(12, input_dim=8)` still works in Keras 3, with this warning per build.
warnings.filterwarnings("ignore", message="Do not pass an `input_shape`", category=UserWarning)

OUTPUT_ACTIVATIONS = {"binary": "sigmoid", "multiclass": "softmax", "regression": "linear"}


def build_mlp(
    meta: dict[str, Any],
    hidden_layers: tuple[int, ...] = (12, 8),
    activation: str = "relu",
    init: str = "glorot_uniform",
    optimizer: str = "adam",
    loss: str | None = None,
    learning_rate: float | None = None,
    dropout: float = 0.0,
) -> keras.Model:
    """foldflow's MLP, the tutorial's generalised: Dense layers (Dropout after each when
    `dropout` > 0), then an output that fits the task; compiled.

    One sigmoid unit for a binary task, a softmax unit per class (`meta["n_classes_"]`) for a
    multiclass one, a linear unit for a regression. `loss` defaults to the task's first
    (tasks.config.TASK_LOSSES); `learning_rate` None keeps Keras' default for the optimizer.
    """
    import keras  # TensorFlow loads only where a model is built (the flows import without it)

    task = meta.get("task", "binary")
    loss = loss or TASK_LOSSES[task][0]
    _check_mlp_arguments(hidden_layers, activation, init, optimizer, loss, task, dropout)
    output_units = meta["n_classes_"] if task == "multiclass" else 1
    model = keras.Sequential([keras.Input(shape=(meta["n_features_in_"],))])
    for index, units in enumerate(hidden_layers, start=1):
        model.add(
            keras.layers.Dense(
                units, activation=activation, kernel_initializer=init, name=f"hidden_{index}"
            )
        )
        if dropout > 0:
            model.add(keras.layers.Dropout(dropout, name=f"dropout_{index}"))
    model.add(
        keras.layers.Dense(
            output_units,
            activation=OUTPUT_ACTIVATIONS[task],
            kernel_initializer=init,
            name="output",
        )
    )
    if learning_rate is not None:
        optimizer = keras.optimizers.get(
            {"class_name": optimizer, "config": {"learning_rate": learning_rate}}
        )
    metrics = None if task == "regression" else ["accuracy"]
    # XLA compilation costs ~0.5 s per model and does not speed up steps this small.
    model.compile(loss=loss, optimizer=optimizer, metrics=metrics, jit_compile=False)
    return model


def _check_mlp_arguments(hidden_layers, activation, init, optimizer, loss, task, dropout) -> None:
    """Clear errors for the MLP's named choices (Keras' own would be less direct)."""
    named = {"activation": (activation, ACTIVATIONS), "init": (init, INITIALIZERS)}
    named["optimizer"] = (optimizer, OPTIMIZERS)
    for argument, (value, allowed) in named.items():
        if value not in allowed:
            raise ValueError(f"unknown {argument} {value!r}; choose one of {', '.join(allowed)}")
    if loss not in TASK_LOSSES[task]:
        raise ValueError(
            f"loss {loss!r} does not fit a {task} task; "
            f"choose one of {', '.join(TASK_LOSSES[task])}"
        )
    if not hidden_layers or any(not 1 <= int(units) <= 100_000 for units in hidden_layers):
        raise ValueError(f"hidden_layers needs 1..100000 units per layer, got {hidden_layers}")
    if not 0 <= dropout < 1:
        raise ValueError(f"dropout must be in [0, 1), got {dropout}")


def model_meta(task: str, n_features: int, classes: list[Any] | None) -> dict[str, Any]:
    """What scikeras calls `meta`: what a function needs to know of the data it will see."""
    return {
        "n_features_in_": int(n_features),
        "n_classes_": len(classes) if classes is not None else None,
        "classes_": list(classes) if classes is not None else None,
        "task": task,
        "n_outputs_": 1,
        "target_type_": {"binary": "binary", "multiclass": "multiclass"}.get(task, "continuous"),
    }


class ShapeOnlyData:
    """`X` or `y` as Keras' scikit-learn wrappers (keras.wrappers.SKLearnClassifier and
    SKLearnRegressor) pass them to a model function, with their shape only: foldflow builds one
    model per combination for every fold, so no fold's values are there to read. The row count
    is None; `y` is one-hot for a classifier, as those wrappers encode it, one column otherwise."""

    def __init__(self, name: str, columns: int, dtype: str = "float32"):
        self.name = name
        self.shape = (None, columns)
        self.ndim = 2
        self.dtype = np.dtype(dtype)

    def _refuse(self, *args: Any, **kwargs: Any) -> Any:
        raise ConfigError(
            f"the model function read the values of {self.name}: foldflow passes X and y with "
            f"their shape only ({self.name}.shape == {self.shape}), since one model is built "
            "for every fold; take sizes from X.shape and y.shape (or run Keras' wrapper with "
            "scikit-learn's own search)"
        )

    __array__ = __getitem__ = __iter__ = __len__ = _refuse

    def __repr__(self) -> str:
        return f"<{self.name}: shape {self.shape}, values not passed>"


def shape_only_data(name: str, meta: dict[str, Any]) -> ShapeOnlyData:
    if name == "X":
        return ShapeOnlyData("X", meta["n_features_in_"])
    columns = meta["n_classes_"] if meta["task"] != "regression" else 1
    return ShapeOnlyData("y", columns)


# One build at a time: Keras' name counters and clear_session are process-wide.
_BUILD_LOCK = threading.Lock()
# Run before every build: the compiled-program cache's `enable`, which must come before the
# process's first TensorFlow op (a check build may be it), registered by the training layer
# (tasks.train.dispatch) as it is imported, since this layer may not import it.
_BEFORE_BUILDING: list[Callable[[], object]] = []
# While a thread builds a model, Python's module-level `random` functions draw from that
# thread's own generator (tasks.model.factory._route_python_random).
_BUILDING = threading.local()
_RANDOM_FUNCTIONS = (
    "seed", "random", "uniform", "randint", "randrange", "choice", "choices", "shuffle",
    "sample", "getrandbits", "gauss", "normalvariate", "lognormvariate", "expovariate",
    "vonmisesvariate", "gammavariate", "triangular", "betavariate", "paretovariate",
    "weibullvariate", "getstate", "setstate", "randbytes",
)  # fmt: skip


def _route_python_random() -> None:
    """Unseeded Keras initializers and Dropout take their seeds from Python's global `random`
    (keras.src.random.seed_generator.make_default_seed), which other threads also draw from
    (Prefect names runs with it): a draw between `set_random_seed` and the initializer would
    change a fit's weights. So the module functions are routed to the building thread's own
    generator, seeded with the fit's seed, and to the global one for every other thread."""
    if getattr(random, "_foldflow_routed", False):
        return
    for name in _RANDOM_FUNCTIONS:
        shared = getattr(random, name, None)
        if shared is None:
            continue

        def routed(*args, _name=name, _shared=shared, **kwargs):
            private = getattr(_BUILDING, "generator", None)
            return (
                _shared(*args, **kwargs)
                if private is None
                else getattr(private, _name)(*args, **kwargs)
            )

        setattr(random, name, routed)
    random._foldflow_routed = True  # type: ignore[attr-defined]


def before_building(step: Callable[[], object]) -> None:
    """Run `step` before each model build of this process (once registered; `step` must be
    cheap to run again)."""
    if step not in _BEFORE_BUILDING:
        _BEFORE_BUILDING.append(step)


def build_model(
    function: Callable,
    arguments: dict[str, Any],
    meta: dict[str, Any],
    seed: int,
    random_log: list | None = None,
) -> keras.Model:
    """The function's model for one fit, seeded from the fit's seed before the call, so an
    unseeded initializer gives the same weights in any thread, process or worker: the same
    weights as `keras.utils.set_random_seed(seed)` then the call, in a plain script.
    `random_log` receives the Python random calls the build makes (tasks.model.initial_weights).
    TensorFlow loads here, not on import, after what must come before its first op
    (before_building)."""
    for step in _BEFORE_BUILDING:
        step()
    import keras

    from tasks.model.initial_weights import RecordingRandom

    signature = signature_of(function)
    call_arguments = dict(arguments)
    for name in signature.meta_parameters:
        if name in ("X", "y"):
            call_arguments[name] = shape_only_data(name, meta)
        else:
            call_arguments[name] = meta if name == "meta" else meta.get(name)
    _route_python_random()
    with _BUILD_LOCK:
        keras.backend.clear_session(free_memory=False)
        keras.utils.set_random_seed(seed)
        _BUILDING.generator = (
            random.Random(seed) if random_log is None else RecordingRandom(seed, random_log)
        )
        try:
            return function(**call_arguments)
        finally:
            _BUILDING.generator = None


def model_for_fit(
    source: ModelSource,
    model: ModelParams,
    meta: dict[str, Any],
    seed: int,
    random_log: list | None = None,
) -> keras.Model:
    # The input width after this fit's preprocessing (one-hot columns, indicators).
    meta = model_input_meta(meta, model)
    return build_model(load_model_function(source), model.arguments, meta, seed, random_log)


class Combination(BaseModel):
    """One combination to evaluate: its keys as written, its fit parameters, and the network
    the fast engine would train (None: the reference engine, for `reason`)."""

    routed: dict[str, Any]
    model: ModelParams
    network: DenseNetwork | None = None
    reason: str | None = None
    # Without a network: the vectorized path's program key (tasks.model.vectorizable), else "".
    vectorized: str = ""


def route_combinations(
    source: ModelSource, base: dict[str, Any], grid: GridSpec | None
) -> list[tuple[dict[str, Any], ModelParams]]:
    """Every combination routed to the function's arguments and the training options; an
    unknown key fails here, naming the function's parameters."""
    signature = signature_of(load_model_function(source))
    combinations = [{}] if grid is None else grid.expand()
    searched_keys = dict.fromkeys(key for combination in combinations for key in combination)
    try:
        destinations = {key: destination(key, signature) for key in [*searched_keys, *base]}
    except ConfigError as error:
        raise ConfigError(f"{source.label}: {error}") from None
    routed_models = []
    for combination in combinations:
        # A combination's key wins over a fixed value for the same argument, however either
        # is spelled (per combination: a list of grids or sampled candidates differ in keys).
        searched = {destinations[key] for key in combination}
        fixed = {k: v for k, v in base.items() if destinations[k] not in searched}
        routed = {**fixed, **combination}
        try:
            routed_models.append((combination or dict(base), route(routed, signature)))
        except ConfigError as error:
            where = f"combination {shorten(combination)}" if combination else "parameters"
            raise ConfigError(f"{source.label}, {where}: {error}") from None
    return routed_models


# Why a Python Pipeline's fits train on the reference engine (foldflow.estimators): its
# transformers gave folds different widths (a category absent from some fold's training rows).
USER_TRANSFORMER_REASON = (
    "the Pipeline's transformers give the folds different input widths "
    "(handle_unknown='ignore' with categories some folds' training rows lack?)"
)


def check_combinations(
    source: ModelSource,
    routed_models: list[tuple[dict[str, Any], ModelParams]],
    meta: dict[str, Any],
    seed: int,
    zero_columns: tuple[str, ...] | None = None,
    transformer_widths: dict[str, int] | None = None,
) -> list[Combination]:
    """Build each distinct set of arguments once: the function must return a compiled model
    that fits the data and the task. Returns each combination with its engine plan.
    `zero_columns` (None: not checked) are the dataset's zero-coded features;
    `transformer_widths` a Pipeline's transformers' widths common to every fold
    (tasks.data.user_transformer.common_widths)."""
    function = load_model_function(source)
    plans: dict[str, tuple[DenseNetwork | str, str]] = {}
    combinations = []
    for routed, model in routed_models:
        if (width := (transformer_widths or {}).get(model.transformer_key() or "")) is not None:
            model = model.model_copy(update={"transformer_width": width})
        # Encodings of different widths build different networks from the same arguments.
        width = model_input_meta(meta, model)["n_features_in_"]
        key = f"{model.model_dump_json(include={'arguments'})} {width}"
        if model.transformer is not None and model.transformer_width is None:
            plan: DenseNetwork | str = USER_TRANSFORMER_REASON  # its width differs by fold
            vectorized = ""
        else:
            if key not in plans:
                plans[key] = _plan(source, function, routed, model, meta, seed)
            plan, vectorized = plans[key]
        _check_fit_options(source, routed, model, meta)
        if model.impute_zeros and zero_columns is not None and not zero_columns:
            raise ConfigError(
                f"combination {shorten(routed)}: impute_zeros needs impossible_zero_columns "
                "among the features in the dataset spec (which zeros mean 'missing'?)"
            )
        if isinstance(plan, DenseNetwork):
            combinations.append(Combination(routed=routed, model=model, network=plan))
        else:
            combinations.append(
                Combination(routed=routed, model=model, reason=plan, vectorized=vectorized)
            )
    return combinations


def _plan(source, function, routed, model, meta, seed) -> tuple[DenseNetwork | str, str]:
    """The fast engine's network (or why not) and, without one, the vectorized path's key."""
    # Keras' model inspection loads only where a model is built (build_model, below).
    from tasks.model.initial_weights import RECIPES, build_key, recipe_of
    from tasks.model.inspection import check_model, inspect_network
    from tasks.model.vectorizable import vectorized_architecture

    where = f"{source.label} with {shorten(routed) if routed else 'its defaults'}"
    meta = model_input_meta(meta, model)
    log: list = []
    try:
        with build_memory_bounded():  # --max-memory here too (tasks.memory)
            built = build_model(function, model.arguments, meta, seed, log)
    except ConfigError:
        raise
    except Exception as error:  # noqa: BLE001 (the user's code: any exception is theirs)
        raise ConfigError(
            f"{where} raised{where_in_file(error, source.path)}: {last_line(error)}"
        ) from None
    check_model(built, meta, where)
    network = inspect_network(built, meta["task"])
    if isinstance(network, DenseNetwork):
        # The fast engine's fits (in this process) take their initial weights from it.
        RECIPES.record(build_key(source, meta, model), recipe_of(built, log, seed))
    vectorized = "" if isinstance(network, DenseNetwork) else vectorized_architecture(built)
    del built
    return network, vectorized


def _check_fit_options(source, routed, model: ModelParams, meta) -> None:
    if model.class_weight is None:
        return
    if meta["task"] == "regression":
        raise ConfigError(f"{source.label}: fit__class_weight applies to classification only")
    labels = {str(label) for label in meta["classes_"]}
    unknown = sorted(set(model.class_weight) - labels)
    if unknown:
        raise ConfigError(
            f"{source.label}, combination {shorten(routed)}: fit__class_weight names "
            f"{unknown}, which are not classes of the data ({', '.join(sorted(labels))})"
        )


def engine_plan_lines(combinations: list[Combination]) -> list[str]:
    """`reference engine: <reason> (n combinations)`, once per distinct reason (`vectorized
    path: <reason> ...` for those the vectorized path trains)."""
    reasons = Counter(
        ("vectorized path" if c.vectorized else "reference engine", c.reason)
        for c in combinations
        if c.reason
    )
    return [
        f"{engine}: {reason} ({count} combination(s))"
        for (engine, reason), count in reasons.items()
    ]


@task(name="build_model_factory")
def build_model_factory(
    source: ModelSource,
    base: dict[str, Any],
    grid: GridSpec | None,
    meta: dict[str, Any],
    seed: int,
    zero_columns: tuple[str, ...] | None = None,
    transformer_widths: dict[str, int] | None = None,
) -> list[Combination]:
    """Route every combination and check the model function before any training starts."""
    routed = route_combinations(source, base, grid)
    combinations = check_combinations(source, routed, meta, seed, zero_columns, transformer_widths)
    logger = get_run_logger()
    for line in engine_plan_lines(combinations):
        # A fallback to the reference engine is a slower run the user can often avoid: shown
        # without --verbose (a warning), with its reason. The vectorized path is information.
        if line.startswith("reference engine"):
            logger.warning(line)
        else:
            logger.info(line)
    return combinations


def classes_of(labels: np.ndarray, task: str) -> list[Any] | None:
    """Class labels in sorted order (the order outputs are encoded in), None for a regression."""
    if task == "regression":
        return None
    return [value.item() if isinstance(value, np.generic) else value for value in np.unique(labels)]
