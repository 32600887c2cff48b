"""Helpers of the tests that watch a cart: files the fault archive keeps on tape until the
test lets each go, and a reader of a server-sent event stream."""

from __future__ import annotations

import json
import os
import queue
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import httpx

from tests.conftest import FileEntry, entry, new_id
from tests.support.fault_archive import FaultArchive, Faults

MTIME = 1_700_000_000.0
#: Long enough never to end by itself within a test: the test lets the file go.
FOREVER = 3600.0


class TapeShelf:
    """Files on the fault archive's tape until `release`: a test decides when each leaves."""

    def __init__(self, archive: FaultArchive) -> None:
        self.archive = archive
        self.contents: dict[str, bytes] = {}

    def add(self, path: str, size: int = 100_000, faults: Faults | None = None) -> FileEntry:
        """A file on tape (or with `faults`, as they say) ordered at `path`."""
        file_id, data = new_id("held"), os.urandom(size)
        self.archive.add(file_id, data, mtime=MTIME, faults=faults or Faults(FOREVER))
        self.contents[file_id] = data
        return entry(file_id, data, path)

    def release(self, order: FileEntry) -> None:
        """The file is on disk from now on: cartd's next question about it pulls it."""
        self.archive.add(order["id"], self.contents[order["id"]], mtime=MTIME)


@dataclass
class ServerEvent:
    name: str
    id: str | None
    data: dict[str, object]
    retry: int | None = None


@dataclass
class EventReader:
    """Reads a cart's event stream in a thread, so that a test can act while it runs."""

    client: httpx.Client
    path: str
    headers: dict[str, str] = field(default_factory=dict)
    comments: int = 0
    ended: threading.Event = field(default_factory=threading.Event)
    _events: queue.Queue[ServerEvent] = field(default_factory=queue.Queue)
    _opened: queue.Queue[httpx.Response | BaseException] = field(default_factory=queue.Queue)

    def start(self) -> httpx.Response:
        """Open the stream; the answer's status and headers."""
        threading.Thread(target=self._read, daemon=True).start()
        opened = self._opened.get(timeout=30)
        if isinstance(opened, BaseException):
            raise opened
        return opened

    def _read(self) -> None:
        try:
            with self.client.stream("GET", self.path, headers=self.headers) as answer:
                self._opened.put(answer)
                for event in parse(answer.iter_lines(), self):
                    self._events.put(event)
        except BaseException as exc:
            self._opened.put(exc)
        finally:
            self.ended.set()

    def next(self, timeout: float = 30.0) -> ServerEvent:
        return self._events.get(timeout=timeout)

    def until(
        self, condition: Callable[[ServerEvent], bool], timeout: float = 30.0
    ) -> list[ServerEvent]:
        """Every event up to the first that meets `condition`, that one included."""
        seen = []
        while True:
            event = self.next(timeout)
            seen.append(event)
            if condition(event):
                return seen

    def rest(self, timeout: float = 30.0) -> list[ServerEvent]:
        """Every event up to the end of the stream."""
        if not self.ended.wait(timeout):
            raise AssertionError(f"the stream {self.path} did not end within {timeout}s")
        found = []
        while not self._events.empty():
            found.append(self._events.get_nowait())
        return found


def parse(lines: Iterator[str], reader: EventReader | None = None) -> Iterator[ServerEvent]:
    """Server-sent events from the lines of a stream, as the HTML standard reads them
    (only the fields cartd sends: `event`, `id`, `data`, `retry`; comments counted)."""
    fields: dict[str, str] = {}
    for line in lines:
        if line == "":
            if "data" in fields:
                retry = fields.get("retry")
                yield ServerEvent(
                    fields.get("event", "message"),
                    fields.get("id"),
                    json.loads(fields["data"]),
                    int(retry) if retry is not None else None,
                )
            fields = {}
            continue
        if line.startswith(":"):
            if reader is not None:
                reader.comments += 1
            continue
        name, _, value = line.partition(":")
        fields[name] = value.removeprefix(" ")
