"""Download: fetch a dataset into the cache (checksummed, atomic) and convert it to Parquet.

Nothing here ever unpickles: a CSV is parsed by hand, Parquet is read and written by pyarrow.
"""

from __future__ import annotations

import hashlib
import http.client
import ipaddress
import re
import shutil
import time
import urllib.error
import urllib.request
from pathlib import Path
from urllib.parse import urlparse

import numpy as np
import pandas as pd
from prefect import task

from tasks.config import DatasetSpec
from tasks.dataset import DatasetHandle
from tasks.errors import ConfigError, DataError, DownloadError
from tasks.files import write_atomically, write_text_atomically

CHUNK_BYTES = 1 << 16
NETWORK_SCHEMES = ("http", "https")
LOCAL_SCHEMES = ("", "file")
# ASCII decimal numbers only: float() would also take '1_0', '٣' and surrounding Unicode spaces.
# nan/inf pass here on purpose, so validation can name them with their row and column.
_NUMBER = re.compile(
    r"[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?|[+-]?(?:nan|inf|infinity)",
    re.IGNORECASE,
)
_CELL_PADDING = " \t"


# --- fetching ----------------------------------------------------------------------------------


def sha256_of(path: Path) -> str:
    """Content identity of a file, read in chunks so big files do not fill memory."""
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for chunk in iter(lambda: stream.read(CHUNK_BYTES), b""):
            digest.update(chunk)
    return digest.hexdigest()


def sidecar_of(destination: Path) -> Path:
    """Where the checksum of a complete download is kept when the spec configures none."""
    return destination.with_name(destination.name + ".sha256")


def is_loopback(host: str | None) -> bool:
    """Plain http cannot be tampered with on the way when it never leaves this machine."""
    if not host:
        return False
    if host.rstrip(".").lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_source_allowed(source: str, allow_insecure_http: bool) -> None:
    """https anywhere; plain http only to this machine unless the user opts in; no other schemes."""
    parsed = urlparse(source)
    if parsed.scheme not in NETWORK_SCHEMES + LOCAL_SCHEMES:
        raise ConfigError(
            f"unsupported source scheme {parsed.scheme!r} in {source}: "
            "use an https URL, a file:// URL or a local path"
        )
    if parsed.scheme == "http" and not allow_insecure_http and not is_loopback(parsed.hostname):
        raise ConfigError(
            f"refusing plain http download from {source}: anyone on the network could alter the "
            "data; use https, or set allow_insecure_http (CLI: --allow-insecure-http) "
            "if you trust the network"
        )
    if parsed.scheme == "file" and parsed.netloc not in ("", "localhost"):
        raise ConfigError(f"file URL {source} names a remote host; give a local path instead")


def local_path_of(source: str) -> Path | None:
    """The file a local source names (plain path or file:// URL); None for network URLs."""
    parsed = urlparse(source)
    if parsed.scheme == "file":
        return Path(urllib.request.url2pathname(parsed.path))
    if parsed.scheme == "":
        return Path(source).expanduser()
    return None


def _cached_copy_is_trusted(destination: Path, sha256: str | None) -> bool:
    """A cached file is reused only when its content is known to be a complete, right download."""
    if not destination.is_file():
        return False
    actual = sha256_of(destination)
    if sha256:
        return actual == sha256
    sidecar = sidecar_of(destination)
    return sidecar.is_file() and sidecar.read_text().strip() == actual


class _RedirectsStaySecure(urllib.request.HTTPRedirectHandler):
    """Apply the source rules to every redirect too, so https cannot be downgraded to http."""

    def __init__(self, allow_insecure_http: bool):
        self.allow_insecure_http = allow_insecure_http

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        try:
            check_source_allowed(newurl, self.allow_insecure_http)
        except ConfigError as error:
            fp.close()
            raise ConfigError(f"{req.full_url} redirected: {error}") from None
        return super().redirect_request(req, fp, code, msg, headers, newurl)


