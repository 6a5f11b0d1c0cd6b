"""The data a run names, fetched, read and validated before any flow run starts.

The CLI and the Python API call this in their own process, so a bad cell, label or column is
refused in one line within a second, not after a flow run has started and been recorded
Failed. It calls the very functions the flow's prepare_data calls (the download task's body,
validation's check), so the two cannot disagree; the store keeps what it fetched, so the flow
does not download it again.
"""

from __future__ import annotations

from typing import NamedTuple

from tasks.config import RunSettings
from tasks.data.dataset import DatasetHandle
from tasks.data.fetch import download_dataset
from tasks.data.http import TransientDownloadError
from tasks.data.validate import DataQualityReport, check_dataset
from tasks.dataset_spec import DatasetSpec


class CheckedData(NamedTuple):
    """What the check found: the spec with the file's columns, the converted copy, the report."""

    spec: DatasetSpec
    dataset: DatasetHandle
    report: DataQualityReport


def checked_dataset(run: RunSettings) -> CheckedData | None:
    """Fetch, read and validate the dataset `run` names; a FoldflowError names the problem.

    None when the download failed in a way another attempt may not meet: the flow's download
    task retries it (this check makes one attempt, outside Prefect).
    """
    spec = run.dataset_spec_model()
    try:
        dataset = download_dataset.fn(
            spec,
            run.cache_folder(),
            source=run.source,
            allow_insecure_http=run.allow_insecure_http,
        )
    except TransientDownloadError:
        return None
    resolved, report = check_dataset(dataset, spec, run.n_splits)
    return CheckedData(resolved, dataset, report)
