"""A callback receiver for the tests: a real HTTP server on a loopback port (the standard
library's threaded server) that records every request it gets and answers with the
status the test sets, or 500 for the first N requests."""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from tests.support.cartd_server import wait_until
from tests.support.lifecycle import Running


@dataclass(frozen=True)
class Received:
    """One request as it came: path, headers (lower-case names) and the raw body."""

    path: str
    headers: dict[str, str]
    body: bytes
    answered: int

    @property
    def event(self) -> dict[str, Any]:
        document: dict[str, Any] = json.loads(self.body)
        return document

    def signed_with(self, secret: str) -> bool:
        """Whether `X-Cartd-Signature` is the HMAC-SHA256 of the raw body with `secret`,
        checked as a receiver should: on the bytes received, in constant time."""
        expected = "sha256=" + hmac.new(secret.encode(), self.body, hashlib.sha256).hexdigest()
        return hmac.compare_digest(expected, self.headers.get("x-cartd-signature", ""))


class Receiver(Running):
    def __init__(self) -> None:
        self.received: list[Received] = []
        self.status = 200
        self.fail_first = 0  # answer 500 to this many requests first
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def host(self) -> str:
        """The receiver as an entry of `cartd.callback_hosts`."""
        return f"127.0.0.1:{self.port}"

    def answer(self, status: int, fail_first: int = 0) -> None:
        with self._lock:
            self.status, self.fail_first = status, fail_first

    def _record(self, path: str, headers: dict[str, str], body: bytes) -> int:
        with self._lock:
            if self.fail_first > 0:
                self.fail_first -= 1
                status = 500
            else:
                status = self.status
            self.received.append(Received(path, headers, body, status))
            return status

    def to(self, path: str) -> list[Received]:
        """The requests made to one path (each test orders its own)."""
        with self._lock:
            return [request for request in self.received if request.path == path]

    def wait_for(self, path: str, count: int = 1, timeout: float = 30.0) -> list[Received]:
        wait_until(lambda: len(self.to(path)) >= count, timeout)
        return self.to(path)

    def start(self) -> Receiver:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                body = self.rfile.read(length)
                headers = {name.lower(): value for name, value in self.headers.items()}
                status = receiver._record(self.path, headers, body)
                self.send_response(status)
                if 300 <= status < 400:  # elsewhere: a sender must not follow it
                    self.send_header("Location", "http://127.0.0.1:1/elsewhere")
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.port = int(self._server.server_address[1])
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(5)
