"""A cart's counts (files and bytes, in all and verified), reused for a moment while the
cart is being made.

A count reads every entry of the cart in one index (migration 0010): 17 ms on SQLite for
a cart of 100,000 files (42 ms when it read the rows).
Clients that ask `HEAD` every 50 ms, or a few live pages, would keep a core busy counting
and slow the very pulls they watch (the benchmark's 100,000-file cart spent more CPU on
its HEADs than on its files). So each count of a cart being made is reused for
`REUSE` times as long as it took: a small cart's counts stay fresh (a count of 0.3 ms is
reused for 6 ms), a huge cart's lag by about a third of a second, and counting never takes
more than a twentieth of a core, however often clients ask. A cart that is ready or
failed is counted afresh each time (nobody polls those for long).
"""

from __future__ import annotations

import threading
import time

from cartd.db.store import CartStore
from cartd.records import Cart, Progress

#: How many times its own duration a count of a cart being made is reused.
REUSE = 20.0
#: Counts kept at most; the stale are dropped when there are more.
KEPT = 1024


class ProgressCounts:
    def __init__(self, store: CartStore) -> None:
        self.store = store
        self._kept: dict[int, tuple[float, Progress]] = {}
        self._lock = threading.Lock()

    def of(self, cart: Cart) -> Progress:
        """The cart's counts: counted now, or as counted a moment ago (see the module)."""
        if not cart.status.is_active:
            return self.store.progress(cart.id)
        started = time.monotonic()
        kept = self._kept.get(cart.id)
        if kept is not None and started < kept[0]:
            return kept[1]
        progress = self.store.progress(cart.id)
        ended = time.monotonic()
        with self._lock:
            if len(self._kept) >= KEPT:
                self._kept = {key: value for key, value in self._kept.items() if value[0] > ended}
            self._kept[cart.id] = (ended + (ended - started) * REUSE, progress)
        return progress
