"""Status moves that race on a real PostgreSQL server: a transaction holding a cart's row
makes the other wait, then re-check its guard, as happens between API processes.

Each test holds the row in one transaction, starts the racing move in a thread, waits
until PostgreSQL reports that thread blocked on the row, then commits: an unguarded
UPDATE would overwrite the committed move.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from sqlalchemy import Engine, text

from cartd.db import migrate
from cartd.db.engine import database_url, make_engine
from cartd.db.space import Growth, SpaceLedger
from cartd.db.store import CartStore, carts
from cartd.schemas import FileOrder
from cartd.status import CartStatus
from tests.conftest import scratch_database
from tests.support.cartd_server import wait_until

pytestmark = pytest.mark.postgres


@pytest.fixture
def engine(tmp_path: Any) -> Iterator[Engine]:
    with scratch_database("postgres") as url:
        built = make_engine(database_url(url, tmp_path))
        migrate.upgrade(built)
        try:
            yield built
        finally:
            built.dispose()


def _cart(store: CartStore, uid: str, status: CartStatus, reserved: int | None) -> int:
    cart, _ = store.create_cart(uid, False, [FileOrder(f"{uid}-f", "f.bin", "md5", "0" * 32)])
    with store.engine.begin() as connection:
        connection.execute(
            carts.update()
            .where(carts.c.id == cart.id)
            .values(status=status.value, reserved_bytes=reserved)
        )
    return cart.id


def _status(engine: Engine, cart_id: int) -> str:
    with engine.connect() as connection:
        return str(
            connection.scalar(text("SELECT status FROM carts WHERE id = :i"), {"i": cart_id})
        )


def _blocked(engine: Engine) -> bool:
    with engine.connect() as connection:
        waiting = connection.scalar(
            text("SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'")
        )
    return bool(waiting)


def _race(engine: Engine, hold: str, cart_id: int, move: Callable[[], object]) -> object:
    """Run `move` while another transaction has run `hold` on the cart, uncommitted."""
    results: list[object] = []
    with engine.connect() as holder:
        transaction = holder.begin()
        holder.execute(text(hold), {"i": cart_id})
        racer = threading.Thread(target=lambda: results.append(move()))
        racer.start()
        wait_until(lambda: _blocked(engine), timeout=10)
        transaction.commit()
    racer.join(10)
    assert not racer.is_alive()
    return results[0]


def _grow_while_fixit_reopens(
    engine: Engine, ledger: SpaceLedger, cart_id: int, to: int, reopened: int
) -> Growth:
    """Grow a cart's reservation to `to` bytes of a 1000-byte volume while fixit's move of
    the failed cart `reopened` back to staging is held open, uncommitted."""
    reopen = "UPDATE carts SET status = 'staging', error = NULL WHERE id = :i"
    growth = _race(
        engine,
        reopen,
        reopened,
        lambda: ledger.grow(
            cart_id, [], to=to, free_bytes=1000, limit=1000, evict=True, spare_seconds=0
        ),
    )
    assert isinstance(growth, Growth)
    return growth


def test_eviction_never_takes_a_cart_that_fixit_reopened_meanwhile(engine: Engine) -> None:
    store, ledger = CartStore(engine), SpaceLedger(engine)
    failed = _cart(store, "failed", CartStatus.ERROR, reserved=600)
    newcomer = _cart(store, "newcomer", CartStatus.STAGING, reserved=None)

    plan = _grow_while_fixit_reopens(engine, ledger, newcomer, 500, failed)
    assert _status(engine, failed) == "staging", "the reopened cart was evicted"
    assert failed not in plan.evict
    assert not plan.granted
    assert _status(engine, newcomer) == "error", "refused, the newcomer ends for want of space"


def test_a_growth_refused_after_a_race_gives_back_the_carts_it_evicted(engine: Engine) -> None:
    store, ledger = CartStore(engine), SpaceLedger(engine)
    older = _cart(store, "older", CartStatus.ERROR, reserved=300)
    failed = _cart(store, "failed", CartStatus.ERROR, reserved=600)
    newcomer = _cart(store, "newcomer", CartStatus.STAGING, reserved=None)

    # 800 of 1000 wanted, 100 free: only evicting both makes room. fixit reopens the
    # second while the growth evicts the first, so the replan finds no room at all.
    growth = _grow_while_fixit_reopens(engine, ledger, newcomer, 800, failed)
    assert not growth.granted
    assert growth.evict == ()
    assert _status(engine, older) == "error", "evicted by a growth that was refused"
    assert _status(engine, failed) == "staging"
    assert _status(engine, newcomer) == "error"


def test_delete_returns_only_the_carts_it_deleted(engine: Engine) -> None:
    store = CartStore(engine)
    first = _cart(store, "twice", CartStatus.READY, reserved=10)
    second = _cart(store, "twice", CartStatus.READY, reserved=10)

    # An eviction of the first cart commits while the DELETE waits on its row.
    evict = "UPDATE carts SET status = 'deleted' WHERE id = :i"
    deleted = _race(engine, evict, first, lambda: store.delete_uid("twice"))
    assert deleted == [second]
    assert _status(engine, first) == _status(engine, second) == "deleted"


def test_fixit_leaves_alone_a_cart_evicted_meanwhile(engine: Engine) -> None:
    store = CartStore(engine)
    failed = _cart(store, "evicted", CartStatus.ERROR, reserved=10)
    with engine.begin() as connection:
        connection.execute(
            text("UPDATE cart_files SET status = 'error' WHERE cart_id = :i"), {"i": failed}
        )

    evict = "UPDATE carts SET status = 'deleted' WHERE id = :i"
    assert _race(engine, evict, failed, lambda: store.redrive(failed)) is None
    assert _status(engine, failed) == "deleted"
    assert [file.status.value for file in store.files_of(failed)] == ["error"]


def test_fixit_leaves_alone_a_cart_being_made_that_a_delete_took_meanwhile(
    engine: Engine,
) -> None:
    store = CartStore(engine)
    being_made = _cart(store, "being-made", CartStatus.STAGING, reserved=10)
    with engine.begin() as connection:
        connection.execute(
            text("UPDATE cart_files SET next_attempt_at = 1e12, attempts = 3 WHERE cart_id = :i"),
            {"i": being_made},
        )

    delete = "UPDATE carts SET status = 'deleted' WHERE id = :i"
    assert _race(engine, delete, being_made, lambda: store.redrive(being_made)) is None
    assert _status(engine, being_made) == "deleted"
    (file,) = store.files_of(being_made)
    assert file.attempts == 3, "a deleted cart's files were reset"
