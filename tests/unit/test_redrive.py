"""`fixit`'s move (`CartStore.redrive`) and `cartd stuck`'s query (`CartStore.stuck`), on
SQLite: what each resets or reports, file by file."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import event, update

from cartd.db.store import OVERDUE, CartStore, carts, files
from cartd.schemas import FileOrder
from cartd.status import CartStatus, FileStatus

LONG_AGO = datetime.now(UTC) - timedelta(hours=3)


def _cart(store: CartStore, uid: str, status: CartStatus, count: int) -> tuple[int, list[int]]:
    orders = [FileOrder(f"{uid}{i}", f"d/f{i}", "md5", "0" * 32) for i in range(count)]
    cart, file_ids = store.create_cart(uid, False, orders)
    with store.engine.begin() as connection:
        connection.execute(
            update(carts)
            .where(carts.c.id == cart.id)
            .values(status=status.value, error="broke" if status is CartStatus.ERROR else None)
        )
    return cart.id, file_ids


def _set_file(store: CartStore, file_id: int, **values: Any) -> None:
    with store.engine.begin() as connection:
        connection.execute(update(files).where(files.c.id == file_id).values(**values))


def _age(store: CartStore, cart_id: int, when: datetime = LONG_AGO) -> None:
    """Make the cart and its files look untouched since `when`."""
    with store.engine.begin() as connection:
        connection.execute(update(carts).where(carts.c.id == cart_id).values(updated_at=when))
        connection.execute(update(files).where(files.c.cart_id == cart_id).values(updated_at=when))


def _mixed(store: CartStore, status: CartStatus) -> tuple[int, list[int]]:
    """A cart with one file in each status: staged, error, staging on tape, waiting."""
    cart_id, ids = _cart(store, "mixed", status, 4)
    later = time.time() + 3600
    _set_file(store, ids[0], status=FileStatus.STAGED.value, size=5)
    _set_file(
        store, ids[1], status=FileStatus.ERROR.value, attempts=6, polls=2, error="archive down"
    )
    _set_file(
        store,
        ids[2],
        status=FileStatus.STAGING.value,
        attempts=2,
        polls=7,
        on_disk=False,
        next_attempt_at=later,
        error="reset by peer",
    )
    _set_file(store, ids[3], attempts=1, next_attempt_at=later, on_disk=True)
    return cart_id, ids


def _row(store: CartStore, file_id: int) -> dict[str, Any]:
    with store.engine.connect() as connection:
        row = connection.execute(files.select().where(files.c.id == file_id)).one()
    return dict(row._mapping)


def test_redrive_of_a_cart_in_error_puts_back_every_file_not_verified(store: CartStore) -> None:
    cart_id, ids = _mixed(store, CartStatus.ERROR)
    staged_before = _row(store, ids[0])

    assert store.redrive(cart_id) == 3

    cart = store.get_cart(cart_id)
    assert cart is not None
    assert (cart.status, cart.error) == (CartStatus.STAGING, None)
    assert _row(store, ids[0]) == staged_before, "a verified file is left as it is"
    failed = _row(store, ids[1])
    assert (failed["status"], failed["attempts"], failed["polls"], failed["error"]) == (
        "waiting",
        0,
        0,
        None,
    )
    assert failed["next_attempt_at"] == OVERDUE
    on_tape = _row(store, ids[2])
    assert on_tape["status"] == "staging", "a file asked to stage stays so: no second stage"
    assert (on_tape["attempts"], on_tape["next_attempt_at"], on_tape["on_disk"]) == (
        0,
        OVERDUE,
        None,
    )
    assert on_tape["polls"] == 7, "the poll back-off of a file on tape goes on"
    waiting = _row(store, ids[3])
    assert (waiting["status"], waiting["attempts"], waiting["next_attempt_at"]) == (
        "waiting",
        0,
        OVERDUE,
    )
    assert waiting["on_disk"] is None, "the archive is asked afresh"


@pytest.mark.parametrize("status", [CartStatus.WAITING, CartStatus.STAGING, CartStatus.BUNDLING])
def test_redrive_of_a_cart_being_made_makes_its_open_files_due_now(
    store: CartStore, status: CartStatus
) -> None:
    cart_id, ids = _mixed(store, status)
    _age(store, cart_id)

    assert store.redrive(cart_id) == 3
    cart = store.get_cart(cart_id)
    assert cart is not None
    # A cart whose first step was lost is started; one further along keeps its status.
    assert cart.status is (CartStatus.STAGING if status is CartStatus.WAITING else status)
    assert cart.updated_at > LONG_AGO + timedelta(hours=1)
    assert [_row(store, file_id)["next_attempt_at"] for file_id in ids] == [None] + [OVERDUE] * 3
    assert _row(store, ids[1])["status"] == "waiting"
    if status is not CartStatus.BUNDLING:
        # Any sweep takes them at once, a distributed one's grace notwithstanding.
        assert sorted(store.overdue(grace=3600, limit=10).files) == sorted(ids[1:])


@pytest.mark.parametrize("status", [CartStatus.READY, CartStatus.DELETED])
def test_redrive_leaves_a_ready_or_deleted_cart_alone(store: CartStore, status: CartStatus) -> None:
    cart_id, ids = _mixed(store, status)
    before = [_row(store, file_id) for file_id in ids]
    assert store.redrive(cart_id) is None
    assert [_row(store, file_id) for file_id in ids] == before
    cart = store.get_cart(cart_id)
    assert cart is not None
    assert cart.status is status


def test_stuck_lists_carts_being_made_with_no_write_since_and_what_holds_them(
    store: CartStore,
) -> None:
    stuck_id, stuck_files = _mixed(store, CartStatus.STAGING)
    _age(store, stuck_id)
    bundling_id, bundling_files = _cart(store, "bundling", CartStatus.BUNDLING, 2)
    for file_id in bundling_files:
        _set_file(store, file_id, status=FileStatus.STAGED.value)
    _age(store, bundling_id)
    # A cart whose cart row is old but one of whose files was just polled: progressing.
    polled_id, polled_files = _cart(store, "polled", CartStatus.STAGING, 2)
    _age(store, polled_id)
    _set_file(store, polled_files[1], polls=3, updated_at=datetime.now(UTC))
    fresh_id, _ = _cart(store, "fresh", CartStatus.WAITING, 1)
    for status in (CartStatus.READY, CartStatus.ERROR, CartStatus.DELETED):
        finished_id, _ = _cart(store, status.value, status, 1)
        _age(store, finished_id)

    statements: list[str] = []

    def count(*args: Any) -> None:
        statements.append(str(args[2]))

    event.listen(store.engine, "before_cursor_execute", count)
    try:
        found = store.stuck(datetime.now(UTC) - timedelta(hours=1))
    finally:
        event.remove(store.engine, "before_cursor_execute", count)

    assert [item.cart.id for item in found] == [stuck_id, bundling_id]
    assert len([s for s in statements if s.lstrip().upper().startswith("SELECT")]) == 1
    first, second = found
    assert (first.cart.uid, first.cart.status) == ("mixed", CartStatus.STAGING)
    assert (first.files_total, first.files_verified) == (4, 1)
    assert abs((first.last_progress - LONG_AGO).total_seconds()) < 1
    assert [(f.id, f.status, f.error) for f in first.holding] == [
        (stuck_files[1], FileStatus.ERROR, "archive down"),
        (stuck_files[2], FileStatus.STAGING, "reset by peer"),
        (stuck_files[3], FileStatus.WAITING, None),
    ]
    assert (second.files_total, second.files_verified, second.holding) == (2, 2, [])
    assert fresh_id not in {item.cart.id for item in found}
    assert polled_id not in {item.cart.id for item in found}

    assert store.stuck(LONG_AGO - timedelta(minutes=1)) == []
