"""The space ledger: reservations against the volume, made one at a time.

Every reservation runs in one transaction that first locks the single row of
`volume_lock` (on SQLite the write lock taken at BEGIN does the same), so two
carts arriving together can never both count the same free bytes as theirs.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from typing import cast

from sqlalchemy import Connection, Engine, Table, and_, func, or_, select
from sqlalchemy.sql import ColumnElement

from cartd.db.copies import HOLDING, duplicate_bytes, freed_by, overlap
from cartd.db.engine import Writer
from cartd.db.models import VolumeLockRow
from cartd.db.store import carts, files, now
from cartd.space_plan import Candidate, Plan, plan_space
from cartd.status import CartStatus, FileStatus, cart_sources

volume_lock = cast(Table, VolumeLockRow.__table__)

_LIVE = carts.c.status != CartStatus.DELETED.value
_EVICTABLE = [CartStatus.READY.value, CartStatus.ERROR.value]
assert all(CartStatus(status) in cart_sources(CartStatus.DELETED) for status in _EVICTABLE)


def _evictable(spare_seconds: float) -> ColumnElement[bool]:
    """Finished, not used for `spare_seconds`, and not being downloaded."""
    return and_(
        carts.c.status.in_(_EVICTABLE),
        carts.c.last_used_at <= now() - timedelta(seconds=spare_seconds),
        or_(carts.c.download_lease_until.is_(None), carts.c.download_lease_until < time.time()),
    )


@dataclass(frozen=True)
class _Planned:
    granted: bool
    evict: tuple[int, ...]
    too_big: bool
    holds: dict[int, int]  # bytes each candidate gives back


@dataclass(frozen=True)
class Usage:
    used: int  # verified files and bundles of live carts
    reserved: int  # held by live carts (written or not)


def _usage(connection: Connection) -> Usage:
    """What the live carts use and hold, each archive file counted once: carts that name
    the same file with the same checksum share one copy (`cartd.db.copies`), whichever
    of them verified it and whichever are left."""
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
    used = int(staged or 0) - duplicate_bytes(
        connection, and_(_LIVE, files.c.status == FileStatus.STAGED.value)
    )
    shared = duplicate_bytes(connection, HOLDING)
    return Usage(used + int(bundles or 0), int(reserved or 0) - shared)


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
            evicted: list[int] = []
            frees = 0
            while True:
                plan = self._plan(
                    connection, cart_id, need, free_bytes, limit, evict, spare_seconds
                )
                won = [cart for cart in plan.evict if self._evict(connection, cart, spare_seconds)]
                evicted += won
                frees += sum(plan.holds[cart] for cart in won)
                if len(won) == len(plan.evict):
                    break
                # A candidate was fixed, downloaded or deleted meanwhile: plan again with
                # what is evictable now (those already evicted count as freed).
            if plan.granted:
                connection.execute(
                    carts.update().where(carts.c.id == cart_id).values(reserved_bytes=need)
                )
            return Plan(plan.granted, tuple(evicted), frees, plan.too_big)

    @staticmethod
    def _plan(
        connection: Connection,
        cart_id: int,
        need: int,
        free_bytes: int,
        limit: int | None,
        evict: bool,
        spare_seconds: float,
    ) -> _Planned:
        """Plan the reservation of `need` bytes for the cart. Bytes it shares with the carts
        holding space (the same archive files) are already counted, so it asks only for the
        rest; an evictable cart offers only the bytes no other live cart (nor this one) still
        names, computed in order of least recent use as if those before it were evicted."""
        usage = _usage(connection)
        capacity = usage.used + free_bytes
        if limit is not None:
            capacity = min(capacity, limit)
        rows = connection.scalars(
            select(carts.c.id)
            .where(_evictable(spare_seconds))
            .order_by(carts.c.last_used_at, carts.c.id)
        ).all()
        holds: dict[int, int] = {}

        def candidates() -> Iterator[Candidate]:
            # `plan_space` takes, in order, every candidate that frees something.
            taken: list[int] = []
            for candidate in rows:
                holds[candidate] = freed_by(connection, candidate, keeping=cart_id, evicted=taken)
                yield Candidate(candidate, holds[candidate])
                if holds[candidate] > 0:
                    taken.append(candidate)

        plan = plan_space(
            need - overlap(connection, cart_id),
            capacity=capacity,
            reserved=usage.reserved,
            candidates=candidates(),
            evict=evict,
        )
        return _Planned(plan.granted, plan.evict, plan.too_big, holds)

    @staticmethod
    def _evict(connection: Connection, cart_id: int, spare_seconds: float) -> bool:
        """Delete one chosen cart if it is still evictable: a guarded update, so a cart
        that `fixit` reopened or a download leased meanwhile is never taken."""
        return bool(
            connection.execute(
                carts.update()
                .where(carts.c.id == cart_id, _evictable(spare_seconds))
                .values(status=CartStatus.DELETED.value, updated_at=now())
            ).rowcount
        )
