"""Download: fetch the dataset the user named into the cache (checksummed, capped, atomic) and
convert it to Parquet.

The cache folder holds
  sources/<sha256><suffix>    every file fetched, named by its content (never by dataset name)
  urls/<sha256 of URL>.json   per URL: its content's checksum and the server's validators
  <name>-<key>.parquet        the converted copy, keyed by the content and the spec
A local file is always read and hashed. A URL is fetched unless its own cached entry is still
valid: the spec pins a checksum that entry has, or the server answers 304 Not Modified.

Nothing here ever unpickles: CSV is read by pyarrow.csv, Parquet by pyarrow.
"""

from __future__ import annotations

import csv
import functools
import hashlib
import http.client
import ipaddress
import json
import os
import re
import time
import urllib.error
import urllib.request
import uuid
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, NamedTuple
from urllib.parse import urlparse

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv
from prefect import task
from pydantic import BaseModel, ValidationError

from tasks.config import DatasetSpec
from tasks.data.dataset import DatasetHandle
from tasks.errors import ConfigError, DataError, DownloadError
from tasks.files import write_atomically, write_text_atomically

CHUNK_BYTES = 1 << 16
NETWORK_SCHEMES = ("http", "https")
LOCAL_SCHEMES = ("", "file")
DEFAULT_MAX_BYTES: int = DatasetSpec.model_fields["max_bytes"].default
DEFAULT_DEADLINE_SECONDS = 30 * 60.0
SOURCES_FOLDER = "sources"
URLS_FOLDER = "urls"
# Content-Encoding -> zlib window bits; any other encoding is refused by name.
_INFLATE_WBITS = {"gzip": 16 + zlib.MAX_WBITS, "x-gzip": 16 + zlib.MAX_WBITS, "deflate": 15}


# --- where a source may come from --------------------------------------------------------------


def sha256_of(path: Path) -> str:
    """Content identity of a file, read in chunks so big files do not fill memory."""
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for chunk in iter(lambda: stream.read(CHUNK_BYTES), b""):
            digest.update(chunk)
    return digest.hexdigest()


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


def display_name(source: str) -> str:
    """How messages name a source: the local file's path, else the URL."""
    local = local_path_of(source)
    return str(local) if local is not None else source


def _require_local_file(source: str) -> None:
    local = local_path_of(source)
    if local is not None and not local.is_file():
        raise DownloadError(f"dataset source {local} does not exist or is not a file")


# --- receiving bytes: capped, hashed, decoded, within a deadline --------------------------------


@dataclass(frozen=True)
class FetchLimits:
    """How much a fetch may bring and how long it may take, retries included."""

    max_bytes: int = DEFAULT_MAX_BYTES
    deadline_seconds: float = DEFAULT_DEADLINE_SECONDS  # the whole fetch, every attempt
    timeout: float = 30  # one connection or one read
    attempts: int = 4
    backoff_seconds: float = 0.5


class Received(NamedTuple):
    """What one fetch wrote: its checksum, and the server's validators for the next time."""

    sha256: str
    etag: str | None = None
    last_modified: str | None = None


class _NotModified(Exception):
    """The server answered 304 to a conditional request: the cached copy is current."""


def _too_large(source: str, max_bytes: int) -> DownloadError:
    return DownloadError(
        f"{source} is larger than max_bytes ({max_bytes} bytes): refused, nothing was kept; "
        "raise `max_bytes` in the dataset spec if the file really is that big"
    )


class _CappedWriter:
    """Writes to a file while hashing and counting; refuses a byte beyond max_bytes."""

    def __init__(self, out: BinaryIO, max_bytes: int, source: str):
        self.out, self.max_bytes, self.source = out, max_bytes, source
        self.digest = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes) -> None:
        self.size += len(data)
        if self.size > self.max_bytes:
            raise _too_large(self.source, self.max_bytes)
        self.digest.update(data)
        self.out.write(data)


