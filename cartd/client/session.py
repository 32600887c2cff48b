"""The cart server's answers as typed values: one method per request `cartd get` makes.

Every request has a timeout. Answers that cartd adds to the original's (the progress
headers, `GET /<uid>/files`, `Prefer: wait`) are read where they are and done without
where they are not, so the same client works against the original Pacifica Cartd.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final
from urllib.parse import quote

import httpx

from cartd import __version__
from cartd.client.errors import CartFailed, OrderError, TransferFailed

#: Connecting and each read or write; a download of a cart being made may send nothing for
#: longer while a file comes from tape, and is then asked for again (see transfer.py).
TIMEOUT: Final = httpx.Timeout(60.0, connect=10.0)
#: What `X-Pacifica-Status` says before a cart is ready.
STAGING: Final = "staging"
READY: Final = "ready"
ERROR: Final = "error"
#: Not an `X-Pacifica-Status`: the server has no cart of that uid.
MISSING: Final = "missing"

_CONTENT_RANGE = re.compile(r"bytes (\d+)-(\d+)/(\d+)")
_UNSATISFIED = re.compile(r"bytes \*/(\d+)")


def _count(headers: Mapping[str, str], name: str) -> int | None:
    value = headers.get(name, "")
    return int(value) if value.isdigit() else None


@dataclass(frozen=True)
class CartState:
    """One `HEAD /<uid>`. `phase` and the counts are None from a server that does not send
    them (the original)."""

    status: str
    message: str = ""
    phase: str | None = None
    files_total: int | None = None
    files_staged: int | None = None
    bytes_total: int | None = None
    bytes_staged: int | None = None

    @property
    def settled(self) -> bool:
        """Whether the cart is done being made, one way or another."""
        return self.status != STAGING

    @classmethod
    def from_head(cls, response: httpx.Response) -> CartState:
        headers = response.headers
        status = headers.get("X-Pacifica-Status", "")
        if response.status_code == 404:
            status = MISSING
        elif response.status_code >= 500 or status == ERROR:
            status = ERROR
        elif status not in (STAGING, READY):
            status = STAGING
        return cls(
            status=status,
            message=headers.get("X-Pacifica-Message", ""),
            phase=headers.get("X-Pacifica-Phase"),
            files_total=_count(headers, "X-Pacifica-Files-Total"),
            files_staged=_count(headers, "X-Pacifica-Files-Staged"),
            bytes_total=_count(headers, "X-Pacifica-Bytes-Total"),
            bytes_staged=_count(headers, "X-Pacifica-Bytes-Staged"),
        )


@dataclass(frozen=True)
class FileState:
    """One file of `GET /<uid>/files`."""

    path: str
    status: str
    error: str | None
    attempts: int
    polls: int


@dataclass(frozen=True)
class Extent:
    """Which bytes of the tar a `GET` answer carries: from `start`, of `total` (None when
    the server does not say)."""

    start: int
    total: int | None


def extent(response: httpx.Response) -> Extent:
    """The bytes a 200 or 206 answer carries, or a 416's total (with `start` the total)."""
    if response.status_code == 206:
        match = _CONTENT_RANGE.fullmatch(response.headers.get("Content-Range", "").strip())
        if match is None:
            raise TransferFailed("the server sent a range without a valid Content-Range")
        return Extent(int(match.group(1)), int(match.group(3)))
    if response.status_code == 416:
        match = _UNSATISFIED.fullmatch(response.headers.get("Content-Range", "").strip())
        total = int(match.group(1)) if match else None
        return Extent(total or 0, total)
    return Extent(0, _count(response.headers, "Content-Length"))


def message_of(response: httpx.Response) -> str:
    """The `message` of an answer's JSON body, else its text, else its reason."""
    text = response.text.strip()
    try:
        document = json.loads(text)
    except ValueError:
        document = None
    if isinstance(document, dict) and isinstance(document.get("message"), str):
        return str(document["message"])
    return text[:500] or response.reason_phrase


