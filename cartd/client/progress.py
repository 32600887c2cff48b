"""What `cartd get` shows while it works: bars on a terminal, plain lines elsewhere.

Both displays take the same calls, from the main thread (the download) and from the
watcher's thread (the cart's progress), so each guards its own state. On a terminal, rich
draws a staging bar (files and bytes staged, the file holding the cart up) and a download
bar (bytes, rate, time left). Elsewhere (a pipe, a log file, CI) each notable change is
one line, and progress within a phase at most one line every `PLAIN_EVERY` seconds.
"""

from __future__ import annotations

import sys
import threading
import time
from typing import Protocol, TextIO

from rich.console import Console
from rich.filesize import decimal
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TaskID,
    TaskProgressColumn,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)

from cartd.client.session import READY, CartState

#: Seconds between two plain lines about progress within one phase.
PLAIN_EVERY = 5.0


class Display(Protocol):
    def note(self, text: str) -> None:
        """A line worth keeping: ordered, resumed, retried, verified, saved."""

    def staging(self, state: CartState) -> None:
        """The cart's progress, as the server last told it."""

    def holder(self, text: str | None) -> None:
        """The file holding the cart up, and why (None: none is)."""

    def download(self, total: int | None, start: int) -> None:
        """A download of `total` bytes begins (again), `start` of them already here."""

    def advance(self, count: int) -> None:
        """`count` more bytes arrived."""

    def downloaded(self) -> None:
        """The last byte arrived."""

    def close(self) -> None:
        """Stop drawing; what was drawn stays."""


def staging_text(state: CartState) -> str:
    """The cart's progress in words, from what the server tells."""
    phase = state.phase or state.status
    if state.files_total is None:
        return f"cart {phase}"
    text = f"cart {phase}: {state.files_staged or 0}/{state.files_total} files"
    if state.bytes_total:
        text += f", {decimal(state.bytes_staged or 0)} of {decimal(state.bytes_total)}"
    return text


def _rate(count: int, seconds: float) -> str:
    return f"{decimal(int(count / seconds))}/s" if seconds > 0 else "-"


class PlainDisplay:
    """One line per notable change, progress at most every `PLAIN_EVERY` seconds."""

    def __init__(self, out: TextIO | None = None, every: float = PLAIN_EVERY) -> None:
        self._out = out or sys.stdout
        self._every = every
        self._lock = threading.Lock()
        self._phase: tuple[str, str | None] | None = None
        self._staging_at = 0.0
        self._staged: tuple[int | None, int | None] | None = None
        self._holder: str | None = None
        self._total: int | None = None
        self._done = 0
        self._fresh = 0  # bytes of this run, for the rate
        self._began = 0.0
        self._told_at = 0.0

    def _line(self, text: str) -> None:
        print(text, file=self._out, flush=True)

    def note(self, text: str) -> None:
        with self._lock:
            self._line(text)

    def staging(self, state: CartState) -> None:
        now = time.monotonic()
        with self._lock:
            phase = (state.status, state.phase)
            staged = (state.files_staged, state.bytes_staged)
            notable = phase != self._phase
            progressed = staged != self._staged and now - self._staging_at >= self._every
            if notable or progressed:
                self._line(staging_text(state))
                self._phase, self._staged, self._staging_at = phase, staged, now

    def holder(self, text: str | None) -> None:
        with self._lock:
            if text and text != self._holder:
                self._line(f"held up by {text}")
            self._holder = text

    def download(self, total: int | None, start: int) -> None:
        with self._lock:
            self._total, self._done, self._fresh = total, start, 0
            self._began = self._told_at = time.monotonic()
            size = "of unknown size" if total is None else decimal(total)
            resumed = f", resuming after {decimal(start)}" if start else ""
            self._line(f"downloading {size}{resumed}")

    def _progress_text(self, now: float) -> str:
        rate = _rate(self._fresh, now - self._began)
        if self._total:
            share = 100 * self._done / self._total
            left = ""
            if self._fresh and self._total > self._done:
                seconds = (self._total - self._done) * (now - self._began) / self._fresh
                left = f", {seconds:.0f} s left"
            return (
                f"downloaded {decimal(self._done)} of {decimal(self._total)}"
                f" ({share:.0f}%), {rate}{left}"
            )
        return f"downloaded {decimal(self._done)}, {rate}"

    def advance(self, count: int) -> None:
        now = time.monotonic()
        with self._lock:
            self._done += count
            self._fresh += count
            if now - self._told_at >= self._every:
                self._told_at = now
                self._line(self._progress_text(now))

    def downloaded(self) -> None:
        with self._lock:
            self._line(self._progress_text(time.monotonic()))

    def close(self) -> None:
        pass


class RichDisplay:
    """Bars drawn by rich on a terminal."""

    def __init__(self, console: Console | None = None) -> None:
        self._console = console or Console()
        self._progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            TaskProgressColumn(),
            DownloadColumn(),
            TransferSpeedColumn(),
            TimeRemainingColumn(),
            TextColumn("{task.fields[note]}", style="dim"),
            console=self._console,
        )
        self._lock = threading.Lock()
        self._staging: TaskID | None = None
        self._download: TaskID | None = None
        self._progress.start()

    def note(self, text: str) -> None:
        self._progress.console.print(text, markup=False, highlight=False)

    def staging(self, state: CartState) -> None:
        with self._lock:
            if self._staging is None:
                self._staging = self._progress.add_task("staging", total=None, note="")
            total: int | None
            if state.status == READY:
                total = state.bytes_total or 1
                completed: int | None = total
            else:
                total = state.bytes_total or None
                completed = state.bytes_staged
            files = ""
            if state.files_total is not None:
                files = f" {state.files_staged or 0}/{state.files_total} files"
            self._progress.update(
                self._staging,
                description=f"{state.phase or state.status}{files}",
                total=total,
                completed=completed or 0,
            )
            if state.settled:
                self._progress.update(self._staging, note="")

    def holder(self, text: str | None) -> None:
        with self._lock:
            if self._staging is not None:
                note = f"held up by {text}" if text else ""
                self._progress.update(self._staging, note=note)

    def download(self, total: int | None, start: int) -> None:
        with self._lock:
            if self._download is None:
                self._download = self._progress.add_task(
                    "download", total=total, completed=start, note=""
                )
            else:
                self._progress.reset(self._download, total=total, completed=start)

    def advance(self, count: int) -> None:
        if self._download is not None:
            self._progress.advance(self._download, count)

    def downloaded(self) -> None:
        with self._lock:
            if self._download is not None:
                done = next(t.completed for t in self._progress.tasks if t.id == self._download)
                self._progress.update(self._download, total=done)

    def close(self) -> None:
        self._progress.stop()


def choose_display(plain: bool) -> Display:
    """Bars on a terminal, unless `plain`; plain lines otherwise."""
    console = Console()
    if plain or not console.is_terminal or console.is_dumb_terminal:
        return PlainDisplay()
    return RichDisplay(console)