class _Decoder:
    """A body as the server encoded it: identity passes, gzip and deflate inflate in bounded
    steps (so a small bomb cannot fill memory before max_bytes stops it)."""

    def __init__(self, content_encoding: str | None, url: str):
        encoding = (content_encoding or "identity").strip().lower()
        self.identity = encoding in ("", "identity")
        if not self.identity and encoding not in _INFLATE_WBITS:
            raise DownloadError(
                f"{url} was sent with Content-Encoding {encoding!r}, which foldflow cannot "
                "decode (only gzip and deflate): refused, nothing was kept"
            )
        self._wbits = _INFLATE_WBITS.get(encoding, 0)
        self._inflater = None if self.identity else zlib.decompressobj(self._wbits)
        self.url = url

    def feed(self, data: bytes) -> Iterator[bytes]:
        if self._inflater is None:
            yield data
            return
        try:
            while data:
                if self._inflater.eof:  # gzip files may be several members end to end
                    self._inflater = zlib.decompressobj(self._wbits)
                out = self._inflater.decompress(data, CHUNK_BYTES)
                yield out
                inflater = self._inflater
                data = inflater.unused_data if inflater.eof else inflater.unconsumed_tail
        except zlib.error as error:
            raise DownloadError(f"{self.url}: the compressed body is corrupt ({error})") from None

    def finish(self) -> bytes:
        if self._inflater is None:
            return b""
        tail = self._inflater.flush()
        if not self._inflater.eof:
            raise ConnectionError("the compressed body ended early")
        return tail


def _past_deadline(url: str, limits: FetchLimits, size: int) -> DownloadError:
    return DownloadError(
        f"download of {url} did not finish within {limits.deadline_seconds:g} s (the overall "
        f"deadline; {size} bytes received): refused, nothing was kept"
    )


def _time_left(deadline: float, url: str, limits: FetchLimits, size: int = 0) -> float:
    """Seconds before the deadline, refusing when there are none."""
    left = deadline - time.monotonic()
    if left <= 0:
        raise _past_deadline(url, limits, size)
    return left


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


def _request(url: str, validators: UrlEntry | None) -> urllib.request.Request:
    headers = {"User-Agent": "foldflow", "Accept-Encoding": "gzip, identity"}
    if validators is not None and validators.etag:
        headers["If-None-Match"] = validators.etag
    if validators is not None and validators.last_modified:
        headers["If-Modified-Since"] = validators.last_modified
    return urllib.request.Request(url, headers=headers)


def _announced_length(response: http.client.HTTPResponse) -> int | None:
    announced = response.headers.get("Content-Length")
    return int(announced) if announced is not None and announced.isdigit() else None


def _stream_to(
    url: str,
    temporary: Path,
    limits: FetchLimits,
    deadline: float,
    allow_insecure_http: bool,
    validators: UrlEntry | None,
) -> Received:
    """One attempt: the decoded body into `temporary`; a short body raises ConnectionError."""
    opener = urllib.request.build_opener(_RedirectsStaySecure(allow_insecure_http))
    timeout = min(limits.timeout, _time_left(deadline, url, limits))
    try:
        response = opener.open(_request(url, validators), timeout=timeout)
    except urllib.error.HTTPError as error:
        if error.code == 304 and validators is not None:
            error.close()
            raise _NotModified from None
        raise
    with response, open(temporary, "wb") as out:
        decoder = _Decoder(response.headers.get("Content-Encoding"), url)
        announced = _announced_length(response)
        if decoder.identity and announced is not None and announced > limits.max_bytes:
            raise DownloadError(
                f"{url} announces {announced} bytes, more than max_bytes ({limits.max_bytes} "
                "bytes): refused before reading; raise `max_bytes` in the dataset spec if the "
                "file really is that big"
            )
        writer = _CappedWriter(out, limits.max_bytes, url)
        received = 0
        # read1 returns whatever has arrived, so a body sent a byte at a time still meets the
        # deadline check after every read.
        while chunk := response.read1(CHUNK_BYTES):
            received += len(chunk)
            for data in decoder.feed(chunk):
                writer.write(data)
            _time_left(deadline, url, limits, writer.size)
        if announced is not None and received != announced:
            raise ConnectionError(f"truncated body: received {received} of {announced} bytes")
        writer.write(decoder.finish())
        return Received(
            writer.digest.hexdigest(),
            response.headers.get("ETag"),
            response.headers.get("Last-Modified"),
        )


