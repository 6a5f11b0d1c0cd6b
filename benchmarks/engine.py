"""Fast engine beyond the tutorial, side by side with GridSearchCV + scikeras in one run:
a multiclass grid (scikit-learn's wine) and a regression grid (diabetes), 36 combinations x
5 folds each; growth with rows (make_classification, 20 features, 1k / 10k / 100k rows,
36 combinations x 3 folds); growth with fits (Pima, 100 / 1,000 / 5,000 fits).

    python -m benchmarks.engine [--only wine,diabetes,rows,fits] [--scikeras-sample N]
                                [--estimate-all]

foldflow's side is its engine as the flows call it (inspection of foldflow's MLP, then
`run_fit_jobs`: fast engine, every metric), without Prefect; scikeras' side is GridSearchCV
(n_jobs = cores) over the same MLP function. Where scikeras would take too long (100k rows),
it times `--scikeras-sample` fits and extrapolates: the table says `est.`. Each measurement
runs in its own child process (peak RSS is its own); results go to benchmarks/results/.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from benchmarks import children

PROJECT_ROOT = Path(__file__).resolve().parents[1]
PIMA = PROJECT_ROOT.parent / "shared" / "data" / "pima-indians-diabetes.csv"
# 36 combinations: optimizer x learning rate x hidden layers x batch size.
GRID: dict[str, list[Any]] = {
    "optimizer": ["adam", "rmsprop", "sgd"],
    "learning_rate": [0.001, 0.01, 0.03],
    "hidden_layers": [(16,), (16, 8)],
    "batch_size": [16, 32],
}
EPOCHS = 20
ROWS = (1_000, 10_000, 100_000)
FITS = (100, 1_000, 5_000)


def dataset(name: str, rows: int = 0):
    """(features float32, labels, task) of a dataset scikit-learn ships (standardised)."""
    import numpy as np
    from sklearn.datasets import load_diabetes, load_wine, make_classification
    from sklearn.preprocessing import StandardScaler

    if name == "wine":
        features, labels = load_wine(return_X_y=True)
        task = "multiclass"
    elif name == "diabetes":
        features, labels = load_diabetes(return_X_y=True)
        labels = labels / 100.0  # targets of order 1, as a user would scale them
        task = "regression"
    elif name == "synthetic":
        features, labels = make_classification(
            n_samples=rows, n_features=20, n_informative=10, random_state=0
        )
        task = "binary"
    else:  # pima
        data = np.loadtxt(PIMA, delimiter=",")
        features, labels, task = data[:, :8], data[:, 8].astype(np.int64), "binary"
    features = StandardScaler().fit_transform(features).astype(np.float32)
    return features, labels, task


def expanded(grid: dict[str, list[Any]]) -> list[dict[str, Any]]:
    from sklearn.model_selection import ParameterGrid

    return list(ParameterGrid(grid))


def measure_foldflow(name: str, rows: int, n_splits: int, grid: dict, epochs: int) -> dict:
    """foldflow's engine on every (combination, fold): inspection, then one run of fits."""
    import numpy as np
    import pandas as pd

    from tasks.config import GridSpec
    from tasks.data.dataset import DatasetHandle
    from tasks.data.folds import plan_folds
    from tasks.model.factory import check_combinations, model_meta, route_combinations
    from tasks.model.sources import resolve_model_reference
    from tasks.records import FitJob
    from tasks.train.dispatch import run_fit_jobs

    features, labels, task = dataset(name, rows)
    started = time.perf_counter()
    import tempfile

    folder = Path(tempfile.mkdtemp(prefix="foldflow-engine-bench-"))
    columns = [f"x{i}" for i in range(features.shape[1])]
    pd.DataFrame(features, columns=columns).assign(y=labels).to_parquet(folder / "d.parquet")
    handle = DatasetHandle(
        name=name,
        parquet_path=str(folder / "d.parquet"),
        sha256=name,
        feature_columns=columns,
        target="y",
        task=task,
    )
    classes = None if task == "regression" else sorted(np.unique(labels).tolist())
    meta = model_meta(task, features.shape[1], classes)
    source = resolve_model_reference("mlp", PROJECT_ROOT)
    spec = GridSpec(param_grid={**grid, "epochs": [epochs]})
    checked = check_combinations(source, route_combinations(source, {}, spec), meta, 7)
    folds = plan_folds(labels, n_splits, 7, task)
    jobs = [
        FitJob(
            combination=index,
            params=combination.routed,
            model=combination.model,
            fold=fold.index,
            network=combination.network,
        )
        for index, combination in enumerate(checked)
        for fold in folds
    ]
    results = run_fit_jobs(handle, folds, jobs, 7, source)
    wall = time.perf_counter() - started
    metric = "r2" if task == "regression" else "accuracy"
    means = {}
    for result in results:
        means.setdefault(result.combination, []).append(result.scores[metric])
    best = max(float(np.mean(scores)) for scores in means.values())
    return {
        "wall_seconds": wall,
        "fits": len(jobs),
        "engines": sorted({result.engine for result in results}),
        "best_score": best,
        "reasons": sorted({c.reason for c in checked if c.reason}),
    }


