"""Callbacks over HTTP(S) with httpx: every phase of a request (connect, write, read,
waiting for a pooled connection) has the configured timeout, redirects are never
followed (a 3xx is an answer like any other: the receiver's URL is the one ordered), and
the answer's body is never read, so a receiver cannot make cartd hold a large one."""

from __future__ import annotations

import httpx

from cartd import __version__
from cartd.callbacks.base import EVENT_ID_HEADER, SIGNATURE_HEADER, Answer, signature


class HttpSender:
    def __init__(self, secret: str, timeout: float, connections: int = 4) -> None:
        self._secret = secret.encode("utf-8")
        self._timeout = timeout
        self._client = httpx.Client(
            timeout=httpx.Timeout(timeout),
            follow_redirects=False,
            limits=httpx.Limits(max_connections=connections),
            headers={"User-Agent": f"cartd/{__version__}"},
        )

    def send(self, url: str, event_id: str, body: bytes) -> Answer:
        headers = {
            "Content-Type": "application/json",
            EVENT_ID_HEADER: event_id,
            SIGNATURE_HEADER: signature(self._secret, body),
        }
        try:
            with self._client.stream("POST", url, content=body, headers=headers) as response:
                return Answer(response.status_code)
        except httpx.TimeoutException as exc:
            return Answer(None, f"no answer within {self._timeout:g}s ({type(exc).__name__})")
        except (httpx.HTTPError, httpx.InvalidURL) as exc:
            return Answer(None, f"{type(exc).__name__}: {str(exc)[:200] or 'no detail'}")

    def close(self) -> None:
        self._client.close()
