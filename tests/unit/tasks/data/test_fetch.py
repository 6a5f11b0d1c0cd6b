"""The download task end to end: fetched, verified, converted to Parquet, and named in errors
as the user named it."""

import re

import numpy as np
import pandas as pd
import pytest
from pydantic import ValidationError

from tasks.data.fetch import download_dataset
from tasks.data.validate import validate_dataset
from tasks.dataset_spec import DatasetSpec
from tasks.errors import ConfigError, DataError, DownloadError
from tests.unit.tasks.data.downloads import (
    PIMA_COLUMNS,
    SPEC,
    UNCHECKED,
    files_in,
    files_under,
    stored_copy,
)


def test_download_verifies_and_converts_to_named_parquet(file_server, pima_csv, tmp_path):
    handle = download_dataset.fn(SPEC, tmp_path, source=file_server.url("pima.csv"))

    frame = pd.read_parquet(handle.parquet_path)
    assert list(frame.columns) == PIMA_COLUMNS
    assert len(frame) == 768
    assert all(dtype == np.float64 for dtype in frame.dtypes)
    np.testing.assert_array_equal(frame.to_numpy(), np.loadtxt(pima_csv, delimiter=","))
    assert handle.sha256 == SPEC.sha256
    assert handle.feature_columns == PIMA_COLUMNS[:-1] and handle.target == "outcome"
    assert stored_copy(tmp_path).read_bytes() == pima_csv.read_bytes()
    assert file_server.requests == ["/pima.csv"]


def test_checksum_mismatch_is_refused_naming_both_hashes_and_nothing_is_kept(file_server, tmp_path):
    wrong = SPEC.model_copy(update={"sha256": "0" * 64})
    url = file_server.url("pima.csv")
    with pytest.raises(DownloadError) as caught:
        download_dataset.fn(wrong, tmp_path, source=url)
    assert str(caught.value).startswith(f"checksum mismatch for {url}")
    assert f"expected sha256 {'0' * 64}, got {SPEC.sha256}" in str(caught.value)
    assert files_under(tmp_path) == []


def test_an_html_error_page_is_refused_by_the_checksum_or_else_by_the_parser(file_server, tmp_path):
    file_server.mode = "html"
    with pytest.raises(DownloadError, match="checksum mismatch"):
        download_dataset.fn(SPEC, tmp_path / "a", source=file_server.url("pima.csv"))
    unchecked = SPEC.model_copy(update={"sha256": None})
    url = file_server.url("pima.csv")
    with pytest.raises(DataError, match=re.escape(f"{url} looks like an HTML page")):
        download_dataset.fn(unchecked, tmp_path / "b", source=url)


def test_local_paths_and_file_urls_are_accepted_and_still_checksummed(pima_csv, tmp_path):
    handle = download_dataset.fn(SPEC, tmp_path / "cache", source=str(pima_csv))
    assert handle.sha256 == SPEC.sha256
    handle = download_dataset.fn(SPEC, tmp_path / "cache2", source=pima_csv.as_uri())
    assert len(pd.read_parquet(handle.parquet_path)) == 768

    other = tmp_path / "other.csv"
    other.write_bytes(pima_csv.read_bytes() + b"\n")
    with pytest.raises(DownloadError, match=re.escape(f"checksum mismatch for {other}")):
        download_dataset.fn(SPEC, tmp_path / "cache3", source=str(other))
    assert files_under(tmp_path / "cache3") == []


@pytest.mark.parametrize("name", ["../evil", "sub/evil", "..", ".hidden", ""])
def test_a_dataset_name_that_could_steer_the_path_is_refused_by_the_spec(name):
    with pytest.raises(ValidationError, match="not a safe name"):
        DatasetSpec.model_validate({**SPEC.model_dump(), "name": name})


@pytest.mark.parametrize("name", ["../evil", "sub/../../evil"])
def test_the_resolved_cache_path_must_stay_inside_the_cache(pima_csv, tmp_path, name):
    unchecked = SPEC.model_copy(update={"name": name})  # skips validation, as a bug might
    cache = tmp_path / "cache"
    with pytest.raises(ConfigError, match="would write outside the cache folder"):
        download_dataset.fn(unchecked, cache, source=str(pima_csv))
    assert files_in(tmp_path) == []


def test_a_data_error_names_the_users_file_and_line_not_the_cache_copy(pima_csv, tmp_path):
    lines = pima_csv.read_text().splitlines()
    lines[41] = lines[41].replace(",", ",x", 1)
    mine = tmp_path / "mine.csv"
    mine.write_text("\n".join(lines))
    message = re.escape(f"{mine}, line 42, column 'glucose': value 'x")
    with pytest.raises(DataError, match=message):
        download_dataset.fn(UNCHECKED, tmp_path / "cache", source=str(mine))


def test_a_validation_error_names_the_users_file_not_the_cache_copy(pima_csv, tmp_path):
    lines = pima_csv.read_text().splitlines()
    lines[5] = ",".join(lines[5].split(",")[:-1] + ["2"])
    mine = tmp_path / "mine.csv"
    mine.write_text("\n".join(lines))
    handle = download_dataset.fn(UNCHECKED, tmp_path / "cache", source=str(mine))
    message = re.escape(f"{mine}, row 6, column 'outcome': label 2 is a third class")
    with pytest.raises(DataError, match=message):
        validate_dataset.fn(handle, UNCHECKED, n_splits=3)


def test_the_same_file_and_spec_are_read_once_per_process_while_the_copy_is_unchanged(
    pima_csv, tmp_path, monkeypatch
):
    """The CLI and the Python API check the data before the flow, whose download task then
    asks for the very same conversion: the copy written first is reused, not read again."""
    from tasks.data import convert

    reads = []
    read_csv = convert.read_csv

    def counting(*args, **kwargs):
        reads.append(1)
        return read_csv(*args, **kwargs)

    monkeypatch.setattr(convert, "read_csv", counting)
    first = download_dataset.fn(SPEC, tmp_path, source=str(pima_csv))
    again = download_dataset.fn(SPEC, tmp_path, source=str(pima_csv))
    assert again == first and len(reads) == 1
    other_spec = SPEC.model_copy(update={"missing_values": ["?"]})  # another reading
    download_dataset.fn(other_spec, tmp_path, source=str(pima_csv))
    assert len(reads) == 2
    parquet = tmp_path / first.parquet_path.split("/")[-1]
    parquet.unlink()  # the copy is gone: read and written again
    assert download_dataset.fn(SPEC, tmp_path, source=str(pima_csv)) == first
    assert len(reads) == 3 and parquet.is_file()
