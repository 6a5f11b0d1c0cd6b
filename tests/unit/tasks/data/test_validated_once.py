"""The CLI and the Python API check the data before the flow starts (tasks.data.preflight);
the flow's validate_dataset then asks for the same check of the same converted copy: it is
read and validated once per process, and the flow still publishes its quality table."""

import pandas as pd
import pytest

from tasks.data import validate
from tasks.data.fetch import download_dataset
from tasks.data.validate import check_dataset
from tasks.errors import DataError
from tests.unit.tasks.data.downloads import SPEC


@pytest.fixture
def frames_read(monkeypatch):
    """How many times a converted copy was read and validated."""
    calls: list[int] = []
    real = validate.validate_frame

    def counted(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(validate, "validate_frame", counted)
    return calls


def test_the_same_copy_is_validated_once(pima_csv, tmp_path, frames_read):
    handle = download_dataset.fn(SPEC, tmp_path, source=str(pima_csv))
    first_spec, first = check_dataset(handle, SPEC, 5)
    again = download_dataset.fn(SPEC, tmp_path, source=str(pima_csv))  # the flow's download
    spec, report = check_dataset(again, SPEC, 5)
    assert len(frames_read) == 1
    assert (spec, report) == (first_spec, first)
    report.class_counts.clear()  # a caller's change does not reach the next caller
    assert check_dataset(handle, SPEC, 5)[1] == first
    # other folds, another spec, or a changed file: checked again
    check_dataset(handle, SPEC, 3)
    assert len(frames_read) == 2
    renamed = SPEC.model_copy(update={"name": "pima-again"})
    check_dataset(handle, renamed, 5)
    assert len(frames_read) == 3
    frame = pd.read_parquet(handle.parquet_path)
    frame.to_parquet(handle.parquet_path, index=False)  # rewritten: another file state
    check_dataset(handle, SPEC, 5)
    assert len(frames_read) == 4


def test_a_refusal_is_raised_every_time(pima_csv, tmp_path, frames_read):
    handle = download_dataset.fn(SPEC, tmp_path, source=str(pima_csv))
    for _ in range(2):
        with pytest.raises(DataError, match="fewer than the 1000 folds"):
            check_dataset(handle, SPEC, 1000)
    assert len(frames_read) == 2


def test_the_flow_task_still_publishes_the_quality_table(pima_csv, tmp_path, monkeypatch):
    published = []
    monkeypatch.setattr(validate, "create_table_artifact", lambda **kw: published.append(kw))
    handle = download_dataset.fn(SPEC, tmp_path, source=str(pima_csv))
    check_dataset(handle, SPEC, 5)  # the check before the flow
    report = validate.validate_dataset.fn(handle, SPEC, 5)
    assert report.n_rows == 768
    assert [p["key"] for p in published] == [validate.quality_artifact_key(SPEC.name)]
