"""What this process's steps are working on, kept true in the shared database.

Two duties, one thread, while any step is under way:

- **Claims.** A step claims the rows it works on (a file it pulls, a cart it sizes or
  bundles) with a conditional update, so that two workers (two processes, or a task
  delivered twice) never work on the same thing. A claim lasts `claim_seconds` and is
  renewed while its step runs; a claim whose process died expires by itself.
- **Stopping deleted carts.** The database is the only place that knows a cart was
  deleted or evicted (the DELETE may have come to another process), so every
  `interval` one query asks which of the carts being worked on are still being made,
  and aborts the archive requests of the others (`archive.base.Abort`).
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Collection, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from cartd.archive.base import Abort
from cartd.db.store import CartStore

log = logging.getLogger(__name__)

#: Seconds between two looks at the carts being worked on.
WATCH_INTERVAL = 0.5
#: Seconds a claim lasts unless renewed; renewed every third of that while its step runs.
CLAIM_SECONDS = 60.0


@dataclass
class _Claim:
    files: set[int] = field(default_factory=set)
    carts: set[int] = field(default_factory=set)


class HeldFiles:
    """The files a step claimed. Those whose claim the step's own write cleared (a file
    recorded verified) are `settled` and need no release of their own."""

    def __init__(self, claim: _Claim) -> None:
        self._claim = claim
        self.ids = frozenset(claim.files)

    def __contains__(self, file_id: int) -> bool:
        return file_id in self.ids

    def settled(self, file_ids: Collection[int]) -> None:
        self._claim.files.difference_update(file_ids)


def _host() -> str:
    return socket.gethostname()[:36]


def claim_token() -> str:
    """Names one step: host, process and a random part (two threads of one process may
    be handed the same task)."""
    return f"{_host()}:{os.getpid()}:{uuid.uuid4().hex[:12]}"


def dead_here(holder: str) -> bool:
    """A claim of a process of this host that no longer runs."""
    host, _, rest = holder.partition(":")
    pid = rest.partition(":")[0]
    if host != _host() or not pid.isdigit() or int(pid) == os.getpid():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False  # alive, another user's
    return False


class CartWatch:
    def __init__(
        self,
        store: CartStore,
        interval: float = WATCH_INTERVAL,
        claim_seconds: float = CLAIM_SECONDS,
    ) -> None:
        self._store = store
        self._interval = interval
        self.claim_seconds = claim_seconds
        self._lock = threading.Lock()
        self._work: dict[int, tuple[Abort, int]] = {}  # cart id -> (its abort, steps on it)
        self._claims: dict[str, _Claim] = {}
        # Claims whose release failed (the database away), with when they lapse anyway.
        self._unreleased: dict[str, tuple[_Claim, float]] = {}
        self._renewed = time.monotonic()
        self._busy = threading.Condition(self._lock)
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    # -- claims --------------------------------------------------------------------------

    @contextmanager
    def claiming_files(self, file_ids: Collection[int]) -> Iterator[HeldFiles]:
        """Claim the files that no live step works on; yield those claimed, released after
        (but for those settled meanwhile)."""
        token = claim_token()
        claim = _Claim(files=self._store.claim_files(file_ids, token, self._claim_end()))
        with self._holding(token, claim):
            yield HeldFiles(claim)

    @contextmanager
    def claiming_cart(self, cart_id: int) -> Iterator[bool]:
        """Claim a cart for one step; yield whether it was had, released after."""
        token = claim_token()
        had = self._store.claim_cart(cart_id, token, self._claim_end())
        with self._holding(token, _Claim(carts={cart_id} if had else set())):
            yield had

    @contextmanager
    def _holding(self, token: str, claim: _Claim) -> Iterator[None]:
        if not claim.files and not claim.carts:
            yield
            return
        with self._lock:
            self._claims[token] = claim
            self._busy.notify()
        try:
            yield
        finally:
            with self._lock:
                del self._claims[token]
            self._release(token, claim)

    def _release(self, token: str, claim: _Claim, lapses: float | None = None) -> None:
        """Release a step's claims; one the database refused is kept, with when it would
        lapse anyway (`lapses`, if it was refused before), for `release_again`."""
        if not claim.files and not claim.carts:
            return  # every claim was cleared by the step's own writes
        try:
            self._store.release_claims(token, claim.files, claim.carts)
        except Exception:
            # Left to lapse, the work would wait `claim_seconds` for the sweep: the watch
            # thread tries again every interval until then.
            log.warning("could not release claims; trying again shortly", exc_info=lapses is None)
            with self._lock:
                self._unreleased[token] = (claim, lapses or time.time() + self.claim_seconds)
                self._busy.notify()

    def release_again(self) -> None:
        """Try again the releases that failed, until the claims would have lapsed. A claim
        taken over since is not touched: a release only clears the token's own."""
        with self._lock:
            now = time.time()
            due = {token: held for token, held in self._unreleased.items() if held[1] > now}
            self._unreleased = {}
        for token, (claim, lapses) in due.items():
            self._release(token, claim, lapses)

    def _claim_end(self) -> float:
        return time.time() + self.claim_seconds

    def renew(self) -> None:
        """Extend every claim of this process's running steps."""
        with self._lock:
            claims = {token: (set(c.files), set(c.carts)) for token, c in self._claims.items()}
        until = self._claim_end()
        for token, (file_ids, cart_ids) in claims.items():
            self._store.renew_claims(token, file_ids, cart_ids, until)

    # -- deleted carts -------------------------------------------------------------------

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
        active = self._store.active_among(list(watched))
        for cart_id, abort in watched.items():
            if cart_id not in active and not abort.aborted:
                log.info("cart %d is no longer being made: stopping its work", cart_id)
                abort.abort()

    # -- the thread ----------------------------------------------------------------------

    def release_dead(self) -> None:
        """Drop the claims of processes of this host that died (killed, crashed): their
        work is taken up at once rather than when the claims expire. Those of other hosts
        expire by themselves."""
        dead = {holder for holder in self._store.claim_holders() if dead_here(holder)}
        if dead:
            log.info("releasing the claims of %d steps of processes that died", len(dead))
            self._store.release_holders(dead)

    def start(self) -> None:
        self.release_dead()
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
                while not (self._work or self._claims or self._unreleased):
                    if self._stopping.is_set():
                        return
                    self._busy.wait()  # nothing under way: no queries at all
            if self._stopping.wait(self._interval):
                return
            try:
                self.release_again()
                self.check()
                if time.monotonic() - self._renewed >= self.claim_seconds / 3:
                    self._renewed = time.monotonic()
                    self.renew()
            except Exception:
                log.exception("watching the steps under way failed; trying again")
