"""What a person or program watching a cart sees change: `HEAD` with `Prefer: wait=N`, the
event stream of `/<uid>/events`, and the live page that reads it.

The API may run in other processes than the workers (distributed mode), so a change is
learnt the one way every process can: by looking at the database again, after a pause that
grows while nothing changes and is short again after a change. A look is three small
queries (the uid's newest cart, its counts, the few files that hold it up); nothing is held
between two looks. The watchers never sleep: they yield a `Pause`, which the HTTP layer
waits out holding neither a thread nor a database connection, so many open streams cost
the database only their looks.
"""

from __future__ import annotations

from collections.abc import Callable, Generator
from dataclasses import dataclass
from enum import StrEnum

from cartd.db.store import CartStore
from cartd.errors import CartNotFound
from cartd.records import Cart, CartFile, Progress
from cartd.service.backoff import Backoff
from cartd.service.counts import ProgressCounts
from cartd.service.live import Pause
from cartd.status import CartStatus, FileStatus

#: Seconds between two looks at a watched cart: a quarter of a second after a change,
#: growing by half while nothing changes, at most 2 s (what a person watching waits at
#: most to see a change, on top of the workers' own recording in groups).
WATCH_POLL = Backoff(initial=0.25, factor=1.5, cap=2.0)
#: Files that hold a cart up named in each event: enough to say why a cart waits, few
#: enough that an event stays small and its query cheap for a cart of 100,000 files.
HOLDING_SHOWN = 10
#: Seconds of quiet after which a stream says it is still watching (an SSE comment),
#: so that proxies and load balancers do not close it as idle.
HEARTBEAT = 15.0


class Reason(StrEnum):
    """Why a file not verified yet holds its cart up, most telling first."""

    FAILED = "failed"  # gave up: `error` says why, and the cart failed with it
    RETRYING = "retrying"  # a fault (`error`) passed; tried again after a growing pause
    ON_TAPE = "on_tape"  # the archive is bringing it from tape; asked again after a pause
    SHARED = "shared"  # another file recalls the same archive file; linked once verified
    QUEUED = "queued"  # waiting its turn, or being pulled and verified now


def reason_of(file: CartFile) -> Reason | None:
    """Why `file` holds its cart up; None once it is verified."""
    if file.status is FileStatus.STAGED:
        return None
    if file.status is FileStatus.ERROR:
        return Reason.FAILED
    if file.attempts > 0:
        return Reason.RETRYING
    if file.on_disk is False:
        return Reason.ON_TAPE
    if file.polls > 0:  # asked about again without the archive saying tape: a shared copy
        return Reason.SHARED
    return Reason.QUEUED


def settled(status: CartStatus) -> bool:
    """Ready or failed: nothing happens to the cart by itself any more (a delete, a repair
    of its copy on the volume or `fixit` can still change it)."""
    return status in (CartStatus.READY, CartStatus.ERROR)


@dataclass(frozen=True)
class Holdup:
    """A file that holds its cart up, and why."""

    archive_id: str
    path: str
    status: FileStatus
    reason: Reason
    error: str | None
    attempts: int


@dataclass(frozen=True)
class Snapshot:
    """A watched cart as one look found it."""

    cart: Cart
    progress: Progress
    holding: tuple[Holdup, ...]

    @property
    def final(self) -> bool:
        return settled(self.cart.status)


class Change(StrEnum):
    """What differs between two looks at a cart."""

    CART = "cart"  # a new order to the uid replaced the cart
    PHASE = "phase"  # its status or phase, and with an error its message
    PROGRESS = "progress"  # files or bytes, staged or in all
    HOLDING = "holding"  # which files hold it up, why, or their last error


def head_view(cart: Cart, progress: Progress) -> tuple[object, ...]:
    """Everything a `HEAD` of the cart says: a waiting `HEAD` answers once this differs."""
    return (
        cart.id,
        cart.status,
        cart.error,
        progress.files_total,
        progress.files_staged,
        progress.bytes_total,
        progress.bytes_staged,
    )