def scikeras_model(
    meta, task="binary", optimizer="adam", learning_rate=None, hidden_layers=(12, 8)
):
    """foldflow's MLP as scikeras calls it (its meta lacks the task)."""
    from tasks.model.factory import build_mlp

    return build_mlp(
        {**meta, "task": task},
        hidden_layers=tuple(hidden_layers),
        optimizer=optimizer,
        learning_rate=learning_rate,
    )


def measure_scikeras(
    name: str, rows: int, n_splits: int, grid: dict, epochs: int, sample: int = 0
) -> dict:
    """GridSearchCV + scikeras over the same MLP; `sample` > 0 times that many fits only."""
    import keras
    from scikeras.wrappers import KerasClassifier, KerasRegressor
    from sklearn.model_selection import GridSearchCV, KFold, StratifiedKFold

    features, labels, task = dataset(name, rows)
    keras.utils.set_random_seed(7)
    wrapper = KerasRegressor if task == "regression" else KerasClassifier
    estimator = wrapper(model=scikeras_model, model__task=task, epochs=epochs, verbose=0)
    splitter = KFold if task == "regression" else StratifiedKFold
    folds = splitter(n_splits=n_splits, shuffle=True, random_state=7)
    param_grid = {(k if k == "batch_size" else f"model__{k}"): v for k, v in grid.items()}
    n_fits = len(expanded(grid)) * n_splits
    started = time.perf_counter()
    if sample:
        from sklearn.base import clone

        train, test = next(folds.split(features, labels))
        every = expanded(param_grid)
        # spread over the grid (batch sizes, widths, optimizers), not its first corner
        for params in every[:: max(1, len(every) // sample)][:sample]:
            model = clone(estimator).set_params(**params)
            model.fit(features[train], labels[train])
            model.score(features[test], labels[test])
        # one process fits one at a time; GridSearchCV would run cores-many at once
        wall = (time.perf_counter() - started) / sample * n_fits / (os.cpu_count() or 1)
        return {"wall_seconds": wall, "fits": n_fits, "estimated_from_fits": sample}
    search = GridSearchCV(estimator, param_grid, cv=folds, n_jobs=os.cpu_count())
    search.fit(features, labels)
    return {
        "wall_seconds": time.perf_counter() - started,
        "fits": n_fits,
        "best_score": float(search.best_score_),
    }


def fits_grid(n_fits: int) -> dict[str, list[Any]]:
    """A Pima grid of n_fits / 10 combinations (10 folds): learning rates x batch sizes."""
    combinations = n_fits // 10
    rates = [round(0.001 + 0.0001 * i, 6) for i in range(max(1, combinations // 2))]
    return {"optimizer": ["adam"], "learning_rate": rates, "batch_size": [16, 32]}


def child(kind: str, arguments: dict) -> dict:
    import resource

    function = measure_foldflow if kind == "foldflow" else measure_scikeras
    result = function(**arguments)
    result["peak_rss_mib"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    return result


def run_child(kind: str, **arguments) -> dict:
    return children.run_child(
        "benchmarks.engine", "--child", kind, "--arguments", json.dumps(arguments)
    )


def line(label: str, ours: dict, theirs: dict | None) -> str:
    ratio = ""
    if theirs:
        estimated = " (est.)" if theirs.get("estimated_from_fits") else ""
        ratio = f"{theirs['wall_seconds'] / ours['wall_seconds']:.1f}x{estimated}"
    text = (
        f"{label:34} {ours['fits']:6d} {ours['wall_seconds']:9.1f} "
        f"{ours['fits'] / ours['wall_seconds']:8.1f} {ours['peak_rss_mib']:9.0f}"
    )
    if theirs:
        text += f" {theirs['wall_seconds']:11.1f} {theirs.get('peak_rss_mib', 0):9.0f} {ratio:>12}"
    return text


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default="wine,diabetes,rows,fits")
    parser.add_argument("--scikeras-sample", type=int, default=6)
    parser.add_argument(
        "--estimate-all",
        action="store_true",
        help="estimate every scikeras side from sampled fits (a loaded machine)",
    )
    parser.add_argument(
        "--skip-scikeras", action="store_true", help="time foldflow's side only (a re-run)"
    )
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--arguments", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(child(args.child, json.loads(args.arguments)), default=str))
        return 0
    wanted = args.only.split(",")
    header = (
        f"{'run':34} {'fits':>6} {'wall s':>9} {'fits/s':>8} {'peak MiB':>9}"
        f" {'scikeras s':>11} {'sk MiB':>9} {'speed-up':>12}"
    )
    lines = [f"machine: {os.cpu_count()} cores, load {os.getloadavg()[0]:.1f} at start", header]
    results: dict[str, Any] = {}

    def report(text: str) -> None:
        print(text, flush=True)
        lines.append(text)

    print(header, flush=True)
    for name in ("wine", "diabetes"):
        if name in wanted:
            arguments = {"name": name, "rows": 0, "n_splits": 5, "grid": GRID, "epochs": EPOCHS}
            ours = run_child("foldflow", **arguments)
            sample = args.scikeras_sample if args.estimate_all else 0
            theirs = (
                None if args.skip_scikeras else run_child("scikeras", **arguments, sample=sample)
            )
            results[name] = {"foldflow": ours, "scikeras": theirs}
            report(line(f"{name} 36x5, {EPOCHS} epochs", ours, theirs))
    if "rows" in wanted:
        for rows in ROWS:
            arguments = {
                "name": "synthetic",
                "rows": rows,
                "n_splits": 3,
                "grid": GRID,
                "epochs": 5,
            }
            ours = run_child("foldflow", **arguments)
            sample = args.scikeras_sample if rows >= 10_000 or args.estimate_all else 0
            theirs = (
                None if args.skip_scikeras else run_child("scikeras", **arguments, sample=sample)
            )
            results[f"rows{rows}"] = {"foldflow": ours, "scikeras": theirs}
            report(line(f"make_classification {rows} rows 36x3", ours, theirs))
    if "fits" in wanted:
        for n_fits in FITS:
            arguments = {
                "name": "pima",
                "rows": 0,
                "n_splits": 10,
                "grid": fits_grid(n_fits),
                "epochs": 10,
            }
            ours = run_child("foldflow", **arguments)
            results[f"fits{n_fits}"] = {"foldflow": ours}
            report(line(f"pima {ours['fits']} fits, 10 epochs", ours, None))
    children.write_results("engine", results, "\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
