"""Removing carts for good, shared by DELETE, purge and eviction."""

from __future__ import annotations

from collections.abc import Iterable

from cartd.db.store import CartStore
from cartd.storage import Volume


def discard(store: CartStore, volume: Volume, cart_ids: Iterable[int]) -> None:
    """Remove already-deleted carts' files, then their rows. Files first: a crash between
    the two leaves a tombstone that the next start cleans up, never rows without files."""
    for cart_id in cart_ids:
        volume.remove_cart(cart_id)
        store.forget(cart_id)
