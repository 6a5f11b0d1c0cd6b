"""Download: fetch the dataset the user named into the cache (checksummed, capped, atomic; a
local file is read in place) and convert it to Parquet; a file refused while it is read or
converted is never kept. The parts: sources (policy), http (client), store (cache), csv_reader,
convert.
"""

from __future__ import annotations

from pathlib import Path

from prefect import task
from prefect.tasks import exponential_backoff

from tasks.data.convert import convert_to_parquet, converted_path, source_suffix
from tasks.data.dataset import DatasetHandle
from tasks.data.http import DEFAULT_DEADLINE_SECONDS, FetchLimits, retry_if_transient
from tasks.data.sources import display_name
from tasks.data.store import source_in_cache
from tasks.dataset_spec import DatasetSpec
from tasks.errors import ConfigError

# Four attempts, 0.5 s, 1 s and 2 s apart, for transient failures only; all of them within
# the download's overall deadline (tasks.data.http.current_attempt).
DOWNLOAD_RETRIES = {
    "retries": 3,
    "retry_delay_seconds": exponential_backoff(backoff_factor=0.5),
    "retry_condition_fn": retry_if_transient,
}


@task(name="download_dataset", **DOWNLOAD_RETRIES)
def download_dataset(
    spec: DatasetSpec,
    cache_dir: Path,
    source: str | None = None,
    allow_insecure_http: bool = False,
    max_bytes: int | None = None,
    deadline_seconds: float = DEFAULT_DEADLINE_SECONDS,
) -> DatasetHandle:
    """Fetch the CSV or Parquet file the user named (default: the spec's URL) into the cache,
    verified, capped and atomic, and convert it. `max_bytes` overrides the spec's."""
    cache_dir = Path(cache_dir)
    source = source or spec.url
    if not source:
        raise ConfigError(f"dataset spec {spec.name!r} names no url: give the file with --data")
    converted_path(cache_dir, spec, "")  # an unsafe name is refused before anything is written
    limits = FetchLimits(max_bytes=max_bytes or spec.max_bytes, deadline_seconds=deadline_seconds)
    # Read and converted inside the block: a file refused there is never kept in the cache.
    with source_in_cache(
        source, cache_dir, spec.sha256, source_suffix(spec), limits, allow_insecure_http
    ) as stored:
        return convert_to_parquet(stored, spec, cache_dir, display_name(source))