def _describe(error: BaseException | None) -> str:
    """A short reason for the user: 'HTTP 503 Service Unavailable', 'timed out', ..."""
    if isinstance(error, urllib.error.HTTPError):
        return f"HTTP {error.code} {error.reason}"
    if isinstance(error, urllib.error.URLError):
        return str(error.reason)
    return (str(error) or type(error).__name__) if error else "no attempt"


def _download_with_retries(
    url: str,
    temporary: Path,
    limits: FetchLimits,
    allow_insecure_http: bool,
    validators: UrlEntry | None = None,
) -> Received:
    """Retry what may pass (network errors, 5xx, truncation) with exponential backoff, within
    the overall deadline; never a 4xx, an oversized body or an unknown encoding."""
    deadline = time.monotonic() + limits.deadline_seconds
    last_error: BaseException | None = None
    attempts = max(1, limits.attempts)
    for attempt in range(attempts):
        if attempt:
            delay = limits.backoff_seconds * 2 ** (attempt - 1)
            if time.monotonic() + delay >= deadline:
                raise DownloadError(
                    f"download of {url} failed after {attempt} attempts, and the overall "
                    f"deadline of {limits.deadline_seconds:g} s leaves no time for another: "
                    f"{_describe(last_error)}"
                )
            time.sleep(delay)
        try:
            return _stream_to(url, temporary, limits, deadline, allow_insecure_http, validators)
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
        f"download of {url} failed after {attempts} attempts: {_describe(last_error)}"
    )


def _copy_local(local: Path, temporary: Path, max_bytes: int) -> Received:
    """A local file is read whole every time: its content, not its name, is what counts."""
    try:
        if local.stat().st_size > max_bytes:
            raise _too_large(str(local), max_bytes)
        with open(local, "rb") as source, open(temporary, "wb") as out:
            writer = _CappedWriter(out, max_bytes, str(local))
            for chunk in iter(lambda: source.read(CHUNK_BYTES), b""):
                writer.write(chunk)
    except OSError as error:
        raise DownloadError(f"cannot read {local}: {error.strerror or error}") from None
    return Received(writer.digest.hexdigest())


def _receive(
    source: str,
    temporary: Path,
    sha256: str | None,
    limits: FetchLimits,
    allow_insecure_http: bool,
    validators: UrlEntry | None = None,
) -> Received:
    """The source's bytes into `temporary`, refused unless they match a pinned checksum."""
    local = local_path_of(source)
    if local is not None:
        received = _copy_local(local, temporary, limits.max_bytes)
    else:
        received = _download_with_retries(
            source, temporary, limits, allow_insecure_http, validators
        )
    if sha256 and received.sha256 != sha256:
        raise DownloadError(
            f"checksum mismatch for {source}: expected sha256 {sha256}, got {received.sha256} "
            "(the dataset spec pins the first); nothing was kept. If this file is the data you "
            "mean, remove or update `sha256` in the dataset spec"
        )
    return received


def fetch(
    source: str,
    destination: Path,
    sha256: str | None,
    timeout: float = 30,
    attempts: int = 4,
    backoff_seconds: float = 0.5,
    allow_insecure_http: bool = False,
    max_bytes: int = DEFAULT_MAX_BYTES,
    deadline_seconds: float = DEFAULT_DEADLINE_SECONDS,
) -> str:
    """Fetch `source` (URL or local path) to `destination`, verified, and return its checksum.

    Always from the source (the cache is `fetch_to_cache`). Only a complete, verified file ever
    appears at `destination` (temporary file in the same folder, fsync, rename); on any failure
    the temporary file is removed.
    """
    check_source_allowed(source, allow_insecure_http)
    _require_local_file(source)
    limits = FetchLimits(max_bytes, deadline_seconds, timeout, attempts, backoff_seconds)
    received: list[Received] = []
    write_atomically(
        Path(destination),
        lambda temporary: received.append(
            _receive(source, temporary, sha256, limits, allow_insecure_http)
        ),
    )
    return received[0].sha256


