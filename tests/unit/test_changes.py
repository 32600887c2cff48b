"""What a watcher of a cart sees change (`cartd.service.changes`): why a file holds its cart
up, what differs between two looks, the events of one stream as a plain generator over
looks that the test makes up, and the looks themselves over a real database."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime

import pytest

from cartd.db.store import CartStore, files
from cartd.records import Cart, CartFile, Progress
from cartd.schemas import FileOrder
from cartd.service.backoff import Backoff
from cartd.service.changes import (
    HOLDING_SHOWN,
    WATCH_POLL,
    CartWatcher,
    Change,
    Event,
    EventName,
    Holdup,
    Reason,
    Snapshot,
    cart_events,
    differences,
    head_view,
    reason_of,
)
from cartd.service.counts import ProgressCounts
from cartd.service.live import Pause
from cartd.status import CartStatus, FileStatus

MOMENT = datetime(2026, 11, 30, tzinfo=UTC)


def a_file(**fields: object) -> CartFile:
    base = CartFile(
        1, 1, "id1", "a/b.bin", "md5", "0" * 32, FileStatus.WAITING, None, None, 0, 0, None
    )
    return replace(base, **fields)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("fields", "reason"),
    [
        ({"status": FileStatus.STAGED}, None),
        ({"status": FileStatus.ERROR, "attempts": 3, "error": "checksum"}, Reason.FAILED),
        ({"status": FileStatus.STAGING, "attempts": 2, "on_disk": False}, Reason.RETRYING),
        ({"status": FileStatus.STAGING, "on_disk": False, "polls": 4}, Reason.ON_TAPE),
        ({"status": FileStatus.WAITING, "on_disk": False}, Reason.ON_TAPE),
        ({"status": FileStatus.WAITING, "polls": 2}, Reason.SHARED),
        ({"status": FileStatus.WAITING, "polls": 2, "on_disk": True}, Reason.SHARED),
        ({"status": FileStatus.WAITING}, Reason.QUEUED),
        ({"status": FileStatus.WAITING, "on_disk": True}, Reason.QUEUED),
    ],
)
def test_why_a_file_holds_its_cart_up(fields: dict[str, object], reason: Reason | None) -> None:
    assert reason_of(a_file(**fields)) is reason


def snap(
    status: CartStatus = CartStatus.STAGING,
    staged: int = 0,
    holding: tuple[Holdup, ...] = (),
    cart_id: int = 1,
    error: str | None = None,
) -> Snapshot:
    cart = Cart(cart_id, "u", status, False, error, MOMENT, MOMENT, MOMENT, None)
    return Snapshot(cart, Progress(3, staged, 300, staged * 100, 3), holding)


TAPE = Holdup("id3", "c.bin", FileStatus.STAGING, Reason.ON_TAPE, None, 0)


def test_differences_name_what_changed_and_nothing_else() -> None:
    assert differences(snap(), snap()) == ()
    assert differences(snap(), snap(staged=1)) == (Change.PROGRESS,)
    assert differences(snap(), snap(holding=(TAPE,))) == (Change.HOLDING,)
    assert differences(snap(), snap(CartStatus.BUNDLING)) == (Change.PHASE,)
    assert differences(snap(), snap(CartStatus.ERROR, error="x")) == (Change.PHASE,)
    assert differences(snap(), snap(cart_id=2, staged=1)) == (Change.CART, Change.PROGRESS)
    # What a HEAD says: the cart, its status and message, its four counts.
    assert head_view(snap().cart, snap().progress) != head_view(
        snap().cart, snap(staged=1).progress
    )
    later = replace(snap().cart, updated_at=datetime(2027, 1, 1, tzinfo=UTC))
    assert head_view(later, snap().progress) == head_view(snap().cart, snap().progress)


def drive(first: Snapshot, looks: list[Snapshot | None], heartbeat: float = 15.0) -> list[object]:
    """Everything the stream yields, each look answered from `looks` in turn."""
    answers: Iterator[Snapshot | None] = iter(looks)
    return list(cart_events(first, lambda: next(answers), heartbeat=heartbeat))


def events(items: list[object]) -> list[tuple[EventName, tuple[Change, ...]]]:
    return [(item.name, item.changed) for item in items if isinstance(item, Event)]


def test_a_stream_is_the_state_then_each_change_then_the_end() -> None:
    ready = snap(CartStatus.READY, staged=3)
    items = drive(snap(), [snap(), snap(holding=(TAPE,)), snap(staged=2), snap(staged=2), ready])
    assert events(items) == [
        (EventName.STATE, ()),
        (EventName.CHANGE, (Change.HOLDING,)),
        (EventName.CHANGE, (Change.PROGRESS, Change.HOLDING)),
        (EventName.READY, (Change.PHASE, Change.PROGRESS)),
    ]
    assert isinstance(items[-1], Event)
    assert items[-1].snapshot == ready
    # A look that finds nothing new lets the pause grow; a change makes it short again.
    pauses = [item.seconds for item in items if isinstance(item, Pause)]
    assert pauses == [
        WATCH_POLL.delay(0),
        WATCH_POLL.delay(1),
        WATCH_POLL.delay(0),
        WATCH_POLL.delay(0),
        WATCH_POLL.delay(1),
    ]


def test_a_stream_ends_with_failed_or_deleted_and_at_once_when_already_over() -> None:
    failed = snap(CartStatus.ERROR, error="file id2 (b.bin): checksum mismatch")
    assert events(drive(snap(), [failed])) == [
        (EventName.STATE, ()),
        (EventName.FAILED, (Change.PHASE,)),
    ]
    assert events(drive(snap(), [None])) == [
        (EventName.STATE, ()),
        (EventName.DELETED, (Change.CART,)),
    ]
    ready = snap(CartStatus.READY, staged=3)
    items = drive(ready, [])
    assert events(items) == [(EventName.STATE, ()), (EventName.READY, ())]
    assert not any(isinstance(item, Pause) for item in items), "no look at a cart over"


def test_a_quiet_stream_says_it_is_still_watching() -> None:
    poll = Backoff(initial=1.0, factor=1.0, cap=1.0)
    looks: list[Snapshot | None] = [snap()] * 7 + [snap(staged=1)] + [snap(staged=1)] * 3 + [None]
    answers = iter(looks)
    items = list(cart_events(snap(), lambda: next(answers), poll=poll, heartbeat=3.0))
    kinds = [type(item).__name__ if not isinstance(item, Event) else item.name for item in items]
    assert kinds == [
        "state",
        *["Pause"] * 3,
        "Quiet",
        *["Pause"] * 3,
        "Quiet",
        "Pause",
        "Pause",
        "change",
        *["Pause"] * 3,
        "Quiet",
        "Pause",
        "deleted",
    ]


@pytest.fixture
def watched(store: CartStore) -> tuple[CartStore, list[int]]:
    orders = [FileOrder(f"id{n}", f"f{n}.bin", "md5", "0" * 32) for n in range(14)]
    _cart, file_ids = store.create_cart("watched", False, orders)
    return store, file_ids


def _set(store: CartStore, file_id: int, **values: object) -> None:
    with store.engine.begin() as connection:
        connection.execute(files.update().where(files.c.id == file_id).values(**values))


def test_a_look_names_the_files_that_say_most_about_why_the_cart_waits(
    watched: tuple[CartStore, list[int]],
) -> None:
    store, ids = watched
    _set(store, ids[0], status="staged", size=10)
    _set(store, ids[5], status="staging", on_disk=False, polls=3, size=20)
    _set(store, ids[9], attempts=2, error="archive answered 500")
    _set(store, ids[12], status="error", error="checksum mismatch")
    look = CartWatcher(store, ProgressCounts(store), "watched").first()
    assert (look.progress.files_total, look.progress.files_staged) == (14, 1)
    assert (look.progress.files_sized, look.progress.bytes_total) == (2, 30)
    assert len(look.holding) == HOLDING_SHOWN
    assert [(file.path, file.reason) for file in look.holding[:5]] == [
        ("f12.bin", Reason.FAILED),
        ("f9.bin", Reason.RETRYING),
        ("f5.bin", Reason.ON_TAPE),
        ("f1.bin", Reason.QUEUED),
        ("f2.bin", Reason.QUEUED),
    ]
    assert look.holding[1].error == "archive answered 500"
    assert CartWatcher(store, ProgressCounts(store), "nothing").look() is None
