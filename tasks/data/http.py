"""The download client, on httpx: one attempt at one URL's body into a file, capped, hashed,
decoded, within an overall deadline, following only redirects the source policy allows.

Retries are Prefect's (the download task's `retries` with `retry_if_transient`): an attempt
that fails in a way another may not (network error, timeout, 5xx, 429, truncated body) raises
TransientDownloadError; everything else is final.
"""

from __future__ import annotations

import hashlib
import time
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, NamedTuple, Protocol

import httpx
from prefect.context import TaskRunContext

from tasks.data.sources import CHUNK_BYTES, check_source_allowed
from tasks.dataset_spec import DatasetSpec
from tasks.errors import ConfigError, DownloadError

DEFAULT_MAX_BYTES: int = DatasetSpec.model_fields["max_bytes"].default
DEFAULT_DEADLINE_SECONDS = 30 * 60.0
MAX_REDIRECTS = 10  # as urllib, which this client replaced
# Statuses another attempt may not meet: a busy or failing server, a rate limit.
TRANSIENT_STATUSES = frozenset({429, *range(500, 600)})
# Content-Encoding -> zlib window bits; any other encoding is refused by name.
_INFLATE_WBITS = {"gzip": 16 + zlib.MAX_WBITS, "x-gzip": 16 + zlib.MAX_WBITS, "deflate": 15}


@dataclass(frozen=True)
class FetchLimits:
    """How much a fetch may bring and how long it may take, retries included."""

    max_bytes: int = DEFAULT_MAX_BYTES
    deadline_seconds: float = DEFAULT_DEADLINE_SECONDS  # the whole fetch, every attempt
    timeout: float = 30  # one connection or one read


DEFAULT_LIMITS = FetchLimits()


class Received(NamedTuple):
    """What one fetch wrote: its checksum, and the server's validators for the next time."""

    sha256: str
    etag: str | None = None
    last_modified: str | None = None


class Validators(Protocol):
    """What a conditional request sends: the validators the server gave last time (the
    store's UrlEntry)."""

    etag: str | None
    last_modified: str | None


class NotModified(Exception):
    """The server answered 304 to a conditional request: the cached copy is current."""


class TransientDownloadError(DownloadError):
    """A failure another attempt may not meet; the download task's retries take these only."""


def retry_if_transient(task: Any, task_run: Any, state: Any) -> bool:
    """Prefect's retry condition: retry a transient failure, nothing else (a 404, a checksum
    mismatch, an oversized body or a refused redirect would only fail again)."""
    try:
        state.result()
    except TransientDownloadError:
        return True
    except Exception:
        return False
    return False


def too_large(source: str, max_bytes: int) -> DownloadError:
    return DownloadError(
        f"{source} is larger than max_bytes ({max_bytes} bytes): refused, nothing was kept; "
        "raise `max_bytes` in the dataset spec if the file really is that big"
    )


class CappedWriter:
    """Writes to a file while hashing and counting; refuses a byte beyond max_bytes."""

    def __init__(self, out: BinaryIO, max_bytes: int, source: str):
        self.out, self.max_bytes, self.source = out, max_bytes, source
        self.digest = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes) -> None:
        self.size += len(data)
        if self.size > self.max_bytes:
            raise too_large(self.source, self.max_bytes)
        self.digest.update(data)
        self.out.write(data)


class _Decoder:
    """A body as the server encoded it: identity passes, gzip and deflate inflate in bounded
    steps (so a small bomb cannot fill memory before max_bytes stops it).

    Not httpx's own decoder: it inflates each received chunk whole (a 64 kB chunk of zeros can
    become 64 MB at once) and drops the members after the first of a multi-member gzip file.
    """

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


class Attempt(NamedTuple):
    """Which attempt this is, and the overall deadline (monotonic) that every attempt shares."""

    number: int
    deadline: float
    retries_left: int = 0
    next_delay: float = 0.0


def current_attempt(deadline_seconds: float) -> Attempt:
    """This attempt as the Prefect task run retrying it sees it (the deadline counts from the
    task run's creation, so retries cannot stretch it); a plain call is a single attempt."""
    now_wall, now = time.time(), time.monotonic()
    context = TaskRunContext.get()
    if context is None or context.task_run.created is None:
        return Attempt(1, now + deadline_seconds)
    run, task = context.task_run, context.task
    number = max(1, run.run_count)
    started = run.created.timestamp()
    delays = task.retry_delay_seconds
    if isinstance(delays, list | tuple):
        delay = float(delays[min(number - 1, len(delays) - 1)]) if delays else 0.0
    else:
        delay = float(delays or 0)
    retries_left = max(0, task.retries - (number - 1))
    return Attempt(number, now + started + deadline_seconds - now_wall, retries_left, delay)


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