# --- the cache: content store and URL entries --------------------------------------------------


class UrlEntry(BaseModel):
    """What the cache knows of one URL: its content's checksum and how to revalidate it."""

    url: str
    sha256: str
    etag: str | None = None
    last_modified: str | None = None


class StoredSource(NamedTuple):
    """A fetched file in the content store, and its checksum."""

    path: Path
    sha256: str


def cache_folder(cache_dir: Path, name: str) -> Path:
    """A folder of the cache, refused if a link steers it outside the cache."""
    root = Path(cache_dir).resolve()
    folder = (root / name).resolve()
    if folder.parent != root:
        raise ConfigError(
            f"cache folder {Path(cache_dir) / name} resolves to {folder}, outside the cache "
            f"folder {root}"
        )
    return folder


def _url_entry_path(urls: Path, url: str) -> Path:
    return urls / f"{hashlib.sha256(url.encode()).hexdigest()}.json"


def _read_url_entry(urls: Path, url: str) -> UrlEntry | None:
    """This URL's entry; a missing, unreadable or foreign one is no entry."""
    path = _url_entry_path(urls, url)
    try:
        entry = UrlEntry.model_validate_json(path.read_text(encoding="utf-8"))
    except (OSError, ValidationError, ValueError):
        return None
    return entry if entry.url == url else None


def _stored(store: Path, sha256: str, suffix: str) -> Path:
    return store / f"{sha256}{suffix}"


def _cached_copy(
    store: Path, suffix: str, entry: UrlEntry | None, sha256: str | None
) -> StoredSource | None:
    """The copy a URL's entry points to, if it could be reused and is intact."""
    if entry is None or (sha256 and entry.sha256 != sha256):
        return None
    if not sha256 and not (entry.etag or entry.last_modified):
        return None  # nothing can tell whether the server's file is still this one
    path = _stored(store, entry.sha256, suffix)
    if not path.is_file() or sha256_of(path) != entry.sha256:
        return None
    return StoredSource(path, entry.sha256)


def _store(
    store: Path, suffix: str, receive: Callable[[Path], Received]
) -> tuple[StoredSource, Received]:
    """Write through `receive` into the content store, named by the content's checksum.

    The name is known only once the bytes are in: write atomically under a unique name, then
    rename (two runs storing the same content write the same bytes to the same name).
    """
    incoming = store / f".incoming-{uuid.uuid4().hex}{suffix}"
    received: list[Received] = []
    write_atomically(incoming, lambda temporary: received.append(receive(temporary)))
    path = _stored(store, received[0].sha256, suffix)
    try:
        os.replace(incoming, path)
    finally:
        incoming.unlink(missing_ok=True)
    return StoredSource(path, received[0].sha256), received[0]


def fetch_to_cache(
    source: str,
    cache_dir: Path,
    sha256: str | None,
    suffix: str,
    limits: FetchLimits = FetchLimits(),
    allow_insecure_http: bool = False,
) -> StoredSource:
    """The content `source` names, in the cache's content store.

    A local file is read and hashed every time. A URL is fetched unless its own entry is still
    valid: the spec pins the checksum the entry has (no request), or the server answers a
    conditional request (If-None-Match / If-Modified-Since) with 304 Not Modified.
    """
    check_source_allowed(source, allow_insecure_http)
    _require_local_file(source)
    store = cache_folder(cache_dir, SOURCES_FOLDER)
    urls = cache_folder(cache_dir, URLS_FOLDER)

    def receive(temporary: Path, validators: UrlEntry | None = None) -> Received:
        return _receive(source, temporary, sha256, limits, allow_insecure_http, validators)

    if local_path_of(source) is not None:
        return _store(store, suffix, receive)[0]
    entry = _read_url_entry(urls, source)
    cached = _cached_copy(store, suffix, entry, sha256)
    if cached is not None and sha256:
        return cached
    validators = entry if cached is not None else None
    try:
        stored, received = _store(store, suffix, lambda temporary: receive(temporary, validators))
    except _NotModified:
        assert cached is not None  # only a conditional request can be answered 304
        return cached
    write_text_atomically(
        _url_entry_path(urls, source),
        UrlEntry(url=source, **received._asdict()).model_dump_json() + "\n",
    )
    return stored


