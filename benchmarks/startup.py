"""Whole-command wall time, process start to exit: `foldflow cv` and `foldflow grid` (the
tutorial's CV and grid, every fit retrained) and `foldflow --help`, as a user runs them.

    python -m benchmarks.startup [--data PATH.csv] [--repeat 3] [--code OTHER_CHECKOUT]

`--code` runs another checkout's foldflow (say, the commit before a start-up change) on the
same Python, for a before/after on one machine state.

Each run is a fresh process in its own output folder, on one Prefect home whose database
already exists (the first run, not counted, creates it). `cv` and `grid` run twice over: as a
user's second run (the compiled-program cache, tasks.train.xla_cache, in a folder of the
benchmark's own that uncounted first runs fill) and as a user's very first run (an empty
cache folder of its own each time: every program compiled, then stored). The plain scripts'
whole-process times are `benchmarks.run`'s `process_seconds` (each measurement runs in its own
process).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = PROJECT_ROOT.parent / "shared" / "data" / "pima-indians-diabetes.csv"


EMPTY_CACHE = {"FOLDFLOW_XLA_CACHE": "<a new empty folder>"}  # made for each run


def commands(data: str) -> dict[str, tuple[list[str], dict[str, str]]]:
    """name -> (arguments, environment it adds)."""
    cv, grid = ["cv", "--data", data, "--fresh"], ["grid", "--data", data, "--fresh"]
    return {
        "foldflow --help": (["--help"], {}),
        "foldflow cv": (cv, {}),
        "foldflow grid": (grid, {}),
        "cv, first run": (cv, EMPTY_CACHE),
        "grid, first run": (grid, EMPTY_CACHE),
    }


def run_once(
    arguments: list[str],
    workdir: Path,
    prefect_home: Path,
    code: Path,
    added: dict[str, str] | None = None,
) -> float:
    """One `foldflow ...` process, timed from start to exit."""
    environment = {
        **os.environ,
        "PYTHONPATH": str(code),
        "PREFECT_HOME": str(prefect_home),
        "FOLDFLOW_HOME": str(workdir),
        "TF_CPP_MIN_LOG_LEVEL": "2",
        "FOLDFLOW_XLA_CACHE": str(prefect_home.parent / "xla-cache"),
        **(added or {}),
    }
    environment.pop("PREFECT_API_URL", None)
    started = time.perf_counter()
    completed = subprocess.run(
        [sys.executable, "-m", "foldflow.cli", *arguments],
        cwd=workdir,
        env=environment,
        capture_output=True,
        text=True,
        check=False,
    )
    wall = time.perf_counter() - started
    if completed.returncode != 0:
        raise RuntimeError(f"foldflow {' '.join(arguments)} failed:\n{completed.stderr[-4000:]}")
    return wall


def measure(data: str, repeat: int, code: Path = PROJECT_ROOT) -> dict[str, list[float]]:
    root = Path(tempfile.mkdtemp(prefix="foldflow-startup-"))
    prefect_home = root / "prefect-home"

    def once(arguments: list[str], added: dict[str, str]) -> float:
        workdir = Path(tempfile.mkdtemp(dir=root))
        if added is EMPTY_CACHE:
            added = {"FOLDFLOW_XLA_CACHE": str(workdir / "xla-cache")}
        return run_once(arguments, workdir, prefect_home, code, added)

    # Not counted: the first creates the Prefect database, both fill the XLA cache.
    once(*commands(data)["foldflow cv"])
    once(*commands(data)["foldflow grid"])
    walls: dict[str, list[float]] = {name: [] for name in commands(data)}
    for _ in range(repeat):  # interleaved, so a load change hits every command alike
        for name, (arguments, added) in commands(data).items():
            walls[name].append(once(arguments, added))
    return walls


def report(walls: dict[str, list[float]]) -> str:
    lines = [
        f"whole process, start to exit; {os.cpu_count()} cores; load average "
        f"{os.getloadavg()[0]:.1f} at the end",
        f"{'command':20} {'runs':>4} {'min s':>7} {'median s':>9} {'max s':>7}",
    ]
    for name, values in walls.items():
        lines.append(
            f"{name:20} {len(values):4} {min(values):7.1f} {statistics.median(values):9.1f} "
            f"{max(values):7.1f}"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(DEFAULT_DATA))
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--code", type=Path, default=PROJECT_ROOT, help="checkout to run")
    args = parser.parse_args(argv)
    walls = measure(str(Path(args.data).resolve()), args.repeat, args.code.resolve())
    text = report(walls)
    print(text)
    out = PROJECT_ROOT / "benchmarks" / "results"
    out.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
    (out / f"{stamp}-startup.json").write_text(json.dumps(walls, indent=2))
    (out / f"{stamp}-startup.txt").write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