def _headers(validators: Validators | None) -> dict[str, str]:
    headers = {"User-Agent": "foldflow", "Accept-Encoding": "gzip, identity"}
    if validators is not None and validators.etag:
        headers["If-None-Match"] = validators.etag
    if validators is not None and validators.last_modified:
        headers["If-Modified-Since"] = validators.last_modified
    return headers


def _announced_length(response: httpx.Response) -> int | None:
    announced = response.headers.get("Content-Length")
    return int(announced) if announced is not None and announced.isdigit() else None


def _open(
    client: httpx.Client, url: str, validators: Validators | None, allow_insecure_http: bool
) -> httpx.Response:
    """The final response's headers (body still unread), every redirect checked against the
    source rules first, so https cannot be downgraded to http."""
    request = client.build_request("GET", url, headers=_headers(validators))
    for _ in range(MAX_REDIRECTS + 1):
        response = client.send(request, stream=True)
        if not response.is_redirect or response.next_request is None:
            return response
        response.close()
        request = response.next_request
        try:
            check_source_allowed(str(request.url), allow_insecure_http)
        except ConfigError as error:
            raise ConfigError(f"{response.request.url} redirected: {error}") from None
    raise DownloadError(f"download of {url} failed: more than {MAX_REDIRECTS} redirects")


def _write_body(
    response: httpx.Response, out: BinaryIO, url: str, limits: FetchLimits, deadline: float
) -> Received:
    """The decoded body into `out`, capped and hashed; a short body raises ConnectionError."""
    decoder = _Decoder(response.headers.get("Content-Encoding"), url)
    announced = _announced_length(response)
    if decoder.identity and announced is not None and announced > limits.max_bytes:
        raise DownloadError(
            f"{url} announces {announced} bytes, more than max_bytes ({limits.max_bytes} "
            "bytes): refused before reading; raise `max_bytes` in the dataset spec if the "
            "file really is that big"
        )
    writer = CappedWriter(out, limits.max_bytes, url)
    received = 0
    # iter_raw without a chunk size yields whatever has arrived, so a body sent a byte at a
    # time still meets the deadline check after every read.
    for chunk in response.iter_raw():
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


def _stream_to(
    url: str,
    temporary: Path,
    limits: FetchLimits,
    deadline: float,
    allow_insecure_http: bool,
    validators: Validators | None,
) -> Received:
    """One attempt: the decoded body into `temporary`; HTTP errors raise HTTPStatusError."""
    timeout = min(limits.timeout, _time_left(deadline, url, limits))
    with httpx.Client(timeout=timeout) as client:
        response = _open(client, url, validators, allow_insecure_http)
        try:
            if response.status_code == 304 and validators is not None:
                raise NotModified
            response.raise_for_status()
            with open(temporary, "wb") as out:
                return _write_body(response, out, url, limits, deadline)
        finally:
            response.close()


def _describe(error: BaseException) -> str:
    """A short reason for the user: 'HTTP 503 Service Unavailable', 'timed out', ..."""
    if isinstance(error, httpx.HTTPStatusError):
        return f"HTTP {error.response.status_code} {error.response.reason_phrase}"
    return str(error) or type(error).__name__


def _attempts(number: int) -> str:
    return f"{number} attempt{'s' if number > 1 else ''}"


def download(
    url: str,
    temporary: Path,
    limits: FetchLimits,
    allow_insecure_http: bool,
    validators: Validators | None = None,
) -> Received:
    """One attempt at `url` into `temporary`. What may pass on another attempt (network errors,
    timeouts, 5xx, 429, truncation) raises TransientDownloadError while the task has retries
    and the overall deadline leaves time for one; never a 4xx, an oversized body or an unknown
    encoding."""
    attempt = current_attempt(limits.deadline_seconds)
    try:
        return _stream_to(url, temporary, limits, attempt.deadline, allow_insecure_http, validators)
    except httpx.HTTPStatusError as error:
        if error.response.status_code not in TRANSIENT_STATUSES:
            raise DownloadError(
                f"download of {url} failed: {_describe(error)} (not retried: the server "
                "refused the request; check the URL)"
            ) from None
        reason = _describe(error)
    except (httpx.TransportError, ConnectionError, TimeoutError) as error:
        # Refused or reset connections, timeouts and truncated bodies are all here.
        reason = _describe(error)
    failed = f"download of {url} failed after {_attempts(attempt.number)}"
    if attempt.retries_left and time.monotonic() + attempt.next_delay >= attempt.deadline:
        raise DownloadError(
            f"{failed}, and the overall deadline of {limits.deadline_seconds:g} s leaves no "
            f"time for another: {reason}"
        )
    raise TransientDownloadError(f"{failed}: {reason}")
