"""The watch's claims: a release the database refused is tried again, not left to lapse."""

from __future__ import annotations

import time
from collections.abc import Collection

from sqlalchemy.exc import OperationalError

from cartd.db.store import CartStore
from cartd.schemas import FileOrder
from cartd.service.watch import CartWatch


class RefusesReleasesOnce(CartStore):
    """The real store, but its first release of claims fails as if the database were away
    (a fault SQLite cannot be made to give on cue)."""

    refused = 0

    def release_claims(
        self, token: str, file_ids: Collection[int], cart_ids: Collection[int]
    ) -> None:
        if not self.refused:
            self.refused += 1
            raise OperationalError("UPDATE cart_files ...", {}, Exception("server closed"))
        super().release_claims(token, file_ids, cart_ids)


def test_a_release_that_failed_is_tried_again_long_before_the_claim_would_lapse(
    store: CartStore,
) -> None:
    flaky = RefusesReleasesOnce(store.engine)
    _, file_ids = flaky.create_cart("c", False, [FileOrder("a", "a.txt", "md5", "0" * 32)])
    watch = CartWatch(flaky, interval=0.05, claim_seconds=3600)
    watch.start()
    try:
        with watch.claiming_files(file_ids) as held:
            assert held.ids == set(file_ids)
        assert flaky.refused == 1
        deadline = time.monotonic() + 5
        while not store.claim_files(file_ids, "another step", time.time() + 60):
            assert time.monotonic() < deadline, "the claim was never released"
            time.sleep(0.05)
    finally:
        watch.stop()
