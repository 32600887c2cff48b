"""The tar's bytes as one stream: first those already in FILE.part (so that a resumed
download is verified whole), then the network's, each written to FILE.part as it passes.

A connection that breaks off is asked again from the byte where it broke (`Range`, with
`If-Range` so that a changed tar comes whole), after a growing pause, a few times in a
row before giving up; bytes arriving reset the count. A download of a cart still being
made (`Preference-Applied: wait`) may send nothing for long while a file comes from tape:
a read that times out then is asked again without counting as a failure.
"""

from __future__ import annotations

import io
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import httpx

from cartd.client.errors import TransferFailed
from cartd.client.session import Extent

#: Bytes read from the network or the disk at a time.
CHUNK = 1 << 20


@dataclass(frozen=True)
class RetryPolicy:
    """How often, and after how long, a broken download is asked again."""

    tries: int = 4
    initial: float = 0.5
    factor: float = 2.0
    cap: float = 8.0

    def delay(self, attempt: int) -> float:
        """Seconds before try `attempt` (1 for the first retry)."""
        return float(min(self.cap, self.initial * self.factor ** (attempt - 1)))


class StartOver(Exception):
    """The server sent the whole tar where the rest of one was asked for (it changed, or
    it cannot send ranges): what was read so far is void. Carries that answer."""

    def __init__(self, response: httpx.Response) -> None:
        super().__init__("the server sent the whole tar again")
        self.response = response


#: Asks for the tar from a byte on: a 206 answer, or raises (`StartOver` for a 200).
Reopen = Callable[[int], httpx.Response]


class TarBody(io.RawIOBase):
    """The tar from byte 0, for the verifier to read; the network's part of it appended
    to FILE.part. `have` bytes are on disk already; `response` carries what follows."""

    def __init__(
        self,
        part: Path,
        have: int,
        response: httpx.Response,
        total: int | None,
        reopen: Reopen,
        *,
        policy: RetryPolicy,
        on_bytes: Callable[[int], None],
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        super().__init__()
        self.total = total
        self._disk = part.open("rb") if have else None
        self._disk_left = have
        self._sink = part.open("ab")
        self._written = have
        self._response: httpx.Response | None = response
        self._chunks = response.iter_raw()
        self._live = response.headers.get("Preference-Applied", "").lower() == "wait"
        self._reopen = reopen
        self._policy = policy
        self._on_bytes = on_bytes
        self._sleep = sleep
        self._pending = b""
        self._cuts = 0

    @property
    def written(self) -> int:
        """Bytes in FILE.part."""
        return self._written

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview | bytearray) -> int:  # type: ignore[override]
        data = self._next(len(buffer))
        buffer[: len(data)] = data
        return len(data)

    def drain(self) -> None:
        """Read what is left after the tar's end-of-archive blocks, to the last byte."""
        while self.read(CHUNK):
            pass

    def _next(self, size: int) -> bytes:
        if self._pending:
            data, self._pending = self._pending[:size], self._pending[size:]
            return data
        if self._disk is not None and self._disk_left:
            data = self._disk.read(min(size, self._disk_left))
            if not data:
                raise TransferFailed("FILE.part became shorter while it was read")
            self._disk_left -= len(data)
            return data
        while True:
            if self.total is not None and self._written >= self.total:
                return b""
            if self._response is None:
                try:
                    self._connect()
                except httpx.TransportError as exc:
                    self._cut(exc)
                    continue
            try:
                chunk = next(self._chunks)
            except StopIteration:
                self._close_response()
                if self.total is None:
                    return b""  # a tar sent without a length ends where the answer does
                self._cut(None)
                continue
            except httpx.TransportError as exc:
                self._close_response()
                self._cut(exc)
                continue
            self._sink.write(chunk)
            self._written += len(chunk)
            self._cuts = 0
            self._on_bytes(len(chunk))
            data, self._pending = chunk[:size], chunk[size:]
            return data

    def _cut(self, error: httpx.TransportError | None) -> None:
        """The answer broke off (or ended early): pause, or give up after too many."""
        if self._live and isinstance(error, httpx.ReadTimeout):
            return  # nothing came for a while from a cart still being made: ask again
        self._cuts += 1
        if self._cuts > self._policy.tries:
            why = "it ended early" if error is None else str(error) or type(error).__name__
            raise TransferFailed(
                f"the download broke off {self._cuts} times in a row at byte"
                f" {self._written} ({why})"
            )
        self._sleep(self._policy.delay(self._cuts))

    def _connect(self) -> None:
        self._sink.flush()
        response = self._reopen(self._written)
        self._response, self._chunks = response, response.iter_raw()
        self._live = response.headers.get("Preference-Applied", "").lower() == "wait"

    def _close_response(self) -> None:
        if self._response is not None:
            self._response.close()
            self._response = None

    def close(self) -> None:
        if not self.closed:
            self._close_response()
            self._sink.close()
            if self._disk is not None:
                self._disk.close()
        super().close()


def resumed_at(extent: Extent, have: int) -> None:
    """Check that a 206 answer starts where FILE.part ends."""
    if extent.start != have:
        raise TransferFailed(
            f"asked for the tar from byte {have}, the server sent it from {extent.start}"
        )
