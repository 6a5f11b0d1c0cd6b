"""Your own tabular data (issue 25), side by side: a mixed-type CSV the benchmark writes itself
(numbers and text categories, empty cells, "yes"/"no" labels) searched three ways on the same
folds, each a whole process of its own:

    (a) `foldflow grid --data FILE --dataset-spec SPEC --model ... --grid GRID` (the CLI);
    (b) `foldflow.GridSearchCV(Pipeline([ColumnTransformer, KerasClassifier]))` from Python;
    (c) scikit-learn's `GridSearchCV` on the same Pipeline, n_jobs=1.

    python -m benchmarks.mixed_data [--rows 20000] [--epochs 3] [--scale-rows 1000 10000 100000]
                                    [--wide | --wider] [--only a,b]

`--wide` searches WIDE_GRID's 72 combinations instead of GRID's 24, `--wider` WIDER_GRID's 144
(same keys, all sides). `--only a,b` measures those sides alone (foldflow's two without
scikit-learn's eight minutes at 72 combinations); the scaling's (c) runs only when (c) is asked.

Then the rows scale at a fixed 4 combinations x 3 folds, (a) against (c). Wall time is the
process's start to exit; peak RSS is the largest process's (ru_maxrss) and the process tree's
summed RSS, sampled. Results go to benchmarks/results/<stamp>-mixed-data.json and .txt.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from benchmarks import children

PROJECT_ROOT = Path(__file__).resolve().parents[1]
SEED = 7
FOLDS = 5
SCALE_FOLDS = 3
NUMERIC = [f"x{i}" for i in range(8)]
LEVELS = (3, 5, 8, 12, 24, 40)
CATEGORICAL = [f"c{i}" for i in range(len(LEVELS))]
TARGET = "answer"
MISSING_SHARE = 0.05
BATCH_SIZE = 256
# 3 x 2 x 2 x 2 = 24 combinations: width, dropout, learning rate and the numeric imputation
# (a preprocessing choice with the same meaning on all three sides).
GRID = {
    "units": [16, 64],
    "dropout": [0.0, 0.2],
    "learning_rate": [0.003, 0.01, 0.03],
    "impute": ["mean", "median"],
}
# --wide: 3 x 3 x 4 x 2 = 72 combinations, the same four keys (impute stays the preprocessing
# choice), so that the fits outweigh the fixed start.
WIDE_GRID = {
    "units": [16, 32, 64],
    "dropout": [0.0, 0.1, 0.2],
    "learning_rate": [0.003, 0.01, 0.03, 0.1],
    "impute": ["mean", "median"],
}
# --wider: 3 x 4 x 6 x 2 = 144 combinations, a finer sweep of dropout and learning rate.
WIDER_GRID = {
    "units": [16, 32, 64],
    "dropout": [0.0, 0.1, 0.2, 0.3],
    "learning_rate": [0.001, 0.003, 0.01, 0.03, 0.06, 0.1],
    "impute": ["mean", "median"],
}
SCALE_GRID = {
    "units": [16, 64],
    "dropout": [0.0],
    "learning_rate": [0.003, 0.03],
    "impute": ["median"],
}
# Each side's spelling of the grid's four keys.
CLI_KEYS = {
    "units": "model__units",
    "dropout": "model__dropout",
    "learning_rate": "model__learning_rate",
    "impute": "preprocess__numeric_impute",
}
PIPELINE_KEYS = {
    "units": "clf__model__units",
    "dropout": "clf__model__dropout",
    "learning_rate": "clf__model__learning_rate",
    "impute": "pre__num__impute__strategy",
}


def mixed_model(meta, units=32, dropout=0.0, learning_rate=0.01):
    """The model function all three sides search: its input width is the encoded matrix's."""
    import keras  # here, so that the benchmark's own processes start without TensorFlow

    model = keras.Sequential(
        [
            keras.Input(shape=(meta["n_features_in_"],)),
            keras.layers.Dense(units, activation="relu"),
            keras.layers.Dropout(dropout),
            keras.layers.Dense(units // 2, activation="relu"),
            keras.layers.Dense(1, activation="sigmoid"),
        ]
    )
    optimizer = keras.optimizers.get(
        {"class_name": "adam", "config": {"learning_rate": learning_rate}}
    )
    model.compile(loss="binary_crossentropy", optimizer=optimizer, metrics=["accuracy"])
    return model


def mixed_frame(rows: int, seed: int = SEED):
    """Seeded mixed data with a known signal: the target is a logistic draw of three numbers
    and two categories' effects; then 5 % of the feature cells are blanked."""
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(seed)
    numbers = rng.normal(size=(rows, len(NUMERIC)))
    frame = pd.DataFrame(numbers, columns=NUMERIC)
    logit = 1.2 * numbers[:, 0] - 0.9 * numbers[:, 1] + 0.6 * numbers[:, 2] * numbers[:, 3]
    for column, levels in zip(CATEGORICAL, LEVELS, strict=True):
        codes = rng.integers(0, levels, rows)
        frame[column] = np.array([f"{column}_{k:02d}" for k in range(levels)], dtype=object)[codes]
        if column in ("c1", "c4"):  # the two categories with an effect on the target
            logit += rng.normal(0, 1.0, levels)[codes]
    answer = rng.random(rows) < 1 / (1 + np.exp(-logit))
    frame[TARGET] = np.where(answer, "yes", "no")
    for column in NUMERIC + CATEGORICAL:
        blank = rng.random(rows) < MISSING_SHARE
        frame[column] = frame[column].astype(object).where(~blank, None)
    return frame


def write_dataset(rows: int, folder: Path) -> tuple[Path, Path]:
    """The headerless CSV (empty cells for missing) and a spec naming columns, target, task."""
    import yaml

    folder.mkdir(parents=True, exist_ok=True)
    data = folder / f"mixed-{rows}.csv"
    mixed_frame(rows).to_csv(data, header=False, index=False, float_format="%.5f")
    spec = folder / f"mixed-{rows}.yaml"
    spec.write_text(
        yaml.safe_dump(
            {
                "name": f"mixed-{rows}",
                "url": "https://example.invalid/given-by-data",  # --data gives the file
                "columns": [*NUMERIC, *CATEGORICAL, TARGET],
                "target": TARGET,
                "task": "binary",
            },
            sort_keys=False,
        )
    )
    return data, spec


def read_frame(data: Path):
    """The CSV as a user's pandas reads it: empty cells are NaN, categories stay text."""
    import pandas as pd

    frame = pd.read_csv(data, header=None, names=[*NUMERIC, *CATEGORICAL, TARGET])
    return frame[NUMERIC + CATEGORICAL], frame[TARGET].to_numpy()


def combinations(grid: dict[str, list[Any]]) -> int:
    count = 1
    for values in grid.values():
        count *= len(values)
    return count


def cli_grid(grid: dict[str, list[Any]], epochs: int) -> dict[str, list[Any]]:
    return {
        **{CLI_KEYS[k]: v for k, v in grid.items()},
        "epochs": [epochs],
        "batch_size": [BATCH_SIZE],
    }


def pipeline_grid(grid: dict[str, list[Any]]) -> dict[str, list[Any]]:
    return {PIPELINE_KEYS[k]: v for k, v in grid.items()}


def canonical(params: dict[str, Any]) -> tuple:
    """One combination whatever side spelled it: (units, dropout, learning_rate, impute)."""
    by_key = {v: k for k, v in (*CLI_KEYS.items(), *PIPELINE_KEYS.items())}
    named = {by_key[k]: v for k, v in params.items() if k in by_key}
    return tuple(named[k] for k in GRID)


def make_pipeline(epochs: int):
    """ColumnTransformer (numbers: impute, standardize; categories: 'missing' as a category,
    one-hot, unseen all-zeros) then scikeras' KerasClassifier: what foldflow's CLI does
    inside each fold with preprocess__scaling=standard and its defaults."""
    from scikeras.wrappers import KerasClassifier
    from sklearn.compose import ColumnTransformer
    from sklearn.impute import SimpleImputer
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    numeric = Pipeline([("impute", SimpleImputer(strategy="median")), ("scale", StandardScaler())])
    categorical = Pipeline(
        [
            ("impute", SimpleImputer(strategy="constant", fill_value="missing")),
            ("encode", OneHotEncoder(handle_unknown="ignore", sparse_output=False)),
        ]
    )
    pre = ColumnTransformer([("num", numeric, NUMERIC), ("cat", categorical, CATEGORICAL)])
    classifier = KerasClassifier(model=mixed_model, epochs=epochs, batch_size=BATCH_SIZE, verbose=0)
    return Pipeline([("pre", pre), ("clf", classifier)])


def splitter(n_splits: int):
    from sklearn.model_selection import StratifiedKFold

    return StratifiedKFold(n_splits=n_splits, shuffle=True, random_state=SEED)


def folds_agree(data: Path, n_splits: int) -> bool:
    """foldflow's own folds (plan_folds, as the CLI makes them from --folds and --seed) are the
    splitter's the Python sides are given."""
    import numpy as np

    from tasks.data.folds import plan_folds

    features, labels = read_frame(data)
    codes = (labels == "yes").astype(int)  # foldflow's label codes: sorted, 'yes' positive
    ours = plan_folds(codes, n_splits, SEED)
    theirs = list(splitter(n_splits).split(features, labels))
    return all(
        np.array_equal(fold.test, test) and np.array_equal(fold.train, train)
        for fold, (train, test) in zip(ours, theirs, strict=True)
    )


def _rows_of(params, means, stds) -> list[dict[str, Any]]:
    return [
        {"combination": list(canonical(p)), "mean": float(m), "std": float(s)}
        for p, m, s in zip(params, means, stds, strict=True)
    ]


def search_in_process(side: str, data: Path, epochs: int, grid: dict, n_splits: int, refit: bool):
    """(b) or (c) in this process: read the CSV as a user would, fit, return the table and
    the process's phases (start: Python and Keras imported; read; the search's fit; exit)."""
    import keras

    imported = time.time()
    features, labels = read_frame(data)
    read = time.time()
    keras.utils.set_random_seed(SEED)
    if side == "foldflow_python":
        import foldflow

        # cv as a number: foldflow's own StratifiedKFold(shuffle=True, random_state), the same
        # folds (folds_agree checks); a splitter's explicit splits of 20,000 rows travel in the
        # flow run's parameters, which the Prefect API refused (HTTP 422) in this benchmark.
        search = foldflow.GridSearchCV(
            make_pipeline(epochs), pipeline_grid(grid), cv=n_splits, random_state=SEED,
            refit=refit,
        )  # fmt: skip
    else:
        from sklearn.model_selection import GridSearchCV

        search = GridSearchCV(
            make_pipeline(epochs), pipeline_grid(grid), cv=splitter(n_splits), refit=refit,
            n_jobs=1,
        )  # fmt: skip
    started = time.perf_counter()
    fit_started = time.time()
    search.fit(features, labels)
    fit_seconds = time.perf_counter() - started
    results = search.cv_results_
    return {
        "fit_seconds": fit_seconds,
        "stamps": {"imported": imported, "read": read, "fit": fit_started, "fitted": time.time()},
        "fits": len(results["params"]) * n_splits,
        "rows": _rows_of(results["params"], results["mean_test_score"], results["std_test_score"]),
    }


def _tree_rss_mib(pid: int) -> float:
    import psutil

    try:
        root = psutil.Process(pid)
        processes = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0.0
    total = 0
    for process in processes:
        try:
            total += process.memory_info().rss
        except psutil.NoSuchProcess:
            pass
    return total / 2**20


def run_process(command: list[str], environment: dict[str, str]) -> dict[str, Any]:
    """A whole process (and its children, the embedded Prefect API among them), timed from
    start to exit; the process tree's summed RSS sampled every 0.2 s."""
    started = time.perf_counter()
    process = subprocess.Popen(
        command, cwd=PROJECT_ROOT, env=environment, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    peak = [0.0]

    def sample() -> None:
        while process.poll() is None:
            peak[0] = max(peak[0], _tree_rss_mib(process.pid))
            time.sleep(0.2)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    stdout, stderr = process.communicate()
    wall = time.perf_counter() - started
    sampler.join()
    if process.returncode != 0:
        raise RuntimeError(
            f"{' '.join(command[:6])} ... failed:\n{stderr[:2000]}\n...\n{stderr[-2000:]}"
        )
    return {"process_seconds": wall, "tree_peak_rss_mib": round(peak[0], 1), "stdout": stdout}


def environment_for(workdir: Path) -> dict[str, str]:
    """One Prefect home and compiled-program cache for the benchmark's processes."""
    environment = {
        **os.environ,
        "PYTHONPATH": str(PROJECT_ROOT),
        "PREFECT_HOME": str(workdir / "prefect-home"),
        "FOLDFLOW_HOME": str(workdir),
        "FOLDFLOW_XLA_CACHE": str(workdir / "xla-cache"),
        "TF_CPP_MIN_LOG_LEVEL": "2",
    }
    environment.pop("PREFECT_API_URL", None)
    return environment


def measure_cli(
    data: Path, spec: Path, grid: dict, epochs: int, n_splits: int, refit: bool, workdir: Path
) -> dict[str, Any]:
    """(a): `foldflow grid` as a user types it; the table read from its run folder."""
    import pandas as pd
    import yaml

    run_name = f"{data.stem}-{combinations(grid)}-{n_splits}-{refit}"
    grid_file = workdir / f"{run_name}.yaml"
    grid_file.write_text(yaml.safe_dump(cli_grid(grid, epochs)))
    command = [
        sys.executable, "-m", "foldflow.cli", "grid", "--data", str(data),
        "--dataset-spec", str(spec), "--model", "benchmarks.mixed_data:mixed_model",
        "--grid", str(grid_file), "--param", "preprocess__scaling=standard",
        "--folds", str(n_splits), "--seed", str(SEED), "--output-dir", str(workdir / "runs"),
        "--run-name", run_name, "--overwrite", "--fresh", "--verbose",
        *([] if refit else ["--no-refit"]),
    ]  # fmt: skip
    # A wrapper process: its children's ru_maxrss is then the foldflow process's own.
    wrapper = [sys.executable, "-m", "benchmarks.mixed_data", "--wrap", json.dumps(command)]
    result = run_process(wrapper, environment_for(workdir))
    result.update(json.loads(result.pop("stdout").strip().splitlines()[-1]))
    table = pd.read_parquet(workdir / "runs" / run_name / "cv_results.parquet")
    params = [json.loads(p) for p in table["params"]]
    result["fits"] = len(params) * n_splits
    result["rows"] = _rows_of(params, table["mean_test_score"], table["std_test_score"])
    if "engine" in table:
        result["engines"] = sorted(set(table["engine"]))
    return result


def measure_python(
    side: str, data: Path, grid: dict, epochs: int, n_splits: int, refit: bool, workdir: Path
) -> dict[str, Any]:
    """(b) or (c): a fresh Python process that imports, reads the CSV, searches and exits."""
    arguments = {
        "side": side, "data": str(data), "grid": grid, "epochs": epochs,
        "n_splits": n_splits, "refit": refit,
    }  # fmt: skip
    command = [sys.executable, "-m", "benchmarks.mixed_data", "--child", json.dumps(arguments)]
    started = time.time()
    result = run_process(command, environment_for(workdir))
    ended = started + result["process_seconds"]
    result.update(json.loads(result.pop("stdout").strip().splitlines()[-1]))
    result["phases"] = python_phases(result.pop("stamps"), started, ended)
    return result


def python_phases(stamps: dict[str, float], started: float, ended: float) -> list[dict]:
    """(b)'s or (c)'s process in phases: start (Python, Keras), read (the CSV), import (the
    search's package, the Pipeline), fit (the search's `fit`), exit."""
    bounds = [started, stamps["imported"], stamps["read"], stamps["fit"], stamps["fitted"], ended]
    names = ["start: Python, Keras", "read: the CSV", "import: the search", "fit", "exit"]
    return [
        {"phase": name, "seconds": round(stop - start, 2), "peak_mib": None}
        for name, start, stop in zip(names, bounds[:-1], bounds[1:], strict=True)
    ]


def child_main(arguments: dict[str, Any]) -> None:
    import resource

    arguments["data"] = Path(arguments["data"])
    result = search_in_process(**arguments)
    peak_kib = max(
        resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
        resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss,
    )
    result["peak_rss_mib"] = round(peak_kib / 1024, 1)
    print(json.dumps(result, default=str))


def wrap_main(command: list[str]) -> None:
    """Run `command`, then print its peak RSS (the largest of its process tree, ru_maxrss) and
    its phases (cli_phases) from its log and its own RSS sampled every 0.1 s."""
    import resource

    import psutil

    started = time.time()
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    samples: list[tuple[float, float]] = []

    def sample() -> None:
        try:
            own = psutil.Process(process.pid)
            while process.poll() is None:
                samples.append((time.time(), own.memory_info().rss / 2**20))
                time.sleep(0.1)
        except psutil.NoSuchProcess:
            pass

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    stdout, stderr = process.communicate()
    ended = time.time()
    sampler.join()
    if process.returncode != 0:
        sys.stderr.write(stderr)
        raise SystemExit(process.returncode)
    peak_kib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    phases = cli_phases(stdout + stderr, started, ended, samples)
    print(json.dumps({"peak_rss_mib": round(peak_kib / 1024, 1), "phases": phases}))


# Where `foldflow grid --verbose`'s log says a phase ends (its first such line; the fits'
# phase ends at the last 'fits done' line).
PHASE_ENDS = (
    ("start: imports, embedded API", ("Using temporary server",)),
    ("data: check, read, validate, folds, model", ("Task run 'build_model_factory",)),
    ("fits: trace programs, encode, train, score", ("fits done:",)),
    ("after: aggregate, pictures, refit, save", ("Flow run", "Finished in state")),
)


def cli_phases(
    log: str, started: float, ended: float, samples: list[tuple[float, float]]
) -> list[dict[str, Any]]:
    """Seconds and the process's peak RSS per phase, from the timestamps of its log lines
    (HH:MM:SS.mmm, local time) and its RSS samples; the last phase runs to the exit."""
    import datetime as dt

    day = dt.datetime.fromtimestamp(started).date()

    def when(line: str) -> float | None:
        try:
            clock = dt.time.fromisoformat(line[:12])
        except ValueError:
            return None
        stamp = dt.datetime.combine(day, clock).timestamp()
        return stamp + 86400 if stamp < started - 3600 else stamp

    lines = log.splitlines()
    bounds = [started]
    for _, markers in PHASE_ENDS:
        found = [
            when(line)
            for line in lines
            if all(marker in line for marker in markers) and when(line) is not None
        ]
        pick = found[-1] if "fits done:" in markers and found else (found[0] if found else None)
        bounds.append(max(bounds[-1], pick) if pick is not None else bounds[-1])
    bounds.append(ended)
    names = [name for name, _ in PHASE_ENDS] + ["exit"]
    phases = []
    for name, start, stop in zip(names, bounds[:-1], bounds[1:], strict=True):
        inside = [rss for at, rss in samples if start <= at <= stop]
        phases.append(
            {
                "phase": name,
                "seconds": round(stop - start, 2),
                "peak_mib": round(max(inside, default=0.0)),
            }
        )
    return phases


def agreement(first: dict[str, Any], second: dict[str, Any], best: int = 5) -> dict[str, Any]:
    """The best few of `first` beside `second`'s same combinations: within fold std?"""
    by_combination = {tuple(r["combination"]): r for r in second["rows"]}
    ranked = sorted(first["rows"], key=lambda r: -r["mean"])
    pairs = [(r, by_combination[tuple(r["combination"])]) for r in first["rows"]]
    within = sum(abs(a["mean"] - b["mean"]) <= max(a["std"], b["std"]) for a, b in pairs)
    return {
        "best": [
            {
                "combination": r["combination"],
                "ours": [r["mean"], r["std"]],
                "theirs": [by_combination[tuple(r["combination"])][k] for k in ("mean", "std")],
            }
            for r in ranked[:best]
        ],
        "means_within_std": f"{within}/{len(pairs)}",
        "best_score_gap": abs(ranked[0]["mean"] - max(r["mean"] for r in second["rows"])),
    }


def load_average() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


SIDES = ("a", "b", "c")


def run(
    rows: int,
    epochs: int,
    scale_rows: list[int],
    max_sklearn_seconds: float,
    grid: dict = GRID,
    sides: tuple[str, ...] = SIDES,
) -> dict:
    workdir = Path(tempfile.mkdtemp(prefix="foldflow-mixed-bench-"))
    results: dict[str, Any] = {
        "rows": rows, "epochs": epochs, "batch_size": BATCH_SIZE, "folds": FOLDS,
        "grid": grid, "scale_grid": SCALE_GRID, "cores": os.cpu_count(),
        "load_before": load_average(),
        "started": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    }  # fmt: skip
    data, spec = write_dataset(rows, workdir / "data")
    results["folds_agree"] = folds_agree(data, FOLDS)
    # Not counted: the first foldflow process creates the Prefect database.
    small, small_spec = write_dataset(500, workdir / "data")
    warm = {"units": [16], "dropout": [0.0], "learning_rate": [0.01], "impute": ["median"]}
    measure_cli(small, small_spec, warm, 1, 2, False, workdir)
    if "a" in sides:
        print("(a) foldflow grid (CLI) ...", flush=True)
        results["cli"] = measure_cli(data, spec, grid, epochs, FOLDS, True, workdir)
    if "b" in sides:
        print("(b) foldflow.GridSearchCV(Pipeline) ...", flush=True)
        results["python"] = measure_python(
            "foldflow_python", data, grid, epochs, FOLDS, True, workdir
        )
    if "c" in sides:
        print("(c) scikit-learn GridSearchCV(Pipeline), n_jobs=1 ...", flush=True)
        results["sklearn"] = measure_python("sklearn", data, grid, epochs, FOLDS, True, workdir)
    results["scaling"] = []
    previous: dict[str, Any] | None = None
    for n in scale_rows:
        print(f"rows {n}: (a) and (c), 4 combinations x {SCALE_FOLDS} folds ...", flush=True)
        scaled, scaled_spec = write_dataset(n, workdir / "data")
        entry: dict[str, Any] = {
            "rows": n,
            "cli": measure_cli(
                scaled, scaled_spec, SCALE_GRID, epochs, SCALE_FOLDS, False, workdir
            ),
        }
        # scikeras' time grows about linearly in rows: skip a run that would overrun.
        estimate = previous["sklearn"]["process_seconds"] * n / previous["rows"] if previous else 0
        if "c" not in sides:
            entry["sklearn_skipped"] = "(c) not asked (--only)"
        elif previous and "sklearn" in previous and estimate > max_sklearn_seconds:
            entry["sklearn_skipped"] = f"estimated {estimate:.0f} s > {max_sklearn_seconds:.0f} s"
        else:
            entry["sklearn"] = measure_python(
                "sklearn", scaled, SCALE_GRID, epochs, SCALE_FOLDS, False, workdir
            )
        results["scaling"].append(entry)
        previous = entry if "sklearn" in entry else previous
    results["load_after"] = load_average()
    return results


def report(results: dict[str, Any]) -> str:
    sides = [
        (label, results[key])
        for label, key in (
            ("(a) foldflow grid (CLI)", "cli"),
            ("(b) foldflow.GridSearchCV(Pipeline)", "python"),
            ("(c) sklearn GridSearchCV(Pipeline), n_jobs=1", "sklearn"),
        )
        if key in results
    ]
    cli, python, sklearn = (results.get(key) for key in ("cli", "python", "sklearn"))
    lines = [
        f"{results['started']}; {results['rows']} rows, 8 numeric + 6 categorical "
        f"({', '.join(map(str, LEVELS))} levels), 5 % cells missing; "
        f"{len(sides[0][1]['rows'])} combinations x {results['folds']} folds, epochs "
        f"{results['epochs']}, batch {results['batch_size']}; {results['cores']} cores",
        f"load before: {results['load_before']}",
        f"load after:  {results['load_after']}",
        f"folds: foldflow's (--folds 5 --seed 7) equal StratifiedKFold(5, shuffle=True, "
        f"random_state=7): {results['folds_agree']}",
        f"{'side':44} {'wall s':>7} {'fit s':>7} {'peak MiB':>9} {'tree MiB':>9} {'best':>7}",
    ]
    for label, side in sides:
        fit = f"{side['fit_seconds']:7.1f}" if "fit_seconds" in side else f"{'':>7}"
        best = max(r["mean"] for r in side["rows"])
        lines.append(
            f"{label:44} {side['process_seconds']:7.1f} {fit} {side['peak_rss_mib']:9.0f} "
            f"{side['tree_peak_rss_mib']:9.0f} {best:7.4f}"
        )
    if sklearn is not None and cli is not None and python is not None:
        whole = sklearn["process_seconds"]
        lines.append(
            f"speed-up, whole process: (c)/(a) {whole / cli['process_seconds']:.1f}x, "
            f"(c)/(b) {whole / python['process_seconds']:.1f}x; "
            f"in-process fit (c)/(b) {sklearn['fit_seconds'] / python['fit_seconds']:.1f}x"
        )
    if cli is not None and "engines" in cli:
        lines.append(f"CLI engines: {cli['engines']}")
    for label, side in (("(a)", cli), ("(b)", python), ("(c)", sklearn)):
        lines += phase_lines(label, side or {})
    for label, ours in (("(a)", cli), ("(b)", python)):
        if ours is None or sklearn is None:
            continue
        check = agreement(ours, sklearn)
        lines.append(
            f"{label} vs (c): means within fold std {check['means_within_std']}, best score gap "
            f"{check['best_score_gap']:.4f}; best five (units, dropout, lr, impute): "
            "ours mean±std / sklearn mean±std"
        )
        for row in check["best"]:
            (m, s), (tm, ts) = row["ours"], row["theirs"]
            lines.append(f"    {row['combination']}: {m:.4f}±{s:.4f} / {tm:.4f}±{ts:.4f}")
    if not results["scaling"]:
        return "\n".join(lines)
    lines.append(
        f"rows scaling, {len(SCALE_GRID['units']) * len(SCALE_GRID['learning_rate'])} "
        f"combinations x {SCALE_FOLDS} folds, no refit"
    )
    lines.append(
        f"{'rows':>8} {'(a) wall s':>11} {'(a) peak':>9} {'(a) tree':>9} "
        f"{'(c) wall s':>11} {'(c) peak':>9} {'ratio':>7}"
    )
    for entry in results["scaling"]:
        a = entry["cli"]
        c = entry.get("sklearn")
        theirs = (
            f"{c['process_seconds']:11.1f} {c['peak_rss_mib']:9.0f} "
            f"{c['process_seconds'] / a['process_seconds']:6.1f}x"
            if c
            else f"skipped: {entry['sklearn_skipped']}"
        )
        lines.append(
            f"{entry['rows']:8} {a['process_seconds']:11.1f} {a['peak_rss_mib']:9.0f} "
            f"{a['tree_peak_rss_mib']:9.0f} {theirs}"
        )
    for entry in results["scaling"]:
        lines += phase_lines(f"(a) at {entry['rows']} rows", entry["cli"])
    return "\n".join(lines)


def phase_lines(label: str, side: dict[str, Any]) -> list[str]:
    """A side's phases: seconds, and the CLI process's own peak RSS in each."""
    if not side.get("phases"):
        return []
    cells = [
        f"{p['phase'].split(':')[0]} {p['seconds']:.1f} s"
        + ("" if p["peak_mib"] is None else f" / {p['peak_mib']} MiB")
        for p in side["phases"]
    ]
    return [f"{label} phases (seconds / peak RSS): " + ", ".join(cells)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=20_000)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--scale-rows", type=int, nargs="*", default=[1_000, 10_000, 100_000])
    parser.add_argument(
        "--max-sklearn-seconds", type=float, default=300, help="skip a longer (c) in the scaling"
    )
    size = parser.add_mutually_exclusive_group()
    size.add_argument(
        "--wide", action="store_true", help="search the 72-combination WIDE_GRID, not GRID's 24"
    )
    size.add_argument("--wider", action="store_true", help="search the 144-combination WIDER_GRID")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--wrap", help=argparse.SUPPRESS)
    parser.add_argument(
        "--only",
        default=",".join(SIDES),
        help="the sides to measure, e.g. a,b (default a,b,c)",
    )
    args = parser.parse_args(argv)
    sides = tuple(side.strip() for side in args.only.split(",") if side.strip())
    if not sides or set(sides) - set(SIDES):
        parser.error(f"--only takes sides among {','.join(SIDES)}, not {args.only!r}")
    if args.child:
        child_main(json.loads(args.child))
        return 0
    if args.wrap:
        wrap_main(json.loads(args.wrap))
        return 0
    grid = WIDER_GRID if args.wider else WIDE_GRID if args.wide else GRID
    results = run(args.rows, args.epochs, args.scale_rows, args.max_sklearn_seconds, grid, sides)
    text = report(results)
    print(text)
    name = "mixed-data-wider" if args.wider else "mixed-data-wide" if args.wide else "mixed-data"
    name += "" if sides == SIDES else f"-{''.join(sides)}"
    print(f"written to {children.write_results(name, results, text)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
