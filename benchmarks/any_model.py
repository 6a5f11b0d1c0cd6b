"""Your own Keras model at speed (issue 26), side by side: the models a user writes first
(BatchNormalization, a learning-rate schedule, a convolution, two branches, an Embedding of an
integer-coded column), each searched two ways on Pima's same folds, each a whole process of its
own:

    (a) `foldflow grid --model benchmarks/any_model.py:<function> --grid GRID` (the CLI);
    (b) scikit-learn's `GridSearchCV(KerasClassifier(model=<function>), n_jobs=1)` (scikeras).

    python -m benchmarks.any_model [--epochs 40] [--models batchnorm schedule conv two_branch
                                   embedding] [--reference] [--wide]

4 combinations (16 with --wide) x 3 folds, 40 epochs, batch 16, refit on both sides (their
defaults). Wall time
is the process's start to exit; peak RSS the largest process's (ru_maxrss) and the process
tree's summed RSS, sampled. The goals: BatchNormalization >= 10x, schedule >= 5x, every mean
score within fold std of scikeras'. Results: benchmarks/results/<stamp>-any-model.json, .txt.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import keras

from benchmarks.children import write_results
from benchmarks.mixed_data import agreement, environment_for, load_average, run_process

PROJECT_ROOT = Path(__file__).resolve().parents[1]
PIMA = PROJECT_ROOT.parent / "shared" / "data" / "pima-indians-diabetes.csv"
SEED = 7
FOLDS = 3
BATCH_SIZE = 16
L = keras.layers


def batchnorm_model(meta, units=16, learning_rate=0.01):
    """Dense -> BatchNormalization -> Activation, twice, then the sigmoid unit."""
    model = keras.Sequential(
        [
            keras.Input((meta["n_features_in_"],)),
            L.Dense(units), L.BatchNormalization(), L.Activation("relu"),
            L.Dense(8), L.BatchNormalization(), L.Activation("relu"),
            L.Dense(1, activation="sigmoid"),
        ]
    )  # fmt: skip
    model.compile(loss="binary_crossentropy", optimizer=keras.optimizers.Adam(learning_rate))
    return model


def schedule_model(meta, units=12, schedule="exponential"):
    """The tutorial's MLP with a decaying learning rate: ExponentialDecay, or CosineDecay
    after a linear warm-up (Pima's 512 training rows, batch 16: 32 steps an epoch)."""
    rate = {
        "exponential": lambda: keras.optimizers.schedules.ExponentialDecay(0.01, 320, 0.5),
        "cosine": lambda: keras.optimizers.schedules.CosineDecay(
            0.0, decay_steps=1152, warmup_target=0.01, warmup_steps=128
        ),
    }[schedule]()
    model = keras.Sequential(
        [
            keras.Input((meta["n_features_in_"],)),
            L.Dense(units, activation="relu"),
            L.Dense(8, activation="relu"),
            L.Dense(1, activation="sigmoid"),
        ]
    )
    model.compile(loss="binary_crossentropy", optimizer=keras.optimizers.Adam(rate))
    return model


def conv_model(meta, filters=4, learning_rate=0.01):
    """The features as a sequence: Reshape, Conv1D, Flatten, Dense (reference engine)."""
    width = meta["n_features_in_"]
    model = keras.Sequential(
        [
            keras.Input((width,)),
            L.Reshape((width, 1)), L.Conv1D(filters, 3, activation="relu"), L.Flatten(),
            L.Dense(8, activation="relu"), L.Dense(1, activation="sigmoid"),
        ]
    )  # fmt: skip
    model.compile(loss="binary_crossentropy", optimizer=keras.optimizers.Adam(learning_rate))
    return model


def two_branch_model(meta, units=8, learning_rate=0.01):
    """Two Dense branches joined by Concatenate (a functional graph)."""
    inputs = keras.Input((meta["n_features_in_"],))
    left = L.Dense(units, activation="relu")(inputs)
    right = L.Dense(units, activation="tanh")(inputs)
    outputs = L.Dense(1, activation="sigmoid")(L.Concatenate()([left, right]))
    model = keras.Model(inputs, outputs)
    model.compile(loss="binary_crossentropy", optimizer=keras.optimizers.Adam(learning_rate))
    return model


def embedding_model(meta, dimensions=2, learning_rate=0.01):
    """An integer-coded column through an Embedding: Pima's first column (pregnancies, 0 to
    17) looked up as x[:, 0], joined with the other columns by Concatenate, then Dense."""
    inputs = keras.Input((meta["n_features_in_"],))
    codes = L.Embedding(20, dimensions)(inputs[:, 0])
    hidden = L.Dense(12, activation="relu")(L.Concatenate()([inputs[:, 1:], codes]))
    outputs = L.Dense(1, activation="sigmoid")(L.Dense(8, activation="relu")(hidden))
    model = keras.Model(inputs, outputs)
    model.compile(loss="binary_crossentropy", optimizer=keras.optimizers.Adam(learning_rate))
    return model


# Per model: its function and a 4-combination grid of its own arguments.
MODELS: dict[str, tuple[str, dict[str, list[Any]]]] = {
    "batchnorm": ("batchnorm_model", {"units": [8, 16], "learning_rate": [0.003, 0.01]}),
    "schedule": ("schedule_model", {"units": [8, 16], "schedule": ["exponential", "cosine"]}),
    "conv": ("conv_model", {"filters": [4, 8], "learning_rate": [0.003, 0.01]}),
    "two_branch": ("two_branch_model", {"units": [4, 8], "learning_rate": [0.003, 0.01]}),
    "embedding": ("embedding_model", {"dimensions": [2, 4], "learning_rate": [0.003, 0.01]}),
}


# --wide: 16 combinations per model (a grid of the size users search), the same keys.
WIDE: dict[str, dict[str, list[Any]]] = {
    "batchnorm": {"units": [4, 8, 16, 32], "learning_rate": [0.001, 0.003, 0.01, 0.03]},
    "schedule": {"units": [4, 6, 8, 12, 16, 24, 32, 48], "schedule": ["exponential", "cosine"]},
    "conv": {"filters": [2, 4, 8, 16], "learning_rate": [0.001, 0.003, 0.01, 0.03]},
    "two_branch": {"units": [2, 4, 8, 16], "learning_rate": [0.001, 0.003, 0.01, 0.03]},
    "embedding": {"dimensions": [1, 2, 3, 4], "learning_rate": [0.001, 0.003, 0.01, 0.03]},
}


def grid_of(name: str, wide: bool = False) -> dict[str, list[Any]]:
    """The model's grid of its own arguments: 4 combinations, or 16 with --wide."""
    return WIDE[name] if wide else MODELS[name][1]


def model_grid(grid: dict[str, list[Any]]) -> dict[str, list[Any]]:
    return {f"model__{key}": values for key, values in grid.items()}


def canonical(params: dict[str, Any], grid: dict[str, list[Any]]) -> list[Any]:
    """One combination whatever side spelled it: its values in the grid's key order."""
    named = {key.removeprefix("model__"): value for key, value in params.items()}
    return [named[key] for key in grid]


def rows_of(params, means, stds, grid) -> list[dict[str, Any]]:
    return [
        {"combination": canonical(p, grid), "mean": float(m), "std": float(s)}
        for p, m, s in zip(params, means, stds, strict=True)
    ]


def read_pima(data: Path):
    import numpy as np

    values = np.loadtxt(data, delimiter=",", dtype=np.float32)
    return values[:, :8], values[:, 8].astype(np.int64)


def folds_agree(data: Path) -> bool:
    """foldflow's folds (--folds 3 --seed 7) are the splitter scikit-learn's side is given."""
    import numpy as np
    from sklearn.model_selection import StratifiedKFold

    from tasks.data.folds import plan_folds

    features, labels = read_pima(data)
    theirs = StratifiedKFold(FOLDS, shuffle=True, random_state=SEED).split(features, labels)
    return all(
        np.array_equal(fold.train, train) and np.array_equal(fold.test, test)
        for fold, (train, test) in zip(plan_folds(labels, FOLDS, SEED), theirs, strict=True)
    )


def measure_cli(
    name: str, data: Path, epochs: int, workdir: Path, engine: str = "auto", wide: bool = False
) -> dict[str, Any]:
    """(a): `foldflow grid --model <file>:<function>` as a user types it (`engine`: auto, or
    reference for the score check); the table read from its run folder."""
    import pandas as pd
    import yaml

    function, grid = MODELS[name][0], grid_of(name, wide)
    run_name = f"{name}-{epochs}-{engine}"
    grid_file = workdir / f"{run_name}.yaml"
    grid_file.write_text(
        yaml.safe_dump({**model_grid(grid), "epochs": [epochs], "batch_size": [BATCH_SIZE]})
    )
    command = [
        sys.executable, "-m", "foldflow.cli", "grid", "--data", str(data),
        "--model", f"{Path(__file__)}:{function}", "--grid", str(grid_file),
        "--folds", str(FOLDS), "--seed", str(SEED), "--output-dir", str(workdir / "runs"),
        "--run-name", run_name, "--overwrite", "--fresh", "--engine", engine,
    ]  # fmt: skip
    # A wrapper process: its children's ru_maxrss is then the foldflow process's own.
    wrapper = [sys.executable, "-m", "benchmarks.any_model", "--wrap", json.dumps(command)]
    result = run_process(wrapper, environment_for(workdir))
    result.update(json.loads(result.pop("stdout").strip().splitlines()[-1]))
    table = pd.read_parquet(workdir / "runs" / run_name / "cv_results.parquet")
    table = table[table["params"].astype(str).str.startswith("{")]  # not the baseline's row
    table = table[table["engine"].isin(["fast", "vectorized", "reference"])]
    params = [json.loads(p) for p in table["params"]]
    result["rows"] = rows_of(params, table["mean_test_score"], table["std_test_score"], grid)
    result["engines"] = sorted(set(table["engine"]))
    return result


def fallback_reason(name: str) -> str:
    """Why foldflow's inspection sends this model to the reference engine ("" if it does not),
    as the run's `reference engine: ...` log line says (the CLI shows it with --verbose)."""
    from tasks.model.inspection import inspect_network

    meta = {"n_features_in_": 8, "task": "binary", "n_classes_": 2, "classes_": [0, 1]}
    grid = MODELS[name][1]
    first = {key: values[0] for key, values in grid.items()}
    found = inspect_network(globals()[MODELS[name][0]](meta, **first), "binary")
    return found if isinstance(found, str) else ""


def measure_sklearn(
    name: str, data: Path, epochs: int, workdir: Path, wide: bool = False
) -> dict[str, Any]:
    """(b): a fresh Python process: import, read the CSV, GridSearchCV + scikeras, exit."""
    arguments = {"name": name, "data": str(data), "epochs": epochs, "wide": wide}
    command = [sys.executable, "-m", "benchmarks.any_model", "--child", json.dumps(arguments)]
    result = run_process(command, environment_for(workdir))
    result.update(json.loads(result.pop("stdout").strip().splitlines()[-1]))
    return result


def sklearn_search(name: str, data: str, epochs: int, wide: bool = False) -> dict[str, Any]:
    """scikit-learn's GridSearchCV(n_jobs=1) over scikeras' KerasClassifier, same folds."""
    import resource

    from scikeras.wrappers import KerasClassifier
    from sklearn.model_selection import GridSearchCV, StratifiedKFold

    function, grid = MODELS[name][0], grid_of(name, wide)
    features, labels = read_pima(Path(data))
    keras.utils.set_random_seed(SEED)
    estimator = KerasClassifier(
        model=globals()[function], epochs=epochs, batch_size=BATCH_SIZE, verbose=0
    )
    splitter = StratifiedKFold(FOLDS, shuffle=True, random_state=SEED)
    search = GridSearchCV(estimator, model_grid(grid), cv=splitter, n_jobs=1)
    started = time.perf_counter()
    search.fit(features, labels)
    results = search.cv_results_
    peak_kib = max(
        resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
        resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss,
    )
    return {
        "fit_seconds": time.perf_counter() - started,
        "rows": rows_of(
            results["params"], results["mean_test_score"], results["std_test_score"], grid
        ),
        "peak_rss_mib": round(peak_kib / 1024, 1),
    }


def run(
    epochs: int, names: list[str], data: Path, reference: bool, wide: bool = False
) -> dict[str, Any]:
    workdir = Path(tempfile.mkdtemp(prefix="foldflow-any-model-"))
    results: dict[str, Any] = {
        "epochs": epochs, "batch_size": BATCH_SIZE, "folds": FOLDS, "data": str(data),
        "load_before": load_average(), "folds_agree": folds_agree(data),
        "started": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "models": {},
        "combinations": 16 if wide else 4,
    }  # fmt: skip
    # Not counted: the first foldflow process creates the Prefect database.
    measure_cli("batchnorm", data, 1, workdir)
    for name in names:
        print(f"{name}: (a) foldflow grid ...", flush=True)
        ours = measure_cli(name, data, epochs, workdir, wide=wide)
        print(f"{name}: (b) GridSearchCV + scikeras, n_jobs=1 ...", flush=True)
        theirs = measure_sklearn(name, data, epochs, workdir, wide)
        entry = results["models"][name] = {
            "grid": grid_of(name, wide),
            "fallback": fallback_reason(name),
            "foldflow": ours,
            "sklearn": theirs,
            "speedup": theirs["process_seconds"] / ours["process_seconds"],
            "agreement": agreement(ours, theirs, best=4),
        }
        if reference and ours["engines"] != ["reference"]:  # the fast or vectorized path
            print(f"{name}: (c) foldflow grid --engine reference ...", flush=True)
            entry["reference"] = measure_cli(name, data, epochs, workdir, "reference", wide)
            entry["agreement_with_reference"] = agreement(ours, entry["reference"], best=4)
        print(json.dumps({name: {k: v for k, v in entry.items() if k != "grid"}}), flush=True)
    results["load_after"] = load_average()
    return results


def report(results: dict[str, Any]) -> str:
    lines = [
        f"{results['started']}; Pima, {results.get('combinations', 4)} combinations x "
        f"{results['folds']} folds, "
        f"{results['epochs']} epochs, batch {results['batch_size']}, refit on both sides",
        f"load before: {results['load_before']}",
        f"load after:  {results['load_after']}",
        f"folds: foldflow's (--folds 3 --seed 7) equal StratifiedKFold(3, shuffle=True, "
        f"random_state=7): {results['folds_agree']}",
        f"{'model':11} {'engine':10} {'foldflow s':>10} {'sklearn s':>9} {'speedup':>7} "
        f"{'peak MiB ff/sk':>15} {'tree MiB ff/sk':>15} {'within std sk/ref':>17}",
    ]
    for name, entry in results["models"].items():
        ours, theirs = entry["foldflow"], entry["sklearn"]
        lines.append(
            f"{name:11} {'/'.join(ours['engines']):10} {ours['process_seconds']:10.1f} "
            f"{theirs['process_seconds']:9.1f} {entry['speedup']:6.2f}x "
            f"{ours['peak_rss_mib']:7.0f}/{theirs['peak_rss_mib']:<7.0f} "
            f"{ours['tree_peak_rss_mib']:7.0f}/{theirs['tree_peak_rss_mib']:<7.0f} "
            f"{entry['agreement']['means_within_std']:>8} "
            f"{entry.get('agreement_with_reference', {}).get('means_within_std', '-'):<8}"
        )
    for name, entry in results["models"].items():
        if entry["fallback"]:
            lines.append(f"{name}: reference engine: {entry['fallback']}")
        if "reference" in entry:
            fast, slow = entry["foldflow"], entry["reference"]
            lines.append(
                f"{name}: foldflow --engine reference {slow['process_seconds']:.1f} s, fast "
                f"{fast['process_seconds']:.1f} s; means within fold std: "
                f"{entry['agreement_with_reference']['means_within_std']}"
            )
        for best in entry["agreement"]["best"]:
            lines.append(
                f"{name} {best['combination']}: foldflow {best['ours'][0]:.4f} "
                f"+- {best['ours'][1]:.4f}, scikeras {best['theirs'][0]:.4f} "
                f"+- {best['theirs'][1]:.4f}"
            )
    return "\n".join(lines)


def wrap_main(command: list[str]) -> None:
    """Run `command`; print its peak RSS (the largest of its process tree, ru_maxrss) and the
    reasons its `reference engine: ...` lines gave."""
    import resource

    completed = subprocess.run(command, capture_output=True, text=True, check=False)
    if completed.returncode != 0:
        sys.stderr.write(completed.stderr)
        raise SystemExit(completed.returncode)
    output = completed.stdout + completed.stderr
    reasons = {
        line.split("reference engine: ", 1)[1].strip()
        for line in output.splitlines()
        if "reference engine: " in line
    }
    peak_kib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    print(json.dumps({"peak_rss_mib": round(peak_kib / 1024, 1), "fallback": sorted(reasons)}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    parser.add_argument("--data", type=Path, default=PIMA)
    parser.add_argument(
        "--reference", action="store_true", help="also foldflow --engine reference (scores)"
    )
    parser.add_argument(
        "--wide", action="store_true", help="16 combinations per model instead of 4"
    )
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--wrap", help=argparse.SUPPRESS)
    arguments = parser.parse_args()
    if arguments.wrap:
        wrap_main(json.loads(arguments.wrap))
        return
    if arguments.child:
        print(json.dumps(sklearn_search(**json.loads(arguments.child)), default=str))
        return
    results = run(
        arguments.epochs, arguments.models, arguments.data, arguments.reference, arguments.wide
    )
    text = report(results)
    print(text)
    path = write_results("any-model", results, text)
    print(f"results: {path}")


if __name__ == "__main__":
    main()
