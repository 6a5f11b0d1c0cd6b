"""Early stopping on the tutorial's grid: `early_stopping__patience: [10]` against the same
grid without it, both on foldflow's fast engine at full size (54 combinations x 3 folds,
50/100/150 epochs), each in its own process, one run.

    python -m benchmarks.early_stopping [--data PATH.csv] [--scale 1.0] [--workers 2]

With early stopping each fit trains on 90 % of its fold's training rows (a stratified,
seeded validation part: the other 10 %), watches the validation loss and stops after 10
epochs without improvement. Reported: wall and training time of each flow, the epochs the
fits trained against the epochs asked for, the best combination, and per combination the
score change and the epoch it stopped at. Written to benchmarks/results/<stamp>-early-stopping.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
from pathlib import Path
from typing import Any

from benchmarks import children
from benchmarks.run import DEFAULT_DATA, TUTORIAL_GRID, scaled_grid

PATIENCE = 10
VARIANTS = {
    "without": TUTORIAL_GRID,
    "patience": {**TUTORIAL_GRID, "early_stopping__patience": [PATIENCE]},
}


def measure(variant: str, data: str, scale: float, workers: int) -> dict[str, Any]:
    """One flow of the variant's grid in this process (the API warmed up first)."""
    from benchmarks.run import _foldflow_run, _warm_up_api
    from flows.runtime.runners import embedded_run_settings

    with embedded_run_settings():
        _warm_up_api()
        return _foldflow_run(data, "grid", scale, workers, grid=VARIANTS[variant])


def run_child(variant: str, data: str, scale: float, workers: int) -> dict[str, Any]:
    return children.run_child(
        "benchmarks.early_stopping", "--child", variant, "--data", data,
        "--scale", str(scale), "--workers", str(workers),
    )  # fmt: skip


def epochs_trained(result: dict[str, Any], n_splits: int = 3) -> tuple[float, int]:
    """(epochs the fits trained, epochs they were asked for), summed over every fit."""
    asked = sum(c["params"]["epochs"] * n_splits for c in result["combinations"])
    trained = sum(
        min(c["stopped_epoch"] or c["params"]["epochs"], c["params"]["epochs"]) * n_splits
        for c in result["combinations"]
    )
    return trained, asked


def report(results: dict[str, dict[str, Any]], scale: float) -> str:
    plain, stopping = results["without"], results["patience"]
    by_params = {json.dumps(c["params"], sort_keys=True): c for c in plain["combinations"]}
    pairs = []
    for combination in stopping["combinations"]:
        params = {k: v for k, v in combination["params"].items() if "early_stopping" not in k}
        pairs.append((by_params[json.dumps(params, sort_keys=True)], combination))
    changes = [b["mean"] - a["mean"] for a, b in pairs]
    within = sum(abs(b["mean"] - a["mean"]) <= max(a["std"], b["std"]) for a, b in pairs)
    trained, asked = epochs_trained(stopping)
    lines = [
        f"scale={scale}; machine: {os.cpu_count()} cores, load {os.getloadavg()[0]:.1f} at the end",
        f"{'grid':28} {'wall s':>8} {'training s':>11} {'best':>8} {'std':>7}",
    ]
    for label, result in (("without early stopping", plain), (f"patience={PATIENCE}", stopping)):
        lines.append(
            f"{label:28} {result['wall_seconds']:8.1f} {result['training_seconds']:11.1f} "
            f"{result['score']:8.4f} {result['std']:7.4f}"
        )
    lines += [
        "time ratio (without / with): "
        f"wall {plain['wall_seconds'] / stopping['wall_seconds']:.2f}x, "
        f"training {plain['training_seconds'] / stopping['training_seconds']:.2f}x",
        f"epochs trained with early stopping: {trained:.0f} of {asked} asked "
        f"({trained / asked:.1%})",
        "stopped epoch per combination: median "
        f"{statistics.median(c['stopped_epoch'] for c in stopping['combinations']):.1f}, "
        f"min {min(c['stopped_epoch'] for c in stopping['combinations']):.1f}, "
        f"max {max(c['stopped_epoch'] for c in stopping['combinations']):.1f}",
        "mean score change per combination (with - without): "
        f"mean {statistics.mean(changes):+.4f}, min {min(changes):+.4f}, "
        f"max {max(changes):+.4f}; within fold std: {within}/{len(pairs)}",
        f"best without: {plain['best_params']}",
        f"best with:    {stopping['best_params']}",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(DEFAULT_DATA))
    parser.add_argument("--scale", type=float, default=1.0, help="epoch multiplier")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--child", choices=sorted(VARIANTS), help=argparse.SUPPRESS)
    arguments = parser.parse_args(argv)
    data = str(Path(arguments.data).resolve())
    if arguments.child:
        result = measure(arguments.child, data, arguments.scale, arguments.workers)
        print(json.dumps(result, default=str))
        return 0
    results = {}
    for variant in VARIANTS:
        print(f"running the tutorial grid {variant} early stopping ...", flush=True)
        results[variant] = run_child(variant, data, arguments.scale, arguments.workers)
    text = report(results, arguments.scale)
    print(text)
    payload = {"scale": arguments.scale, "grid": scaled_grid(arguments.scale), **results}
    children.write_results("early-stopping", payload, text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
