"""Which carts this process is working on, so a deleted or evicted cart's work stops within
a second, even a request blocked on the archive.

The database is the only place that knows a cart was deleted (the DELETE may have come
to another process), so while any step is under way one query every `interval` asks
which of the carts being worked on are still being made, and aborts the work of the
others (`archive.base.Abort`).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Collection, Iterator
from contextlib import contextmanager

from cartd.archive.base import Abort

log = logging.getLogger(__name__)

#: Seconds between two looks at the carts being worked on.
WATCH_INTERVAL = 0.5


class CartWatch:
    def __init__(
        self,
        still_active: Callable[[Collection[int]], Collection[int]],
        interval: float = WATCH_INTERVAL,
    ) -> None:
        self._still_active = still_active
        self._interval = interval
        self._lock = threading.Lock()
        self._work: dict[int, tuple[Abort, int]] = {}  # cart id -> (its abort, steps on it)
        self._busy = threading.Condition(self._lock)
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    @contextmanager
    def working_on(self, cart_id: int) -> Iterator[Abort]:
        """The abort of a step on the cart; all steps on one cart share it."""
        with self._lock:
            abort, steps = self._work.get(cart_id, (Abort(), 0))
            self._work[cart_id] = (abort, steps + 1)
            self._busy.notify()
        try:
            yield abort
        finally:
            with self._lock:
                abort, steps = self._work[cart_id]
                if steps == 1:
                    del self._work[cart_id]
                else:
                    self._work[cart_id] = (abort, steps - 1)

    def check(self) -> None:
        """Abort the work of every cart that is no longer being made."""
        with self._lock:
            watched = {cart_id: abort for cart_id, (abort, _) in self._work.items()}
        if not watched:
            return
        active = set(self._still_active(list(watched)))
        for cart_id, abort in watched.items():
            if cart_id not in active and not abort.aborted:
                log.info("cart %d is no longer being made: stopping its work", cart_id)
                abort.abort()

    def start(self) -> None:
        if self._thread is None:
            self._stopping.clear()
            self._thread = threading.Thread(target=self._run, name="cartd-watch", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        with self._lock:
            self._busy.notify_all()
        if self._thread is not None:
            self._thread.join(5)
            self._thread = None

    def _run(self) -> None:
        while not self._stopping.is_set():
            with self._lock:
                while not self._work and not self._stopping.is_set():
                    self._busy.wait()  # nothing under way: no queries at all
            if self._stopping.wait(self._interval):
                return
            try:
                self.check()
            except Exception:
                log.exception("looking for deleted carts failed; trying again")