def differences(before: Snapshot, after: Snapshot) -> tuple[Change, ...]:
    """What changed from one look to the next, in `Change`'s order; empty when nothing did.
    How often a file on tape was asked about is not a change: each question would be one."""
    changes: list[Change] = []
    if before.cart.id != after.cart.id:
        changes.append(Change.CART)
    if (before.cart.status, before.cart.error) != (after.cart.status, after.cart.error):
        changes.append(Change.PHASE)
    if before.progress != after.progress:
        changes.append(Change.PROGRESS)
    if before.holding != after.holding:
        changes.append(Change.HOLDING)
    return tuple(changes)


class CartWatcher:
    """Looks at the newest cart of one uid, as `HEAD` and `GET` see it."""

    def __init__(
        self,
        store: CartStore,
        counts: ProgressCounts,
        uid: str,
        holding_shown: int = HOLDING_SHOWN,
    ) -> None:
        self.store = store
        self.counts = counts
        self.uid = uid
        self.holding_shown = holding_shown

    def look(self) -> Snapshot | None:
        """The cart now; None when the uid has no cart (never ordered, deleted, evicted)."""
        cart = self.store.latest_cart(self.uid)
        if cart is None:
            return None
        progress = self.counts.of(cart)
        holding: tuple[Holdup, ...] = ()
        if progress.files_staged < progress.files_total:
            holding = tuple(
                Holdup(file.archive_id, file.path, file.status, reason, file.error, file.attempts)
                for file in self.store.holding(cart.id, self.holding_shown)
                if (reason := reason_of(file)) is not None
            )
        return Snapshot(cart, progress, holding)

    def first(self) -> Snapshot:
        """The cart now; `CartNotFound` when there is none."""
        snapshot = self.look()
        if snapshot is None:
            raise CartNotFound(f"No cart with uid {self.uid} found")
        return snapshot


class EventName(StrEnum):
    """The events of a cart's stream (see the README's "Events" section)."""

    STATE = "state"  # the first: the cart as it is when the stream opens
    CHANGE = "change"  # something changed; the cart is still being made
    READY = "ready"  # the last: the cart can be downloaded
    FAILED = "failed"  # the last: the cart ended in error
    DELETED = "deleted"  # the last: the uid has no cart any more


@dataclass(frozen=True)
class Event:
    name: EventName
    snapshot: Snapshot | None  # None for `deleted`
    changed: tuple[Change, ...] = ()


@dataclass(frozen=True)
class Quiet:
    """Nothing changed for `HEARTBEAT` seconds: the stream is still watching."""


Watching = Generator[Event | Pause | Quiet, None, None]


def _ending(snapshot: Snapshot, changed: tuple[Change, ...]) -> Event:
    name = EventName.READY if snapshot.cart.status is CartStatus.READY else EventName.FAILED
    return Event(name, snapshot, changed)


def cart_events(
    first: Snapshot,
    look: Callable[[], Snapshot | None],
    poll: Backoff = WATCH_POLL,
    heartbeat: float = HEARTBEAT,
) -> Watching:
    """The events of one stream: `state` at once, then a `change` per look that found one,
    until the cart is ready or failed (the last event says which, also when it already
    was at the start) or gone (`deleted`). Several changes found by one look make one
    event. Between looks it yields pauses to wait out, and `Quiet` after `heartbeat`
    seconds of them without an event."""
    yield Event(EventName.STATE, first)
    current = first
    changed: tuple[Change, ...] = ()
    looks, quiet = 0, 0.0
    while not current.final:
        pause = poll.delay(looks)
        yield Pause(pause)
        looks, quiet = looks + 1, quiet + pause
        found = look()
        if found is None:
            yield Event(EventName.DELETED, None, (Change.CART,))
            return
        changed = differences(current, found)
        if changed:
            current, looks, quiet = found, 0, 0.0
            if not current.final:
                yield Event(EventName.CHANGE, current, changed)
        elif quiet >= heartbeat:
            quiet = 0.0
            yield Quiet()
    yield _ending(current, changed)