def _stream_to(url: str, temporary: Path, timeout: float, allow_insecure_http: bool) -> None:
    """One attempt: write the body to `temporary`, refusing a body shorter than announced."""
    opener = urllib.request.build_opener(_RedirectsStaySecure(allow_insecure_http))
    request = urllib.request.Request(url, headers={"User-Agent": "foldflow"})
    with opener.open(request, timeout=timeout) as response, open(temporary, "wb") as out:
        announced = response.headers.get("Content-Length")
        received = 0
        for chunk in iter(lambda: response.read(CHUNK_BYTES), b""):
            out.write(chunk)
            received += len(chunk)
    if announced is not None and announced.isdigit() and received != int(announced):
        raise ConnectionError(f"truncated body: received {received} of {announced} bytes")


def _describe(error: BaseException) -> str:
    """A short reason for the user: 'HTTP 503 Service Unavailable', 'timed out', ..."""
    if isinstance(error, urllib.error.HTTPError):
        return f"HTTP {error.code} {error.reason}"
    if isinstance(error, urllib.error.URLError):
        return str(error.reason)
    return str(error) or type(error).__name__


def _download_with_retries(
    url: str,
    temporary: Path,
    timeout: float,
    attempts: int,
    backoff_seconds: float,
    allow_insecure_http: bool,
) -> None:
    """Retry what may pass (network errors, 5xx, truncation) with exponential backoff; not 4xx."""
    last_error: BaseException | None = None
    for attempt in range(max(1, attempts)):
        if attempt:
            time.sleep(backoff_seconds * 2 ** (attempt - 1))
        try:
            _stream_to(url, temporary, timeout, allow_insecure_http)
            return
        except urllib.error.HTTPError as error:
            error.close()
            if error.code < 500:
                raise DownloadError(
                    f"download of {url} failed: {_describe(error)} (not retried: the server "
                    "refused the request; check the URL)"
                ) from None
            last_error = error
        except (OSError, http.client.HTTPException) as error:
            # URLError, timeouts, refused/reset connections and truncated bodies are all here.
            last_error = error
    raise DownloadError(
        f"download of {url} failed after {max(1, attempts)} attempts: {_describe(last_error)}"
    )


def fetch(
    source: str,
    destination: Path,
    sha256: str | None,
    timeout: float = 30,
    attempts: int = 4,
    backoff_seconds: float = 0.5,
    allow_insecure_http: bool = False,
) -> Path:
    """Fetch `source` (URL or local path) to `destination`, verified; reuse a trusted cached copy.

    Only a complete, verified file ever appears at `destination` (temporary file in the same
    folder, fsync, rename). Without a configured checksum, a network download records its own
    in a sidecar so later runs can trust the cache; a local source is compared by content.
    """
    check_source_allowed(source, allow_insecure_http)
    destination = Path(destination)
    local = local_path_of(source)
    if local is not None and not local.is_file():
        raise DownloadError(f"dataset source {local} does not exist or is not a file")
    expected = sha256 or (sha256_of(local) if local is not None else None)
    if _cached_copy_is_trusted(destination, expected):
        return destination

    received: list[str] = []

    def write_verified(temporary: Path) -> None:
        if local is not None:
            shutil.copyfile(local, temporary)
        else:
            _download_with_retries(
                source, temporary, timeout, attempts, backoff_seconds, allow_insecure_http
            )
        actual = sha256_of(temporary)
        if expected and actual != expected:
            raise DownloadError(
                f"checksum mismatch for {source}: expected sha256 {expected}, got {actual}; "
                "the file was not kept"
            )
        received.append(actual)

    write_atomically(destination, write_verified)
    write_text_atomically(sidecar_of(destination), received[0] + "\n")
    return destination


# --- parsing -----------------------------------------------------------------------------------


