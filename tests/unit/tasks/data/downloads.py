"""What the download tests share: the spec of the real Pima CSV, quick retries, and ways to look
into the cache."""

import pandas as pd
from prefect import task
from prefect.cache_policies import NO_CACHE
from prefect.tasks import exponential_backoff

from tasks.config import DEFAULT_DATASET_SPEC
from tasks.data.fetch import DOWNLOAD_RETRIES
from tasks.dataset_spec import DatasetSpec

SPEC = DatasetSpec.from_yaml(DEFAULT_DATASET_SPEC)
UNCHECKED = SPEC.model_copy(update={"sha256": None})
PIMA_COLUMNS = [
    "pregnancies", "glucose", "blood_pressure", "skin_thickness", "insulin", "bmi",
    "diabetes_pedigree", "age", "outcome",
]  # fmt: skip
MEBIBYTE = 1024 * 1024


def retrying(function, attempts=3, backoff_seconds=0.01):
    """`function` as a Prefect task with the download task's retry policy, made quick: retries
    are Prefect's, so a test of them runs a task (on the temporary API, `prefect_task_api`)."""
    options = {
        **DOWNLOAD_RETRIES,
        "retries": attempts - 1,
        "retry_delay_seconds": exponential_backoff(backoff_seconds),
    }
    return task(function, cache_policy=NO_CACHE, persist_result=False, **options)


def files_in(folder):
    return sorted(path.name for path in folder.iterdir()) if folder.exists() else []


def files_under(folder):
    """Every file below `folder` (the cache's subfolders may stay, empty)."""
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if not p.is_dir())


def stored_copy(cache, sha256=SPEC.sha256):
    """Where the cache keeps a fetched CSV: named by its content, not by the dataset."""
    return cache / "sources" / f"{sha256}.csv"


def first_rows(pima_csv, count: int) -> bytes:
    return b"".join(pima_csv.read_bytes().splitlines(keepends=True)[:count])


def rows_of(handle) -> int:
    return len(pd.read_parquet(handle.parquet_path))
