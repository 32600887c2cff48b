"""The periodic sweep of a worker: find in the database the steps whose message was lost
and send them again, a bounded slice at a time.

Every worker sweeps; no leader is needed. `CartStore.overdue` marks each file it
returns as due now, so the next sweep (of any worker) leaves it alone for another
`grace`; a cart's size or finish step is not marked there, so each worker remembers
what it sent and sends it again only after a grace. A backlog of thousands of carts
is therefore re-driven `limit` steps per sweep, never flooded into the queue.
"""

from __future__ import annotations

import logging
import threading
import time

from cartd.db.store import CartStore, Overdue
from cartd.observability.metrics import Metrics
from cartd.workers.base import Runner

log = logging.getLogger(__name__)

#: Most steps of each kind one sweep sends again.
SWEEP_LIMIT = 500
#: Seconds between two sweeps (shorter when the grace is shorter).
SWEEP_INTERVAL = 5.0


class Sweeper:
    def __init__(
        self,
        store: CartStore,
        runner: Runner,
        grace: float,
        limit: int = SWEEP_LIMIT,
        interval: float = SWEEP_INTERVAL,
        metrics: Metrics | None = None,
    ) -> None:
        self.metrics = metrics
        self.store = store
        self.runner = runner
        self.grace = grace
        self.limit = limit
        self.interval = min(interval, grace)
        self._sent: dict[tuple[str, int], float] = {}  # cart step -> when this worker sent it
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    def sweep(self) -> Overdue:
        """Send again the steps overdue by more than the grace; return what was found."""
        overdue = self.store.overdue(self.grace, self.limit)
        now = time.monotonic()
        self._sent = {key: at for key, at in self._sent.items() if now - at < self.grace}
        sizes = self._fresh("size", overdue.sizes, now)
        for cart_id in sizes:
            self.runner.submit_size(cart_id)
        if overdue.files:
            self.runner.submit_files(overdue.files)
        finishes = self._fresh("finish", overdue.finishes, now)
        for cart_id in finishes:
            self.runner.submit_finish(cart_id)
        if self.metrics is not None:
            self.metrics.steps_resent("size", len(sizes))
            self.metrics.steps_resent("file", len(overdue.files))
            self.metrics.steps_resent("finish", len(finishes))
        if overdue.sizes or overdue.files or overdue.finishes:
            log.info(
                "sweep: sent again %d sizing, %d file and %d finishing steps overdue by %.0fs",
                len(overdue.sizes),
                len(overdue.files),
                len(overdue.finishes),
                self.grace,
            )
        return overdue

    def _fresh(self, kind: str, cart_ids: list[int], now: float) -> list[int]:
        fresh = [cart_id for cart_id in cart_ids if (kind, cart_id) not in self._sent]
        self._sent.update({(kind, cart_id): now for cart_id in fresh})
        return fresh

    def start(self) -> None:
        self._stopping.clear()
        self._thread = threading.Thread(target=self._run, name="cartd-sweeper", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def _run(self) -> None:
        while not self._stopping.wait(self.interval):
            try:
                self.sweep()
            except Exception:
                log.exception("sweeping for lost steps failed; trying again later")
