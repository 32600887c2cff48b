"""A fault-injecting stand-in for the Pacifica Archive Interface.

The real archive (see ``archive_interface.py``) is the reference for the
wire format, but it cannot fail on demand.  This one speaks the same HTTP
(methods, status codes, headers, chunked GET bodies, CherryPy-style JSON
error bodies with a ``traceback`` key) and injects faults per file id:
tape staging delays, 500s, connections cut mid-body, stalls, short or
corrupt bodies, 404s.

It is a plain ASGI app (no framework, so every byte on the wire is ours)
served by uvicorn on a loopback socket we bind ourselves (port 0, no race)
in a background thread.  Faults are real on the wire: a "reset" sends part
of a chunked body and then closes the TCP connection, so an HTTP client sees
an incomplete message (``httpx.RemoteProtocolError``), not a polite error.

Wire behaviour mirrored from pacifica-archiveinterface 0.4.2 (posix):

* ``GET /`` -> 200 JSON (chunked).
* ``HEAD /ID`` -> 204 with ``X-Pacifica-Messsage`` (sic), ``X-Pacifica-File``,
  ``X-Content-Length``, ``Last-Modified`` (unix seconds as ``str(float)``),
  ``X-Pacifica-Ctime``, ``X-Pacifica-Bytes-Per-Level`` and
  ``X-Pacifica-File-Storage-Media``.
* ``POST /ID`` -> 200 JSON ``{"message": "File was staged", "file": ID}``;
  411 when neither ``Content-Length`` nor ``Transfer-Encoding`` is sent.
* ``GET /ID`` -> 200 ``application/octet-stream``, chunked.
* ``PUT /ID`` -> 201 JSON ``{"message": "File added to archive", ...}``;
  400 for form content types; ``Last-Modified`` is ignored (as in 0.4.2).
* ``DELETE /ID`` -> 200, empty body.
* Unknown id -> 500 JSON with ``status``, ``message``, ``traceback``,
  ``version`` (the body is dropped for HEAD, as HTTP requires).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import socket
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import uvicorn

from tests.support.lifecycle import Running

Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

ALLOW = "DELETE, GET, HEAD, POST, PUT"
VERSION = "fault-archive"
FORM_TYPES = ("application/x-www-form-urlencoded", "multipart/")


@dataclass(frozen=True)
class Faults:
    """Faults to inject for one file id; every field is optional.

    Counters are per id and each "first N" fault fires exactly N times, so
    combined faults come one after another.  ``fail_first`` takes the first
    N requests of any method (after the 411 check).  The body faults take
    the GETs that would otherwise serve data (not those already answered
    500 by ``fail_first`` or for an unstaged tape file) in turn: first
    ``reset_first`` GETs, then ``truncate_first``, then ``corrupt_first``.
    ``delay_first`` overlays the first N of those GETs, whatever else they do.
    """

    tape_seconds: float | None = None
    """Report ``tape`` until this long after the first successful POST
    (forever if never staged); GET answers 500 while on tape."""
    fail_first: int = 0
    """First N requests (any method) answer 500 JSON."""
    reset_first: int = 0
    """First N GETs send about half the body, then cut the connection."""
    delay_first: int = 0
    """First N GETs stall ``delay_seconds`` before the status line."""
    delay_seconds: float = 0.0
    truncate_first: int = 0
    """The next N GETs (after the resets) end the chunked body cleanly
    after about half of it."""
    corrupt_always: bool = False
    """Every GET (after resets and truncations) sends the right length with
    one byte flipped."""
    corrupt_first: int = 0
    """Like ``corrupt_always`` for the next N GETs only."""
    not_found: bool = False
    """Every request answers 404 JSON, as some other backends do."""
    head_seconds: float = 0.0
    """Every HEAD stalls this long before answering (a slow metadata server)."""
    mid_body_seconds: float = 0.0
    """Every GET that serves data stalls this long after about half the body (a slow
    transfer: what was sent so far is on the client's side meanwhile)."""


@dataclass
class _Entry:
    """One stored file plus its fault state (guarded by the archive's lock)."""

    data: bytes
    mtime: float
    ctime: float
    faults: Faults
    requests: int = 0
    data_gets: int = 0
    staged_at: float | None = None


@dataclass(frozen=True)
class _Reply:
    """A decision taken under the lock, acted on outside it."""

    status: int
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytes = b""
    chunked: bool = False
    delay: float = 0.0
    cut_after: int | None = None
    """For chunked replies: send this many bytes, then drop the connection."""
    mid_body_stall: float = 0.0
    """For chunked replies: wait this long once about half the body is out."""


class _InjectedResetError(Exception):
    """Raised inside the app so uvicorn drops the connection mid-body."""


class _QuietInjectedResets(logging.Filter):
    """Keep uvicorn from logging our deliberate resets as application errors."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        return not isinstance(exc, _InjectedResetError)


def _error(status: int, reason: str, message: str, traceback: str) -> _Reply:
    """Build a CherryPy-style JSON error reply."""
    body = json.dumps(
        {
            "status": f"{status} {reason}",
            "message": message,
            "traceback": traceback,
            "version": VERSION,
        }
    ).encode()
    return _Reply(
        status, [("Content-Type", "application/json"), ("Content-Length", str(len(body)))], body
    )


def _json(status: int, payload: object, *, chunked: bool = False) -> _Reply:
    """Build a JSON reply, chunked or with a Content-Length."""
    body = json.dumps(payload).encode()
    headers = [("Content-Type", "application/json")]
    if not chunked:
        headers.append(("Content-Length", str(len(body))))
    return _Reply(status, headers, body, chunked=chunked)


def _unknown(file_id: str) -> _Reply:
    """Reply like the posix backend does for a missing file."""
    msg = f"Can't open posix file with error: [Errno 2] No such file or directory: '{file_id}'"
    tb = f"Traceback (most recent call last):\nFileNotFoundError: {msg}\n"
    return _error(
        500, "Internal Server Error", "The server encountered an unexpected condition", tb
    )


class FaultArchive(Running):
    """Fault-injecting archive served on ``127.0.0.1`` from a background thread.

    Use as a context manager, or call ``start()`` / ``stop()``.  ``url`` ends
    with a slash so ``url + file_id`` is a file's address.
    """

    def __init__(self, *, chunk_size: int = 64 * 1024, keep_alive_seconds: float = 5.0) -> None:
        """Prepare an archive; ``chunk_size`` is the GET body chunk size, and an idle
        keep-alive connection is closed after ``keep_alive_seconds``."""
        if chunk_size < 1:
            raise ValueError("chunk_size must be positive")
        self.chunk_size = chunk_size
        self.keep_alive_seconds = keep_alive_seconds
        self.url = ""
        self._lock = threading.Lock()
        self._files: dict[str, _Entry] = {}
        self._requests: list[tuple[float, str, str | None]] = []
        self._departures: list[tuple[float, str | None]] = []
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping: asyncio.Event | None = None
        self._thread_error: BaseException | None = None

    # -- lifecycle ---------------------------------------------------------

    def start(self, timeout: float = 10.0) -> FaultArchive:
        """Bind a free loopback port, serve in a thread, return once listening."""
        if self._thread is not None:
            raise RuntimeError("FaultArchive already started")
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        config = uvicorn.Config(
            self._app,
            interface="asgi3",
            lifespan="off",
            proxy_headers=False,
            http="h11",
            log_config=None,
            log_level="warning",
            access_log=False,
            timeout_graceful_shutdown=2,
            timeout_keep_alive=self.keep_alive_seconds,
        )
        self._server = uvicorn.Server(config)
        logging.getLogger("uvicorn.error").addFilter(_QUIET_RESETS)
        self._thread = threading.Thread(
            target=self._run, args=(sock,), name=f"fault-archive-{port}", daemon=True
        )
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self._server.started:
            if not self._thread.is_alive():
                error = self._thread_error
                self.stop()
                raise RuntimeError(f"fault archive thread died: {error!r}")
            if time.monotonic() > deadline:
                self.stop()
                raise TimeoutError(f"fault archive did not start within {timeout}s")
            time.sleep(0.01)
        self.url = f"http://127.0.0.1:{port}/"
        return self

    def _run(self, sock: socket.socket) -> None:
        """Thread body: run uvicorn on our own event loop."""
        try:
            asyncio.run(self._serve(sock))
        except BaseException as exc:  # surfaced by start()
            self._thread_error = exc
        finally:
            sock.close()  # uvicorn closes it on shutdown, but not if it never started

    async def _serve(self, sock: socket.socket) -> None:
        """Record the loop so ``stop()`` can wake stalled requests, then serve."""
        assert self._server is not None
        self._loop = asyncio.get_running_loop()
        self._stopping = asyncio.Event()
        await self._server.serve(sockets=[sock])

    def stop(self, timeout: float = 10.0) -> None:
        """Wake stalled requests, shut uvicorn down and join its thread."""
        server, thread = self._server, self._thread
        if server is None or thread is None:
            return
        server.should_exit = True
        if self._loop is not None and self._stopping is not None:
            with contextlib.suppress(RuntimeError):  # loop already closed
                self._loop.call_soon_threadsafe(self._stopping.set)
        thread.join(timeout)
        if thread.is_alive():
            server.force_exit = True
            thread.join(timeout)
        self._server = self._thread = None
        self._loop = self._stopping = None
        if thread.is_alive():
            raise RuntimeError("fault archive thread did not stop")

    # -- content and accounting -------------------------------------------

    def add(
        self, file_id: str, data: bytes, mtime: float | None = None, faults: Faults | None = None
    ) -> None:
        """Store ``data`` as ``file_id`` (replacing it and resetting its counters).

        ``mtime`` defaults to now; it is what HEAD reports as Last-Modified.
        """
        if not file_id or "/" in file_id:
            raise ValueError(f"bad file id: {file_id!r}")
        faults = faults or Faults()
        if len(data) < 2 and (faults.reset_first or faults.truncate_first):
            raise ValueError("reset/truncate need at least 2 bytes to cut short")
        if not data and (faults.corrupt_always or faults.corrupt_first):
            raise ValueError("cannot corrupt an empty file")
        now = time.time()
        with self._lock:
            self._files[file_id] = _Entry(
                bytes(data), now if mtime is None else float(mtime), now, faults
            )

    def data(self, file_id: str) -> bytes:
        """Return the stored bytes of ``file_id`` (e.g. after a PUT)."""
        with self._lock:
            return self._files[file_id].data

    @property
    def requests(self) -> list[tuple[float, str, str | None]]:
        """Snapshot of ``(time.monotonic(), method, file_id or None)`` per request."""
        with self._lock:
            return list(self._requests)

    def count(self, method: str, file_id: str | None = None) -> int:
        """Count requests with ``method`` (any id when ``file_id`` is None)."""
        method = method.upper()
        with self._lock:
            return sum(
                1 for _, m, i in self._requests if m == method and (file_id is None or i == file_id)
            )

    def departures(self, file_id: str | None = None) -> list[float]:
        """When (``time.monotonic()``) a client left a stalled request, e.g. one cut short."""
        with self._lock:
            return [when for when, i in self._departures if file_id is None or i == file_id]

    def reset_counts(self) -> None:
        """Forget the request log (fault counters are per ``add()``, kept)."""
        with self._lock:
            self._requests.clear()

    # -- the ASGI app ------------------------------------------------------

    async def _app(self, scope: Message, receive: Receive, send: Send) -> None:
        """Serve one HTTP request."""
        if scope["type"] != "http":
            return
        method: str = scope["method"].upper()
        path: str = scope["path"]
        file_id = path[1:] or None
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        body = await self._read_body(receive)
        reply = self._decide(method, file_id, headers, body)
        await self._respond(reply, receive, send, file_id)

    @staticmethod
    async def _read_body(receive: Receive) -> bytes:
        """Drain the request body (needed before waiting on disconnects)."""
        chunks = []
        while True:
            message = await receive()
            if message["type"] != "http.request":
                break
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                break
        return b"".join(chunks)

    def _decide(
        self, method: str, file_id: str | None, headers: dict[str, str], body: bytes
    ) -> _Reply:
        """Pick the reply and update counters, atomically."""
        with self._lock:
            self._requests.append((time.monotonic(), method, file_id))
            if (
                method in ("POST", "PUT")
                and "content-length" not in headers
                and "transfer-encoding" not in headers
            ):
                return _error(
                    411,
                    "Length Required",
                    "Client must specify Content-Length",
                    "HTTPError: (411, None)\n",
                )
            if method not in ALLOW.split(", "):
                reply = _error(405, "Method Not Allowed", f"{method} not allowed", "")
                return _Reply(reply.status, [*reply.headers, ("Allow", ALLOW)], reply.body)
            if file_id is None:
                if method == "GET" or method == "HEAD":
                    return _json(
                        200, {"message": "Pacifica Archive Interface Up and Running"}, chunked=True
                    )
                return _error(404, "Not Found", "The path '/' was not found.", "")
            if "/" in file_id:
                return _error(404, "Not Found", f"The path '{file_id}' was not found.", "")
            if method == "PUT":
                return self._put(file_id, headers, body)
            entry = self._files.get(file_id)
            if entry is None:
                return _unknown(file_id)
            entry.requests += 1
            faults = entry.faults
            if faults.not_found:
                return _error(404, "Not Found", f"File {file_id} not found", "injected not_found\n")
            if entry.requests <= faults.fail_first:
                return _error(
                    500,
                    "Internal Server Error",
                    "injected failure",
                    f"injected fail_first #{entry.requests}\n",
                )
            if method == "HEAD":
                return self._head(file_id, entry)
            if method == "POST":
                if entry.staged_at is None:
                    entry.staged_at = time.monotonic()
                return _json(200, {"message": "File was staged", "file": file_id})
            if method == "DELETE":
                del self._files[file_id]
                return _Reply(200, [("Content-Length", "0")])
            return self._get(file_id, entry)

    def _put(self, file_id: str, headers: dict[str, str], body: bytes) -> _Reply:
        """Store a file like the real PUT (mtime is always now, as in 0.4.2)."""
        if headers.get("content-type", "").lower().startswith(FORM_TYPES):
            return _error(400, "Bad Request", "form bodies are not file data", "")
        now = time.time()
        old = self._files.get(file_id)
        self._files[file_id] = _Entry(body, now, now, old.faults if old else Faults())
        return _json(201, {"message": "File added to archive", "total_bytes": len(body)})

    @staticmethod
    def _on_tape(entry: _Entry) -> bool:
        """Tell whether the file still sits on (simulated) tape."""
        tape = entry.faults.tape_seconds
        if tape is None:
            return False
        return entry.staged_at is None or time.monotonic() < entry.staged_at + tape

    def _head(self, file_id: str, entry: _Entry) -> _Reply:
        """Status headers as the posix backend sends them (HPSS-like on tape)."""
        size = len(entry.data)
        if entry.faults.tape_seconds is None:
            media, per_level = "disk", f"({size},)"
        elif self._on_tape(entry):
            media, per_level = "tape", f"(0, {size})"
        else:
            media, per_level = "disk", f"({size}, {size})"
        return _Reply(
            204,
            [
                ("Content-Type", "application/json"),
                ("X-Pacifica-Messsage", "File was found"),
                ("X-Pacifica-File", f"/fault-archive/{file_id}"),
                ("X-Content-Length", str(size)),
                ("Last-Modified", str(entry.mtime)),
                ("X-Pacifica-Ctime", str(entry.ctime)),
                ("X-Pacifica-Bytes-Per-Level", per_level),
                ("X-Pacifica-File-Storage-Media", media),
            ],
            delay=entry.faults.head_seconds,
        )

    def _get(self, file_id: str, entry: _Entry) -> _Reply:
        """File bytes, chunked, with any GET faults applied."""
        if self._on_tape(entry):
            tb = (
                "Traceback (most recent call last):\n"
                f"ArchiveInterfaceError: {file_id} is on tape, stage it first\n"
            )
            return _error(500, "Internal Server Error", "File is not staged", tb)
        entry.data_gets += 1
        n, faults, data = entry.data_gets, entry.faults, entry.data
        delay = faults.delay_seconds if n <= faults.delay_first else 0.0
        cut_after = None
        truncate_end = faults.reset_first + faults.truncate_first
        if n <= faults.reset_first:
            cut_after = len(data) // 2
        elif n <= truncate_end:
            data = data[: len(data) // 2]
        elif faults.corrupt_always or n <= truncate_end + faults.corrupt_first:
            mid = len(data) // 2
            data = data[:mid] + bytes([data[mid] ^ 0xFF]) + data[mid + 1 :]
        return _Reply(
            200,
            [("Content-Type", "application/octet-stream")],
            data,
            chunked=True,
            delay=delay,
            cut_after=cut_after,
            mid_body_stall=faults.mid_body_seconds,
        )

    async def _respond(
        self, reply: _Reply, receive: Receive, send: Send, file_id: str | None
    ) -> None:
        """Put ``reply`` on the wire, stalling or cutting it as it says."""
        if reply.delay > 0:
            outcome = await self._stall(reply.delay, receive)
            if outcome == "left":
                with self._lock:
                    self._departures.append((time.monotonic(), file_id))
                return  # the client gave up (e.g. timed out): nobody to answer
            if outcome == "stopping":
                reply = _error(503, "Service Unavailable", "fault archive stopping", "")
        headers = [(b"allow", ALLOW.encode())] + [
            (k.lower().encode(), v.encode()) for k, v in reply.headers
        ]
        await send({"type": "http.response.start", "status": reply.status, "headers": headers})
        if not reply.chunked:
            await send({"type": "http.response.body", "body": reply.body})
            return
        body = reply.body if reply.cut_after is None else reply.body[: reply.cut_after]
        stall_at = len(reply.body) // 2 if reply.mid_body_stall else None
        for start in range(0, len(body), self.chunk_size):
            if stall_at is not None and start >= stall_at:
                stall_at = None
                if await self._stall(reply.mid_body_stall, receive) != "elapsed":
                    raise _InjectedResetError("left or stopped mid-body")
            await send(
                {
                    "type": "http.response.body",
                    "body": body[start : start + self.chunk_size],
                    "more_body": True,
                }
            )
        if reply.cut_after is not None:
            # Headers and a partial chunk are out; raising makes uvicorn close
            # the transport without the terminating chunk.
            raise _InjectedResetError("injected connection reset")
        await send({"type": "http.response.body", "body": b""})

    async def _stall(self, seconds: float, receive: Receive) -> str:
        """Wait ``seconds`` unless the client leaves or we stop first.

        Returns ``"elapsed"``, ``"left"`` or ``"stopping"``; waking up early
        keeps abandoned stalls from holding up ``stop()``.
        """
        assert self._stopping is not None
        sleep = asyncio.ensure_future(asyncio.sleep(seconds))
        # The body is drained, so the next message can only be http.disconnect.
        left = asyncio.ensure_future(receive())
        stopping = asyncio.ensure_future(self._stopping.wait())
        done, pending = await asyncio.wait(
            {sleep, left, stopping}, return_when=asyncio.FIRST_COMPLETED
        )
        for task in pending:
            task.cancel()
        if left in done:
            return "left"
        return "stopping" if stopping in done else "elapsed"


_QUIET_RESETS = _QuietInjectedResets()