class CartSession:
    """Requests to one cart server. Safe to use from one thread at a time; the watcher
    has its own."""

    def __init__(self, server: str, transport: httpx.BaseTransport | None = None) -> None:
        self.server = server.rstrip("/")
        self._http = httpx.Client(
            timeout=TIMEOUT,
            transport=transport,
            headers={"User-Agent": f"cartd-get/{__version__}", "Accept-Encoding": "identity"},
        )

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> CartSession:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def _url(self, uid: str, suffix: str = "") -> str:
        return f"{self.server}/{quote(uid, safe='')}{suffix}"

    def _unreachable(self, exc: httpx.TransportError) -> TransferFailed:
        return TransferFailed(f"cannot reach the cart server {self.server}: {exc}")

    def order(self, uid: str, body: bytes) -> None:
        """`POST /<uid>`; raises `OrderError` when the server refuses the order."""
        try:
            response = self._http.post(
                self._url(uid), content=body, headers={"Content-Type": "application/json"}
            )
        except httpx.TransportError as exc:
            raise self._unreachable(exc) from None
        if response.status_code in (200, 201):
            return
        if 400 <= response.status_code < 500:
            raise OrderError(f"the server refused the order: {message_of(response)}")
        raise TransferFailed(
            f"the server could not take the order ({response.status_code}): {message_of(response)}"
        )

    def state(self, uid: str, wait: float | None = None) -> CartState:
        """`HEAD /<uid>`, with `Prefer: wait=N` when `wait` is given: a server that honours
        it answers when the cart changes or after N seconds, one that does not at once."""
        headers = {"Prefer": f"wait={wait:.0f}"} if wait else {}
        try:
            return CartState.from_head(self._http.head(self._url(uid), headers=headers))
        except httpx.TransportError as exc:
            raise self._unreachable(exc) from None

    def files(self, uid: str) -> list[FileState] | None:
        """`GET /<uid>/files`, or None when the server has no such view (the original)."""
        try:
            response = self._http.get(self._url(uid, "/files"))
        except httpx.TransportError:
            return None
        if response.status_code != 200:
            return None
        try:
            entries = response.json()["files"]
            return [
                FileState(
                    path=str(entry["path"]),
                    status=str(entry["status"]),
                    error=entry.get("error"),
                    attempts=int(entry.get("attempts") or 0),
                    polls=int(entry.get("polls") or 0),
                )
                for entry in entries
            ]
        except (ValueError, KeyError, TypeError):
            return None

    def tar(
        self, uid: str, name: str, *, start: int = 0, etag: str | None = None, wait: float = 0
    ) -> httpx.Response:
        """`GET /<uid>?filename=NAME`, streamed: the caller reads and closes the answer.
        From byte `start` with `Range` (and `If-Range: etag`, so that a changed tar comes
        whole); with `Prefer: wait=N` so that a cart still being made comes as it is
        made, where the server can. Raises `httpx.TransportError` as it comes: the caller
        decides whether to ask again."""
        headers = {}
        if wait:
            headers["Prefer"] = f"wait={wait:.0f}"
        if start:
            headers["Range"] = f"bytes={start}-"
            if etag:
                headers["If-Range"] = etag
        request = self._http.build_request(
            "GET", self._url(uid), params={"filename": name}, headers=headers
        )
        return self._http.send(request, stream=True)


def refused(response: httpx.Response) -> Exception:
    """What a `GET` answer that carries no tar means: the cart failed, is gone, the name is
    refused, or the server failed. Reads (and closes) the answer."""
    try:
        response.read()
    except httpx.TransportError:
        pass
    finally:
        response.close()
    code = response.status_code
    if code == 404:
        return CartFailed(f"the server has no cart of that uid ({message_of(response)})")
    if code == 400:
        return OrderError(f"the server refused the download: {message_of(response)}")
    if code == 500:
        return CartFailed(message_of(response))
    return TransferFailed(f"unexpected answer {code} to the download: {message_of(response)}")
