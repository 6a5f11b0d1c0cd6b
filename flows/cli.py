"""`foldflow cv` and `foldflow grid`: run the flows locally on Prefect's embedded API."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TextIO, get_args, get_origin

from flows.refusals import error_line, option_names
from tasks.errors import FoldflowError
from tasks.limits import check_fit_count
from tasks.messages import escape_controls

if TYPE_CHECKING:
    from pydantic import BaseModel

    from tasks.config import CVConfig, GridSearchConfig, SearchConfig


def _key_value(text: str) -> tuple[str, object]:
    """`--param KEY=VALUE`, the value read as YAML (`0.01`, `true`, `[12, 8]`, `adam`)."""
    import yaml

    key, equals, value = text.partition("=")
    if not equals or not key.strip():
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    try:
        return key.strip(), yaml.safe_load(value)
    except yaml.YAMLError:
        raise argparse.ArgumentTypeError(f"{key}: cannot read value {value!r}") from None


NONE = type(None)


def field_flag(
    parser: argparse.ArgumentParser,
    flag: str,
    defaults: BaseModel,
    name: str,
    *,
    path: bool = False,
    **options: Any,
) -> argparse.Action:
    """A flag for the field `name` of a config: its default (read from `defaults`, the config
    the command builds when the flag is left out), its choices (a Literal's values), its type
    and its help (the field's description) come from the field, so each is written once.

    A `path` flag defaults to None: a path given on the command line is taken from the working
    folder, while the config's own default (named in the help) is taken from $FOLDFLOW_HOME.
    """
    field = type(defaults).model_fields[name]
    default = getattr(defaults, name)
    kinds = [kind for kind in get_args(field.annotation) or [field.annotation] if kind is not NONE]
    if get_origin(field.annotation) is Literal:
        options.setdefault("choices", list(get_args(field.annotation)))
    elif field.annotation is bool and default is False:
        options.setdefault("action", "store_true")
    elif len(kinds) == 1 and kinds[0] in (int, float):
        options.setdefault("type", kinds[0])
    help_text = options.get("help") or (field.description or "").replace("%", "%%")
    if path:
        options["default"] = None
        if "default:" not in help_text:
            help_text += f" (default: {default})"
    else:
        options["default"] = default
        if default is not None and default is not False and "default:" not in help_text:
            help_text += " (default: %(default)s)"
    options["help"] = help_text.strip()
    action = parser.add_argument(flag, **options)
    action.model_field = name  # read by tests/unit/test_cli_defaults.py
    action.default_when_omitted = path
    return action


def scorer_name_list(text: str) -> list[str]:
    """`--scoring a,b`: the scorer names, spaces and empty names left out."""
    return [name.strip() for name in text.split(",") if name.strip()]


def _common_arguments(parser: argparse.ArgumentParser, config: BaseModel) -> None:
    """The flags every flow command shares; `config` is the command's config as built when
    every flag is left out (its run settings give --folds its per-command default)."""
    run = config.run
    field_flag(
        parser,
        "--model",
        config,
        "model",
        help="model-building function: PATH.py:FUNCTION or package.module:FUNCTION "
        "(default: %(default)s, foldflow's MLP)",
    )
    parser.add_argument(
        "--param",
        action="append",
        type=_key_value,
        default=[],
        metavar="KEY=VALUE",
        help="a fixed value for a routed key (a model-function argument, fit__shuffle, ...); "
        "repeatable",
    )
    field_flag(
        parser,
        "--data",
        run,
        "source",
        help="CSV source: URL or local path (default: the spec's URL)",
    )
    field_flag(parser, "--dataset-spec", run, "dataset_spec", path=True, help="dataset spec YAML")
    field_flag(parser, "--folds", run, "n_splits", help="number of CV folds")
    field_flag(parser, "--repeats", run, "n_repeats")
    field_flag(parser, "--seed", run, "seed", help="run seed (folds and every fit)")
    field_flag(parser, "--workers", run, "workers")
    field_flag(
        parser,
        "--runner",
        run,
        "runner",
        help="where mapped fits run (default: %(default)s, measured fastest here)",
    )
    field_flag(
        parser, "--address", run, "dask_address", help="Dask scheduler address (tcp://host:port)"
    )
    field_flag(
        parser,
        "--engine",
        run,
        "engine",
        help="auto: stacked fast engine where it applies, else one scikeras fit per fold",
    )
    field_flag(
        parser,
        "--output-dir",
        run,
        "output_dir",
        path=True,
        help="folder for run outputs (default: runs/ in $FOLDFLOW_HOME, else the current "
        "folder; the cache goes to data/cache/ there)",
    )
    field_flag(parser, "--run-name", run, "run_name", help="name of this run's output folder")
    field_flag(
        parser,
        "--overwrite",
        run,
        "overwrite",
        help="replace an existing run folder of that name (its old files are removed first)",
    )
    field_flag(parser, "--fresh", run, "fresh", help="retrain even cached fits")
    parser.add_argument(
        "--verbose",
        action="store_true",
        help="also print Prefect's INFO lines (one per task run; always in the run's log in "
        "the UI) and plain progress lines instead of the live bar",
    )
    field_flag(
        parser,
        "--train-scores",
        run,
        "train_scores",
        help="also write each fit's scores on its own training rows into cv_results "
        "(split{k}_train_*, mean_train_*, std_train_*)",
    )
    field_flag(
        parser,
        "--allow-insecure-http",
        run,
        "allow_insecure_http",
        help="allow plain http downloads from hosts other than this machine",
    )
    field_flag(parser, "--warn-above-fits", run, "warn_above_fits")
    field_flag(
        parser,
        "--max-fits",
        run,
        "max_fits",
        help=f"refuse a run with more fits, combinations x folds (default: {run.max_fits:,})",
    )
    # Guards of the reference engine's fits (docs/reliability.md, "Guards on memory and time").
    field_flag(parser, "--max-memory", run, "max_memory", metavar="SIZE")
    field_flag(parser, "--fit-timeout", run, "fit_timeout", metavar="SECONDS")
    field_flag(parser, "--recycle-after-fits", run, "recycle_after_fits", metavar="FITS")
    field_flag(parser, "--recycle-above-memory", run, "recycle_above_memory", metavar="SIZE")
    field_flag(
        parser,
        "--refit-metric",
        run,
        "refit_metric",
        help="metric that ranks combinations and picks the best (default: accuracy, or r2 "
        "for a regression); binary: accuracy roc_auc f1 log_loss, multiclass: accuracy "
        "f1_macro log_loss roc_auc_ovr, regression: r2 rmse; or any scikit-learn scorer "
        "name of the task (balanced_accuracy, neg_mean_absolute_error, ...)",
    )
    field_flag(
        parser,
        "--scoring",
        run,
        "scoring",
        type=scorer_name_list,
        metavar="NAME,NAME",
        help="more scikit-learn scorers to score every fold on, beside the task's own metrics "
        "(balanced_accuracy, average_precision, precision, recall, matthews_corrcoef, "
        "neg_mean_absolute_error, explained_variance, ...)",
    )


def _predict_arguments(parser: argparse.ArgumentParser) -> None:
    from flows.predict import PredictSettings

    defaults = PredictSettings()
    described = PredictSettings.model_fields["run_folder"].description
    parser.add_argument("run_folder", type=Path, help=described)
    field_flag(parser, "--data", defaults, "data", type=Path, required=True)
    field_flag(parser, "--output", defaults, "output", type=Path)


def build_parser() -> argparse.ArgumentParser:
    # tasks.config loads pydantic but neither Prefect nor TensorFlow (tests/unit/
    # test_cli_imports.py); `foldflow --help` imported it already through flows.runtime.stack.
    from tasks.config import CVConfig, GridSearchConfig, ModelParams, SearchConfig

    parser = argparse.ArgumentParser(prog="foldflow", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    cv = commands.add_parser("cv", help="k-fold cross-validation of one model")
    _common_arguments(cv, CVConfig())
    training = ModelParams()
    field_flag(cv, "--epochs", training, "epochs")
    field_flag(cv, "--batch-size", training, "batch_size")
    cv.add_argument("--optimizer", help="the function's `optimizer` argument (mlp: adam)")
    cv.add_argument("--init", help="the function's `init` argument (mlp: glorot_uniform)")
    cv.add_argument(
        "--hidden-layers",
        type=lambda text: tuple(int(units) for units in text.split(",")),
        help="mlp: units per hidden layer, comma-separated (default: 12,8)",
    )
    field_flag(
        cv,
        "--scaling",
        training,
        "scaling",
        help="scale features, fitted on each fold's training rows only (default: %(default)s)",
    )
    field_flag(
        cv,
        "--impute-zeros",
        training,
        "impute_zeros",
        help="zeros in the spec's impossible_zero_columns become the training rows' median",
    )
    grid = commands.add_parser("grid", help="grid search over hyperparameters")
    _common_arguments(grid, GridSearchConfig())
    field_flag(
        grid,
        "--grid",
        GridSearchConfig(),
        "grid",
        path=True,
        type=Path,
        help="grid YAML (default: grids/tutorial.yaml); arguments the grid and --param leave "
        "out take the model function's defaults, as in `foldflow cv` and from Python "
        "(mlp: optimizer adam, init glorot_uniform; the tutorial's create_model: rmsprop)",
    )
    grid.add_argument("--no-refit", action="store_true", help="skip refitting the best model")
    grid.add_argument("--fail-fast", action="store_true", help="stop at the first failed fit")
    search = commands.add_parser(
        "search", help="random search, successive halving or Optuna's TPE over a search space"
    )
    search_defaults = SearchConfig()
    _common_arguments(search, search_defaults)
    field_flag(search, "--strategy", search_defaults, "strategy")
    field_flag(
        search,
        "--space",
        search_defaults,
        "space",
        path=True,
        type=Path,
        help="search-space YAML: key -> list of choices or {loguniform|uniform|randint|choice: "
        "[...]}",
    )
    field_flag(search, "--n-candidates", search_defaults, "n_candidates")
    field_flag(
        search, "--min-epochs", search_defaults, "min_epochs", help="halving: first rung's epochs"
    )
    field_flag(
        search, "--max-epochs", search_defaults, "max_epochs", help="halving: last rung's epochs"
    )
    field_flag(search, "--factor", search_defaults, "factor", help="halving: 1/factor go on")
    field_flag(
        search,
        "--ask-batch",
        search_defaults,
        "ask_batch",
        help="tpe: candidates asked at once (default: 2 x workers)",
    )
    field_flag(
        search,
        "--outer-folds",
        search_defaults,
        "outer_folds",
        help="nested CV: K outer folds, each searching its training rows (--folds inner "
        "folds) and scoring its best on its test rows; writes nested_results.csv",
    )
    search.add_argument("--no-refit", action="store_true", help="skip refitting the best model")
    search.add_argument("--fail-fast", action="store_true", help="stop at the first failed fit")
    predict = commands.add_parser(
        "predict", help="a run's refitted model on new raw rows: one prediction per row, as CSV"
    )
    _predict_arguments(predict)
    from flows.cache_command import add_cache_command

    add_cache_command(commands)
    server = commands.add_parser(
        "server", help="local Prefect server + work pool + deployments + worker (the UI)"
    )
    from flows.runtime.stack import add_arguments

    add_arguments(server)
    return parser


def _run_settings(args: argparse.Namespace):
    from tasks.config import RunSettings

    values = {
        "seed": args.seed,
        "n_splits": args.folds,
        "n_repeats": args.repeats,
        "engine": args.engine,
        "workers": args.workers,
        "source": args.data,
        "run_name": args.run_name,
        "fresh": args.fresh,
        "train_scores": args.train_scores,
        "warn_above_fits": args.warn_above_fits,
        "max_fits": args.max_fits,
        "max_memory": args.max_memory,
        "fit_timeout": args.fit_timeout,
        "recycle_after_fits": args.recycle_after_fits,
        "recycle_above_memory": args.recycle_above_memory,
        "overwrite": args.overwrite,
        "allow_insecure_http": args.allow_insecure_http,
        "runner": args.runner,
        "dask_address": args.address,
        "refit_metric": args.refit_metric,
        "scoring": args.scoring,
    }
    if args.dataset_spec:
        values["dataset_spec"] = str(Path(args.dataset_spec).resolve())
    if args.output_dir:
        values["output_dir"] = str(Path(args.output_dir).resolve())
    if args.data and "://" not in args.data:
        values["source"] = str(Path(args.data).resolve())
    return RunSettings(**values)


def run(
    argv: Sequence[str] | None = None, out: TextIO = sys.stdout, err: TextIO = sys.stderr
) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "server":
        from flows.runtime.stack import run_from_args

        return run_from_args(args)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # as tasks/__init__.py says
    if args.command == "predict":
        return _predict(args, out, err)
    if args.command == "cache":
        from flows.cache_command import cache_command

        return cache_command(args, out, err)
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    from pydantic import ValidationError

    from flows.runtime.embedded_api import start_embedded_api, use_embedded_api

    try:
        config = checked_config(args)
        # The API server starts first and comes up while the progress display, the data
        # check and the flow's imports (Prefect, scikit-learn, TensorFlow) load.
        server = start_embedded_api()
        with _progress_shown(args, config, out, err):
            check_data(config)
            flow = _flow_function(args.command)
            check_model(config)
            with use_embedded_api(server):
                summary, lines = _run_flow(args, config, flow)
    except (FoldflowError, ValidationError) as error:
        print(error_line(error, option_names(parser, args.command)), file=err)
        return 2
    except OSError as error:  # a read-only or full disk: the file and its folder, no traceback
        print(error_line(error), file=err)
        return 1
    if missing := missing_results(summary.output_dir):  # exit 0 only with the results written
        print(f"foldflow: error: the run ended without {missing}", file=err)
        return 1
    shown = [escape_controls(line) for line in [*lines, f"Results in {summary.output_dir}"]]
    print("\n".join(shown), file=out, flush=True)
    return 0


RESULT_FILES = ("cv_results.csv", "cv_results.parquet", "summary.txt")


def missing_results(run_dir: str | Path) -> str:
    """'' when the run folder holds every result file; else which are missing, and where."""
    missing = [name for name in RESULT_FILES if not (Path(run_dir) / name).is_file()]
    return f"{', '.join(missing)} in {run_dir}" if missing else ""


@contextmanager
def _progress_shown(args: argparse.Namespace, config: Any, out: TextIO, err: TextIO):
    """The run's progress on the terminal (flows.progress): a live bar, or plain lines when
    the output is not a terminal or with --verbose; Prefect's INFO lines only with --verbose
    (warnings and errors always)."""
    import logging

    from flows.progress import (
        BarDisplay,
        LineDisplay,
        RunProgress,
        expected_fits,
        prefect_console_at,
        strategy_of,
        terminal_display,
        watching,
    )
    from tasks.cache_home import cache_in_use, migrate_old_cache

    display = LineDisplay(err) if args.verbose else terminal_display(out, err)
    progress = RunProgress(display, expected_fits(config), strategy_of(config))
    bar = display if isinstance(display, BarDisplay) else None
    quiet = nullcontext() if args.verbose else prefect_console_at(logging.WARNING, bar)
    if config.run.cache_dir is None and (moved := migrate_old_cache()):
        print(moved, file=err)
    # The cache is held from the data check on (`foldflow cache clear` waits for the run).
    with quiet, watching(progress), cache_in_use(config.run.cache_folder()):
        yield


def _predict(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    """`foldflow predict`: no flow run, so no Prefect API; errors as one line, exit 2."""
    from flows.predict import PredictSettings, predict_command

    settings = PredictSettings(run_folder=args.run_folder, data=args.data, output=args.output)
    try:
        where = predict_command(settings, out)
    except FoldflowError as error:
        print(error_line(error), file=err)
        return 2
    if where:
        print(where, file=err)
    return 0


def model_reference(text: str) -> str:
    """A file reference made absolute from where the command runs (a module one as it is)."""
    location, colon, function = text.rpartition(":")
    if colon and (location.endswith(".py") or "/" in location):
        return f"{Path(location).expanduser().resolve()}:{function}"
    return text


def _cv_params(args: argparse.Namespace) -> dict[str, object]:
    """The routed keys `foldflow cv`'s options stand for (only those given, for a user's
    function that lacks `optimizer` or `init`)."""
    params: dict[str, object] = {"epochs": args.epochs, "batch_size": args.batch_size}
    for key in ("optimizer", "init", "hidden_layers"):
        if getattr(args, key) is not None:
            params[key] = getattr(args, key)
    if args.scaling != "none":
        params["preprocess__scaling"] = args.scaling
    if args.impute_zeros:
        params["preprocess__impute_zeros"] = True
    return params


def checked_config(args: argparse.Namespace) -> CVConfig | GridSearchConfig | SearchConfig:
    """The command's flow config, every input read and checked before Prefect or TensorFlow
    loads: the grid (its size counted first), the dataset spec and the output folder."""
    from tasks.config import DEFAULT_GRID_FILE, CVConfig, GridSearchConfig, GridSpec, SearchConfig
    from tasks.results.run_folder import check_run_destination

    run_settings = _run_settings(args)
    model = model_reference(args.model)
    fixed = dict(args.param)
    if args.command == "cv":
        check_fit_count(1, args.folds * args.repeats, args.max_fits, "cv")
        params = {**_cv_params(args), **fixed}
        config = CVConfig(model=model, params=params, run=run_settings)
    elif args.command == "search":
        check_fit_count(args.n_candidates, args.folds * args.repeats, args.max_fits, "search")
        values = {
            "strategy": args.strategy,
            "n_candidates": args.n_candidates,
            "min_epochs": args.min_epochs,
            "max_epochs": args.max_epochs,
            "factor": args.factor,
            "ask_batch": args.ask_batch,
            "outer_folds": args.outer_folds,
        }
        if args.space:
            values["space"] = str(args.space.expanduser().resolve())
        config = SearchConfig(
            **values, model=model, base_params=fixed, run=run_settings, refit=not args.no_refit
        )
        from tasks.search.spaces import configured_space  # scipy.stats: for a search only

        configured_space(config)  # read and checked before Prefect or TensorFlow loads
    else:
        grid = GridSpec.from_yaml(
            args.grid or DEFAULT_GRID_FILE,
            n_splits=args.folds * args.repeats,
            max_fits=args.max_fits,
        )
        config = GridSearchConfig(
            model=model, base_params=fixed, grid=grid, run=run_settings, refit=not args.no_refit
        )
    run_settings.dataset_spec_model()
    check_run_destination(run_settings)
    return config


def check_data(config: CVConfig | GridSearchConfig | SearchConfig) -> None:
    """The run's data fetched, read and validated here, before any flow run starts, by the
    functions the flow's prepare_data calls: a bad cell, label or column is one line now,
    not a Failed flow run and its traceback seconds later. The flow finds the file in the
    cache."""
    from tasks.data.preflight import checked_dataset
    from tasks.metrics import refit_metric_for, scorers_for
    from tasks.model.routing import check_training_choices

    check_training_choices(training_combinations(config))
    run_settings = config.run
    task = run_settings.dataset_spec_model().task
    scorers = scorers_for(task, run_settings.scoring, run_settings.refit_metric)
    refit_metric_for(task, run_settings.refit_metric, scorers)  # as prepare_data: first
    checked_dataset(run_settings)


def check_model(config: CVConfig | GridSearchConfig | SearchConfig) -> None:
    """The model function read and loaded here, as the flow's first step will (a missing file
    or function, a syntax or import error), once the flow's imports have loaded TensorFlow:
    one line before any flow run is created, not a Failed run and its log seconds later."""
    from tasks.model.sources import resolve_model_reference

    resolve_model_reference(config.model, Path.cwd())


def training_combinations(config: CVConfig | GridSearchConfig | SearchConfig) -> list[dict]:
    """The routed keys of every combination a run can try, as far as they are known before it
    starts: cv's params, the grid's candidates or the product of its lists (training keys
    only, so the product stays small); a search samples its own, checked as it draws them."""
    from sklearn.model_selection import ParameterGrid

    from tasks.config import CVConfig, GridSearchConfig
    from tasks.model.routing import is_training_key

    if isinstance(config, CVConfig):
        return [config.params]
    if isinstance(config, GridSearchConfig):
        if config.grid.candidates is not None:
            return config.grid.candidates
        grid = config.grid.param_grid
        return list(ParameterGrid({k: v for k, v in grid.items() if is_training_key(k)}))
    return [config.base_params]


def _flow_function(command: str):
    """The command's flow, imported only by the commands that run one, and TensorFlow loaded
    with it (the flows import without it): while the API comes up, before check_model."""
    from flows.stages import load_tensorflow
    from tasks.native_stderr import tensorflow_start_up_lines_held_back

    load_tensorflow()
    with tensorflow_start_up_lines_held_back():
        if command == "cv":
            from flows.cv import cv_flow

            return cv_flow
        if command == "search":
            from flows.search import search_flow

            return search_flow
        from flows.grid_search import grid_search_flow

        return grid_search_flow


def _run_flow(args: argparse.Namespace, config: CVConfig | GridSearchConfig | SearchConfig, flow):
    """Run the command's flow; returns its summary and the lines to print."""
    from tasks.results.aggregate import baseline_lines, metric_lines

    if args.command == "cv":
        summary = flow(config)
        return summary, metric_lines(summary)
    summary = flow(config, fail_fast=args.fail_fast)
    if getattr(config, "outer_folds", None):  # nested CV: its per-fold lines as they are
        return summary, [*baseline_lines(summary), *summary.lines]
    # The baseline, then the top combinations (the tutorial's lines are in summary.txt).
    return summary, [*baseline_lines(summary), *top_lines(summary)]


