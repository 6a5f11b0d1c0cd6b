"""The tutorial's grid-search script run twice as whole processes, in one run: once with
`from foldflow import GridSearchCV` (examples/tutorial_grid_search.py as shipped) and once with
scikit-learn's GridSearchCV (the same file with that one import put back).

    python -m benchmarks.tutorial_script [--data PATH.csv] [--epochs 1,2]

Each script runs in a fresh folder holding only the CSV (so foldflow starts with an empty cache
and its own Prefect home, as a new user would), from process start to exit. Both outputs, the
wall times and the speed ratio are printed and written to benchmarks/results/.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = PROJECT_ROOT.parent / "shared" / "data" / "pima-indians-diabetes.csv"
SCRIPT = PROJECT_ROOT / "examples" / "tutorial_grid_search.py"
FOLDFLOW_IMPORT = "from foldflow import GridSearchCV"
SKLEARN_IMPORT = "from sklearn.model_selection import GridSearchCV"
TUTORIAL_EPOCHS = "epochs = [50, 100, 150]"


def script_text(variant: str, epochs: list[int] | None = None) -> str:
    """The shipped script for `foldflow`, or with scikit-learn's import for `sklearn`; `epochs`
    replaces the tutorial's epoch list (for a quick run)."""
    text = SCRIPT.read_text()
    if FOLDFLOW_IMPORT not in text or TUTORIAL_EPOCHS not in text:
        raise RuntimeError(f"{SCRIPT} no longer holds {FOLDFLOW_IMPORT!r} and {TUTORIAL_EPOCHS!r}")
    if variant == "sklearn":
        text = text.replace(FOLDFLOW_IMPORT, SKLEARN_IMPORT)
    if epochs is not None:
        text = text.replace(TUTORIAL_EPOCHS, f"epochs = {epochs!r}")
    return text


def run_script(variant: str, data: Path, epochs: list[int] | None) -> dict:
    """One variant in a fresh folder, timed from process start to exit."""
    folder = Path(tempfile.mkdtemp(prefix=f"tutorial-{variant}-"))
    shutil.copyfile(data, folder / "pima-indians-diabetes.csv")
    (folder / "tutorial_grid_search.py").write_text(script_text(variant, epochs))
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(
            filter(None, [str(PROJECT_ROOT), os.environ.get("PYTHONPATH")])
        ),
        "PREFECT_HOME": str(folder / ".prefect"),
        "TF_CPP_MIN_LOG_LEVEL": "2",
    }
    env.pop("FOLDFLOW_HOME", None)
    started = time.perf_counter()
    completed = subprocess.run(
        [sys.executable, "tutorial_grid_search.py"],
        cwd=folder,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    wall = time.perf_counter() - started
    if completed.returncode != 0:
        raise RuntimeError(f"{variant} script failed:\n{completed.stderr[-4000:]}")
    shutil.rmtree(folder, ignore_errors=True)
    lines = completed.stdout.splitlines()
    best = next((line for line in lines if line.startswith("Best:")), "")
    return {"wall_seconds": wall, "best": best, "stdout": completed.stdout}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(DEFAULT_DATA))
    parser.add_argument(
        "--epochs", help="comma-separated epoch list instead of the tutorial's 50,100,150"
    )
    args = parser.parse_args(argv)
    data = Path(args.data).resolve()
    epochs = [int(e) for e in args.epochs.split(",")] if args.epochs else None
    results = {}
    for variant in ("foldflow", "sklearn"):
        print(f"running the script with {variant}'s GridSearchCV ...", flush=True)
        results[variant] = run_script(variant, data, epochs)
        print(results[variant]["stdout"], flush=True)
    ratio = results["sklearn"]["wall_seconds"] / results["foldflow"]["wall_seconds"]
    summary = "\n".join(
        [
            f"epochs {epochs or [50, 100, 150]}; machine: {os.cpu_count()} cores; "
            "whole process, start to exit",
            f"foldflow GridSearchCV:      {results['foldflow']['wall_seconds']:8.1f} s  "
            f"{results['foldflow']['best']}",
            f"scikit-learn GridSearchCV:  {results['sklearn']['wall_seconds']:8.1f} s  "
            f"{results['sklearn']['best']}",
            f"speed ratio (scikit-learn / foldflow): {ratio:.1f}x",
        ]
    )
    print(summary)
    out = PROJECT_ROOT / "benchmarks" / "results"
    out.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
    (out / f"{stamp}-tutorial-script.json").write_text(json.dumps(results, indent=2))
    (out / f"{stamp}-tutorial-script.txt").write_text(summary + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
