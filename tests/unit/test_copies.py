"""Copies of one archive file across carts: which row leads, which may be linked, which wake,
and the space ledger counting each archive file once (a real SQLite database)."""

from __future__ import annotations

import time

from sqlalchemy import event, update

from cartd.db.copies import CopyStore, Donor
from cartd.db.space import Growth, Sized, SpaceLedger
from cartd.db.store import CartStore, carts, files
from cartd.schemas import FileOrder
from cartd.status import CartStatus, FileStatus
from tests.unit.conftest import size_files

SUM_X = "1" * 32
SUM_Y = "2" * 32
SUM_Z = "3" * 32


def cart(
    store: CartStore, uid: str, *orders: tuple[str, str, int], reserved: bool = True
) -> tuple[int, list[int]]:
    """A cart of (archive id, md5 sum, size) files; sized and holding its space unless
    `reserved` is False (then `grow_whole` sizes it and asks for its space)."""
    made, ids = store.create_cart(
        uid,
        False,
        [
            FileOrder(aid, f"{uid}/{n}", "md5", hashsum)
            for n, (aid, hashsum, _) in enumerate(orders)
        ],
    )
    if reserved:
        size_files(store, sizes(ids, orders))
        set_cart(store, made.id, reserved_bytes=sum(size for _, _, size in orders))
    return made.id, ids


def sizes(ids: list[int], orders: tuple[tuple[str, str, int], ...]) -> list[Sized]:
    return [(file_id, size, 1.0, True) for file_id, (_, _, size) in zip(ids, orders, strict=True)]


def grow_whole(
    ledger: SpaceLedger, cart_id: int, ids: list[int], *orders: tuple[str, str, int], evict: bool
) -> Growth:
    """Size all of a cart's files in one growth of its reservation, in a 100-byte volume."""
    growth = ledger.grow(
        cart_id, sizes(ids, orders), free_bytes=10**9, limit=100, evict=evict, spare_seconds=0
    )
    assert growth is not None
    return growth


def set_cart(store: CartStore, cart_id: int, **values: object) -> None:
    with store.engine.begin() as connection:
        connection.execute(update(carts).where(carts.c.id == cart_id).values(**values))


def verify(store: CartStore, *file_ids: int) -> None:
    with store.engine.begin() as connection:
        connection.execute(
            update(files).where(files.c.id.in_(file_ids)).values(status=FileStatus.STAGED.value)
        )


def test_the_lowest_open_row_leads_and_a_verified_copy_is_a_donor(store: CartStore) -> None:
    copies = CopyStore(store.engine)
    a, (a_x, a_y) = cart(store, "a", ("x", SUM_X, 10), ("y", SUM_Y, 20))
    _, (b_x, b_other, b_y) = cart(store, "b", ("x", SUM_X, 10), ("x", SUM_Z, 10), ("y", SUM_Y, 20))

    found = copies.lookup([a_x, a_y, b_x, b_other, b_y])
    assert a_x not in found, "the lead has no lead"
    assert found[b_x].lead == a_x
    assert found[b_y].lead == a_y
    assert b_other not in found, "another checksum is another file"

    verify(store, a_x)
    found = copies.lookup([b_x])
    assert found[b_x].lead is None
    assert found[b_x].donors == [Donor(a_x, a, 10, 1.0)]

    set_cart(store, a, status=CartStatus.DELETED.value)
    assert copies.lookup([b_x, b_y]) == {}, "a deleted cart's rows are nobody's copies"


def test_a_file_asked_to_be_staged_keeps_the_lead_against_a_lower_row(store: CartStore) -> None:
    copies = CopyStore(store.engine)
    _, (a_x,) = cart(store, "a", ("x", SUM_X, 10))  # say, failed once and made open again
    _, (b_x,) = cart(store, "b", ("x", SUM_X, 10))
    store.move_file(b_x, FileStatus.STAGING)  # the lead meanwhile: on tape
    found = copies.lookup([a_x, b_x])
    assert found[a_x].lead == b_x
    assert b_x not in found


def test_a_failed_cart_leads_no_more(store: CartStore) -> None:
    copies = CopyStore(store.engine)
    a, _ = cart(store, "a", ("x", SUM_X, 10))
    _, (b_x,) = cart(store, "b", ("x", SUM_X, 10))
    set_cart(store, a, status=CartStatus.ERROR.value)
    assert copies.lookup([b_x]) == {}


def test_recording_a_copy_wakes_the_rows_waiting_for_it(store: CartStore) -> None:
    copies = CopyStore(store.engine)
    _, (a_x, a_y) = cart(store, "a", ("x", SUM_X, 10), ("y", SUM_Y, 20))
    b, (b_x,) = cart(store, "b", ("x", SUM_X, 10))
    _, (c_x,) = cart(store, "c", ("x", SUM_X, 10))
    later = time.time() + 3600
    store.move_file(b_x, expect=[FileStatus.WAITING], next_attempt_at=later)
    verify(store, a_x)
    assert copies.wake([a_x]) == [b_x, c_x]
    assert all((file.next_attempt_at or 0) <= time.time() for file in store.files_of(b)), "due now"
    assert copies.wake([a_y]) == []


