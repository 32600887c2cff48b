"""Download leases: a cart being downloaded is never evicted.

A lease is a time in the cart's row (`download_lease_until`) that eviction respects;
a download renews it while its bytes flow, and the last download of the cart in this
process ends it. A process that dies leaves leases that simply expire.

The end of a download is often seen by the garbage collector, which runs finalisers in
whatever thread it interrupts, possibly one in the middle of a database write. A
finaliser that wrote too would wait forever on the write lock its own thread holds. So a
download never touches the database itself: it puts a note on a `queue.SimpleQueue`
(whose `put` is safe from finalisers and signal handlers, taking no lock that the
interrupted code could hold) and one thread of this module does every lease write, in
the order the notes came.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import Counter
from dataclasses import dataclass
from enum import Enum

from cartd.db.store import CartStore

log = logging.getLogger(__name__)

#: Seconds a download keeps its cart from eviction; renewed while bytes flow.
DOWNLOAD_LEASE = 60.0
#: Seconds a starting download waits for its lease to be written before going on anyway.
BEGIN_WAIT = 30.0


class _Kind(Enum):
    BEGIN = "begin"
    RENEW = "renew"
    END = "end"
    STOP = "stop"


@dataclass(frozen=True)
class _Note:
    kind: _Kind
    cart_id: int = 0
    done: threading.Event | None = None


class Lease:
    """One download's hold on its cart. `touch` and `end` only put notes on a queue, so
    they may be called from anywhere, a finaliser included; `end` counts once."""

    def __init__(self, leases: DownloadLeases, cart_id: int) -> None:
        self._leases = leases
        self.cart_id = cart_id
        self._renew_at = time.monotonic() + leases.seconds / 3
        self._ended = False

    def touch(self) -> None:
        """Bytes flowed: renew the lease now and then."""
        if not self._ended and time.monotonic() >= self._renew_at:
            self._renew_at = time.monotonic() + self._leases.seconds / 3
            self._leases.note(_Note(_Kind.RENEW, self.cart_id))

    def end(self) -> None:
        if not self._ended:
            self._ended = True
            self._leases.note(_Note(_Kind.END, self.cart_id))


class DownloadLeases:
    """Counts this process's downloads per cart and keeps their leases in the database."""

    def __init__(self, store: CartStore, seconds: float = DOWNLOAD_LEASE) -> None:
        self.store = store
        self.seconds = seconds
        self._notes: queue.SimpleQueue[_Note] = queue.SimpleQueue()
        self._counts: Counter[int] = Counter()  # only the writer thread touches it
        self._start_lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def begin(self, cart_id: int) -> Lease:
        """Lease the cart before its bytes flow; returns once the lease is written (or
        after `BEGIN_WAIT`: the bytes are checked as they are read, so a cart evicted
        meanwhile cuts the download rather than corrupt it). Not for finalisers."""
        self._ensure_thread()
        done = threading.Event()
        self.note(_Note(_Kind.BEGIN, cart_id, done))
        if not done.wait(BEGIN_WAIT):
            log.warning("the download lease of cart %d was not written in time", cart_id)
        return Lease(self, cart_id)

    def note(self, note: _Note) -> None:
        self._notes.put(note)

    def close(self, timeout: float = 5.0) -> None:
        """End every lease this process holds and stop the writer thread."""
        thread = self._thread
        if thread is not None:
            self.note(_Note(_Kind.STOP))
            thread.join(timeout)

    def _ensure_thread(self) -> None:
        with self._start_lock:
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._write_forever, name="cartd-leases", daemon=True
                )
                self._thread.start()

    def _write_forever(self) -> None:
        while True:
            notes = [self._notes.get()]
            while True:  # take what queued meanwhile: one write per cart per round
                try:
                    notes.append(self._notes.get_nowait())
                except queue.Empty:
                    break
            stopping = any(note.kind is _Kind.STOP for note in notes)
            try:
                self._apply(notes, stopping)
            except Exception:
                log.exception("writing download leases failed; they expire by time")
            finally:
                for note in notes:
                    if note.done is not None:
                        note.done.set()
            if stopping:
                return

    def _apply(self, notes: list[_Note], stopping: bool) -> None:
        until: dict[int, float | None] = {}
        for note in notes:
            cart = note.cart_id
            if note.kind is _Kind.BEGIN:
                self._counts[cart] += 1
                until[cart] = time.time() + self.seconds
            elif note.kind is _Kind.RENEW and self._counts[cart] > 0:
                until[cart] = time.time() + self.seconds
            elif note.kind is _Kind.END and self._counts[cart] > 0:
                self._counts[cart] -= 1
                if self._counts[cart] == 0:
                    until[cart] = None
        if stopping:
            until.update(dict.fromkeys(self._counts, None))
        for cart, count in list(self._counts.items()):
            if count <= 0 or stopping:
                del self._counts[cart]
        for cart, moment in until.items():
            self.store.lease_download(cart, moment)
