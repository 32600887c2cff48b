"""The Pacifica Archive Interface over HTTP (API.md section 4).

Its posix backend answers 500 for a missing file as for a passing fault, so a
5xx is transient here: the pipeline's bounded retries turn a lasting one into
a clear error on the cart. Only the last line of the archive's traceback is
kept, as the cause; the traceback itself never travels further.

It speaks through httpcore, the connection pool under httpx, directly: a cart
of small files is two archive requests per file, and httpx's client layers
(URL and header models, auth, redirects, cookies) cost 1.3 ms of CPU per
request on a 2-core VM against 0.7 ms for httpcore alone, while the archive
itself answers in about 2 ms. Pooling, keep-alive and timeouts are httpcore's.
"""

from __future__ import annotations

import email.utils
import json
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from urllib.parse import quote

import httpcore
from httpcore._sync.http11 import HTTP11Connection

from cartd.archive.base import ArchiveFile
from cartd.errors import ArchiveError, PermanentArchiveError, TransientArchiveError

_MEDIA = b"x-pacifica-file-storage-media"

#: Bytes asked of the socket per read. httpcore asks 64 KiB, and its per-read work then
#: costs more CPU than hashing the bytes. Bigger reads are cheaper per byte until they
#: reach glibc's 128 KiB mmap threshold: from there every buffer is fresh memory that
#: page-faults in (a 1 GiB pull at 1 MiB reads: 150,000 faults, 12 MiB more peak RSS,
#: no faster). httpcore has no setting for it, only this class attribute;
#: `test_durable` checks it still exists, so a renamed one fails instead of going slow.
SOCKET_READ_SIZE = 112 * 1024
HTTP11Connection.READ_NUM_BYTES = max(HTTP11Connection.READ_NUM_BYTES, SOCKET_READ_SIZE)

#: What a broken connection raises: every httpcore error but a timeout.
_TRANSPORT_ERRORS = (
    httpcore.NetworkError,
    httpcore.ProtocolError,
    httpcore.ConnectionNotAvailable,
    httpcore.UnsupportedProtocol,
)


def describe_failure(status: int, body: bytes) -> str:
    """A one-line cause from an archive error answer: status and the archive's own words."""
    text = ""
    try:
        document = json.loads(body)
    except ValueError:
        document = None
    if isinstance(document, dict):
        traceback = str(document.get("traceback") or "").strip()
        text = traceback.splitlines()[-1] if traceback else str(document.get("message") or "")
    return f"archive answered {status}" + (f": {text[:300]}" if text else "")


def _raise_for(status: int, body: bytes) -> None:
    if status < 400:
        return
    cause = describe_failure(status, body)
    if status >= 500 or status in (408, 429):
        raise TransientArchiveError(cause)
    if status == 404:
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


def _headers(response: httpcore.Response) -> dict[bytes, str]:
    return {name.lower(): value.decode("latin-1") for name, value in response.headers}


class PacificaArchive:
    """Keeps a pool of keep-alive connections; every call has a timeout."""

    def __init__(self, base_url: str, *, timeout: float, connections: int) -> None:
        self.base_url = base_url if base_url.endswith("/") else base_url + "/"
        self._timeouts = {
            "connect": min(timeout, 10.0),
            "read": timeout,
            "write": timeout,
            "pool": timeout,
        }
        self._pool = httpcore.ConnectionPool(
            max_connections=connections, max_keepalive_connections=connections
        )

    def _url(self, file_id: str) -> str:
        return self.base_url + quote(file_id, safe="")

    def _request(self, method: str, file_id: str) -> httpcore.Response:
        headers = [(b"Content-Length", b"0")] if method == "POST" else []
        try:
            response = self._pool.request(
                method,
                self._url(file_id),
                headers=headers,
                extensions={"timeout": self._timeouts},
            )
        except httpcore.TimeoutException as exc:
            raise TransientArchiveError(f"{method} timed out ({type(exc).__name__})") from exc
        except _TRANSPORT_ERRORS as exc:
            raise TransientArchiveError(f"{method} failed: {type(exc).__name__}: {exc}") from exc
        _raise_for(response.status, response.content)
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
        headers = _headers(response)
        try:
            size = int(headers[b"x-content-length"])
        except (KeyError, ValueError):
            raise TransientArchiveError(
                "archive HEAD answer lacks a valid X-Content-Length"
            ) from None
        try:
            mtime = _mtime(headers.get(b"last-modified"))
        except (TypeError, ValueError):
            mtime = 0.0
        media = headers.get(_MEDIA, "disk").strip().lower()
        return ArchiveFile(
            size=size,
            mtime=mtime,
            on_disk=media == "disk",
            message=headers.get(b"x-pacifica-messsage", ""),
        )

    def read(self, file_id: str) -> AbstractContextManager[Iterator[bytes]]:
        return self._read(file_id)

    @contextmanager
    def _read(self, file_id: str) -> Iterator[Iterator[bytes]]:
        try:
            with self._pool.stream(
                "GET", self._url(file_id), extensions={"timeout": self._timeouts}
            ) as response:
                if response.status >= 400:
                    _raise_for(response.status, response.read())
                yield self._chunks(response)
        except ArchiveError:
            raise
        except httpcore.TimeoutException as exc:
            raise TransientArchiveError(f"GET timed out ({type(exc).__name__})") from exc
        except _TRANSPORT_ERRORS as exc:
            raise TransientArchiveError(f"GET failed: {type(exc).__name__}: {exc}") from exc

    def _chunks(self, response: httpcore.Response) -> Iterator[bytes]:
        try:
            yield from response.iter_stream()  # as the socket gives them: no re-chunking
        except httpcore.TimeoutException as exc:
            raise TransientArchiveError(f"GET stalled ({type(exc).__name__})") from exc
        except _TRANSPORT_ERRORS as exc:
            raise TransientArchiveError(f"GET broke off: {type(exc).__name__}: {exc}") from exc

    def close(self) -> None:
        self._pool.close()
