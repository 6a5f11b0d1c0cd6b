"""Search strategies measured on Pima (issue 13's closing note), one part per command:

    python -m benchmarks.search random   # foldflow random search vs RandomizedSearchCV + scikeras
    python -m benchmarks.search halving  # halving vs the exhaustive grid at max epochs
    python -m benchmarks.search tpe      # TPE vs random: best-so-far by candidates, 5 seeds

Both sides of `random` draw the very same 60 candidates: the same distributions (keys spelled
`model__...` on both sides, so scikit-learn's sorted-key sampling order is the same) and the
same `random_state`. Results go to benchmarks/results/search-<part>-<timestamp>.json.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

PROJECT_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = PROJECT_ROOT.parent / "shared" / "data" / "pima-indians-diabetes.csv"
RESULTS = PROJECT_ROOT / "benchmarks" / "results"
SEED = 7
FOLDS = 3
RANDOM_SPACE = {
    "model__learning_rate": {"loguniform": [1.0e-4, 1.0e-1]},
    "model__hidden_layers": [[12, 8], [16], [32, 16], [64, 32]],
    "model__optimizer": ["adam", "rmsprop"],
    "batch_size": [10, 20, 40],
    "epochs": [10, 30, 50],
}
# 2 x 5 x 5 x 3 = 150 candidates, every one to 300 epochs in the exhaustive grid.
HALVING_SPACE = {
    "model__optimizer": ["adam", "rmsprop"],
    "model__hidden_layers": [[8], [16], [12, 8], [24, 12], [32, 16]],
    "model__learning_rate": [0.0003, 0.001, 0.003, 0.01, 0.03],
    "batch_size": [10, 20, 40],
}


def _run_settings(data: str, workdir: Path, seed: int = SEED, fresh: bool = True):
    from tasks.config import RunSettings

    return RunSettings(
        source=data,
        n_splits=FOLDS,
        seed=seed,
        cache_dir=str(workdir / "cache"),
        output_dir=str(workdir / "runs"),
        fresh=fresh,
    )


def _rows(summary) -> list[dict[str, Any]]:
    import pandas as pd

    table = pd.read_parquet(Path(summary.output_dir) / "cv_results.parquet")
    return [
        {
            "params": json.loads(row["params"]),
            "mean": float(row["mean_test_score"]),
            "std": float(row["std_test_score"]),
            **(
                {"iter": int(row["iter"]), "epochs": int(row["n_resources"])}
                if "iter" in row
                else {}
            ),
            "candidate": int(row["candidate"]) if "candidate" in row else None,
        }
        for _, row in table.iterrows()
    ]


def foldflow_search(data: str, strategy: str, space: dict, n: int, seed: int = SEED, **extra):
    from flows.search import search_flow
    from tasks.config import SearchConfig

    workdir = Path(tempfile.mkdtemp(prefix="foldflow-search-bench-"))
    config = SearchConfig(
        strategy=strategy,
        space=space,
        n_candidates=n,
        run=_run_settings(data, workdir, seed),
        refit=False,
        **extra,
    )
    started = time.perf_counter()
    summary = search_flow(config)
    wall = time.perf_counter() - started
    return {
        "wall_seconds": wall,
        "fits": summary.n_fits,
        "fit_seconds": summary.fit_seconds,
        "score": summary.best_score,
        "std": summary.best_std,
        "best_params": summary.best_params,
        "engines": summary.engines,
        "rows": _rows(summary),
    }


def sklearn_random(data: str, space: dict, n: int, seed: int = SEED) -> dict[str, Any]:
    """RandomizedSearchCV + scikeras on foldflow's MLP, the same distributions and seed."""
    import keras
    import numpy as np
    from sklearn.model_selection import RandomizedSearchCV, StratifiedKFold

    from tasks.model.factory import build_mlp
    from tasks.model.wrappers import FoldflowClassifier
    from tasks.search.spaces import scipy_distributions, space_from_mapping

    dataset = np.loadtxt(data, delimiter=",")
    features, labels = dataset[:, :8], dataset[:, 8]
    keras.utils.set_random_seed(seed)
    search = RandomizedSearchCV(
        FoldflowClassifier(model=build_mlp, verbose=0),
        scipy_distributions(space_from_mapping(space)),
        n_iter=n,
        random_state=seed,
        cv=StratifiedKFold(FOLDS, shuffle=True, random_state=seed),
        n_jobs=os.cpu_count(),
    )
    started = time.perf_counter()
    search.fit(features, labels)
    wall = time.perf_counter() - started
    results = search.cv_results_
    return {
        "wall_seconds": wall,
        "fits": n * FOLDS,
        "score": float(search.best_score_),
        "best_params": {k: _plain(v) for k, v in search.best_params_.items()},
        "rows": [
            {"params": {k: _plain(v) for k, v in p.items()}, "mean": float(m), "std": float(s)}
            for p, m, s in zip(
                results["params"],
                results["mean_test_score"],
                results["std_test_score"],
                strict=True,
            )
        ],
    }


