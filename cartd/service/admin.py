"""The operator's use cases (API.md section 6): check the schema, re-drive carts, list the
carts and those that are stuck, purge old ones."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import Engine

from cartd.db import migrate
from cartd.db.original import OriginalTables
from cartd.db.store import CartStore
from cartd.errors import CartNotFound, InvalidRequest
from cartd.records import Cart, CartFile, StuckCart
from cartd.service.cleanup import discard
from cartd.service.original import Imported, OriginalImport
from cartd.status import CartStatus
from cartd.storage import Volume

_UNITS = {
    "second": 1,
    "minute": 60,
    "hour": 3600,
    "day": 86400,
    "week": 7 * 86400,
}
_AGO = re.compile(
    r"^\s*(\d+(?:\.\d+)?)\s*(second|minute|hour|day|week)s?(?:\s+ago)?\s*$", re.IGNORECASE
)


def parse_time_ago(text: str, now: datetime | None = None) -> datetime:
    """`7 days ago`, `12 hours`, `1.5 weeks ago`, or an ISO 8601 date and time."""
    now = now or datetime.now(UTC)
    match = _AGO.match(text)
    if match:
        amount, unit = float(match.group(1)), match.group(2).lower()
        try:
            return now - timedelta(seconds=amount * _UNITS[unit])
        except OverflowError:
            raise InvalidRequest(
                f"cannot read {text!r} as a time: it reaches before the calendar starts;"
                " use e.g. '7 days ago'"
            ) from None
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        raise InvalidRequest(
            f"cannot read {text!r} as a time: use e.g. '7 days ago', '12 hours ago'"
            " or an ISO date such as 2026-01-31T12:00"
        ) from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


@dataclass(frozen=True)
class SchemaState:
    current: str | None
    head: str | None
    #: Carts of the original Pacifica Cartd's tables that `dbsync` has not brought over.
    originals_pending: int = 0

    @property
    def equal(self) -> bool:
        """Nothing left for `dbsync` to do: the schema is current and nothing to import."""
        return self.current == self.head and not self.originals_pending

    @property
    def upgradable(self) -> bool:
        """At or behind this version of cartd, so `dbsync` can bring it to head."""
        return self.current is None or self.current in migrate.known_revisions()


@dataclass(frozen=True)
class Fixed:
    cart: Cart
    files: int  # files put back to be driven again


class AdminService:
    def __init__(self, engine: Engine, store: CartStore, volume: Volume) -> None:
        self.engine = engine
        self.store = store
        self.volume = volume

    def schema(self) -> SchemaState:
        return SchemaState(
            migrate.current_revision(self.engine),
            migrate.head_revision(),
            self.originals().pending(),
        )

    def originals(self) -> OriginalImport:
        return OriginalImport(OriginalTables(self.engine), self.volume)

    def sync(self) -> tuple[str | None, list[Imported]]:
        """`dbsync`: create or upgrade the schema, then bring over the original Pacifica
        Cartd's carts not brought over yet. Returns the revision and what was brought."""
        migrate.upgrade(self.engine)
        return migrate.current_revision(self.engine), self.originals().run()

    def fixit(self, uid: str) -> list[Fixed]:
        """Re-drive the uid's carts in error or still being made: every file not verified
        yet is put back to be driven now, as the original's fixit does. A running cartd
        picks them up at its next sweep, a stopped one when it starts. Ready carts are
        left alone."""
        carts = self.store.carts_of(uid)
        if not carts:
            raise CartNotFound(f"No cart with uid {uid} found")
        fixed = []
        for cart in carts:
            if cart.status is not CartStatus.ERROR and not cart.status.is_active:
                continue
            count = self.store.redrive(cart.id)
            if count is not None:
                fixed.append(Fixed(cart, count))
        return fixed

    def stuck(self, before: datetime) -> list[StuckCart]:
        """Carts still being made with no progress recorded since `before`."""
        return self.store.stuck(before)

    def dump(self) -> list[tuple[Cart, list[CartFile]]]:
        return [(cart, self.store.files_of(cart.id)) for cart in self.store.live_carts()]

    def purge(self, before: datetime) -> list[Cart]:
        """Delete finished carts (ready or in error) not used since `before`. Carts still
        being made are left alone: an order waiting on tape for a week is still an order."""
        old = [
            cart
            for cart in self.store.live_carts()
            if not cart.status.is_active and cart.last_used_at < before
        ]
        for cart in old:
            if self.store.move_cart(cart.id, CartStatus.DELETED):
                discard(self.store, self.volume, [cart.id])
        return old
