"""The space ledger's growth on a real SQLite database: a reservation grows by the sizes of
files not counted yet, each counted once; a growth that cannot be had ends the cart for
want of space in the same transaction, holding nothing."""

from __future__ import annotations

from sqlalchemy import update

from cartd.db.space import Growth, SpaceLedger
from cartd.db.store import CartStore, carts, files
from cartd.schemas import FileOrder
from cartd.space_plan import NO_SPACE
from cartd.status import CartStatus, FileStatus

ROOMY = 10**12  # free bytes of a filesystem that never limits these tests


def _cart(store: CartStore, uid: str, count: int) -> tuple[int, list[int]]:
    orders = [FileOrder(f"{uid}{i}", f"f{i}", "md5", "0" * 32) for i in range(count)]
    cart, file_ids = store.create_cart(uid, False, orders)
    return cart.id, file_ids


def _grow(
    ledger: SpaceLedger,
    cart_id: int,
    sized: list[tuple[int, int]],
    *,
    to: int | None = None,
    ask_sized_all: bool = False,
) -> Growth | None:
    """Grow on a volume of 100 bytes (its filesystem roomier), evicting if need be."""
    return ledger.grow(
        cart_id,
        [(file_id, size, 1.0, True) for file_id, size in sized],
        to=to,
        free_bytes=ROOMY,
        limit=100,
        evict=True,
        spare_seconds=0.0,
        ask_sized_all=ask_sized_all,
    )


def _granted(growth: Growth | None) -> Growth:
    assert growth is not None
    assert growth.granted
    return growth


def _made_ready(store: CartStore, cart_id: int) -> None:
    with store.engine.begin() as connection:
        connection.execute(
            update(carts).where(carts.c.id == cart_id).values(status=CartStatus.READY.value)
        )


def test_a_reservation_grows_by_each_batch_and_counts_a_file_once(store: CartStore) -> None:
    ledger = SpaceLedger(store.engine)
    cart_id, (a, b, c) = _cart(store, "grow", 3)
    first = _grow(ledger, cart_id, [(a, 10), (b, 20)], ask_sized_all=True)
    assert first is not None
    assert first.granted
    assert first.held == 30
    assert not first.sized_all, "one file is left to size"
    again = _grow(ledger, cart_id, [(b, 20), (c, 5)], ask_sized_all=True)
    assert again is not None
    assert again.held == 35, "b was counted already"
    assert again.sized_all
    assert [file.size for file in store.files_of(cart_id)] == [10, 20, 5]
    cart = store.get_cart(cart_id)
    assert cart is not None
    assert cart.reserved_bytes == 35


def test_to_raises_the_reservation_once_however_often_it_is_asked(store: CartStore) -> None:
    ledger = SpaceLedger(store.engine)
    cart_id, (a,) = _cart(store, "tar", 1)
    _grow(ledger, cart_id, [(a, 10)])
    for _ in range(2):
        growth = _grow(ledger, cart_id, [], to=25)
        assert growth is not None
        assert growth.held == 25


def test_a_growth_that_cannot_fit_ends_the_cart_holding_nothing(store: CartStore) -> None:
    ledger = SpaceLedger(store.engine)
    other_id, (o,) = _cart(store, "other", 1)
    cart_id, (a, b) = _cart(store, "late", 2)
    _grow(ledger, other_id, [(o, 50)])
    _granted(_grow(ledger, cart_id, [(a, 40)]))
    store.move_file(a, FileStatus.STAGED)
    refused = _grow(ledger, cart_id, [(b, 20)])  # 50 + 40 + 20 > 100; the other is being made
    assert refused is not None
    assert not refused.granted
    assert refused.evict == ()
    cart = store.get_cart(cart_id)
    assert cart is not None
    assert (cart.status, cart.error, cart.reserved_bytes) == (CartStatus.ERROR, NO_SPACE, None)
    assert [file.status for file in store.files_of(cart_id)] == [FileStatus.WAITING] * 2
    assert store.files_of(cart_id)[1].size is None, "the refused batch's sizes are not written"
    assert ledger.usage().reserved == 50, "what it held is free again"
    assert _grow(ledger, cart_id, [(b, 1)]) is None, "a cart no longer being made is left alone"


def test_a_cart_whose_whole_reservation_passes_the_volume_is_too_big(store: CartStore) -> None:
    ledger = SpaceLedger(store.engine)
    ready_id, (r,) = _cart(store, "ready", 1)
    cart_id, (a, b) = _cart(store, "huge", 2)
    _grow(ledger, ready_id, [(r, 30)])
    _made_ready(store, ready_id)
    _granted(_grow(ledger, cart_id, [(a, 60)]))
    refused = _grow(ledger, cart_id, [(b, 60)])
    assert refused is not None
    assert refused.too_big
    assert refused.evict == (), "nothing is evicted for a cart that can never fit"


def test_a_growth_evicts_least_recently_used_ready_carts(store: CartStore) -> None:
    ledger = SpaceLedger(store.engine)
    ready_id, (r,) = _cart(store, "ready", 1)
    cart_id, (a, b) = _cart(store, "new", 2)
    _grow(ledger, ready_id, [(r, 50)])
    _made_ready(store, ready_id)
    assert _granted(_grow(ledger, cart_id, [(a, 40)])).evict == ()
    growth = _grow(ledger, cart_id, [(b, 40)])
    assert growth is not None
    assert growth.granted
    assert growth.evict == (ready_id,)
    assert growth.held == 80


def test_a_cart_sized_in_part_before_is_counted_whole_at_its_first_growth(
    store: CartStore,
) -> None:
    ledger = SpaceLedger(store.engine)
    cart_id, (a, b) = _cart(store, "legacy", 2)
    with store.engine.begin() as connection:  # sized by an earlier version, not reserved
        connection.execute(update(files).where(files.c.id == a).values(size=30))
        connection.execute(update(carts).where(carts.c.id == cart_id).values(reserved_bytes=None))
    growth = _grow(ledger, cart_id, [(b, 5)])
    assert growth is not None
    assert growth.held == 35
