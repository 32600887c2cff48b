"""The Pacifica Archive Interface over HTTP (API.md section 4).

Its posix backend answers 500 for a missing file as for a passing fault, so a
5xx is transient here: the pipeline's bounded retries turn a lasting one into
a clear error on the cart. Only the last line of the archive's traceback is
kept, as the cause; the traceback itself never travels further.

It speaks HTTP/1.1 through the standard library's `http.client`, keeping one
keep-alive connection per worker. A cart of small files is two archive requests
per file, and a large file is all socket reads: on a 2-core VM, httpx cost 1.3
ms of CPU per request, httpcore (h11) 0.7 ms and `http.client` 0.4 ms, and a
1 GiB GET read and hashed took 2.7 s of CPU through httpcore against 1.1 s
through `http.client`, while the archive serves it in about 3.3 s.
"""

from __future__ import annotations

import contextlib
import email.utils
import http.client
import json
import re
import socket
import threading
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from functools import partial
from urllib.parse import quote, urlsplit

from cartd.archive.base import Abort, ArchiveFile
from cartd.errors import PermanentArchiveError, TransientArchiveError

_MEDIA = "x-pacifica-file-storage-media"

#: Bytes asked of the socket per read: large reads cost less CPU per byte until they reach
#: glibc's 128 KiB mmap threshold, from where every buffer is fresh memory that
#: page-faults in (a 1 GiB pull at 1 MiB reads: 150,000 faults and 12 MiB more peak RSS,
#: no faster).
SOCKET_READ_SIZE = 112 * 1024

#: What an idle keep-alive connection the archive has closed meanwhile raises on reuse.
_STALE = (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError)


#: A quoted string holding a path, or a bare absolute path (not the path of a URL).
_SERVER_PATH = re.compile(r"""'[^']*/[^']*'|"[^"]*/[^"]*"|(?<![\w.:/])/[^\s'",;)]+""")


def without_paths(text: str) -> str:
    """The archive's words with its server-side paths left out: they tell a client where
    files live on the archive's disks, and nothing about what went wrong."""
    return _SERVER_PATH.sub("<path>", text)


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
    text = without_paths(text)
    return f"archive answered {status}" + (f": {text[:300]}" if text else "")


def _raise_for(status: int, body: bytes) -> None:
    if status < 400:
        return
    cause = describe_failure(status, body)
    if status >= 500 or status in (408, 429):
        raise TransientArchiveError(cause, answered=status)
    if status == 404:
        raise PermanentArchiveError(f"the archive has no such file ({cause})", answered=status)
    raise PermanentArchiveError(cause, answered=status)


def _mtime(value: str | None) -> float:
    if not value:
        return 0.0
    try:
        return float(value)
    except ValueError:
        parsed = email.utils.parsedate_to_datetime(value)
        return parsed.timestamp() if parsed else 0.0


def _headers(response: http.client.HTTPResponse) -> dict[str, str]:
    return {name.lower(): value for name, value in response.getheaders()}


def _failure(method: str, exc: Exception) -> TransientArchiveError:
    if isinstance(exc, TimeoutError):
        return TransientArchiveError(f"{method} timed out ({type(exc).__name__})")
    return TransientArchiveError(
        f"{method} failed: {type(exc).__name__}: {without_paths(str(exc))}"
    )


def _body(method: str, response: http.client.HTTPResponse) -> bytes:
    """The whole body of an answer; a connection failing meanwhile is a transient fault."""
    try:
        return response.read()
    except (OSError, http.client.HTTPException) as exc:
        raise _failure(method, exc) from exc


def _cut(connection: http.client.HTTPConnection) -> None:
    """Break a connection another thread may be blocked on: its read returns at once."""
    sock = connection.sock
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)


