"""The fit cache: one file per (combination, fold) fit, keyed by everything that shapes it.

Kept per fit, not per task run, so a resume reuses every finished fit however the fits are
grouped (`--workers`, engine plan) and however a grid key was spelled. The flow process reads
and writes it: workers receive what a fit needs by value and return records.

Each entry is `{"sha256": ..., "fit": "<the record's JSON>"}`: the record's checksum is checked
before it is served (tasks.train.verified); an entry that fails it, or is not JSON, is dropped
and the fit retrained. Entries written before checksums are dropped too (retrained once).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Collection
from pathlib import Path

from pydantic import ValidationError

from tasks.data.dataset import DatasetHandle, arrays_digest
from tasks.files import write_text_atomically
from tasks.model.sources import ModelSource
from tasks.records import FitJob, FitResult, Fold
from tasks.train.verified import drop_entry, sha256_hex

KIND = "fit cache"


def fit_key(
    job: FitJob,
    fold: Fold,
    dataset: DatasetHandle,
    source: ModelSource,
    run_seed: int,
    code_version: str,
) -> str:
    """Hash of the data bytes, the fold's rows, the model function's code and name, the
    fit's params, the seed, the engine that trains it (and its network) and our own code."""
    return _hash(_payload(job, fold, dataset, source, run_seed, code_version))


def trajectory_key(
    job: FitJob,
    fold: Fold,
    dataset: DatasetHandle,
    source: ModelSource,
    run_seed: int,
    code_version: str,
) -> str:
    """fit_key without epochs: fits with equal keys are prefixes of one training run, so the
    state one ends with is where a longer one continues (tasks.train.checkpoints)."""
    payload = _payload(job, fold, dataset, source, run_seed, code_version)
    payload["params"] = job.model.trajectory_key()
    return _hash({**payload, "kind": "trajectory"})


def _payload(
    job: FitJob,
    fold: Fold,
    dataset: DatasetHandle,
    source: ModelSource,
    run_seed: int,
    code_version: str,
) -> dict:
    return {
        "data": [dataset.sha256, dataset.feature_columns, dataset.target, dataset.task],
        # How the spec read the file: the arrays themselves, and what they mean.
        "read_as": [
            arrays_digest(dataset),
            dataset.categorical_columns,
            dataset.categories,
            dataset.positive_label,
        ],
        "zero_columns": dataset.impossible_zero_columns,
        "fold": [fold.index, _rows_hash(fold.train), _rows_hash(fold.test)],
        "model_function": [source.sha256, source.function, source.module],
        "params": job.model.model_dump(mode="json"),
        "network": None if job.network is None else job.network.model_dump(mode="json"),
        # The vectorized path (only when it trains the fit: the reference engine's keys stay).
        **({"vectorized": job.vectorized} if job.vectorized else {}),
        "run_seed": run_seed,
        "code": code_version,
    }


def _hash(payload: dict) -> str:
    text = json.dumps(payload, sort_keys=True, default=repr)
    return hashlib.sha256(text.encode()).hexdigest()


def _rows_hash(rows: list[int]) -> str:
    """Hashed once per list object: a run keys thousands of fits over a few folds, and
    joining 100,000 row numbers per fit would cost more than training some of them."""
    remembered = _ROWS_HASHES.get(id(rows))
    if remembered is not None and remembered[0] is rows:
        return remembered[1]
    digest = hashlib.sha256(",".join(map(str, rows)).encode()).hexdigest()[:16]
    if len(_ROWS_HASHES) >= 256:
        _ROWS_HASHES.clear()
    # The list itself is kept beside its hash, so its id cannot be reused by another list.
    _ROWS_HASHES[id(rows)] = (rows, digest)
    return digest


# Folds are frozen records: their row lists are not mutated after the fold is made.
_ROWS_HASHES: dict[int, tuple[list[int], str]] = {}


def _path(cache_dir: Path, key: str) -> Path:
    return cache_dir / "fits" / key[:2] / f"{key}.json"


def load_fit(
    cache_dir: Path, key: str, job: FitJob, required: Collection[str] = ()
) -> FitResult | None:
    """The cached result for this job (as this run names it), or None; an unreadable entry
    counts as missing and is retrained, and so does one that lacks a score this run asks
    for (`required`: a scorer asked for since), never served with a hole."""
    path = _path(cache_dir, key)
    try:
        text = _verified_text(path)
    except OSError:
        return None
    except _Unverified:
        path.unlink(missing_ok=True)  # from before checksums: retrained once, quietly
        return None
    except ValueError as error:
        drop_entry(KIND, cache_dir / "fits", path, str(error))
        return None
    try:
        stored = FitResult.model_validate_json(text)
    except ValidationError:  # intact, but written by a version recording other fields
        return None
    if stored.error is not None:
        return None
    if not stored.train_scores:  # written before fits scored their training rows: retrain
        return None
    if not set(required) <= set(stored.scores):
        return None
    return stored.model_copy(
        update={"combination": job.combination, "params": job.params, "cached": True}
    )


def store_fit(cache_dir: Path, key: str, result: FitResult) -> None:
    """Write one finished fit atomically (failed fits are not cached: they are retried)."""
    if result.error is None:
        text = result.model_dump_json()
        entry = json.dumps({"sha256": sha256_hex(text.encode()), "fit": text})
        write_text_atomically(_path(cache_dir, key), entry)


class _Unverified(Exception):
    """An entry written before entries carried a checksum."""


def _verified_text(path: Path) -> str:
    """The record's JSON text, once its checksum matches (ValueError when it does not)."""
    try:
        entry = json.loads(path.read_bytes())
    except ValueError:
        raise ValueError("is not valid JSON") from None
    if isinstance(entry, dict) and "sha256" not in entry and "fit" not in entry:
        raise _Unverified
    if not isinstance(entry, dict) or not isinstance(entry.get("fit"), str):
        raise ValueError("is not a fit-cache entry")
    if entry.get("sha256") != sha256_hex(entry["fit"].encode()):
        raise ValueError("does not match its checksum")
    return entry["fit"]