# --- parsing CSV -------------------------------------------------------------------------------

# ASCII decimal numbers only: float() would also take '1_0', '٣' and surrounding Unicode spaces.
# nan/inf pass here on purpose, so validation can name them with their row and column.
_NUMBER = r"^[+-]?(?:(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?|nan|inf|infinity)$"
_CELL_PADDING = " \t"
_HEAD_BYTES = 1 << 16
_CANDIDATE_DELIMITERS = (",", ";", "\t", "|")


def _data_end(path: Path) -> int:
    """Bytes up to the last one that is not blank: blank lines at the end hold no data."""
    with open(path, "rb") as stream:
        end = stream.seek(0, os.SEEK_END)
        while end > 0:
            start = max(0, end - CHUNK_BYTES)
            stream.seek(start)
            kept = stream.read(end - start).rstrip(b" \t\r\n")
            if kept:
                return start + len(kept)
            end = start
    return 0


def _head(path: Path, end: int) -> bytes:
    with open(path, "rb") as stream:
        return stream.read(min(end, _HEAD_BYTES))


def _refuse_non_csv(head: bytes, end: int, name: str) -> None:
    """The common non-CSV answers: nothing, an HTML page, a compressed or Parquet file."""
    if head.startswith(b"\x1f\x8b"):
        raise DataError(
            f"{name} is gzip-compressed, not CSV text: decompress it first (a server's "
            "Content-Encoding: gzip is decoded on download, a .gz file is not)"
        )
    if head.startswith(b"PAR1"):
        raise DataError(f"{name} is a Parquet file, not CSV: set `format: parquet` in the spec")
    text = head.decode("utf-8-sig", errors="replace")
    if not text.strip() and end <= len(head):
        raise DataError(f"{name} is empty (no data rows)")
    start = text.lstrip()
    if start.startswith("<"):
        first_line = start.splitlines()[0][:80]
        raise DataError(
            f"{name} looks like an HTML page, not CSV (an error or login page saved as data?): "
            f"starts with {first_line!r}"
        )


def _first_line(head: bytes) -> str:
    text = head.decode("utf-8-sig", errors="replace")
    return re.split(r"\r\n|\r|\n", text, maxsplit=1)[0]


def _field_count(line: str, delimiter: str) -> int:
    return len(next(csv.reader([line], delimiter=delimiter), []))


def _refuse_wrong_delimiter(line: str, spec: DatasetSpec, name: str) -> None:
    """A first line that splits into the expected fields (or, without a known count, into any
    fields) on another common delimiter than the spec's is a spec to fix: say which."""
    counts = {d: _field_count(line, d) for d in (spec.delimiter, *_CANDIDATE_DELIMITERS)}
    chosen = counts[spec.delimiter]
    expected = len(spec.columns) if spec.columns else None
    others = [d for d in _CANDIDATE_DELIMITERS if d != spec.delimiter]
    if expected is not None:
        better = [d for d in others if chosen != expected and counts[d] == expected]
    else:
        better = sorted((d for d in others if chosen == 1 and counts[d] > 1), key=counts.get)[-1:]
    if better:
        best = better[0]
        raise DataError(
            f"{name}, line 1 splits into {counts[best]} fields on {best!r} but {chosen} on "
            f"{spec.delimiter!r}: set `delimiter: {json.dumps(best)}` in the dataset spec"
        )