def _read_text(path: Path) -> str:
    """The file's text, refusing the two common non-CSV answers: nothing, and an HTML page."""
    text = path.read_bytes().decode("utf-8-sig", errors="replace")
    if not text.strip():
        raise DataError(f"{path} is empty (no data rows)")
    start = text.lstrip()
    if start.startswith("<"):
        first_line = start.splitlines()[0][:80]
        raise DataError(
            f"{path} looks like an HTML page, not CSV (an error or login page saved as data?): "
            f"starts with {first_line!r}"
        )
    return text


def _data_lines(text: str, path: Path) -> list[str]:
    """Lines in any ending style (LF, CRLF, CR): trailing blanks dropped, inner ones refused."""
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    while lines and not lines[-1].strip():
        lines.pop()
    for line_number, line in enumerate(lines, start=1):
        if not line.strip():
            raise DataError(
                f"{path}, line {line_number} is blank: blank lines are allowed only at the end"
            )
    return lines


def _is_number(cell: str) -> bool:
    return _NUMBER.fullmatch(cell.strip(_CELL_PADDING)) is not None


def _refuse_header(path: Path, cells: list[str], spec: DatasetSpec) -> None:
    """A first row without any number is a header, which this headerless format must not have."""
    if not any(_is_number(cell) for cell in cells):
        shown = ",".join(cells)[:80]
        raise DataError(
            f"{path}, line 1 looks like a header ({shown!r}); the dataset spec expects no header "
            f"row, only data in the columns {', '.join(spec.columns or [])} "
            "(set `header: true` if the file has one)"
        )


def _header_columns(path: Path, line: str) -> list[str]:
    """Column names from a header row, each present (repeats are refused by the spec check)."""
    names = [cell.strip(_CELL_PADDING) for cell in line.split(",")]
    for position, name in enumerate(names, start=1):
        if not name:
            raise DataError(f"{path}, line 1 (header): column {position} has no name")
    return names


def numeric_columns(spec: DatasetSpec) -> list[str]:
    """Columns that must hold numbers: the features, and the target of a regression."""
    return spec.feature_columns + ([spec.target] if spec.task == "regression" else [])


def _parse_line(
    path: Path, line_number: int, line: str, columns: list[str], numeric: set[str], used: set[str]
) -> list[float | str]:
    """One row: numbers where numbers are required, else text; problems name line and column.

    An ignored column (neither feature nor target) may hold anything, even nothing.
    """
    cells = line.split(",")
    if len(cells) != len(columns):
        raise DataError(
            f"{path}, line {line_number}: expected {len(columns)} columns, "
            f"found {len(cells)} ({line[:80]!r})"
        )
    values: list[float | str] = []
    for column, cell in zip(columns, cells, strict=True):
        value = cell.strip(_CELL_PADDING)
        if not value and column in used:
            raise DataError(f"{path}, line {line_number}, column {column!r}: the cell is empty")
        if column in numeric:
            if not _is_number(value):
                raise DataError(
                    f"{path}, line {line_number}, column {column!r}: value {value[:40]!r} "
                    "is not a number"
                )
            values.append(float(value))
        else:
            values.append(value)
    return values


def _typed_column(cells: list[float | str]) -> pd.Series:
    """Numbers when every cell is one (0/1 labels stay numbers), else text (e.g. 'setosa')."""
    if all(isinstance(cell, float) or _is_number(cell) for cell in cells):
        return pd.Series([float(cell) for cell in cells], dtype=np.float64)
    return pd.Series([str(cell) for cell in cells], dtype=object)


