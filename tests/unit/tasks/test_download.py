import socket

import numpy as np
import pandas as pd
import pytest

from tasks.config import DEFAULT_DATASET_SPEC, DatasetSpec
from tasks.download import download_dataset, fetch
from tasks.errors import ConfigError, DownloadError
from tests.unit.conftest import SHARED_CSV

SPEC = DatasetSpec.from_yaml(DEFAULT_DATASET_SPEC)


def files_in(folder):
    return sorted(path.name for path in folder.iterdir()) if folder.exists() else []


def test_download_verifies_converts_and_names_the_columns(dataset_server, tmp_path):
    handle = download_dataset.fn(SPEC, tmp_path, source=dataset_server.url("pima.csv"))
    frame = pd.read_parquet(handle.parquet_path)
    assert list(frame.columns) == [
        "pregnancies", "glucose", "blood_pressure", "skin_thickness", "insulin", "bmi",
        "diabetes_pedigree", "age", "outcome",
    ]  # fmt: skip
    np.testing.assert_array_equal(frame.to_numpy(), np.loadtxt(SHARED_CSV, delimiter=","))
    assert handle.sha256 == SPEC.sha256
    assert (tmp_path / "pima-indians-diabetes.csv").read_bytes() == SHARED_CSV.read_bytes()


def test_a_cached_file_with_the_right_checksum_is_not_downloaded_again(dataset_server, tmp_path):
    download_dataset.fn(SPEC, tmp_path, source=dataset_server.url("pima.csv"))
    download_dataset.fn(SPEC, tmp_path, source=dataset_server.url("pima.csv"))
    assert dataset_server.requests == ["/pima.csv"]


def test_without_a_checksum_the_cache_is_trusted_only_after_a_complete_download(
    dataset_server, tmp_path
):
    destination = tmp_path / "x.csv"
    fetch(dataset_server.url("pima.csv"), destination, sha256=None)
    fetch(dataset_server.url("pima.csv"), destination, sha256=None)
    assert len(dataset_server.requests) == 1
    destination.write_bytes(b"tampered")
    fetch(dataset_server.url("pima.csv"), destination, sha256=None)
    assert len(dataset_server.requests) == 2
    assert destination.read_bytes() == SHARED_CSV.read_bytes()


def test_checksum_mismatch_is_refused_and_nothing_is_kept(dataset_server, tmp_path):
    wrong = SPEC.model_copy(update={"sha256": "0" * 64})
    with pytest.raises(DownloadError, match="checksum mismatch .* expected sha256 0000"):
        download_dataset.fn(wrong, tmp_path, source=dataset_server.url("pima.csv"))
    assert files_in(tmp_path) == []


def test_http_404_fails_at_once_naming_the_url(dataset_server, tmp_path):
    dataset_server.mode = "404"
    with pytest.raises(DownloadError, match=r"pima.csv failed: HTTP 404"):
        fetch(dataset_server.url("pima.csv"), tmp_path / "x.csv", SPEC.sha256)
    assert len(dataset_server.requests) == 1
    assert files_in(tmp_path) == []


def test_a_truncated_body_is_retried_then_refused_leaving_nothing(dataset_server, tmp_path):
    dataset_server.mode = "truncated"
    with pytest.raises(DownloadError, match="after 3 attempts"):
        fetch(
            dataset_server.url("pima.csv"), tmp_path / "x.csv", SPEC.sha256,
            attempts=3, backoff_seconds=0.01,
        )  # fmt: skip
    assert len(dataset_server.requests) == 3
    assert files_in(tmp_path) == []


def test_a_server_that_is_down_is_retried_then_named_in_the_error(tmp_path):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    url = f"http://127.0.0.1:{port}/pima.csv"
    with pytest.raises(DownloadError, match=rf"download of {url} failed after 2 attempts"):
        fetch(url, tmp_path / "x.csv", SPEC.sha256, attempts=2, backoff_seconds=0.01)
    assert files_in(tmp_path) == []


def test_an_html_error_page_fails_the_checksum_or_the_parser(dataset_server, tmp_path):
    dataset_server.mode = "html"
    with pytest.raises(DownloadError, match="checksum mismatch"):
        download_dataset.fn(SPEC, tmp_path, source=dataset_server.url("pima.csv"))


def test_a_local_path_is_accepted_and_still_checksummed(tmp_path):
    handle = download_dataset.fn(SPEC, tmp_path / "cache", source=str(SHARED_CSV))
    assert handle.sha256 == SPEC.sha256
    other = tmp_path / "other.csv"
    other.write_text(SHARED_CSV.read_text() + "\n")
    with pytest.raises(DownloadError, match="checksum mismatch"):
        download_dataset.fn(SPEC, tmp_path / "cache2", source=str(other))


def test_plain_http_to_another_host_is_refused_before_any_request(tmp_path):
    with pytest.raises(ConfigError, match="refusing plain http .*--allow-insecure-http"):
        fetch("http://example.invalid/pima.csv", tmp_path / "x.csv", SPEC.sha256)
    assert files_in(tmp_path) == []


def test_a_missing_local_file_is_named(tmp_path):
    with pytest.raises(DownloadError, match="does-not-exist.csv does not exist"):
        fetch(str(tmp_path / "does-not-exist.csv"), tmp_path / "x.csv", None)
