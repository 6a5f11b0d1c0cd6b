"""The cache of fetched files (tasks.data.store): the data the user named, every time; a copy
reused only while its checksum or the server's validators say it is current."""

import hashlib
import re

import pandas as pd
import pytest

from tasks.data.fetch import download_dataset
from tasks.errors import ConfigError, DownloadError, FoldflowError
from tests.unit.tasks.data.downloads import (
    SPEC,
    UNCHECKED,
    files_under,
    first_rows,
    rows_of,
    stored_copy,
)


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


@pytest.mark.parametrize("folder", ["sources", "urls"])
def test_a_cache_folder_symlinked_outside_the_cache_is_refused(pima_csv, tmp_path, folder):
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / folder).symlink_to(tmp_path / "elsewhere", target_is_directory=True)
    with pytest.raises(ConfigError, match="outside the cache folder"):
        download_dataset.fn(SPEC, cache, source=str(pima_csv))
    assert not (tmp_path / "elsewhere").exists()


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


def test_a_local_file_beyond_max_bytes_is_refused_naming_it(pima_csv, tmp_path):
    capped = UNCHECKED.model_copy(update={"max_bytes": 1000})
    with pytest.raises(DownloadError, match=re.escape(f"{pima_csv} is larger than max_bytes")):
        download_dataset.fn(capped, tmp_path, source=str(pima_csv))
    assert files_under(tmp_path) == []


# Issue 27.6: sizes are "at most max_bytes", checked before reading; refused files are never kept.


def test_a_local_file_of_exactly_max_bytes_passes_and_one_byte_more_is_refused_before_reading(
    pima_csv, tmp_path
):
    exact = UNCHECKED.model_copy(update={"max_bytes": pima_csv.stat().st_size})
    assert rows_of(download_dataset.fn(exact, tmp_path / "cache", source=str(pima_csv))) == 768

    one_less = exact.model_copy(update={"max_bytes": exact.max_bytes - 1})
    with pytest.raises(DownloadError) as caught:
        download_dataset.fn(one_less, tmp_path / "cache", source=str(pima_csv))
    # The size named is the file's own, from its metadata: known before any byte was read.
    assert f"({exact.max_bytes} bytes, max_bytes {exact.max_bytes - 1})" in str(caught.value)
    assert "refused before reading" in str(caught.value)


def test_a_download_of_exactly_max_bytes_passes_and_one_byte_more_is_refused(
    file_server, pima_csv, tmp_path
):
    size = pima_csv.stat().st_size
    exact = UNCHECKED.model_copy(update={"max_bytes": size})
    handle = download_dataset.fn(exact, tmp_path / "a", source=file_server.url("pima.csv"))
    assert rows_of(handle) == 768
    one_less = exact.model_copy(update={"max_bytes": size - 1})
    with pytest.raises(DownloadError, match="max_bytes"):
        download_dataset.fn(one_less, tmp_path / "b", source=file_server.url("pima.csv"))
    assert files_under(tmp_path / "b") == []


def test_a_local_file_is_read_in_place_never_copied_into_the_cache(pima_csv, tmp_path):
    cache = tmp_path / "cache"
    download_dataset.fn(SPEC, cache, source=str(pima_csv))
    assert [path for path in files_under(cache) if path.startswith("sources")] == []


def test_a_refused_local_file_leaves_nothing_in_the_cache(pima_csv, tmp_path):
    garbage = tmp_path / "garbage.csv"
    garbage.write_bytes(b"not, a csv\n\x01\n1,2,3\n" * 2000)
    with pytest.raises(FoldflowError):
        download_dataset.fn(UNCHECKED, tmp_path / "cache", source=str(garbage))
    assert files_under(tmp_path / "cache") == []


def test_a_downloaded_file_the_reader_refuses_is_not_kept(file_server, pima_csv, tmp_path):
    lines = pima_csv.read_bytes().splitlines(keepends=True)
    lines[41] = lines[41].replace(b",", b",x", 1)
    file_server.files["bad.csv"] = b"".join(lines)
    with pytest.raises(FoldflowError, match="line 42"):
        download_dataset.fn(UNCHECKED, tmp_path, source=file_server.url("bad.csv"))
    assert files_under(tmp_path) == []
    # ... while an accepted download is kept, named by its content.
    download_dataset.fn(SPEC, tmp_path, source=file_server.url("pima.csv"))
    assert stored_copy(tmp_path).read_bytes() == pima_csv.read_bytes()
