"""A download's end is often seen by the garbage collector, in whatever thread it interrupts.
These tests make that thread one holding the database's write lock, as it was when the server
wedged for good (issue 10)."""

from __future__ import annotations

import threading
from pathlib import Path

from cartd.db.engine import Writer
from cartd.db.store import CartStore
from cartd.errors import WriteReentered
from cartd.observability.metrics import Metrics, VolumeSnapshot
from cartd.records import Verified
from cartd.schemas import FileOrder
from cartd.service.carts import CartService
from cartd.status import CartStatus
from cartd.storage import Volume
from tests.support.cartd_server import wait_until

#: Seconds a healthy call takes at most here; a deadlocked one never ends.
PROMPT = 10.0


class NoRunner:
    def submit_file(self, file_id: int, delay: float = 0.0) -> None: ...
    def submit_size(self, cart_id: int) -> None: ...
    def submit_finish(self, cart_id: int) -> None: ...
    def start(self) -> None: ...
    def stop(self) -> None: ...


def in_thread(target: object) -> threading.Thread:
    thread = threading.Thread(target=target, daemon=True)  # type: ignore[arg-type]
    thread.start()
    thread.join(PROMPT)
    return thread


def test_a_write_from_a_thread_that_holds_the_write_lock_fails_loudly(store: CartStore) -> None:
    raised: list[BaseException] = []

    def nested() -> None:
        writer = Writer(store.engine)
        with writer.begin():
            try:
                with Writer(store.engine).begin():
                    pass
            except WriteReentered as exc:
                raised.append(exc)

    assert not in_thread(nested).is_alive(), "a nested write deadlocked"
    assert len(raised) == 1
    with Writer(store.engine).begin():  # and the lock was given back
        pass


def test_a_download_collected_while_its_thread_holds_the_write_lock_does_not_deadlock(
    store: CartStore, tmp_path: Path
) -> None:
    volume = Volume(tmp_path / "volume")
    volume.prepare()
    service = CartService(
        store,
        volume,
        NoRunner(),
        bundle_default=False,
        chunk_size=1024,
        metrics=Metrics(lambda: VolumeSnapshot({}, 0, 0)),
    )
    cart, [file_id] = store.create_cart("c", False, [FileOrder("a", "d/a.bin", "md5", "x")])
    source = volume.file_path(cart.id, file_id)
    source.parent.mkdir(parents=True)
    source.write_bytes(b"z" * 100_000)
    assert store.record_verified([Verified(file_id, 100_000, source.stat().st_mtime)]) == {file_id}
    assert store.move_cart(cart.id, CartStatus.BUNDLING)
    assert store.move_cart(cart.id, CartStatus.READY)

    download = service.download("c", None)
    stream = [service.stream(download)]
    next(iter(stream[0]))
    assert (store.get_cart(cart.id) or cart).download_lease_until is not None

    def abandoned_while_writing() -> None:
        with Writer(store.engine).begin():
            stream.clear()  # the last reference: the download is finalised right here

    assert not in_thread(abandoned_while_writing).is_alive(), "the finaliser deadlocked"
    wait_until(lambda: (store.get_cart(cart.id) or cart).download_lease_until is None, PROMPT)
    service.close()
