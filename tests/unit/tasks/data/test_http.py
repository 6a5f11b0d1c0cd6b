"""The download client (tasks.data.http) against a real server on 127.0.0.1: statuses, retries
(Prefect's, transient failures only), redirects, the size cap, the overall deadline, encodings."""

import re
import time

import pytest

from tasks.data.fetch import download_dataset
from tasks.data.http import retry_if_transient
from tasks.data.store import fetch
from tasks.errors import ConfigError, DownloadError
from tests.unit.tasks.data.downloads import (
    MEBIBYTE,
    SPEC,
    UNCHECKED,
    files_in,
    files_under,
    retrying,
    rows_of,
    stored_copy,
)


@pytest.mark.usefixtures("prefect_task_api")
def test_http_404_fails_at_once_naming_the_url_and_status(file_server, tmp_path):
    file_server.mode = "404"
    with pytest.raises(DownloadError, match=r"download of http://127\.0\.0\.1:\d+/pima\.csv .*404"):
        retrying(fetch)(file_server.url("pima.csv"), tmp_path / "x.csv", SPEC.sha256)
    assert file_server.request_count == 1
    assert files_in(tmp_path) == []


@pytest.mark.usefixtures("prefect_task_api")
@pytest.mark.parametrize("mode", ["truncated", "500"])
def test_truncated_bodies_and_server_errors_are_retried_then_refused_leaving_nothing(
    file_server, tmp_path, mode
):
    file_server.mode = mode
    with pytest.raises(DownloadError, match="pima.csv failed after 3 attempts"):
        retrying(fetch)(file_server.url("pima.csv"), tmp_path / "x.csv", SPEC.sha256)
    assert file_server.request_count == 3
    assert files_in(tmp_path) == []


@pytest.mark.usefixtures("prefect_task_api")
def test_the_download_task_retries_transient_failures_only_with_backoff():
    assert download_dataset.retries == 3
    assert download_dataset.retry_delay_seconds == [0.5, 1.0, 2.0]
    assert download_dataset.retry_condition_fn is retry_if_transient


@pytest.mark.usefixtures("prefect_task_api")
def test_a_503_then_200_through_the_download_task_succeeds(file_server, pima_csv, tmp_path):
    file_server.mode = "500"
    file_server.misbehave_times = 1
    quick = download_dataset.with_options(retry_delay_seconds=0.01, cache_policy=None)
    handle = quick(SPEC, tmp_path, source=file_server.url("pima.csv"))
    assert handle.sha256 == SPEC.sha256
    assert file_server.request_count == 2
    assert stored_copy(tmp_path).read_bytes() == pima_csv.read_bytes()


@pytest.mark.usefixtures("prefect_task_api")
def test_the_overall_deadline_counts_across_retries(down_url, tmp_path):
    started = time.monotonic()
    with pytest.raises(
        DownloadError,
        match=re.escape(
            f"download of {down_url} failed after 1 attempt, and the overall deadline of 0.3 s "
            "leaves no time for another"
        ),
    ):
        retrying(fetch, attempts=3, backoff_seconds=0.5)(
            down_url, tmp_path / "x.csv", SPEC.sha256, deadline_seconds=0.3
        )
    assert time.monotonic() - started < 0.5  # no retry was waited for
    assert files_in(tmp_path) == []


@pytest.mark.usefixtures("prefect_task_api")
@pytest.mark.parametrize("mode", ["truncated", "500", "stall"])
def test_a_transient_failure_is_retried_until_the_download_succeeds(
    file_server, pima_csv, tmp_path, mode
):
    file_server.mode = mode
    file_server.misbehave_times = 2
    destination = tmp_path / "x.csv"
    retrying(fetch)(file_server.url("pima.csv"), destination, SPEC.sha256, timeout=0.3)
    assert file_server.request_count == 3
    assert destination.read_bytes() == pima_csv.read_bytes()


@pytest.mark.usefixtures("prefect_task_api")
def test_a_stalled_server_times_out(file_server, tmp_path):
    file_server.mode = "stall"
    with pytest.raises(DownloadError, match="after 2 attempts: .*timed out"):
        retrying(fetch, attempts=2)(
            file_server.url("pima.csv"), tmp_path / "x.csv", SPEC.sha256, timeout=0.2
        )
    assert file_server.request_count == 2


