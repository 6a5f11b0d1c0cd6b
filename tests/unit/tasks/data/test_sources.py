"""Where a dataset may come from (tasks.data.sources): https, plain http to this machine only,
local files; refused before any network access."""

import pytest

from tasks.data.sources import check_source_allowed
from tasks.data.store import fetch
from tasks.errors import ConfigError, DownloadError
from tests.unit.tasks.data.downloads import (
    SPEC,
    files_in,
)


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