def read_csv(path: Path, spec: DatasetSpec) -> tuple[pd.DataFrame, DatasetSpec]:
    """The file's rows and the spec with its columns known (from a header row if it has one)."""
    path = Path(path)
    lines = _data_lines(_read_text(path), path)
    first_line = 1
    if spec.header:
        spec = spec.with_file_columns(_header_columns(path, lines[0]), str(path))
        lines, first_line = lines[1:], 2
        if not lines:
            raise DataError(f"{path} has a header row but no data rows")
    else:
        _refuse_header(path, lines[0].split(","), spec)
    numeric, used = set(numeric_columns(spec)), set(spec.used_columns)
    columns = spec.columns or []
    rows = [
        _parse_line(path, number, line, columns, numeric, used)
        for number, line in enumerate(lines, start=first_line)
    ]
    if all(column in numeric for column in columns):
        values = np.array(rows, dtype=np.float64).reshape(len(rows), len(columns))
        return pd.DataFrame(values, columns=columns), spec
    frame = pd.DataFrame(
        {
            column: (
                pd.Series([row[index] for row in rows], dtype=np.float64)
                if column in numeric
                else _typed_column([row[index] for row in rows])
            )
            for index, column in enumerate(columns)
        }
    )
    return frame, spec


def parse_csv(path: Path, spec: DatasetSpec) -> pd.DataFrame:
    """Strict CSV reading, so bad data stops the run with a message a user can act on."""
    return read_csv(path, spec)[0]


def read_parquet(path: Path, spec: DatasetSpec) -> tuple[pd.DataFrame, DatasetSpec]:
    """A Parquet file's rows and the spec with the file's own column names."""
    try:
        frame = pd.read_parquet(path, engine="pyarrow")
    except Exception as error:  # pyarrow raises several types for a file that is not Parquet
        raise DataError(f"{path} is not a readable Parquet file: {error}") from None
    columns = [str(column) for column in frame.columns]
    frame.columns = columns
    return frame.reset_index(drop=True), spec.with_file_columns(columns, str(path))


# --- conversion and the task -------------------------------------------------------------------


def cache_path(cache_dir: Path, spec: DatasetSpec, suffix: str) -> Path:
    """The cache file for a dataset; its name was checked safe, and the path must stay inside."""
    root = Path(cache_dir).resolve()
    path = (root / f"{spec.name}{suffix}").resolve()
    if path.parent != root:
        raise ConfigError(f"dataset name {spec.name!r} would write outside the cache folder {root}")
    return path


def source_suffix(spec: DatasetSpec) -> str:
    """The downloaded file keeps its format; `.parquet` alone is the converted copy."""
    return ".csv" if spec.format == "csv" else ".source.parquet"


def convert_to_parquet(source_path: Path, spec: DatasetSpec, cache_dir: Path) -> DatasetHandle:
    """The used columns (features, target) in Parquet, written atomically: features as float64,
    targets as numbers or text, so tasks read typed data quickly."""
    reader = read_csv if spec.format == "csv" else read_parquet
    frame, resolved = reader(source_path, spec)
    frame = frame[resolved.used_columns]
    write_atomically(
        cache_path(cache_dir, spec, ".parquet"),
        lambda path: frame.to_parquet(path, engine="pyarrow", index=False),
    )
    return DatasetHandle(
        name=spec.name,
        # As given, not resolved: the handle is part of the fits' cache keys.
        parquet_path=str(Path(cache_dir) / f"{spec.name}.parquet"),
        sha256=sha256_of(source_path),
        feature_columns=resolved.feature_columns,
        target=resolved.target,
        task=resolved.task,
        impossible_zero_columns=[
            c for c in resolved.impossible_zero_columns if c in resolved.feature_columns
        ],
        columns=resolved.columns or [],
    )


@task(name="download_dataset")
def download_dataset(
    spec: DatasetSpec,
    cache_dir: Path,
    source: str | None = None,
    allow_insecure_http: bool = False,
) -> DatasetHandle:
    """Fetch the CSV or Parquet file into the cache (verified, atomic) and convert it."""
    cache_dir = Path(cache_dir)
    source_path = cache_path(cache_dir, spec, source_suffix(spec))
    fetch(source or spec.url, source_path, spec.sha256, allow_insecure_http=allow_insecure_http)
    return convert_to_parquet(source_path, spec, cache_dir)
