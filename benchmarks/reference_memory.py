"""Memory over a long reference-engine run: `foldflow grid --engine reference` with 2,000 fits
of a tiny model (1 epoch, Pima, 2 folds), while the RSS of every process of the run (the flow's
process, its fit workers, the embedded Prefect API) is sampled. Prints, per 200 fits, the peak
of their sum and of the largest fit worker, and how many workers were replaced.

    python -m benchmarks.reference_memory [--fits 2000] [--data PATH.csv] [--workers 2]
        [--recycle-after-fits 200] [--recycle-above-memory 1GB]

Keras keeps a few MB of every model it builds in the process that builds it (issue 26: ~5-6.5
MB per fit); the fit workers (tasks.train.fit_workers) are replaced after a bound of fits or
of growth, so the sum stays flat. `--recycle-after-fits 1000000 --recycle-above-memory 1TB`
shows the growth without recycling.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil

PROJECT_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = PROJECT_ROOT.parent / "shared" / "data" / "pima-indians-diabetes.csv"
MODEL = """
import keras


def create_model(meta):
    model = keras.Sequential([
        keras.Input(shape=(meta["n_features_in_"],)),
        keras.layers.Dense(4, activation="relu"),
        keras.layers.Dense(1, activation="sigmoid"),
    ])
    model.compile(loss="binary_crossentropy", optimizer="adam", metrics=["accuracy"])
    return model
"""
FITS_DONE = re.compile(r"fits done: (\d+)/(\d+)")
WORKER_MARK = "tasks.train.fit_worker"


class Sampler:
    """RSS of a process tree every `interval` seconds: the sum, the largest fit worker, and the
    fit workers seen (their pids)."""

    def __init__(self, root: int, interval: float = 0.5) -> None:
        self.root, self.interval = psutil.Process(root), interval
        self.window_total = self.window_worker = 0
        self.workers_seen: set[int] = set()
        self.stopped = threading.Event()
        self.lock = threading.Lock()

    def run(self) -> None:
        while not self.stopped.wait(self.interval):
            try:
                processes = [self.root, *self.root.children(recursive=True)]
            except psutil.Error:
                return
            total = largest_worker = 0
            for process in processes:
                try:
                    rss = process.memory_info().rss
                    is_worker = WORKER_MARK in " ".join(process.cmdline())
                except psutil.Error:
                    continue
                total += rss
                if is_worker:
                    largest_worker = max(largest_worker, rss)
                    self.workers_seen.add(process.pid)
            with self.lock:
                self.window_total = max(self.window_total, total)
                self.window_worker = max(self.window_worker, largest_worker)

    def take_window(self) -> tuple[int, int]:
        with self.lock:
            peaks = (self.window_total, self.window_worker)
            self.window_total = self.window_worker = 0
        return peaks


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fits", type=int, default=2000)
    parser.add_argument("--data", default=str(DEFAULT_DATA))
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--every", type=int, default=200, help="print a line per this many fits")
    parser.add_argument("--recycle-after-fits", default="200")
    parser.add_argument("--recycle-above-memory", default="1GB")
    args = parser.parse_args()
    folds = 2
    folder = Path(tempfile.mkdtemp(prefix="reference-memory-"))
    (folder / "tiny.py").write_text(MODEL)
    # Batch sizes vary, the model function's arguments do not: it is built once before training.
    sizes = list(range(32, 32 + args.fits // folds))
    (folder / "grid.yaml").write_text(f"batch_size: {sizes}\nepochs: [1]\n")
    command = [
        sys.executable, "-m", "flows.cli", "grid", "--engine", "reference",
        "--model", f"{folder / 'tiny.py'}:create_model", "--grid", str(folder / "grid.yaml"),
        "--data", args.data, "--folds", str(folds), "--workers", str(args.workers),
        "--output-dir", str(folder / "runs"), "--fresh", "--no-refit", "--verbose",
        "--recycle-after-fits", args.recycle_after_fits,
        "--recycle-above-memory", args.recycle_above_memory,
    ]  # fmt: skip
    environment = {**os.environ, "FOLDFLOW_CACHE": str(folder / "cache")}
    started = time.monotonic()
    process = subprocess.Popen(
        command, cwd=PROJECT_ROOT, env=environment, stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    sampler = Sampler(process.pid)
    threading.Thread(target=sampler.run, daemon=True).start()
    print(
        f"{args.fits} reference fits, {args.workers} workers, recycle after "
        f"{args.recycle_after_fits} fits or {args.recycle_above_memory}; RSS in MB",
        flush=True,
    )
    print(f"{'fits':>6} {'seconds':>8} {'peak sum':>9} {'peak worker':>12} {'workers':>8}")
    next_line, replaced, tail = args.every, 0, []
    assert process.stdout is not None
    for line in process.stdout:
        tail = [*tail[-20:], line]
        replaced += "fit worker" in line and "replaced" in line
        match = FITS_DONE.search(line)
        if match and int(match.group(1)) >= next_line:
            total, worker = sampler.take_window()
            print(
                f"{match.group(1):>6} {time.monotonic() - started:8.0f} {total / 2**20:9.0f} "
                f"{worker / 2**20:12.0f} {len(sampler.workers_seen):8d}",
                flush=True,
            )
            next_line += args.every
    status = process.wait()
    sampler.stopped.set()
    print(f"exit status {status} after {time.monotonic() - started:.0f} s; "
          f"{replaced} worker replacement line(s) in the log")  # fmt: skip
    if status:
        print("".join(tail))


if __name__ == "__main__":
    main()
