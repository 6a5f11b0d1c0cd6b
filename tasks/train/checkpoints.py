"""Checkpoints kept by the flow: a fit's state after E epochs, so a longer fit of the same
trajectory (tasks.train.fit_cache.trajectory_key) continues from it instead of from epoch 0.

Workers return states by value with their results; the flow process keeps them in memory for
its runs and on disk under the cache folder (`checkpoints/xx/<key>-e<epochs>.npz`, written
atomically), so the next run continues too. A checkpoint is only ever looked up by its own
trajectory's key, which covers data, folds, model code, params but epochs, seeds, engine and
our training code: one for another dataset, model or seed is never used.

Each file carries the SHA-256 of its arrays (names, dtypes, shapes, bytes), checked when it is
read (tasks.train.verified): an altered or unreadable one is dropped and the fit trains from an
earlier state or from scratch. A file written before checksums is dropped quietly.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from pathlib import Path

import numpy as np

from tasks.files import write_atomically
from tasks.records import Checkpoint, FitJob
from tasks.train.verified import drop_entry

MEMORY_ENTRIES = 4096
# (folder, trajectory key, epochs) -> (state, the flow run that kept it)
_MEMORY: OrderedDict[tuple[str, str, int], tuple[Checkpoint, str]] = OrderedDict()
_MEMORY_LOCK = threading.Lock()
_ENGINE = "__engine__"
_CHECKSUM = "__sha256__"
KIND = "checkpoint cache"


def arrays_checksum(arrays: dict[str, np.ndarray]) -> str:
    """SHA-256 over every array's name, dtype, shape and bytes, in name order."""
    digest = hashlib.sha256()
    for name in sorted(arrays):
        array = np.ascontiguousarray(arrays[name])
        digest.update(f"{name}\0{array.dtype.str}\0{array.shape}\0".encode())
        digest.update(array.tobytes())
    return digest.hexdigest()


class CheckpointStore:
    """Checkpoints under `cache_dir/checkpoints`, with the recent ones also in memory."""

    def __init__(self, cache_dir: Path):
        self.folder = Path(cache_dir) / "checkpoints"

    def _path(self, key: str, epochs: int) -> Path:
        return self.folder / key[:2] / f"{key}-e{epochs}.npz"

    def put(self, key: str, checkpoint: Checkpoint, run: str = "") -> None:
        """Keep one state (memory and disk), noting the run that kept it; an existing file
        for the same epochs is equal."""
        with _MEMORY_LOCK:
            _MEMORY[(str(self.folder), key, checkpoint.epochs)] = (checkpoint, run)
            while len(_MEMORY) > MEMORY_ENTRIES:
                _MEMORY.popitem(last=False)
        arrays = {_ENGINE: np.array(checkpoint.engine), **checkpoint.arrays}
        arrays[_CHECKSUM] = np.array(arrays_checksum(arrays))
        write_atomically(
            self._path(key, checkpoint.epochs),
            lambda temporary: np.savez(temporary, **arrays),  # type: ignore[arg-type]
        )

    def latest_before(self, key: str, epochs: int, run: str | None = None) -> Checkpoint | None:
        """The longest kept state of this trajectory with fewer than `epochs` epochs; with
        `run`, only a state that run kept (a fresh run trusts nothing older than itself, but
        its own halving rungs still continue)."""
        on_disk = set()
        if run is None:
            on_disk = {
                int(path.stem.rpartition("-e")[2])
                for path in self.folder.glob(f"{key[:2]}/{key}-e*.npz")
                if path.stem.rpartition("-e")[2].isdigit()
            }
        with _MEMORY_LOCK:
            in_memory = {
                e
                for (folder, k, e), (_, kept_by) in _MEMORY.items()
                if folder == str(self.folder) and k == key and run in (None, kept_by)
            }
        for done in sorted(on_disk | in_memory, reverse=True):
            if done >= epochs:
                continue
            checkpoint = self._get(key, done, run)
            if checkpoint is not None:
                return checkpoint
        return None

    def _get(self, key: str, epochs: int, run: str | None = None) -> Checkpoint | None:
        with _MEMORY_LOCK:
            if (found := _MEMORY.get((str(self.folder), key, epochs))) is not None:
                if run in (None, found[1]):
                    return found[0]
        if run is not None:
            return None
        path = self._path(key, epochs)
        try:
            with np.load(path, allow_pickle=False) as stored:
                arrays = {name: stored[name] for name in stored.files}
        except FileNotFoundError:
            return None
        except Exception as error:  # noqa: BLE001 (a damaged zip fails in many ways)
            drop_entry(KIND, self.folder, path, f"is unreadable ({type(error).__name__})")
            return None  # train from an earlier state or from scratch
        written = str(arrays.pop(_CHECKSUM, ""))
        if not written:
            path.unlink(missing_ok=True)  # from before checksums: not trusted, quietly
            return None
        if written != arrays_checksum(arrays):
            drop_entry(KIND, self.folder, path, "does not match its checksum")
            return None
        engine = str(arrays.pop(_ENGINE, ""))
        return Checkpoint(engine=engine, epochs=epochs, arrays=arrays) if engine else None


def epochs_to_train(jobs: list[FitJob]) -> int:
    """Epochs the engines train for these jobs (continued ones from their checkpoint on).

    The fast engine trains jobs differing only in epochs as one run (the longest); the
    reference engine trains every job on its own.
    """
    runs: dict[tuple, int] = {}
    for index, job in enumerate(jobs):
        run = (
            (job.model.model_dump_json(exclude={"epochs"}), job.fold, job.start_epoch)
            if job.network is not None
            else (index,)
        )
        runs[run] = max(runs.get(run, 0), job.model.epochs - job.start_epoch)
    return sum(runs.values())