def _plain(value: Any) -> Any:
    import numpy as np

    if isinstance(value, tuple | list):
        return [_plain(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    return value


def part_random(data: str, n: int) -> dict[str, Any]:
    ours = foldflow_search(data, "random", RANDOM_SPACE, n)
    theirs = sklearn_random(data, RANDOM_SPACE, n)
    same = [a["params"] == b["params"] for a, b in zip(ours["rows"], theirs["rows"], strict=True)]
    within_theirs = within_either = 0
    for a, b in zip(ours["rows"], theirs["rows"], strict=True):
        difference = abs(a["mean"] - b["mean"])
        within_theirs += difference <= b["std"]
        within_either += difference <= max(a["std"], b["std"])
    return {
        "foldflow": ours,
        "sklearn": theirs,
        "same_candidates": all(same),
        "speed_ratio": theirs["wall_seconds"] / ours["wall_seconds"],
        "agree_within_sklearn_std": within_theirs,
        "agree_within_larger_std": within_either,
    }


def part_halving(data: str, min_epochs: int, max_epochs: int, factor: int) -> dict[str, Any]:
    from flows.grid_search import grid_search_flow
    from tasks.config import GridSearchConfig, GridSpec

    halving = foldflow_search(
        data,
        "halving",
        HALVING_SPACE,
        10_000,
        min_epochs=min_epochs,
        max_epochs=max_epochs,
        factor=factor,
    )
    workdir = Path(tempfile.mkdtemp(prefix="foldflow-search-bench-"))
    grid = {**HALVING_SPACE, "epochs": [max_epochs]}
    started = time.perf_counter()
    summary = grid_search_flow(
        GridSearchConfig(
            grid=GridSpec.from_mapping(grid), run=_run_settings(data, workdir), refit=False
        )
    )
    exhaustive_wall = time.perf_counter() - started
    rows = halving["rows"]
    n = sum(1 for r in rows if r["iter"] == 0)
    rungs = sorted({(r["iter"], r["epochs"]) for r in rows})
    per_rung = [(e, sum(1 for r in rows if r["iter"] == i)) for i, e in rungs]
    scratch = sum(e * k for e, k in per_rung)
    continued, previous = 0, 0
    for e, k in per_rung:
        continued += k * (e - previous)
        previous = e
    return {
        "halving": halving,
        "exhaustive": {
            "wall_seconds": exhaustive_wall,
            "fits": summary.n_fits,
            "fit_seconds": summary.fit_seconds,
            "score": summary.best_score,
            "std": summary.best_std,
            "best_params": summary.best_params,
        },
        "candidates": n,
        "rungs": per_rung,
        "epochs_halving_from_scratch": scratch,
        "epochs_halving_continued": continued,
        "epochs_exhaustive": n * max_epochs,
        "best_within_exhaustive_std": abs(summary.best_score - halving["score"])
        <= summary.best_std,
    }


def best_so_far(rows: list[dict[str, Any]], checkpoints: list[int]) -> dict[int, float]:
    ordered = sorted(rows, key=lambda r: r["candidate"])
    means = [r["mean"] for r in ordered]
    return {
        k: max((m for m in means[:k] if not math.isnan(m)), default=math.nan) for k in checkpoints
    }


def part_tpe(data: str, n: int, seeds: list[int], checkpoints: list[int]) -> dict[str, Any]:
    runs: dict[str, list[dict[int, float]]] = {"random": [], "tpe": []}
    walls: dict[str, list[float]] = {"random": [], "tpe": []}
    for seed in seeds:
        for strategy in ("random", "tpe"):
            result = foldflow_search(data, strategy, RANDOM_SPACE, n, seed=seed)
            runs[strategy].append(best_so_far(result["rows"], checkpoints))
            walls[strategy].append(result["wall_seconds"])
            # as it goes: a long run interrupted still leaves its finished seeds
            print("best-so-far", strategy, seed, json.dumps(runs[strategy][-1]), flush=True)
    table = {
        strategy: {k: sum(run[k] for run in found) / len(found) for k in checkpoints}
        for strategy, found in runs.items()
    }
    return {"seeds": seeds, "per_seed": runs, "mean_best_so_far": table, "wall_seconds": walls}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("part", choices=["random", "halving", "tpe"])
    parser.add_argument("--data", default=str(DEFAULT_DATA))
    parser.add_argument("--n-candidates", type=int, default=60)
    parser.add_argument("--min-epochs", type=int, default=4)
    parser.add_argument("--max-epochs", type=int, default=300)
    parser.add_argument("--factor", type=int, default=3)
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3, 4, 5])
    args = parser.parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    from flows.runtime.runners import embedded_run_settings

    data = str(Path(args.data).resolve())
    with embedded_run_settings():
        if args.part == "random":
            result = part_random(data, args.n_candidates)
        elif args.part == "halving":
            result = part_halving(data, args.min_epochs, args.max_epochs, args.factor)
        else:
            result = part_tpe(data, args.n_candidates, args.seeds, [10, 20, 40, 60])
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"search-{args.part}-{datetime.now(UTC):%Y%m%dT%H%M%S}.json"
    path.write_text(json.dumps(result, indent=1, default=str))
    brief = {
        k: v for k, v in result.items() if k not in ("foldflow", "sklearn", "halving", "per_seed")
    }
    print(json.dumps(brief, indent=1, default=str))
    for side in ("foldflow", "sklearn", "halving"):
        if side in result:
            shown = {k: v for k, v in result[side].items() if k != "rows"}
            print(side, json.dumps(shown, default=str))
    print(f"written to {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
