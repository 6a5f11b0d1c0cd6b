"""Where a dataset may come from: https anywhere, plain http only to this machine (unless the
user opts in), local paths and file:// URLs; and how messages name a source."""

from __future__ import annotations

import hashlib
import ipaddress
import urllib.request
from pathlib import Path
from urllib.parse import urlparse

from tasks.errors import ConfigError, DownloadError

CHUNK_BYTES = 1 << 16
NETWORK_SCHEMES = ("http", "https")
LOCAL_SCHEMES = ("", "file")


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


def require_local_file(source: str) -> None:
    local = local_path_of(source)
    if local is not None and not local.is_file():
        raise DownloadError(f"dataset source {local} does not exist or is not a file")
