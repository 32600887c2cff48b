"""The space ledger: reservations against the volume, made one at a time.

Every reservation runs in one transaction that first locks the single row of
`volume_lock` (on SQLite the write lock taken at BEGIN does the same), so two
carts arriving together can never both count the same free bytes as theirs.

A cart's reservation grows as its files are sized (`SpaceLedger.grow`): the
sizes the archive reported for a batch of files are written in the same
transaction that adds them to the cart's `reserved_bytes`, so a file's row has a
size exactly when its bytes are held for it (a cart sized in part by an earlier
version is counted whole at its first growth). A growth that cannot be had, even
by evicting, ends the cart in `No Space Available` in that same transaction and
gives back all it held, so another cart growing next finds those bytes free.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import cast

from sqlalchemy import Connection, Engine, Table, and_, bindparam, func, or_, select
from sqlalchemy.sql import ColumnElement
from sqlalchemy.sql.elements import BindParameter

from cartd.db.copies import HOLDING, already_counted, duplicate_bytes, freed_together
from cartd.db.engine import Writer
from cartd.db.models import VolumeLockRow
from cartd.db.store import ACTIVE, OPEN, carts, files, now, record_callback_event
from cartd.space_plan import NO_SPACE, Plan, plan_space
from cartd.status import CartStatus, FileStatus, cart_sources, file_sources

volume_lock = cast(Table, VolumeLockRow.__table__)

_LIVE = carts.c.status != CartStatus.DELETED.value
_EVICTABLE = [CartStatus.READY.value, CartStatus.ERROR.value]
assert all(CartStatus(status) in cart_sources(CartStatus.DELETED) for status in _EVICTABLE)
assert all(CartStatus(status) in cart_sources(CartStatus.ERROR) for status in ACTIVE)
assert FileStatus.STAGED in file_sources(FileStatus.WAITING)

#: Seconds the volume's capacity (its free space plus what cartd keeps there) may be
#: reused by growths that plainly fit: summing what cartd keeps reads the row of every
#: verified file, too much to do for every batch of a cart of 100,000 files. Every
#: refusal or eviction is decided on figures read afresh.
CAPACITY_SECONDS = 2.0

#: What the archive said of a file: (file id, size, mtime, on disk).
Sized = tuple[int, int, float, bool]

_RESERVED = select(func.coalesce(func.sum(carts.c.reserved_bytes), 0)).where(_LIVE)
_RECORD_SIZE = (
    files.update()
    .where(files.c.id == bindparam("file_id"))
    .values(
        size=bindparam("size"),
        mtime=bindparam("mtime"),
        on_disk=bindparam("on_disk"),
        updated_at=bindparam("stamp"),
    )
)

# The statements of every growth, built once (see `cartd.db.copies`).
_CART: BindParameter[int] = bindparam("cart_id")
_TAKE_LOCK = select(volume_lock.c.id).with_for_update()
_HELD = select(carts.c.reserved_bytes).where(carts.c.id == _CART, carts.c.status.in_(ACTIVE))
_HOLD = carts.update().where(carts.c.id == _CART).values(reserved_bytes=bindparam("held"))
_UNSIZED_LEFT = select(files.c.id).where(files.c.cart_id == _CART, files.c.size.is_(None)).limit(1)
_UNSIZED_AMONG = select(files.c.id).where(
    files.c.id.in_(bindparam("file_ids", expanding=True)),
    files.c.cart_id == _CART,
    files.c.size.is_(None),
    files.c.status.in_(OPEN),
)


def _evictable(spare_seconds: float) -> ColumnElement[bool]:
    """Finished, not used for `spare_seconds`, and not being downloaded."""
    return and_(
        carts.c.status.in_(_EVICTABLE),
        carts.c.last_used_at <= now() - timedelta(seconds=spare_seconds),
        or_(carts.c.download_lease_until.is_(None), carts.c.download_lease_until < time.time()),
    )


@dataclass(frozen=True)
class Growth:
    """What became of a cart's reservation asked to grow."""

    granted: bool  # False: the cart ended in `No Space Available`
    held: int  # the cart's reservation now
    evict: tuple[int, ...] = ()  # carts evicted to make room
    frees: int = 0  # bytes they held
    too_big: bool = False  # refused because the cart alone would pass the volume's capacity
    sized_all: bool = False  # no file of the cart is left without a size (when asked)


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
        #: When the capacity was last read, and what it was (before any size limit).
        self._estimate: tuple[float, int] = (-CAPACITY_SECONDS * 2, 0)

    def usage(self) -> Usage:
        with self.engine.connect() as connection:
            return _usage(connection)

    def grow(
        self,
        cart_id: int,
        sized: Sequence[Sized],
        *,
        to: int | None = None,
        free_bytes: int,
        limit: int | None,
        evict: bool,
        spare_seconds: float,
        ask_sized_all: bool = False,
    ) -> Growth | None:
        """Write what the archive said of files of a cart still without a size, and add
        their bytes to the cart's reservation (raised to at least `to` when given: a
        bundled cart's tar), evicting least recently used carts if allowed.

        Returns None, changing nothing, when the cart is no longer being made. When the
        growth cannot be had, the cart ends in `No Space Available` here, holding nothing
        and with no file counted as verified; its files on the volume are the caller's to
        remove, as are those of evicted carts (DELETED when this returns).
        """
        with self._writer.begin() as connection:
            connection.execute(_TAKE_LOCK)
            row = connection.execute(_HELD, {"cart_id": cart_id}).first()
            if row is None:
                return None
            held: int | None = row[0]
            base = held if held is not None else self._sized_bytes(connection, cart_id)
            new = self._unsized(connection, cart_id, sized)
            want = base + sum(size for _, size, _, _ in new)
            if to is not None:
                want = max(want, to)
            # The cart's reservation grows by all it asks (what it names), but the
            # volume's fill only by the files not already counted elsewhere.
            need = want - (held or 0)
            need -= already_counted(connection, {ident: size for ident, size, _, _ in new})
            evicted: list[int] = []
            frees = 0
            granted, too_big = True, False
            if need > 0 and not self._plainly_fits(connection, need, held or 0, free_bytes, limit):
                # The evictions are undone if the growth is refused after all (a candidate
                # taken meanwhile can leave a plan short): a refusal evicts nothing.
                evictions = connection.begin_nested()
                while True:
                    plan = self._plan(
                        connection,
                        cart_id,
                        need,
                        held or 0,
                        free_bytes,
                        limit,
                        evict,
                        spare_seconds,
                    )
                    won = [
                        cart for cart in plan.evict if self._evict(connection, cart, spare_seconds)
                    ]
                    if len(won) == len(plan.evict):
                        evicted += won
                        frees += plan.frees
                        break
                    frees += freed_together(connection, won, keeping=cart_id)
                    evicted += won
                    # A candidate was fixed, downloaded or deleted meanwhile: plan again
                    # with what is evictable now (those already evicted count as freed).
                granted, too_big = plan.granted, plan.too_big
                if granted:
                    evictions.commit()
                else:
                    evictions.rollback()
                    evicted, frees = [], 0
            if not granted:
                self._refuse(connection, cart_id)
                return Growth(False, 0, tuple(evicted), frees, too_big)
            stamp = now()
            if new:
                connection.execute(
                    _RECORD_SIZE,
                    [
                        {
                            "file_id": ident,
                            "size": size,
                            "mtime": mtime,
                            "on_disk": on_disk,
                            "stamp": stamp,
                        }
                        for ident, size, mtime, on_disk in new
                    ],
                )
            if want != held:
                connection.execute(_HOLD, {"cart_id": cart_id, "held": want})
            sized_all = (
                ask_sized_all and connection.scalar(_UNSIZED_LEFT, {"cart_id": cart_id}) is None
            )
            return Growth(True, want, tuple(evicted), frees, False, sized_all)

    @staticmethod
    def _sized_bytes(connection: Connection, cart_id: int) -> int:
        """The sizes the rows of a cart's files already have, for a cart holding nothing yet:
        counted at its first growth (none for a new cart; some for one sized in part by an
        earlier version, brought over from the original, or re-driven by `fixit` after it
        ended for want of space)."""
        return int(
            connection.scalar(
                select(func.coalesce(func.sum(files.c.size), 0)).where(
                    files.c.cart_id == cart_id, files.c.size.is_not(None)
                )
            )
            or 0
        )

    @staticmethod
    def _unsized(connection: Connection, cart_id: int, sized: Sequence[Sized]) -> list[Sized]:
        """Those of `sized` whose rows have no size yet: a file is counted once."""
        if not sized:
            return []
        asked = {"file_ids": [ident for ident, _, _, _ in sized], "cart_id": cart_id}
        open_ids = set(connection.scalars(_UNSIZED_AMONG, asked))
        return [item for item in sized if item[0] in open_ids]

    @staticmethod
    def _refuse(connection: Connection, cart_id: int) -> None:
        """End a cart for want of space, holding nothing: its files verified so far count
        as waiting again (the caller removes them from the volume)."""
        stamp = now()
        ended = connection.execute(
            carts.update()
            .where(carts.c.id == cart_id, carts.c.status.in_(ACTIVE))
            .values(
                status=CartStatus.ERROR.value,
                error=NO_SPACE,
                reserved_bytes=None,
                updated_at=stamp,
            )
        ).rowcount
        if ended:
            record_callback_event(connection, cart_id, CartStatus.ERROR, NO_SPACE, stamp)
        connection.execute(
            files.update()
            .where(files.c.cart_id == cart_id, files.c.status == FileStatus.STAGED.value)
            .values(status=FileStatus.WAITING.value, on_disk=None, updated_at=stamp)
        )

    def _plainly_fits(
        self, connection: Connection, need: int, held: int, free_bytes: int, limit: int | None
    ) -> bool:
        """Whether `need` more bytes fit in what no cart holds, with a capacity read within
        `CAPACITY_SECONDS` (what is held is always read afresh, under the lock)."""
        at, estimate = self._estimate
        if time.monotonic() - at > CAPACITY_SECONDS:
            return False
        capacity = estimate if limit is None else min(estimate, limit)
        reserved = int(connection.scalar(_RESERVED) or 0)
        return held + need <= capacity and need <= capacity - reserved

    def _plan(
        self,
        connection: Connection,
        cart_id: int,
        need: int,
        held: int,
        free_bytes: int,
        limit: int | None,
        evict: bool,
        spare_seconds: float,
    ) -> Plan:
        """Plan the reservation of `need` more bytes for the cart (bytes it shares with
        carts holding space already left out by the caller). Evicting carts frees only the
        bytes no live cart left (nor this one) still names: carts sharing a file free it
        together, though neither does alone."""
        usage = _usage(connection)
        capacity = usage.used + free_bytes
        self._estimate = (time.monotonic(), capacity)
        if limit is not None:
            capacity = min(capacity, limit)
        candidates = connection.scalars(
            select(carts.c.id)
            .where(_evictable(spare_seconds))
            .order_by(carts.c.last_used_at, carts.c.id)
        ).all()
        return plan_space(
            need,
            capacity=capacity,
            reserved=usage.reserved,
            candidates=candidates,
            frees=lambda chosen: freed_together(connection, chosen, keeping=cart_id),
            evict=evict,
            held=held,
        )

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
