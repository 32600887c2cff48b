"""Pick the archive adapter from the configured URL."""

from __future__ import annotations

from urllib.parse import unquote, urlparse

from cartd.archive.base import Archive
from cartd.archive.http import PacificaArchive
from cartd.archive.local import FolderArchive
from cartd.errors import ConfigError


def open_archive(url: str, *, chunk_size: int, timeout: float, connections: int) -> Archive:
    parsed = urlparse(url)
    if parsed.scheme in {"http", "https"}:
        return PacificaArchive(url, timeout=timeout, connections=connections)
    if parsed.scheme == "file":
        return FolderArchive(unquote(parsed.path), chunk_size=chunk_size)
    raise ConfigError(f"archiveinterface.url: unsupported scheme in {url!r}")