def _first_undecodable_line(path: Path) -> int | None:
    """Line number of the first line that is not UTF-8 (error path only: reads the file)."""
    number = 0
    with open(path, "rb") as stream:
        for raw in stream:
            for piece in raw.rstrip(b"\n").removesuffix(b"\r").split(b"\r"):
                number += 1
                try:
                    piece.decode("utf-8")
                except UnicodeDecodeError:
                    return number
    return None


def _line_text(path: Path, number: int) -> str:
    """One line of the file, as the reader numbers lines (error path only)."""
    with open(path, encoding="utf-8-sig", errors="replace", newline=None) as stream:
        for index, line in enumerate(stream, start=1):
            if index == number:
                return line.rstrip("\n")
    return ""


def _read_cells(path: Path, end: int, spec: DatasetSpec, n_columns: int, name: str) -> list:
    """Every line's cells as text (string arrays, one per column), quotes resolved.

    One line per row: an empty line becomes a row of empty cells and a malformed line stops
    the read, so row k is line k + 1 (a value spanning lines is refused afterwards).
    """
    invalid: list[tuple[int | None, int, str]] = []

    def on_invalid(row: pa_csv.InvalidRow) -> str:
        invalid.append((row.number, row.actual_columns, row.text))
        return "error"

    names = [f"c{i}" for i in range(n_columns)]
    try:
        with pa.memory_map(str(path)) as mapped:
            table = pa_csv.read_csv(
                pa.BufferReader(mapped.read_buffer(end)),
                read_options=pa_csv.ReadOptions(column_names=names, use_threads=False),
                parse_options=pa_csv.ParseOptions(
                    delimiter=spec.delimiter,
                    ignore_empty_lines=False,
                    invalid_row_handler=on_invalid,
                ),
                convert_options=pa_csv.ConvertOptions(
                    column_types=dict.fromkeys(names, pa.string()),
                    null_values=[],
                    strings_can_be_null=False,
                    quoted_strings_can_be_null=False,
                ),
            )
            return [table.column(i).combine_chunks() for i in range(n_columns)]
    except pa.ArrowInvalid as error:
        if invalid:
            number, found, text = invalid[0]
            where = f"{name}, line {number}" if number else name
            if not text.strip(_CELL_PADDING):
                raise DataError(
                    f"{where} is blank: blank lines are allowed only at the end"
                ) from None
            detail = " (a quote is not closed)" if text.count('"') % 2 else ""
            raise DataError(
                f"{where}: expected {n_columns} columns, found {found}{detail} ({text[:80]!r})"
            ) from None
        if "UTF8" in str(error):
            number = _first_undecodable_line(path)
            where = f"{name}, line {number}" if number else name
            raise DataError(f"{where} is not UTF-8 text: save the file as UTF-8") from None
        raise DataError(f"{name} could not be read as CSV: {error}") from None


def _first_true(mask: pa.Array) -> int:
    """Index of the first true value, -1 when none is."""
    return pc.index(mask, True).as_py()


def _refuse_blank_or_multiline_rows(path: Path, cells: list, columns: list[str], name: str) -> None:
    """Rows are lines only if no value spans lines; an empty line inside the data is refused."""
    blank = functools.reduce(pc.and_, [pc.equal(cell, "") for cell in cells])
    first_blank = _first_true(blank)
    spans = [(_first_true(pc.match_substring_regex(c, r"[\r\n]")), i) for i, c in enumerate(cells)]
    spans = [(row, i) for row, i in spans if row >= 0]
    first_span = min(spans) if spans else None
    if first_blank >= 0 and (first_span is None or first_blank <= first_span[0]):
        if not _line_text(path, first_blank + 1).strip(_CELL_PADDING):
            raise DataError(
                f"{name}, line {first_blank + 1} is blank: blank lines are allowed only at the end"
            )
    if first_span is not None:
        row, column = first_span
        raise DataError(
            f"{name}, line {row + 1}, column {columns[column]!r}: a quoted value spans lines, "
            "which breaks line numbering; remove the line break from the value"
        )


def _is_number(cell: str) -> bool:
    return re.fullmatch(_NUMBER, cell.strip(_CELL_PADDING), re.IGNORECASE) is not None


