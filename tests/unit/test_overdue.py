"""The sweep's query: work whose task was lost is found, a slice at a time, once per grace."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

from sqlalchemy import update

from cartd.db.store import CartStore, carts, files
from cartd.schemas import FileOrder
from cartd.status import CartStatus, FileStatus


def _cart(store: CartStore, uid: str, count: int) -> tuple[int, list[int]]:
    orders = [FileOrder(f"{uid}{i}", f"f{i}", "md5", "0" * 32) for i in range(count)]
    cart, file_ids = store.create_cart(uid, False, orders)
    return cart.id, file_ids


def test_overdue_file_steps_are_found_a_slice_at_a_time_then_left_for_a_grace(
    store: CartStore,
) -> None:
    cart_id, file_ids = _cart(store, "late", 5)
    store.move_cart(cart_id, CartStatus.STAGING)
    long_ago = time.time() - 600
    with store.engine.begin() as connection:
        connection.execute(update(files).values(next_attempt_at=long_ago))
        connection.execute(
            update(files).where(files.c.id == file_ids[4]).values(status=FileStatus.STAGED.value)
        )
    first = store.overdue(grace=60, limit=3)
    second = store.overdue(grace=60, limit=3)
    assert first.files == file_ids[:3]
    assert second.files == [file_ids[3]], "the next slice; the staged file is not overdue"
    assert store.overdue(grace=60, limit=3).files == [], "each is left alone for a grace"
    assert first.sizes == first.finishes == []


def test_a_cart_never_sized_and_a_cart_never_finished_are_found(store: CartStore) -> None:
    waiting, _ = _cart(store, "waiting", 1)
    finishing, finishing_files = _cart(store, "finishing", 2)
    fresh, _ = _cart(store, "fresh", 1)
    store.move_cart(finishing, CartStatus.STAGING)
    with store.engine.begin() as connection:
        connection.execute(
            update(files)
            .where(files.c.id.in_(finishing_files))
            .values(status=FileStatus.STAGED.value)
        )
        connection.execute(
            update(carts)
            .where(carts.c.id.in_([waiting, finishing]))
            .values(updated_at=datetime.now(UTC) - timedelta(hours=1))
        )
    found = store.overdue(grace=60, limit=10)
    assert found.sizes == [waiting], "a cart just ordered is not overdue"
    assert found.finishes == [finishing]
    assert found.files == []
    assert fresh not in found.sizes


def test_the_files_of_a_cart_whose_step_died_are_sent_again_at_once(store: CartStore) -> None:
    cart_id, file_ids = _cart(store, "dead", 4)
    other_cart, other_files = _cart(store, "alive", 2)
    for cart in (cart_id, other_cart):
        store.move_cart(cart, CartStatus.STAGING)
    with store.engine.begin() as connection:  # none is late
        connection.execute(update(files).values(next_attempt_at=time.time()))
    dead, idle, live, verified = file_ids
    gone = time.time() - 1
    assert store.claim_files([dead], "host:1:dead", until=gone) == {dead}
    assert store.claim_files([verified], "host:1:dead", until=gone) == {verified}
    assert store.claim_files([live], "host:2:live", until=time.time() + 60) == {live}
    assert store.claim_files([other_files[0]], "host:3:live", until=time.time() + 60)
    with store.engine.begin() as connection:
        connection.execute(
            update(files).where(files.c.id == verified).values(status=FileStatus.STAGED.value)
        )

    found = store.overdue(grace=300, limit=10)
    # A claim no step renews means its step died; the other open files of its cart go
    # with it (their messages may have died with its worker), but not one a live step
    # holds.
    assert found.files == [dead, idle]
    assert store.claim_holders() == {"host:2:live", "host:3:live"}, "lapsed claims cleared"
    assert store.overdue(grace=300, limit=10).files == [], "then they wait a grace as any other"


def test_a_cart_whose_finishing_step_died_is_finished_again_at_once(store: CartStore) -> None:
    cart_id, _ = _cart(store, "bundling", 2)
    store.move_cart(cart_id, CartStatus.STAGING)
    with store.engine.begin() as connection:
        connection.execute(update(files).values(status=FileStatus.STAGED.value))
    store.move_cart(cart_id, CartStatus.BUNDLING)
    # The step writing its bundle claimed it, then its worker was killed.
    assert store.claim_cart(cart_id, "host:1:dead", time.time() - 1)
    assert store.overdue(grace=3600, limit=10).finishes == [cart_id]
    assert store.claim_cart(cart_id, "host:2:next", time.time() + 60), "the lapsed claim is gone"
    assert store.overdue(grace=3600, limit=10).finishes == [], "a live claim is left alone"
