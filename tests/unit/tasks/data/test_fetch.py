import hashlib
import re
import time

import numpy as np
import pandas as pd
import pytest
from prefect import task
from prefect.tasks import exponential_backoff
from pydantic import ValidationError

from tasks.config import DEFAULT_DATASET_SPEC, DatasetSpec
from tasks.data.fetch import DOWNLOAD_RETRIES, download_dataset
from tasks.data.http import retry_if_transient
from tasks.data.sources import check_source_allowed
from tasks.data.store import fetch
from tasks.data.validate import validate_dataset
from tasks.errors import ConfigError, DataError, DownloadError

SPEC = DatasetSpec.from_yaml(DEFAULT_DATASET_SPEC)
PIMA_COLUMNS = [
    "pregnancies", "glucose", "blood_pressure", "skin_thickness", "insulin", "bmi",
    "diabetes_pedigree", "age", "outcome",
]  # fmt: skip


def retrying(function, attempts=3, backoff_seconds=0.01):
    """`function` as a Prefect task with the download task's retry policy, made quick: retries
    are Prefect's, so a test of them runs a task (on the temporary API, `prefect_task_api`)."""
    options = {
        **DOWNLOAD_RETRIES,
        "retries": attempts - 1,
        "retry_delay_seconds": exponential_backoff(backoff_seconds),
    }
    return task(function, cache_policy=None, persist_result=False, **options)


def files_in(folder):
    return sorted(path.name for path in folder.iterdir()) if folder.exists() else []


def files_under(folder):
    """Every file below `folder` (the cache's subfolders may stay, empty)."""
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if not p.is_dir())


def stored_copy(cache, sha256=SPEC.sha256):
    """Where the cache keeps a fetched CSV: named by its content, not by the dataset."""
    return cache / "sources" / f"{sha256}.csv"


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


def test_a_cached_file_with_the_right_checksum_is_reused_without_any_request(file_server, tmp_path):
    download_dataset.fn(SPEC, tmp_path, source=file_server.url("pima.csv"))
    download_dataset.fn(SPEC, tmp_path, source=file_server.url("pima.csv"))
    assert file_server.request_count == 1


def test_a_cached_file_with_a_wrong_checksum_is_downloaded_again(file_server, pima_csv, tmp_path):
    download_dataset.fn(SPEC, tmp_path, source=file_server.url("pima.csv"))
    cached = stored_copy(tmp_path)
    cached.write_bytes(pima_csv.read_bytes()[:-1])
    download_dataset.fn(SPEC, tmp_path, source=file_server.url("pima.csv"))
    assert file_server.request_count == 2
    assert cached.read_bytes() == pima_csv.read_bytes()


def test_checksum_mismatch_is_refused_naming_both_hashes_and_nothing_is_kept(file_server, tmp_path):
    wrong = SPEC.model_copy(update={"sha256": "0" * 64})
    url = file_server.url("pima.csv")
    with pytest.raises(DownloadError) as caught:
        download_dataset.fn(wrong, tmp_path, source=url)
    assert str(caught.value).startswith(f"checksum mismatch for {url}")
    assert f"expected sha256 {'0' * 64}, got {SPEC.sha256}" in str(caught.value)
    assert files_under(tmp_path) == []


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


def test_an_unchecked_local_source_is_copied_again_when_it_changes(pima_csv, tmp_path):
    source = tmp_path / "mine.csv"
    lines = pima_csv.read_text().split("\n")
    source.write_text("\n".join(lines[:400]))
    unchecked = SPEC.model_copy(update={"sha256": None})
    first = download_dataset.fn(unchecked, tmp_path / "cache", source=str(source))
    assert len(pd.read_parquet(first.parquet_path)) == 400

    source.write_text("\n".join(lines[:500]))
    second = download_dataset.fn(unchecked, tmp_path / "cache", source=str(source))
    assert len(pd.read_parquet(second.parquet_path)) == 500
    assert second.sha256 != first.sha256


def test_a_missing_local_file_is_named(tmp_path):
    with pytest.raises(DownloadError, match="does-not-exist.csv does not exist"):
        fetch(str(tmp_path / "does-not-exist.csv"), tmp_path / "x.csv", None)


def test_plain_http_to_another_host_is_refused_before_any_network_access(tmp_path):
    # example.invalid cannot resolve: only a ConfigError proves no connection was attempted.
    with pytest.raises(ConfigError, match=r"refusing plain http .*allow_insecure_http"):
        fetch("http://example.invalid/pima.csv", tmp_path / "x.csv", SPEC.sha256)
    assert files_in(tmp_path) == []
    check_source_allowed("http://example.invalid/pima.csv", allow_insecure_http=True)
    for loopback in ("http://localhost:1/x", "http://127.1.2.3/x", "http://[::1]:8/x"):
        check_source_allowed(loopback, allow_insecure_http=False)


@pytest.mark.parametrize("source", ["ftp://example.invalid/x.csv", "file://remote-host/x.csv"])
def test_other_schemes_and_remote_file_urls_are_refused(tmp_path, source):
    with pytest.raises(ConfigError, match=r"unsupported source scheme|remote host"):
        fetch(source, tmp_path / "x.csv", None)


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


@pytest.mark.parametrize("folder", ["sources", "urls"])
def test_a_cache_folder_symlinked_outside_the_cache_is_refused(pima_csv, tmp_path, folder):
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / folder).symlink_to(tmp_path / "elsewhere", target_is_directory=True)
    with pytest.raises(ConfigError, match="outside the cache folder"):
        download_dataset.fn(SPEC, cache, source=str(pima_csv))
    assert not (tmp_path / "elsewhere").exists()


# --- the data the user named, every time (issue 12, point 1) ----------------------------------

