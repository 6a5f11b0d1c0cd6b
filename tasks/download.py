"""Download: fetch a dataset into the cache (checksummed, atomic) and convert it to Parquet."""

from __future__ import annotations

import hashlib
import ipaddress
import os
import shutil
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from urllib.parse import urlparse

import pandas as pd
from prefect import task

from tasks.config import DatasetSpec
from tasks.dataset import DatasetHandle
from tasks.errors import ConfigError, DataError, DownloadError
from tasks.files import write_atomically

CHUNK_BYTES = 1 << 16


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for chunk in iter(lambda: stream.read(CHUNK_BYTES), b""):
            digest.update(chunk)
    return digest.hexdigest()


def is_loopback(host: str | None) -> bool:
    if not host:
        return False
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_source_allowed(source: str, allow_insecure_http: bool) -> None:
    """https anywhere; plain http only to this machine, unless the user says otherwise."""
    parsed = urlparse(source)
    if parsed.scheme == "http" and not allow_insecure_http and not is_loopback(parsed.hostname):
        raise ConfigError(
            f"refusing plain http download from {source}: use https, or pass "
            "--allow-insecure-http if you trust the network"
        )
    if parsed.scheme not in ("http", "https", "file", ""):
        raise ConfigError(f"unsupported source scheme {parsed.scheme!r} in {source}")


def _cached_copy_is_trusted(destination: Path, sha256: str | None) -> bool:
    if not destination.exists():
        return False
    actual = sha256_of(destination)
    if sha256:
        return actual == sha256
    sidecar = destination.with_name(destination.name + ".sha256")
    return sidecar.exists() and sidecar.read_text().strip() == actual


def _stream_to(url: str, temporary: Path, timeout: float) -> None:
    request = urllib.request.Request(url, headers={"User-Agent": "foldflow"})
    with urllib.request.urlopen(request, timeout=timeout) as response, open(temporary, "wb") as out:
        expected = response.headers.get("Content-Length")
        received = 0
        for chunk in iter(lambda: response.read(CHUNK_BYTES), b""):
            out.write(chunk)
            received += len(chunk)
        if expected is not None and received != int(expected):
            raise ConnectionError(f"truncated body: {received} of {expected} bytes")


def fetch(
    source: str,
    destination: Path,
    sha256: str | None,
    timeout: float = 30,
    attempts: int = 4,
    backoff_seconds: float = 0.5,
    allow_insecure_http: bool = False,
) -> Path:
    """Fetch `source` (URL or local path) to `destination`; reuse a trusted cached copy.

    Network errors, 5xx answers and truncated bodies are retried with exponential backoff;
    4xx answers are not. Nothing is left at `destination` unless it is complete and verified.
    """
    check_source_allowed(source, allow_insecure_http)
    if _cached_copy_is_trusted(destination, sha256):
        return destination
    destination.parent.mkdir(parents=True, exist_ok=True)
    parsed = urlparse(source)
    handle, temporary_name = tempfile.mkstemp(dir=destination.parent, suffix=".part")
    os.close(handle)
    temporary = Path(temporary_name)
    try:
        if parsed.scheme in ("", "file"):
            local = Path(parsed.path if parsed.scheme == "file" else source)
            if not local.is_file():
                raise DownloadError(f"dataset source {local} does not exist or is not a file")
            shutil.copyfile(local, temporary)
        else:
            _download_with_retries(source, temporary, timeout, attempts, backoff_seconds)
        actual = sha256_of(temporary)
        if sha256 and actual != sha256:
            raise DownloadError(
                f"checksum mismatch for {source}: expected sha256 {sha256}, got {actual}; "
                "the file was not kept"
            )
        with open(temporary, "rb") as written:
            os.fsync(written.fileno())
        os.replace(temporary, destination)
        write_atomically(
            destination.with_name(destination.name + ".sha256"),
            lambda path: path.write_text(actual + "\n"),
        )
        return destination
    finally:
        temporary.unlink(missing_ok=True)


