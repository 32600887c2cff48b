"""The outbox of callback events: queued by the transaction that ends a cart
(`cartd.db.store.record_callback_event`), sent by whichever process claims them.

A sender claims one event at a time with a conditional update, as a file step claims a
file: of several processes looking at the outbox, exactly one sends each try. A claim
lasts a while and lapses if its process dies mid-send, when another process sends the
event again: delivery is at least once, and the event's id tells a receiver so.
"""

from __future__ import annotations

import time
from collections.abc import Collection, Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import Connection, Engine, Row, func, or_, select

from cartd.db.engine import Writer
from cartd.db.store import _aware, events
from cartd.records import CallbackEvent
from cartd.status import CartStatus


def _event(row: Row[Any]) -> CallbackEvent:
    return CallbackEvent(
        id=row.id,
        event_id=row.event_id,
        cart_id=row.cart_id,
        uid=row.uid,
        url=row.url,
        status=CartStatus(row.status),
        message=row.message,
        files_total=row.files_total,
        bytes_total=row.bytes_total,
        ordered_at=_aware(row.ordered_at),
        occurred_at=_aware(row.occurred_at),
        attempts=row.attempts,
    )


def _free(wall: float) -> Any:
    """Not claimed, or claimed by a sender whose claim has lapsed."""
    return or_(events.c.claimed_until.is_(None), events.c.claimed_until < wall)


class Outbox:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._writer = Writer(engine)

    @contextmanager
    def _writing(self) -> Iterator[Connection]:
        with self._writer.begin() as connection:
            yield connection

    def due(self, limit: int) -> list[int]:
        """Events whose next try is due and that no live sender holds, soonest first."""
        wall = time.time()
        with self.engine.connect() as connection:
            return list(
                connection.scalars(
                    select(events.c.id)
                    .where(events.c.next_attempt_at <= wall, _free(wall))
                    .order_by(events.c.next_attempt_at, events.c.id)
                    .limit(limit)
                )
            )

    def next_due(self) -> float | None:
        """Unix time at which some event may next be tried (its due time, or when the
        claim of the sender holding it lapses); None when the outbox is empty."""
        wall = time.time()
        with self.engine.connect() as connection:
            free = connection.scalar(select(func.min(events.c.next_attempt_at)).where(_free(wall)))
            held = connection.scalar(
                select(func.min(events.c.claimed_until)).where(events.c.claimed_until >= wall)
            )
        times = [float(value) for value in (free, held) if value is not None]
        return min(times) if times else None

    def claim(self, ident: int, token: str, until: float) -> CallbackEvent | None:
        """Take one due event for the sender `token` until `until`; None when another
        sender has it, or it is gone or not due (delivered meanwhile)."""
        wall = time.time()
        with self._writing() as connection:
            taken = connection.execute(
                events.update()
                .where(events.c.id == ident, events.c.next_attempt_at <= wall, _free(wall))
                .values(claimed_by=token, claimed_until=until)
            ).rowcount
            if not taken:
                return None
            return _event(connection.execute(select(events).where(events.c.id == ident)).one())

    def delivered(self, ident: int) -> None:
        """The receiver has it: forget the event, whoever holds it now."""
        with self._writing() as connection:
            connection.execute(events.delete().where(events.c.id == ident))

    def retry(self, ident: int, token: str, attempts: int, at: float, error: str) -> None:
        """Record a failed try and when to try again; the claim ends."""
        with self._writing() as connection:
            connection.execute(
                events.update()
                .where(events.c.id == ident, events.c.claimed_by == token)
                .values(
                    attempts=attempts,
                    next_attempt_at=at,
                    last_error=error,
                    claimed_by=None,
                    claimed_until=None,
                )
            )

    def give_up(self, ident: int, token: str) -> None:
        """Drop an event that will not be tried again (the caller says so in the log)."""
        with self._writing() as connection:
            connection.execute(
                events.delete().where(events.c.id == ident, events.c.claimed_by == token)
            )

    def holders(self) -> set[str]:
        """The senders holding claims now (live or not)."""
        with self.engine.connect() as connection:
            return set(
                connection.scalars(
                    select(events.c.claimed_by).where(events.c.claimed_by.is_not(None)).distinct()
                )
            )

    def release(self, holders: Collection[str]) -> None:
        """Drop the claims of senders known to be dead: their events are due again now."""
        if not holders:
            return
        with self._writing() as connection:
            connection.execute(
                events.update()
                .where(events.c.claimed_by.in_(list(holders)))
                .values(claimed_by=None, claimed_until=None)
            )
