"""The sweep's query: work whose task was lost is found, a slice at a time, once per grace."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import Engine, update

from cartd.db import migrate
from cartd.db.engine import make_engine
from cartd.db.store import CartStore, carts, files
from cartd.schemas import FileOrder
from cartd.status import CartStatus, FileStatus


@pytest.fixture
def store(tmp_path: Path) -> Iterator[CartStore]:
    engine: Engine = make_engine(f"sqlite:///{tmp_path / 'cartd.sqlite3'}")
    migrate.create_fresh(engine)
    try:
        yield CartStore(engine)
    finally:
        engine.dispose()


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


def test_a_file_whose_claim_lapsed_is_sent_again_at_once_and_its_claim_cleared(
    store: CartStore,
) -> None:
    cart_id, file_ids = _cart(store, "lapsed", 3)
    store.move_cart(cart_id, CartStatus.STAGING)
    just_now = time.time()
    with store.engine.begin() as connection:
        connection.execute(update(files).values(next_attempt_at=just_now))  # none is late
    dead, live = file_ids[0], file_ids[1]
    assert store.claim_files([dead], "host:1:dead", until=time.time() - 1) == {dead}
    assert store.claim_files([live], "host:2:live", until=time.time() + 60) == {live}

    found = store.overdue(grace=300, limit=10)
    assert found.files == [dead], "a claim no step renews means its step died"
    assert store.claim_holders() == {"host:2:live"}, "the lapsed claim is cleared"
    assert store.overdue(grace=300, limit=10).files == [], "then it waits a grace as any other"