UNCHECKED = SPEC.model_copy(update={"sha256": None})


def first_rows(pima_csv, count: int) -> bytes:
    return b"".join(pima_csv.read_bytes().splitlines(keepends=True)[:count])


def rows_of(handle) -> int:
    return len(pd.read_parquet(handle.parquet_path))


def test_a_local_file_the_pinned_checksum_refuses_is_named_even_with_a_warm_cache(
    pima_csv, tmp_path
):
    cache = tmp_path / "cache"
    download_dataset.fn(SPEC, cache, source=str(pima_csv))
    mine = tmp_path / "mine.csv"
    mine.write_bytes(first_rows(pima_csv, 400))
    mine_sha256 = hashlib.sha256(mine.read_bytes()).hexdigest()

    with pytest.raises(DownloadError) as caught:
        download_dataset.fn(SPEC, cache, source=str(mine))
    message = str(caught.value)
    assert message.startswith(f"checksum mismatch for {mine}: ")
    assert f"expected sha256 {SPEC.sha256}, got {mine_sha256}" in message
    assert str(cache) not in message


def test_without_a_pinned_checksum_the_local_file_named_is_read_not_the_cache(pima_csv, tmp_path):
    cache = tmp_path / "cache"
    assert rows_of(download_dataset.fn(SPEC, cache, source=str(pima_csv))) == 768
    mine = tmp_path / "mine.csv"
    mine.write_bytes(first_rows(pima_csv, 400))
    handle = download_dataset.fn(UNCHECKED, cache, source=str(mine))
    assert rows_of(handle) == 400
    assert handle.sha256 == hashlib.sha256(mine.read_bytes()).hexdigest()


def test_another_url_is_requested_even_when_the_cache_holds_the_dataset(
    file_server, pima_csv, tmp_path
):
    file_server.files["short.csv"] = first_rows(pima_csv, 400)
    download_dataset.fn(UNCHECKED, tmp_path, source=file_server.url("pima.csv"))
    handle = download_dataset.fn(UNCHECKED, tmp_path, source=file_server.url("short.csv"))
    assert file_server.requests == ["/pima.csv", "/short.csv"]
    assert rows_of(handle) == 400


def test_a_url_without_validators_or_checksum_is_fetched_again_and_its_new_content_used(
    file_server, pima_csv, tmp_path
):
    url = file_server.url("pima.csv")
    assert rows_of(download_dataset.fn(UNCHECKED, tmp_path, source=url)) == 768
    file_server.files["pima.csv"] = first_rows(pima_csv, 400)
    assert rows_of(download_dataset.fn(UNCHECKED, tmp_path, source=url)) == 400
    assert file_server.request_count == 2


def test_a_url_with_an_etag_is_revalidated_and_reused_only_while_unchanged(
    file_server, pima_csv, tmp_path
):
    file_server.send_validators = True
    url = file_server.url("pima.csv")
    first = download_dataset.fn(UNCHECKED, tmp_path, source=url)
    again = download_dataset.fn(UNCHECKED, tmp_path, source=url)
    assert file_server.request_count == 2
    assert file_server.request_headers[1]["If-None-Match"] == f'"{SPEC.sha256}"'
    assert again.sha256 == first.sha256 == SPEC.sha256

    file_server.files["pima.csv"] = first_rows(pima_csv, 400)
    changed = download_dataset.fn(UNCHECKED, tmp_path, source=url)
    assert file_server.request_count == 3 and rows_of(changed) == 400


def test_a_pinned_checksum_reuses_only_the_copy_fetched_from_that_same_url(
    file_server, pima_csv, tmp_path
):
    file_server.files["mirror.csv"] = pima_csv.read_bytes()
    download_dataset.fn(SPEC, tmp_path, source=file_server.url("pima.csv"))
    download_dataset.fn(SPEC, tmp_path, source=file_server.url("pima.csv"))
    download_dataset.fn(SPEC, tmp_path, source=file_server.url("mirror.csv"))
    assert file_server.requests == ["/pima.csv", "/mirror.csv"]


def test_a_data_error_names_the_users_file_and_line_not_the_cache_copy(pima_csv, tmp_path):
    lines = pima_csv.read_text().splitlines()
    lines[41] = lines[41].replace(",", ",x", 1)
    mine = tmp_path / "mine.csv"
    mine.write_text("\n".join(lines))
    message = re.escape(f"{mine}, line 42, column 'glucose': value 'x")
    with pytest.raises(DataError, match=message):
        download_dataset.fn(UNCHECKED, tmp_path / "cache", source=str(mine))


# --- size cap, overall deadline, content encodings (issue 12, point 6) ------------------------

MEBIBYTE = 1024 * 1024


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


def test_a_local_file_beyond_max_bytes_is_refused_naming_it(pima_csv, tmp_path):
    capped = UNCHECKED.model_copy(update={"max_bytes": 1000})
    with pytest.raises(DownloadError, match=re.escape(f"{pima_csv} is larger than max_bytes")):
        download_dataset.fn(capped, tmp_path, source=str(pima_csv))
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


def test_a_validation_error_names_the_users_file_not_the_cache_copy(pima_csv, tmp_path):
    lines = pima_csv.read_text().splitlines()
    lines[5] = ",".join(lines[5].split(",")[:-1] + ["2"])
    mine = tmp_path / "mine.csv"
    mine.write_text("\n".join(lines))
    handle = download_dataset.fn(UNCHECKED, tmp_path / "cache", source=str(mine))
    message = re.escape(f"{mine}, row 6, column 'outcome': label 2 is not 0 or 1")
    with pytest.raises(DataError, match=message):
        validate_dataset.fn(handle, UNCHECKED, n_splits=3)
