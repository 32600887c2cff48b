"""A loopback HTTP proxy in front of a real cart server that injects faults into the
answers carrying a tar, which the server itself cannot be made to produce.

It relays every request to the server (one request per connection: it asks the server
to close after answering, and says so to the client) and records each request's method,
target and headers. An answer to `GET /<uid>` that carries a tar (200 or 206) can be
cut after `cut_after` bytes of its body, for the next `cuts` such answers (the
connection is closed, so the client sees a body shorter than its `Content-Length`); and
every such answer can have the bytes `flip[0]` replaced by `flip[1]` (same length): a
byte flipped in a member on its way, which only the client can notice.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from dataclasses import dataclass
from urllib.parse import urlsplit

from tests.support.lifecycle import Running

HEAD_END = b"\r\n\r\n"


@dataclass(frozen=True)
class Seen:
    """One request as the proxy relayed it."""

    method: str
    target: str
    headers: dict[str, str]


def _read_head(sock: socket.socket) -> tuple[bytes, bytes]:
    """The head of an HTTP message (up to its blank line) and what came after it."""
    data = b""
    while HEAD_END not in data:
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    head, _, rest = data.partition(HEAD_END)
    return head, rest


def _headers(lines: list[bytes]) -> dict[str, str]:
    found = {}
    for line in lines:
        name, _, value = line.decode("latin-1").partition(":")
        found[name.strip().lower()] = value.strip()
    return found


class TarProxy(Running):
    def __init__(self, upstream: str) -> None:
        address = urlsplit(upstream)
        self._upstream = (address.hostname or "127.0.0.1", address.port or 80)
        self.url = ""
        self.cut_after: int | None = None
        self.cuts = 0
        self.flip: tuple[bytes, bytes] | None = None
        self._seen: list[Seen] = []
        self._lock = threading.Lock()
        self._listener: socket.socket | None = None
        self._thread: threading.Thread | None = None

    @property
    def seen(self) -> list[Seen]:
        with self._lock:
            return list(self._seen)

    def tar_requests(self) -> list[Seen]:
        """The `GET /<uid>` requests (not `/<uid>/files`) relayed so far."""
        return [
            seen
            for seen in self.seen
            if seen.method == "GET" and seen.target.count("/") == 1 and seen.target != "/"
        ]

    def start(self) -> TarProxy:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.bind(("127.0.0.1", 0))
        listener.listen(32)
        self._listener = listener
        self.url = f"http://127.0.0.1:{listener.getsockname()[1]}"
        self._thread = threading.Thread(target=self._accept, name="tar-proxy", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._listener is not None:
            with contextlib.suppress(OSError):  # wakes the thread blocked in accept()
                self._listener.shutdown(socket.SHUT_RDWR)
            self._listener.close()
            self._listener = None
        if self._thread is not None:
            self._thread.join(5)
            self._thread = None

    def _accept(self) -> None:
        assert self._listener is not None
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return  # closed by stop()
            threading.Thread(target=self._relay, args=(client,), daemon=True).start()

    def _relay(self, client: socket.socket) -> None:
        with client, contextlib.suppress(OSError):
            head, body = _read_head(client)
            if not head:
                return
            request_line, *lines = head.split(b"\r\n")
            method, target, _ = request_line.decode("latin-1").split(" ", 2)
            headers = _headers(lines)
            length = int(headers.get("content-length", "0") or 0)
            while len(body) < length:
                chunk = client.recv(65536)
                if not chunk:
                    break
                body += chunk
            with self._lock:
                self._seen.append(Seen(method, target, headers))
            kept = [line for line in lines if not line.lower().startswith(b"connection:")]
            forwarded = b"\r\n".join([request_line, *kept, b"Connection: close"]) + HEAD_END
            with socket.create_connection(self._upstream, timeout=60) as upstream:
                upstream.sendall(forwarded + body)
                answer = b""
                while chunk := upstream.recv(65536):
                    answer += chunk
            client.sendall(self._faulted(method, target, answer))

    def _faulted(self, method: str, target: str, answer: bytes) -> bytes:
        """The answer as the client gets it: a tar's body flipped or cut as set."""
        head, _, body = answer.partition(HEAD_END)
        status = head.split(b" ", 2)[1] if head else b""
        path = target.split("?", 1)[0]
        if method != "GET" or status not in (b"200", b"206") or path.count("/") != 1:
            return answer
        if self.flip is not None:
            body = body.replace(self.flip[0], self.flip[1], 1)
        with self._lock:
            cut = self.cut_after is not None and self.cuts > 0
            if cut:
                self.cuts -= 1
        if cut and self.cut_after is not None:
            body = body[: self.cut_after]
        return head + HEAD_END + body