class _Connections:
    """Idle keep-alive connections to the archive; each in use by one thread at a time."""

    def __init__(self, base_url: str, *, timeout: float, keep: int) -> None:
        parts = urlsplit(base_url)
        self._factory = (
            http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
        )
        self._host = parts.hostname or "localhost"
        self._port = parts.port
        self._timeout = timeout
        self._keep = keep
        self._idle: list[http.client.HTTPConnection] = []
        self._lock = threading.Lock()

    def take(self) -> tuple[http.client.HTTPConnection, bool]:
        """A connection, and whether it was used before (and so may have gone stale)."""
        with self._lock:
            if self._idle:
                return self._idle.pop(), True
        connection = self._factory(self._host, self._port, timeout=min(self._timeout, 10.0))
        connection.connect()
        assert connection.sock is not None
        connection.sock.settimeout(self._timeout)
        return connection, False

    def give_back(self, connection: http.client.HTTPConnection) -> None:
        """Keep a connection whose last answer was read to the end for the next request."""
        if connection.sock is None:  # the archive asked to close it
            return
        with self._lock:
            if len(self._idle) < self._keep:
                self._idle.append(connection)
                return
        connection.close()

    def close(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, []
        for connection in idle:
            connection.close()


class PacificaArchive:
    """Keeps keep-alive connections; every call has a timeout."""

    reads_in_process = False

    def __init__(self, base_url: str, *, timeout: float, connections: int) -> None:
        self.base_url = base_url if base_url.endswith("/") else base_url + "/"
        self._path = urlsplit(self.base_url).path
        self._connections = _Connections(self.base_url, timeout=timeout, keep=connections)

    @contextmanager
    def _exchange(
        self, method: str, file_id: str, abort: Abort
    ) -> Iterator[http.client.HTTPResponse]:
        """Send a request and yield the answer with its head read. Afterwards the connection
        serves the next request if the answer was read to its end, else it is closed;
        meanwhile `abort` may break it."""
        headers = {"Content-Length": "0"} if method == "POST" else {}
        target = self._path + quote(file_id, safe="")
        while True:
            abort.check()
            try:
                connection, reused = self._connections.take()
            except OSError as exc:
                raise _failure(method, exc) from exc
            try:
                with abort.guard(partial(_cut, connection)):
                    try:
                        connection.request(method, target, headers=headers)
                        response = connection.getresponse()
                    except _STALE as exc:
                        if not reused:
                            raise _failure(method, exc) from exc
                        connection.close()
                        continue  # closed by the archive while idle: any request may be repeated
                    except (OSError, http.client.HTTPException) as exc:
                        raise _failure(method, exc) from exc
                    yield response
            except BaseException:
                connection.close()
                raise
            if response.isclosed():
                self._connections.give_back(connection)
            else:
                connection.close()
            return

    def _request(self, method: str, file_id: str, abort: Abort) -> http.client.HTTPResponse:
        with self._exchange(method, file_id, abort) as response:
            body = _body(method, response)
        _raise_for(response.status, body)
        return response

    def stage(self, file_id: str, abort: Abort) -> None:
        self._request("POST", file_id, abort)

    def status(self, file_id: str, abort: Abort) -> ArchiveFile:
        try:
            response = self._request("HEAD", file_id, abort)
        except TransientArchiveError as exc:
            # A HEAD answer has no body, so a failed one cannot say why; a stage request
            # for the same file fails with the archive's own words (e.g. no such file).
            if exc.answered is None or exc.answered < 500:
                raise
            self._request("POST", file_id, abort)
            raise
        headers = _headers(response)
        try:
            size = int(headers["x-content-length"])
        except (KeyError, ValueError):
            raise TransientArchiveError(
                "archive HEAD answer lacks a valid X-Content-Length"
            ) from None
        try:
            mtime = _mtime(headers.get("last-modified"))
        except (TypeError, ValueError):
            mtime = 0.0
        media = headers.get(_MEDIA, "disk").strip().lower()
        return ArchiveFile(
            size=size,
            mtime=mtime,
            on_disk=media == "disk",
            message=headers.get("x-pacifica-messsage", ""),
        )

    def read(self, file_id: str, abort: Abort) -> AbstractContextManager[Iterator[bytes]]:
        return self._read(file_id, abort)

    @contextmanager
    def _read(self, file_id: str, abort: Abort) -> Iterator[Iterator[bytes]]:
        with self._exchange("GET", file_id, abort) as response:
            if response.status >= 400:
                _raise_for(response.status, _body("GET", response))
            yield self._chunks(response)

    @staticmethod
    def _chunks(response: http.client.HTTPResponse) -> Iterator[bytes]:
        try:
            while chunk := response.read(SOCKET_READ_SIZE):
                yield chunk
        except TimeoutError as exc:
            raise TransientArchiveError(f"GET stalled ({type(exc).__name__})") from exc
        except (OSError, http.client.HTTPException) as exc:
            raise TransientArchiveError(
                f"GET broke off: {type(exc).__name__}: {without_paths(str(exc))}"
            ) from exc

    def close(self) -> None:
        self._connections.close()
