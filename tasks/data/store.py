"""The cache of fetched files: a content store named by checksum and, per URL, the checksum and
the server's validators (ETag, Last-Modified) that let a later run revalidate instead of fetch.

The cache folder holds
  sources/<sha256><suffix>    every file downloaded, named by its content (never by dataset name)
  urls/<sha256 of URL>.json   per URL: its content's checksum and the server's validators
A URL is fetched unless its own cached entry is still valid: the spec pins a checksum that entry
has, or the server answers 304 Not Modified; a download joins the store only once the caller
accepted it (read and converted: `source_in_cache`), so a refused file is never kept. A local
file is read in place, never copied: its size checked first (at most max_bytes), then hashed.
"""

from __future__ import annotations

import hashlib
import os
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import NamedTuple

from pydantic import BaseModel, ValidationError

from tasks.data.http import (
    DEFAULT_DEADLINE_SECONDS,
    DEFAULT_LIMITS,
    DEFAULT_MAX_BYTES,
    CappedWriter,
    FetchLimits,
    NotModified,
    Received,
    download,
)
from tasks.data.sources import (
    CHUNK_BYTES,
    check_source_allowed,
    local_path_of,
    require_local_file,
    sha256_of,
)
from tasks.errors import ConfigError, DownloadError
from tasks.files import write_atomically, write_text_atomically

SOURCES_FOLDER = "sources"
URLS_FOLDER = "urls"


def check_local_size(local: Path, max_bytes: int) -> os.stat_result:
    """A local file's size, refused above max_bytes before a byte is read (at most max_bytes
    passes, as a download's cap: tasks.data.http)."""
    stat = local.stat()
    if stat.st_size > max_bytes:
        raise DownloadError(
            f"{local} is larger than max_bytes ({stat.st_size} bytes, max_bytes {max_bytes}): "
            "refused before reading, nothing was kept; raise `max_bytes` in the dataset spec "
            "if the file really is that big"
        )
    return stat


class _Discard:
    """A CappedWriter's output when only the count and the hash matter."""

    def write(self, data: bytes) -> int:
        return len(data)


def _hash_local(local: Path, max_bytes: int) -> Received:
    """A local file hashed where it is: its content, not its name, is what counts."""
    try:
        check_local_size(local, max_bytes)
        with open(local, "rb") as source:
            writer = CappedWriter(_Discard(), max_bytes, str(local))  # type: ignore[arg-type]
            for chunk in iter(lambda: source.read(CHUNK_BYTES), b""):
                writer.write(chunk)
    except OSError as error:
        raise DownloadError(f"cannot read {local}: {error.strerror or error}") from None
    return Received(writer.digest.hexdigest())


def _copy_local(local: Path, temporary: Path, max_bytes: int) -> Received:
    """A local file is read whole every time: its content, not its name, is what counts."""
    try:
        check_local_size(local, max_bytes)
        with open(local, "rb") as source, open(temporary, "wb") as out:
            writer = CappedWriter(out, max_bytes, str(local))
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
        received = download(source, temporary, limits, allow_insecure_http, validators)
    return _checked(source, received, sha256)


def fetch(
    source: str,
    destination: Path,
    sha256: str | None,
    timeout: float = 30,
    allow_insecure_http: bool = False,
    max_bytes: int = DEFAULT_MAX_BYTES,
    deadline_seconds: float = DEFAULT_DEADLINE_SECONDS,
) -> str:
    """Fetch `source` (URL or local path) to `destination`, verified, and return its checksum.

    Always from the source (the cache is `fetch_to_cache`). Only a complete, verified file ever
    appears at `destination` (temporary file in the same folder, fsync, rename); on any failure
    the temporary file is removed. One attempt: retries are the calling task's.
    """
    check_source_allowed(source, allow_insecure_http)
    require_local_file(source)
    limits = FetchLimits(max_bytes, deadline_seconds, timeout)
    received: list[Received] = []
    write_atomically(
        Path(destination),
        lambda temporary: received.append(
            _receive(source, temporary, sha256, limits, allow_insecure_http)
        ),
    )
    return received[0].sha256


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


def _checked(source: str, received: Received, sha256: str | None) -> Received:
    if sha256 and received.sha256 != sha256:
        raise DownloadError(
            f"checksum mismatch for {source}: expected sha256 {sha256}, got {received.sha256} "
            "(the dataset spec pins the first); nothing was kept. If this file is the data you "
            "mean, remove or update `sha256` in the dataset spec"
        )
    return received


@contextmanager
def _local_in_place(local: Path, sha256: str | None, max_bytes: int) -> Iterator[StoredSource]:
    """A local file as it is, hashed; refused if it changed while the caller read it (what
    was hashed must be what was read)."""
    before = check_local_size(local, max_bytes)
    received = _checked(str(local), _hash_local(local, max_bytes), sha256)
    yield StoredSource(local, received.sha256)
    after = local.stat()
    if (after.st_size, after.st_mtime_ns) != (before.st_size, before.st_mtime_ns):
        raise DownloadError(f"{local} changed while it was read: run again once it is written")


@contextmanager
def _kept_if_accepted(
    store: Path, suffix: str, receive: Callable[[Path], Received]
) -> Iterator[tuple[StoredSource, Received]]:
    """Download through `receive` beside the content store; the caller reads the file, and
    only if the block ends without an error is it renamed into the store, named by its
    checksum (two runs storing the same content write the same bytes to the same name).
    A refused download (a bad CSV, a validation error) is removed: never kept."""
    incoming = store / f".incoming-{uuid.uuid4().hex}{suffix}"
    try:
        received: list[Received] = []
        write_atomically(incoming, lambda temporary: received.append(receive(temporary)))
        yield StoredSource(incoming, received[0].sha256), received[0]
        os.replace(incoming, _stored(store, received[0].sha256, suffix))
    finally:
        incoming.unlink(missing_ok=True)


@contextmanager
def source_in_cache(
    source: str,
    cache_dir: Path,
    sha256: str | None,
    suffix: str,
    limits: FetchLimits = DEFAULT_LIMITS,
    allow_insecure_http: bool = False,
) -> Iterator[StoredSource]:
    """The content `source` names, for the block to read: a local file in place (hashed, never
    copied), a URL's cached copy while still valid, else a download that joins the store
    only if the block accepts it (ends without an error).

    A URL is fetched unless its own entry is still valid: the spec pins the checksum the
    entry has (no request), or the server answers a conditional request (If-None-Match /
    If-Modified-Since) with 304 Not Modified.
    """
    check_source_allowed(source, allow_insecure_http)
    require_local_file(source)
    store = cache_folder(cache_dir, SOURCES_FOLDER)  # checked even for a local file
    urls = cache_folder(cache_dir, URLS_FOLDER)
    local = local_path_of(source)
    if local is not None:
        with _local_in_place(local, sha256, limits.max_bytes) as stored:
            yield stored
        return
    entry = _read_url_entry(urls, source)
    cached = _cached_copy(store, suffix, entry, sha256)
    if cached is not None and sha256:
        yield cached
        return
    validators = entry if cached is not None else None

    def receive(temporary: Path) -> Received:
        received = download(source, temporary, limits, allow_insecure_http, validators)
        return _checked(source, received, sha256)

    try:
        with _kept_if_accepted(store, suffix, receive) as (stored, received):
            yield stored
    except NotModified:  # raised by the download, before anything was yielded
        assert cached is not None  # only a conditional request can be answered 304
        yield cached
        return
    write_text_atomically(
        _url_entry_path(urls, source),
        UrlEntry(url=source, **received._asdict()).model_dump_json() + "\n",
    )