def _refuse_header(name: str, cells: list[str], spec: DatasetSpec) -> None:
    """A first row without any number is a header, which this headerless format must not have."""
    if not any(_is_number(cell) for cell in cells):
        shown = spec.delimiter.join(cells)[:80]
        raise DataError(
            f"{name}, line 1 looks like a header ({shown!r}); the dataset spec expects no header "
            f"row, only data in the columns {', '.join(spec.columns or [])} "
            "(set `header: true` if the file has one)"
        )


def _header_columns(name: str, cells: list[str]) -> list[str]:
    """Column names from a header row, each present (repeats are refused by the spec check)."""
    names = [cell.strip(_CELL_PADDING) for cell in cells]
    for position, column in enumerate(names, start=1):
        if not column:
            raise DataError(f"{name}, line 1 (header): column {position} has no name")
    return names


def numeric_columns(spec: DatasetSpec) -> list[str]:
    """Columns that must hold numbers: the features, and the target of a regression."""
    return spec.feature_columns + ([spec.target] if spec.task == "regression" else [])


def _first_bad_cell(
    column: str, values: pa.Array, numbers: pa.Array, numeric: set[str], used: set[str]
) -> int:
    """First row whose cell a used column cannot take: empty, or not a number where one must be."""
    masks = [pc.equal(values, "")] if column in used else []
    masks += [pc.invert(numbers)] if column in numeric else []
    return _first_true(functools.reduce(pc.or_, masks)) if masks else -1


def _typed(values: pa.Array, numbers: pa.Array, numeric: bool) -> np.ndarray | pd.Series:
    """Numbers when required or when every cell is one (0/1 labels), else text ('setosa')."""
    if numeric or pc.all(numbers).as_py():
        return pc.cast(values, pa.float64()).to_numpy(zero_copy_only=False)
    return pd.Series(values.to_pylist(), dtype=object)


def read_csv(
    path: Path, spec: DatasetSpec, name: str | None = None
) -> tuple[pd.DataFrame, DatasetSpec]:
    """The file's rows and the spec with its columns known (from a header row if it has one).

    Strict, so bad data stops the run with a message a user can act on: errors name `name`
    (the user's file; default `path`), the line, the column and the value.
    """
    path = Path(path)
    name = name or str(path)
    end = _data_end(path)
    head = _head(path, end)
    _refuse_non_csv(head, end, name)
    first_line = _first_line(head)
    if not first_line.strip(_CELL_PADDING):
        raise DataError(f"{name}, line 1 is blank: blank lines are allowed only at the end")
    _refuse_wrong_delimiter(first_line, spec, name)
    n_columns = len(spec.columns) if not spec.header else _field_count(first_line, spec.delimiter)
    cells = _read_cells(path, end, spec, n_columns, name)
    first_row = [cell[0].as_py() for cell in cells]
    names = spec.columns or [cell.strip(_CELL_PADDING) for cell in first_row]
    _refuse_blank_or_multiline_rows(path, cells, names, name)
    if spec.header:
        spec = spec.with_file_columns(_header_columns(name, first_row), name)
        cells = [cell.slice(1) for cell in cells]
        if len(cells[0]) == 0:
            raise DataError(f"{name} has a header row but no data rows")
    else:
        _refuse_header(name, first_row, spec)
    first_line_number = 2 if spec.header else 1
    columns = spec.columns or []
    numeric, used = set(numeric_columns(spec)), set(spec.used_columns)
    trimmed = [pc.utf8_trim(cell, _CELL_PADDING) for cell in cells]
    numbers = [pc.match_substring_regex(t, _NUMBER, ignore_case=True) for t in trimmed]
    problems = [
        (row, index)
        for index, column in enumerate(columns)
        if (row := _first_bad_cell(column, trimmed[index], numbers[index], numeric, used)) >= 0
    ]
    if problems:
        row, index = min(problems)
        value = trimmed[index][row].as_py()
        where = f"{name}, line {row + first_line_number}, column {columns[index]!r}"
        if not value:
            raise DataError(f"{where}: the cell is empty")
        raise DataError(f"{where}: value {value[:40]!r} is not a number")
    frame = pd.DataFrame(
        {
            column: _typed(trimmed[index], numbers[index], column in numeric)
            for index, column in enumerate(columns)
        }
    )
    return frame, spec


