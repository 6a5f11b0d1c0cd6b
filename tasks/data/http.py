"""The download client: one URL's body into a file, capped, hashed, decoded, within an overall
deadline, following only redirects the source policy allows; transient failures retried."""

from __future__ import annotations

import hashlib
import http.client
import time
import urllib.error
import urllib.request
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO, NamedTuple

from tasks.config import DatasetSpec
from tasks.data.sources import CHUNK_BYTES, check_source_allowed
from tasks.errors import ConfigError, DownloadError

if TYPE_CHECKING:
    from tasks.data.store import UrlEntry

DEFAULT_MAX_BYTES: int = DatasetSpec.model_fields["max_bytes"].default
DEFAULT_DEADLINE_SECONDS = 30 * 60.0
# Content-Encoding -> zlib window bits; any other encoding is refused by name.
_INFLATE_WBITS = {"gzip": 16 + zlib.MAX_WBITS, "x-gzip": 16 + zlib.MAX_WBITS, "deflate": 15}


@dataclass(frozen=True)
class FetchLimits:
    """How much a fetch may bring and how long it may take, retries included."""

    max_bytes: int = DEFAULT_MAX_BYTES
    deadline_seconds: float = DEFAULT_DEADLINE_SECONDS  # the whole fetch, every attempt
    timeout: float = 30  # one connection or one read
    attempts: int = 4
    backoff_seconds: float = 0.5


DEFAULT_LIMITS = FetchLimits()


class Received(NamedTuple):
    """What one fetch wrote: its checksum, and the server's validators for the next time."""

    sha256: str
    etag: str | None = None
    last_modified: str | None = None


class NotModified(Exception):
    """The server answered 304 to a conditional request: the cached copy is current."""


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
            raise NotModified from None
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
        writer = CappedWriter(out, limits.max_bytes, url)
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
