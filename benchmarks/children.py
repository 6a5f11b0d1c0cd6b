"""What the side-by-side benchmarks share: each measurement in a fresh child process (its
imports, start-up and peak RSS its own), and results written under benchmarks/results/."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

PROJECT_ROOT = Path(__file__).resolve().parents[1]
RESULTS = PROJECT_ROOT / "benchmarks" / "results"


def run_child(module: str, *arguments: str) -> dict[str, Any]:
    """`python -m module *arguments` from the project root; its last stdout line is a JSON
    object, returned with `process_seconds` (the child's whole wall time) added."""
    command = [sys.executable, "-m", module, *arguments]
    environment = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    started = time.perf_counter()
    completed = subprocess.run(
        command, cwd=PROJECT_ROOT, env=environment, capture_output=True, text=True, check=False
    )
    if completed.returncode != 0:
        raise RuntimeError(f"{' '.join(arguments)} failed:\n{completed.stderr[-4000:]}")
    result = json.loads(completed.stdout.strip().splitlines()[-1])
    result["process_seconds"] = time.perf_counter() - started
    return result


def write_results(kind: str, payload: Any, text: str) -> Path:
    """<stamp>-<kind>.json (the payload) and .txt (the printed report); returns the JSON's path."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
    path = RESULTS / f"{stamp}-{kind}.json"
    path.write_text(json.dumps(payload, indent=2, default=str))
    path.with_suffix(".txt").write_text(text + "\n")
    return path
