"""The space ledger: reservations against the volume, made one at a time.

Every reservation runs in one transaction that first locks the single row of
`volume_lock` (on SQLite the write lock taken at BEGIN does the same), so two
carts arriving together can never both count the same free bytes as theirs.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import timedelta
from typing import cast

from sqlalchemy import Connection, Engine, Table, func, select

from cartd.db.engine import Writer
from cartd.db.models import VolumeLockRow
from cartd.db.store import carts, files, now
from cartd.space_plan import Candidate, Plan, plan_space
from cartd.status import CartStatus, FileStatus

volume_lock = cast(Table, VolumeLockRow.__table__)

_LIVE = carts.c.status != CartStatus.DELETED.value
_EVICTABLE = [CartStatus.READY.value, CartStatus.ERROR.value]


@dataclass(frozen=True)
class Usage:
    used: int  # verified files and bundles of live carts
    reserved: int  # held by live carts (written or not)


def _usage(connection: Connection) -> Usage:
    staged = connection.scalar(
        select(func.coalesce(func.sum(files.c.size), 0))
        .join(carts, carts.c.id == files.c.cart_id)
        .where(_LIVE, files.c.status == FileStatus.STAGED.value)
    )
    bundles = connection.scalar(
        select(func.coalesce(func.sum(carts.c.bundle_size), 0)).where(_LIVE)
    )
    reserved = connection.scalar(
        select(func.coalesce(func.sum(carts.c.reserved_bytes), 0)).where(_LIVE)
    )
    return Usage(int(staged or 0) + int(bundles or 0), int(reserved or 0))


class SpaceLedger:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._writer = Writer(engine)

    def usage(self) -> Usage:
        with self.engine.connect() as connection:
            return _usage(connection)

    def reserve(
        self,
        cart_id: int,
        need: int,
        *,
        free_bytes: int,
        limit: int | None,
        evict: bool,
        spare_seconds: float,
    ) -> Plan | None:
        """Reserve `need` bytes for a cart, evicting least recently used carts if allowed.

        Returns None when the cart is no longer waiting for a reservation (granted
        meanwhile, deleted or failed). Evicted carts are DELETED when this returns; their
        files are the caller's to remove.
        """
        with self._writer.begin() as connection:
            connection.execute(select(volume_lock.c.id).with_for_update())
            pending = connection.scalar(
                select(carts.c.id).where(
                    carts.c.id == cart_id,
                    carts.c.reserved_bytes.is_(None),
                    carts.c.status.in_([s.value for s in CartStatus if s.is_active]),
                )
            )
            if pending is None:
                return None
            usage = _usage(connection)
            capacity = usage.used + free_bytes
            if limit is not None:
                capacity = min(capacity, limit)
            wall = time.time()
            rows = connection.execute(
                select(carts.c.id, func.coalesce(carts.c.reserved_bytes, 0))
                .where(
                    carts.c.status.in_(_EVICTABLE),
                    carts.c.last_used_at <= now() - timedelta(seconds=spare_seconds),
                    (carts.c.download_lease_until.is_(None))
                    | (carts.c.download_lease_until < wall),
                )
                .order_by(carts.c.last_used_at, carts.c.id)
            )
            plan = plan_space(
                need,
                capacity=capacity,
                reserved=usage.reserved,
                candidates=(Candidate(int(row[0]), int(row[1])) for row in rows),
                evict=evict,
            )
            if plan.evict:
                connection.execute(
                    carts.update()
                    .where(carts.c.id.in_(plan.evict))
                    .values(status=CartStatus.DELETED.value, updated_at=now())
                )
            if plan.granted:
                connection.execute(
                    carts.update().where(carts.c.id == cart_id).values(reserved_bytes=need)
                )
            return plan