def top_lines(summary) -> list[str]:
    """The top combinations of the run's cv_results as a small table (tasks.results.top_table)."""
    import pandas as pd

    from tasks.results.top_table import top_table_lines

    table = pd.read_parquet(Path(summary.output_dir) / "cv_results.parquet")
    return top_table_lines(table, summary.refit_metric)


def main() -> None:
    """The `foldflow` command: children die with it, SIGTERM acts like Ctrl-C (flows/lifecycle)."""
    from flows.runtime.lifecycle import run_until_signalled, start_watchdog

    start_watchdog()
    if sys.argv[1:2] == ["server"]:  # the stack stops its server and worker itself on signals
        sys.exit(run())
    exit_at_once(run_until_signalled(run))


def exit_at_once(status: int) -> None:
    """Exit once everything Python runs at exit has run, without tearing down the modules.

    After a flow, the interpreter's own teardown (TensorFlow's and Prefect's objects, module
    by module) took 2-8 s here, with nothing left to write: the non-daemon threads are joined
    and the exit handlers (Prefect's log and event workers' last sends, the embedded API's
    stop, logging's flush) have run, and stdout and stderr are flushed first.
    """
    import atexit
    import threading

    for thread in threading.enumerate():
        if thread is not threading.current_thread() and not thread.daemon:
            thread.join()
    atexit._run_exitfuncs()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)


if __name__ == "__main__":
    main()
