"""Recording a group of files verified (a real SQLite database)."""

from __future__ import annotations

import time

from cartd.db.store import CartStore
from cartd.records import Verified
from cartd.schemas import FileOrder
from cartd.status import CartStatus, FileStatus


def _cart(store: CartStore, uid: str, count: int) -> tuple[int, list[int]]:
    cart, ids = store.create_cart(
        uid, False, [FileOrder(f"{uid}{n}", f"{uid}/{n}", "md5", "0" * 32) for n in range(count)]
    )
    return cart.id, ids


def test_a_group_is_recorded_verified_with_its_sizes(store: CartStore) -> None:
    cart_id, ids = _cart(store, "a", 3)
    assert store.claim_files(ids, "me", time.time() + 60)
    assert store.record_verified([Verified(ids[0], 10, 1.0, 7), Verified(ids[1], 20, 2.0)]) == {
        ids[0],
        ids[1],
    }
    rows = {file.id: file for file in store.files_of(cart_id)}
    assert [(rows[i].status, rows[i].size, rows[i].mtime, rows[i].crc32) for i in ids[:2]] == [
        (FileStatus.STAGED, 10, 1.0, 7),
        (FileStatus.STAGED, 20, 2.0, None),
    ]
    assert rows[ids[2]].status is FileStatus.WAITING
    assert store.claim_files(ids, "another", time.time() + 60) == set(), "none free for another"


def test_a_group_moves_only_the_files_of_carts_still_being_made(store: CartStore) -> None:
    """A cart deleted while its files were pulled keeps none of them recorded: the group's
    other files are still recorded, and only those are said to be."""
    kept, kept_ids = _cart(store, "kept", 2)
    gone, gone_ids = _cart(store, "gone", 2)
    store.delete_uid("gone")
    group = [
        Verified(kept_ids[0], 1, 1.0),
        Verified(gone_ids[0], 1, 1.0),
        Verified(kept_ids[1], 1, 1.0),
    ]
    assert store.record_verified(group) == set(kept_ids)
    assert {file.status for file in store.files_of(kept)} == {FileStatus.STAGED}
    assert {file.status for file in store.files_of(gone)} == {FileStatus.WAITING}
    deleted = store.get_cart(gone)
    assert deleted is not None
    assert deleted.status is CartStatus.DELETED


def test_a_batch_spanning_carts_loads_each_file_with_its_own_cart(store: CartStore) -> None:
    one, one_ids = _cart(store, "one", 2)
    other, other_ids = _cart(store, "other", 1)
    store.delete_uid("other")
    loaded = store.load_steps([*one_ids, *other_ids, 10**9])
    assert sorted(loaded) == sorted([*one_ids, *other_ids]), "an unknown id is left out"
    assert {file_id: cart.id for file_id, (_, cart) in loaded.items()} == {
        one_ids[0]: one,
        one_ids[1]: one,
        other_ids[0]: other,
    }
    assert loaded[other_ids[0]][1].status is CartStatus.DELETED
    first, _ = loaded[one_ids[0]]
    assert (first.archive_id, first.path, first.status) == ("one0", "one/0", FileStatus.WAITING)
    store.forget(other)
    assert sorted(store.load_steps([*one_ids, *other_ids])) == sorted(one_ids)


def test_carts_with_many_files_unsized_are_those_to_size_ahead_again(store: CartStore) -> None:
    big, big_ids = _cart(store, "big", 3)
    small, _ = _cart(store, "small", 2)
    _cart(store, "gone", 3)
    store.delete_uid("gone")
    assert store.unsized_carts(2) == [big]
    assert store.unsized_carts(1) == [big, small]
    assert store.claim_files(big_ids[:1], "me", time.time() + 60)
    store.record_verified([Verified(big_ids[0], 10, 1.0)])
    assert store.unsized_carts(2) == [], "a sized file no longer counts"