@pytest.mark.usefixtures("prefect_task_api")
def test_a_server_that_is_down_is_retried_with_backoff_then_named(down_url, tmp_path):
    started = time.monotonic()
    with pytest.raises(
        DownloadError, match=re.escape(f"download of {down_url} failed after 3 attempts")
    ):
        retrying(fetch, attempts=3, backoff_seconds=0.05)(down_url, tmp_path / "x.csv", SPEC.sha256)
    assert time.monotonic() - started >= 0.05 + 0.1  # waited 0.05 s, then twice that
    assert files_in(tmp_path) == []


@pytest.mark.usefixtures("prefect_task_api")
def test_a_redirect_cannot_downgrade_to_plain_http_elsewhere(file_server, tmp_path):
    file_server.mode = "redirect"
    file_server.redirect_to = "http://example.invalid/pima.csv"
    with pytest.raises(ConfigError, match="redirected: refusing plain http"):
        retrying(fetch)(file_server.url("pima.csv"), tmp_path / "x.csv", SPEC.sha256)
    assert file_server.request_count == 1
    assert files_in(tmp_path) == []


def test_a_redirect_on_this_machine_is_followed(file_server, pima_csv, tmp_path):
    file_server.mode = "redirect"
    file_server.misbehave_times = 1
    file_server.redirect_to = file_server.url("pima.csv")
    fetch(file_server.url("old-name.csv"), tmp_path / "x.csv", SPEC.sha256)
    assert file_server.requests == ["/old-name.csv", "/pima.csv"]
    assert (tmp_path / "x.csv").read_bytes() == pima_csv.read_bytes()


def test_an_endless_body_beyond_max_bytes_is_refused_at_once_leaving_no_file(file_server, tmp_path):
    file_server.mode = "endless"
    capped = UNCHECKED.model_copy(update={"max_bytes": MEBIBYTE})
    with pytest.raises(DownloadError, match=r"larger than max_bytes \(1048576 bytes\)"):
        download_dataset.fn(capped, tmp_path, source=file_server.url("pima.csv"))
    assert file_server.request_count == 1  # not retried: it would only be refused again
    assert files_under(tmp_path) == []


def test_an_announced_length_beyond_max_bytes_is_refused_before_reading(file_server, tmp_path):
    capped = UNCHECKED.model_copy(update={"max_bytes": 1000})
    with pytest.raises(DownloadError, match=r"announces 23\d{3} bytes, more than max_bytes"):
        download_dataset.fn(capped, tmp_path, source=file_server.url("pima.csv"))
    assert files_under(tmp_path) == []


def test_a_dripping_body_is_cut_off_by_the_overall_deadline(file_server, tmp_path):
    file_server.mode = "drip"  # one byte every 0.1 s: each read is quick, the whole is not
    started = time.monotonic()
    with pytest.raises(DownloadError, match=r"did not finish within 0\.5 s"):
        download_dataset.fn(
            SPEC, tmp_path, source=file_server.url("pima.csv"), deadline_seconds=0.5
        )
    assert time.monotonic() - started < 3
    assert files_under(tmp_path) == []


def test_a_gzip_encoded_body_is_decoded_and_verified(file_server, pima_csv, tmp_path):
    file_server.mode = "gzip"
    handle = download_dataset.fn(SPEC, tmp_path, source=file_server.url("pima.csv"))
    assert handle.sha256 == SPEC.sha256 and rows_of(handle) == 768


def test_a_gzip_body_that_decodes_beyond_max_bytes_is_refused(file_server, tmp_path):
    file_server.files["zeros.csv"] = b"0" * (5 * MEBIBYTE)  # 5 MB -> about 5 kB of gzip
    file_server.mode = "gzip"
    capped = UNCHECKED.model_copy(update={"max_bytes": MEBIBYTE})
    with pytest.raises(DownloadError, match="larger than max_bytes"):
        download_dataset.fn(capped, tmp_path, source=file_server.url("zeros.csv"))
    assert files_under(tmp_path) == []


def test_an_encoding_that_cannot_be_decoded_is_refused_by_name(file_server, tmp_path):
    file_server.mode = "br"
    with pytest.raises(DownloadError, match="Content-Encoding 'br'"):
        download_dataset.fn(UNCHECKED, tmp_path, source=file_server.url("pima.csv"))
    assert file_server.request_count == 1
    assert files_under(tmp_path) == []
