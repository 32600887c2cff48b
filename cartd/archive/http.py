"""The Pacifica Archive Interface over HTTP (API.md section 4).

Its posix backend answers 500 for a missing file as for a passing fault, so a
5xx is transient here: the pipeline's bounded retries turn a lasting one into
a clear error on the cart. Only the last line of the archive's traceback is
kept, as the cause; the traceback itself never travels further.
"""

from __future__ import annotations

import email.utils
import json
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from urllib.parse import quote

import httpx
from httpcore._sync.http11 import HTTP11Connection

from cartd.archive.base import ArchiveFile
from cartd.errors import ArchiveError, PermanentArchiveError, TransientArchiveError

_MEDIA = "X-Pacifica-File-Storage-Media"

#: Bytes asked of the socket per read. httpcore reads 64 KiB at a time, and at that
#: size its per-read work costs as much CPU as hashing the bytes: a 1 GiB pull spent
#: 2.7 CPU seconds in the client at 64 KiB and 1.5 at 1 MiB (2-core VM). httpcore has
#: no setting for it, only this class attribute; `test_archive_http` checks it still
#: exists, so an httpcore that renames it fails our tests instead of going slow.
SOCKET_READ_SIZE = 1024 * 1024
HTTP11Connection.READ_NUM_BYTES = max(HTTP11Connection.READ_NUM_BYTES, SOCKET_READ_SIZE)


def describe_failure(response: httpx.Response) -> str:
    """A one-line cause from an archive error answer: status and the archive's own words."""
    text = ""
    try:
        document = json.loads(response.read())
    except (ValueError, httpx.HTTPError):
        document = None
    if isinstance(document, dict):
        traceback = str(document.get("traceback") or "").strip()
        text = traceback.splitlines()[-1] if traceback else str(document.get("message") or "")
    return f"archive answered {response.status_code}" + (f": {text[:300]}" if text else "")


def _raise_for(response: httpx.Response) -> None:
    if response.status_code < 400:
        return
    cause = describe_failure(response)
    if response.status_code >= 500 or response.status_code in (408, 429):
        raise TransientArchiveError(cause)
    if response.status_code == 404:
        raise PermanentArchiveError(f"the archive has no such file ({cause})")
    raise PermanentArchiveError(cause)


def _mtime(value: str | None) -> float:
    if not value:
        return 0.0
    try:
        return float(value)
    except ValueError:
        parsed = email.utils.parsedate_to_datetime(value)
        return parsed.timestamp() if parsed else 0.0


class PacificaArchive:
    """Keeps a pool of keep-alive connections; every call has a timeout."""

    def __init__(self, base_url: str, *, timeout: float, connections: int) -> None:
        self.base_url = base_url if base_url.endswith("/") else base_url + "/"
        self._client = httpx.Client(
            timeout=httpx.Timeout(timeout, connect=min(timeout, 10.0)),
            limits=httpx.Limits(max_connections=connections, max_keepalive_connections=connections),
        )

    def _url(self, file_id: str) -> str:
        return self.base_url + quote(file_id, safe="")

    def _request(self, method: str, file_id: str) -> httpx.Response:
        headers = {"Content-Length": "0"} if method == "POST" else None
        try:
            response = self._client.request(method, self._url(file_id), headers=headers)
        except httpx.TimeoutException as exc:
            raise TransientArchiveError(f"{method} timed out ({type(exc).__name__})") from exc
        except httpx.TransportError as exc:
            raise TransientArchiveError(f"{method} failed: {type(exc).__name__}: {exc}") from exc
        _raise_for(response)
        return response

    def stage(self, file_id: str) -> None:
        self._request("POST", file_id)

    def status(self, file_id: str) -> ArchiveFile:
        try:
            response = self._request("HEAD", file_id)
        except TransientArchiveError as exc:
            # A HEAD answer has no body, so a failed one cannot say why; a stage request
            # for the same file fails with the archive's own words (e.g. no such file).
            if "archive answered 5" not in exc.message:
                raise
            self._request("POST", file_id)
            raise
        headers = response.headers
        try:
            size = int(headers["X-Content-Length"])
        except (KeyError, ValueError):
            raise TransientArchiveError(
                "archive HEAD answer lacks a valid X-Content-Length"
            ) from None
        try:
            mtime = _mtime(headers.get("Last-Modified"))
        except (TypeError, ValueError):
            mtime = 0.0
        media = headers.get(_MEDIA, "disk").strip().lower()
        return ArchiveFile(
            size=size,
            mtime=mtime,
            on_disk=media == "disk",
            message=headers.get("X-Pacifica-Messsage", ""),
        )

    def read(self, file_id: str) -> AbstractContextManager[Iterator[bytes]]:
        return self._read(file_id)

    @contextmanager
    def _read(self, file_id: str) -> Iterator[Iterator[bytes]]:
        try:
            with self._client.stream("GET", self._url(file_id)) as response:
                _raise_for(response)
                yield self._chunks(response)
        except ArchiveError:
            raise
        except httpx.TimeoutException as exc:
            raise TransientArchiveError(f"GET timed out ({type(exc).__name__})") from exc
        except httpx.TransportError as exc:
            raise TransientArchiveError(f"GET failed: {type(exc).__name__}: {exc}") from exc

    def _chunks(self, response: httpx.Response) -> Iterator[bytes]:
        try:
            yield from response.iter_raw()  # as the socket gives them: no re-chunking copies
        except httpx.TimeoutException as exc:
            raise TransientArchiveError(f"GET stalled ({type(exc).__name__})") from exc
        except httpx.TransportError as exc:
            raise TransientArchiveError(f"GET broke off: {type(exc).__name__}: {exc}") from exc

    def close(self) -> None:
        self._client.close()