def _download_with_retries(
    url: str, temporary: Path, timeout: float, attempts: int, backoff_seconds: float
) -> None:
    last_error: Exception | None = None
    for attempt in range(attempts):
        try:
            _stream_to(url, temporary, timeout)
            return
        except urllib.error.HTTPError as error:
            if 400 <= error.code < 500:
                raise DownloadError(f"download of {url} failed: HTTP {error.code}") from None
            last_error = error
        except (urllib.error.URLError, ConnectionError, TimeoutError, OSError) as error:
            last_error = error
        if attempt < attempts - 1:
            time.sleep(backoff_seconds * 2**attempt)
    reason = getattr(last_error, "reason", last_error)
    raise DownloadError(f"download of {url} failed after {attempts} attempts: {reason}")


def parse_csv(path: Path, spec: DatasetSpec) -> pd.DataFrame:
    """Strict CSV reading: every problem names the file, line, column and value."""
    raw = path.read_bytes()
    if not raw.strip():
        raise DataError(f"{path} is empty")
    text = raw.decode("utf-8", errors="replace")
    head = text.lstrip()[:200].lower()
    if head.startswith(("<!doctype", "<html", "<?xml", "<head", "<body")):
        raise DataError(f"{path} looks like an HTML page, not CSV (an error page saved as data?)")
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    while lines and not lines[-1].strip():
        lines.pop()
    rows: list[list[float]] = []
    for line_number, line in enumerate(lines, start=1):
        if not line.strip():
            raise DataError(f"{path}, line {line_number}: blank line inside the data")
        cells = line.split(",")
        if len(cells) != len(spec.columns):
            raise DataError(
                f"{path}, line {line_number}: expected {len(spec.columns)} columns, "
                f"found {len(cells)}"
            )
        values = []
        for column, cell in zip(spec.columns, cells, strict=True):
            try:
                values.append(float(cell))
            except ValueError:
                if line_number == 1:
                    raise DataError(
                        f"{path}, line 1 looks like a header ({line.strip()[:80]!r}); "
                        "the dataset spec expects no header row, only numbers"
                    ) from None
                raise DataError(
                    f"{path}, line {line_number}, column {column!r}: "
                    f"value {cell.strip()!r} is not a number"
                ) from None
        rows.append(values)
    return pd.DataFrame(rows, columns=spec.columns, dtype="float64")


def convert_to_parquet(csv_path: Path, spec: DatasetSpec, cache_dir: Path) -> DatasetHandle:
    """Named, typed columns in Parquet, written atomically beside the CSV."""
    frame = parse_csv(csv_path, spec)
    parquet_path = cache_dir / f"{spec.name}.parquet"
    write_atomically(parquet_path, lambda path: frame.to_parquet(path, index=False))
    return DatasetHandle(
        name=spec.name,
        parquet_path=str(parquet_path),
        sha256=sha256_of(csv_path),
        feature_columns=spec.feature_columns,
        target=spec.target,
    )


def cache_path(cache_dir: Path, spec: DatasetSpec, suffix: str) -> Path:
    """The cache file for a dataset; its name was checked safe, and the path must stay inside."""
    root = cache_dir.resolve()
    path = (root / f"{spec.name}{suffix}").resolve()
    if path.parent != root:
        raise ConfigError(f"dataset name {spec.name!r} would write outside {root}")
    return path


@task(name="download_dataset")
def download_dataset(
    spec: DatasetSpec,
    cache_dir: Path,
    source: str | None = None,
    allow_insecure_http: bool = False,
) -> DatasetHandle:
    """Fetch the CSV into the cache (verified, atomic) and convert it to Parquet."""
    csv_path = cache_path(Path(cache_dir), spec, ".csv")
    fetch(source or spec.url, csv_path, spec.sha256, allow_insecure_http=allow_insecure_http)
    return convert_to_parquet(csv_path, spec, Path(cache_dir))