def test_usage_counts_each_archive_file_once_whoever_is_left(store: CartStore) -> None:
    ledger = SpaceLedger(store.engine)
    a, (a_x, a_w) = cart(store, "a", ("x", SUM_X, 50), ("w", SUM_Y, 30))
    _, (b_x, b_x_again) = cart(store, "b", ("x", SUM_X, 50), ("x", SUM_X, 50))
    verify(store, a_x, a_w, b_x, b_x_again)
    usage = ledger.usage()
    assert (usage.used, usage.reserved) == (80, 80)

    set_cart(store, a, status=CartStatus.DELETED.value)  # the cart that pulled it
    usage = ledger.usage()
    assert (usage.used, usage.reserved) == (50, 50), "still there, counted once"


def test_a_cart_reserves_only_what_it_does_not_share(store: CartStore) -> None:
    ledger = SpaceLedger(store.engine)
    cart(store, "a", ("x", SUM_X, 50), ("w", SUM_Y, 30))
    b_files = (("x", SUM_X, 50), ("z", SUM_Z, 20))
    b, b_ids = cart(store, "b", *b_files, reserved=False)
    growth = grow_whole(ledger, b, b_ids, *b_files, evict=False)
    assert growth.granted, "80 held + 20 new fit in 100, though 80 + 70 would not"
    assert growth.held == 70, "the cart's own reservation is all it names"
    assert ledger.usage().reserved == 100


def test_eviction_counts_only_the_bytes_no_other_cart_names(store: CartStore) -> None:
    ledger = SpaceLedger(store.engine)
    copy, _ = cart(store, "copy", ("x", SUM_X, 50))  # least recently used, all shared
    holder, _ = cart(store, "holder", ("x", SUM_X, 50), ("w", SUM_Y, 30))
    for done in (copy, holder):
        set_cart(store, done, status=CartStatus.READY.value)
    assert ledger.usage().reserved == 80
    new, new_ids = cart(store, "new", ("z", SUM_Z, 40), reserved=False)

    growth = grow_whole(ledger, new, new_ids, ("z", SUM_Z, 40), evict=True)
    assert growth.granted
    assert growth.evict == (holder,), "the copy frees nothing: its bytes are the holder's too"
    assert growth.frees == 30
    assert store.get_cart(copy) is not None
    assert ledger.usage().reserved == 90


def test_carts_that_share_every_file_are_evicted_together_for_room(store: CartStore) -> None:
    ledger = SpaceLedger(store.engine)
    first, _ = cart(store, "first", ("x", SUM_X, 50))
    second, _ = cart(store, "second", ("x", SUM_X, 50))
    for done in (first, second):
        set_cart(store, done, status=CartStatus.READY.value)
    assert ledger.usage().reserved == 50
    new, new_ids = cart(store, "new", ("z", SUM_Z, 60), reserved=False)

    growth = grow_whole(ledger, new, new_ids, ("z", SUM_Z, 60), evict=True)
    assert growth.granted, "neither frees the shared 50 alone, both together do"
    assert sorted(growth.evict) == sorted((first, second))
    assert growth.frees == 50
    assert ledger.usage().reserved == 60


def test_files_without_a_checksum_are_never_counted_as_one_copy(store: CartStore) -> None:
    ledger = SpaceLedger(store.engine)
    old, _ = cart(store, "old", ("x", "", 30), ("x", "", 30))
    set_cart(store, old, status=CartStatus.READY.value)
    assert ledger.usage().reserved == 60
    new, new_ids = cart(store, "new", ("z", SUM_Z, 80), reserved=False)

    growth = grow_whole(ledger, new, new_ids, ("z", SUM_Z, 80), evict=True)
    assert growth.granted, "the old cart's two files are two copies: evicting it frees 60"
    assert (growth.evict, growth.frees) == ((old,), 60)


def test_the_cart_being_admitted_keeps_what_it_shares_with_an_evicted_one(
    store: CartStore,
) -> None:
    ledger = SpaceLedger(store.engine)
    old, _ = cart(store, "old", ("x", SUM_X, 60))
    set_cart(store, old, status=CartStatus.READY.value)
    new_files = (("x", SUM_X, 60), ("z", SUM_Z, 50))
    new, new_ids = cart(store, "new", *new_files, reserved=False)
    # 60 held, 50 new: no room within 100, and evicting the old cart frees nothing the new
    # one does not name.
    growth = grow_whole(ledger, new, new_ids, *new_files, evict=True)
    assert not growth.granted
    assert growth.evict == ()


def test_a_batch_finds_its_copies_by_hash_sum_never_by_walking_open_rows(
    store: CartStore,
) -> None:
    """A cart of 100,000 files being made has 100,000 open rows: a query that walks them at
    every batch makes the cart quadratic. SQLite has no statistics to tell it so, and
    planned exactly that for a batch of 16 once the statuses were in the query."""
    orders = [(f"f{n}", f"{n:032x}", 1) for n in range(64)]
    _, ids = cart(store, "big", *orders)
    verify(store, *ids[:16])
    plans: list[str] = []

    def explain(connection, cursor, statement, parameters, context, executemany):  # type: ignore[no-untyped-def]
        if statement.lstrip().upper().startswith("SELECT"):
            rows = cursor.connection.execute(f"EXPLAIN QUERY PLAN {statement}", parameters)
            plans.append(" / ".join(str(row[-1]) for row in rows))

    event.listen(store.engine, "before_cursor_execute", explain)
    try:
        CopyStore(store.engine).wake(ids[:16])
        CopyStore(store.engine).lookup(ids[16:32])
    finally:
        event.remove(store.engine, "before_cursor_execute", explain)
    assert plans, "wake asked nothing"
    for plan in plans:
        assert "ix_cart_files_status" not in plan, plan
        assert "SCAN" not in plan, plan
