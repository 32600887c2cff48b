"""Taking a cart's steps by hand, in this process, as a runner handed every task would."""

from __future__ import annotations

import time

from cartd.runtime import Runtime
from cartd.status import FileStatus


def drive(runtime: Runtime, cart_id: int, deadline: float, *, pause: float = 0.0) -> None:
    """Take every open step of the cart again and again until it is no longer being made
    (or `deadline`, a `time.monotonic()`), `pause` seconds between rounds; a step not due
    yet does nothing but say so."""
    pipeline, store = runtime.pipeline, runtime.store
    pipeline.size_cart(cart_id)
    while time.monotonic() < deadline:
        cart = store.get_cart(cart_id)
        if cart is None or not cart.status.is_active:
            return
        files = store.files_of(cart_id)
        open_ids = [file.id for file in files if file.status is not FileStatus.STAGED]
        if open_ids:
            pipeline.advance(open_ids)
            time.sleep(pause)
        else:
            pipeline.finish(cart_id)