def parse_csv(path: Path, spec: DatasetSpec) -> pd.DataFrame:
    """Strict CSV reading, so bad data stops the run with a message a user can act on."""
    return read_csv(path, spec)[0]


def read_parquet(
    path: Path, spec: DatasetSpec, name: str | None = None
) -> tuple[pd.DataFrame, DatasetSpec]:
    """A Parquet file's rows and the spec with the file's own column names."""
    name = name or str(path)
    try:
        frame = pd.read_parquet(path, engine="pyarrow")
    except Exception as error:  # pyarrow raises several types for a file that is not Parquet
        raise DataError(f"{name} is not a readable Parquet file: {error}") from None
    columns = [str(column) for column in frame.columns]
    frame.columns = columns
    return frame.reset_index(drop=True), spec.with_file_columns(columns, name)


# --- conversion and the task -------------------------------------------------------------------


def converted_path(cache_dir: Path, spec: DatasetSpec, sha256: str) -> Path:
    """The Parquet copy: named by the dataset, keyed by its content and spec (so runs on other
    data never overwrite it); the name was checked safe, and the path must stay inside."""
    reading = spec.model_dump_json(exclude={"url", "sha256", "max_bytes"})
    key = hashlib.sha256(f"{sha256}\n{reading}".encode()).hexdigest()[:16]
    root = Path(cache_dir).resolve()
    path = (root / f"{spec.name}-{key}.parquet").resolve()
    if path.parent != root:
        raise ConfigError(f"dataset name {spec.name!r} would write outside the cache folder {root}")
    return path


def source_suffix(spec: DatasetSpec) -> str:
    """A stored source keeps its format's extension."""
    return ".csv" if spec.format == "csv" else ".parquet"


def convert_to_parquet(
    stored: StoredSource, spec: DatasetSpec, cache_dir: Path, source_name: str
) -> DatasetHandle:
    """The used columns (features, target) in Parquet, written atomically: features as float64,
    targets as numbers or text, so tasks read typed data quickly."""
    reader = read_csv if spec.format == "csv" else read_parquet
    frame, resolved = reader(stored.path, spec, source_name)
    frame = frame[resolved.used_columns]
    path = converted_path(cache_dir, spec, stored.sha256)
    write_atomically(path, lambda temporary: frame.to_parquet(temporary, index=False))
    return DatasetHandle(
        name=spec.name,
        # As given, not resolved: the handle is part of the fits' cache keys.
        parquet_path=str(Path(cache_dir) / path.name),
        sha256=stored.sha256,
        feature_columns=resolved.feature_columns,
        target=resolved.target,
        task=resolved.task,
        impossible_zero_columns=[
            c for c in resolved.impossible_zero_columns if c in resolved.feature_columns
        ],
        columns=resolved.columns or [],
        source=source_name,
    )


@task(name="download_dataset")
def download_dataset(
    spec: DatasetSpec,
    cache_dir: Path,
    source: str | None = None,
    allow_insecure_http: bool = False,
    max_bytes: int | None = None,
    deadline_seconds: float = DEFAULT_DEADLINE_SECONDS,
) -> DatasetHandle:
    """Fetch the CSV or Parquet file the user named (default: the spec's URL) into the cache,
    verified, capped and atomic, and convert it. `max_bytes` overrides the spec's."""
    cache_dir = Path(cache_dir)
    source = source or spec.url
    converted_path(cache_dir, spec, "")  # an unsafe name is refused before anything is written
    limits = FetchLimits(max_bytes=max_bytes or spec.max_bytes, deadline_seconds=deadline_seconds)
    stored = fetch_to_cache(
        source, cache_dir, spec.sha256, source_suffix(spec), limits, allow_insecure_http
    )
    return convert_to_parquet(stored, spec, cache_dir, display_name(source))
