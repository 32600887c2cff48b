"""Every query cartd runs. Status changes are conditional updates guarded by the transitions
in `cartd.status`, so two workers racing for the same change cannot both win it.

Queries use SQLAlchemy Core on the tables the ORM models declare: the pipeline
runs several per file, and Core's cached statements cost a fraction of ORM
entity loading.
"""

from __future__ import annotations

import contextlib
import time
import uuid
from collections.abc import Collection, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, fields
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from typing import Any, cast

from sqlalchemy import (
    Connection,
    Engine,
    Row,
    Table,
    and_,
    bindparam,
    case,
    func,
    literal_column,
    or_,
    select,
)
from sqlalchemy.sql import ColumnElement, Select, Update

from cartd.db.engine import Writer
from cartd.db.models import CallbackEventRow, CartRow, FileRow
from cartd.records import Cart, CartFile, DownloadRow, Progress, StuckCart, Verified
from cartd.schemas import FileOrder
from cartd.status import CartStatus, FileStatus, cart_sources, file_sources

carts = cast(Table, CartRow.__table__)
files = cast(Table, FileRow.__table__)
events = cast(Table, CallbackEventRow.__table__)

#: Carts being made, and files a step still has to stage, as the columns hold them.
ACTIVE = [status.value for status in CartStatus if status.is_active]
#: File rows written by one statement of a new cart's insert.
INSERT_CHUNK = 5000

OPEN = [status.value for status in FileStatus if status.is_open]


@dataclass(frozen=True)
class Overdue:
    """Work a sweep re-drives (see `CartStore.overdue`)."""

    sizes: list[int]  # carts still waiting for their first step
    files: list[int]  # file steps overdue
    finishes: list[int]  # carts whose files are all verified but which are not ready


#: A due time long past (the epoch): the step is due now, and overdue for any sweep.
OVERDUE = 0.0


def now() -> datetime:
    return datetime.now(UTC)


def _aware(value: datetime) -> datetime:
    """SQLite and MySQL hand back naive datetimes, PostgreSQL its session's zone; ours are UTC."""
    return value.astimezone(UTC) if value.tzinfo else value.replace(tzinfo=UTC)


def _cart(row: Row[Any]) -> Cart:
    value = row._mapping
    return Cart(
        id=value["id"],
        uid=value["uid"],
        status=CartStatus(value["status"]),
        bundle=bool(value["bundle"]),
        error=value["error"],
        created_at=_aware(value["created_at"]),
        updated_at=_aware(value["updated_at"]),
        last_used_at=_aware(value["last_used_at"]),
        bundle_size=value["bundle_size"],
        reserved_bytes=value["reserved_bytes"],
        download_lease_until=value["download_lease_until"],
        ready_at=_aware(ready_at) if (ready_at := value["ready_at"]) else None,
    )


#: A file's columns in the order of `CartFile`'s fields (`_file`).
_FILE_COLUMNS = [files.c[field.name] for field in fields(CartFile)]
_STATUS_AT = [field.name for field in fields(CartFile)].index("status")


def _file(row: Row[Any]) -> CartFile:
    """A file from a row of `_FILE_COLUMNS`, read by position: a pull's batch makes one
    for each of its files."""
    values = list(row)
    values[_STATUS_AT] = FileStatus(values[_STATUS_AT])
    return CartFile(*values)


def _cart_is_active(cart_id: ColumnElement[Any]) -> ColumnElement[bool]:
    return select(carts.c.id).where(carts.c.id == cart_id, _one_of(carts.c.status, ACTIVE)).exists()


def _one_of(status: ColumnElement[str], values: Iterable[str]) -> ColumnElement[bool]:
    """`status IN (...)` with the statuses written into the SQL (they are the enum's
    constants, never a client's text): unlike bound lists, such a statement can be run
    for many rows at once (`executemany`)."""
    written = list(values)
    if not all(value.isalpha() for value in written):
        raise ValueError(f"not statuses: {written!r}")
    return status.in_([literal_column(f"'{value}'") for value in written])


# The statements every file step runs, built once: building a statement costs about as
# much CPU as running it (0.12 of 0.32 ms for a cart by id on a 2-core VM).
_GET_CART = select(carts).where(carts.c.id == bindparam("cart_id"))
#: A batch's files, and their carts apart: a batch's files are mostly of one cart, and
#: joined rows made a `Cart` of each.
_STEP_FILES = select(*_FILE_COLUMNS).where(files.c.id.in_(bindparam("file_ids", expanding=True)))
_STEP_CARTS = select(carts).where(carts.c.id.in_(bindparam("cart_ids", expanding=True)))
# ... and those of every status request (HEAD), which clients repeat while they wait.
_LATEST_CART = (
    select(carts)
    .where(carts.c.uid == bindparam("uid"), carts.c.status != CartStatus.DELETED.value)
    .order_by(carts.c.id.desc())
    .limit(1)
)
_STAGED = files.c.status == FileStatus.STAGED.value
_SIZE = func.coalesce(files.c.size, 0)
_PROGRESS = select(
    func.count(files.c.id),
    func.coalesce(func.sum(case((_STAGED, 1), else_=0)), 0),
    func.coalesce(func.sum(_SIZE), 0),
    func.coalesce(func.sum(case((_STAGED, _SIZE), else_=0)), 0),
    func.count(files.c.size),
).where(files.c.cart_id == bindparam("cart_id"))
# Whether a cart still has a file to verify: one row found through the (cart_id, status)
# index, not a count of every file of the cart, which a cart of 100,000 files would pay
# at every batch. (The ledger asks whether one is left to size the same way.)
_PENDING = (
    select(files.c.id)
    .where(
        files.c.cart_id == bindparam("cart_id"),
        files.c.status.in_(
            [status.value for status in FileStatus if status is not FileStatus.STAGED]
        ),
    )
    .limit(1)
)


#: The statuses a cart's callback is told of.
CALLBACK_STATUSES = frozenset({CartStatus.READY, CartStatus.ERROR})


def record_callback_event(
    connection: Connection, cart_id: int, status: CartStatus, message: str, stamp: datetime
) -> bool:
    """Queue the event of a cart that has just become ready or failed, for its callback, in
    the caller's transaction: the one that moved the cart. So the event is written exactly
    when the status is, and a process that dies before sending it loses nothing (the
    outbox, `cartd.db.outbox`). A cart without a callback queues nothing."""
    assert status in CALLBACK_STATUSES, status
    cart = connection.execute(
        select(carts.c.uid, carts.c.callback, carts.c.created_at).where(carts.c.id == cart_id)
    ).first()
    if cart is None or cart.callback is None:
        return False
    total, size = connection.execute(
        select(func.count(files.c.id), func.coalesce(func.sum(files.c.size), 0)).where(
            files.c.cart_id == cart_id
        )
    ).one()
    connection.execute(
        events.insert().values(
            event_id=str(uuid.uuid4()),
            cart_id=cart_id,
            uid=cart.uid,
            url=cart.callback,
            status=status.value,
            message=message,
            files_total=int(total),
            bytes_total=int(size),
            ordered_at=_aware(cart.created_at),
            occurred_at=stamp,
            attempts=0,
            next_attempt_at=time.time(),
        )
    )
    return True


@lru_cache(maxsize=8)
def _holding_statement(limit: int) -> Select[Any]:
    """The files of a cart that hold it up (see `CartStore.holding`), built once per limit."""
    trouble = case(
        (files.c.status == FileStatus.ERROR.value, 0),
        (files.c.attempts > 0, 1),
        (files.c.on_disk.is_(False), 2),
        else_=3,
    )
    return (
        select(*_FILE_COLUMNS)
        .where(
            files.c.cart_id == bindparam("cart_id"),
            files.c.status.in_(
                [status.value for status in FileStatus if status is not FileStatus.STAGED]
            ),
        )
        .order_by(trouble, files.c.id)
        .limit(limit)
    )


@lru_cache(maxsize=128)
def _move_file_statement(expect: tuple[str, ...], columns: tuple[str, ...]) -> Update:
    """The conditional update of a file, for one set of allowed statuses and columns."""
    return (
        files.update()
        .where(
            files.c.id == bindparam("file_id"),
            _one_of(files.c.status, expect),
            _cart_is_active(files.c.cart_id),
        )
        .values({name: bindparam(f"new_{name}") for name in columns})
    )


#: A file verified: from any status that may become staged, while its cart is being made.
_RECORD_VERIFIED = _move_file_statement(
    tuple(sorted(status.value for status in file_sources(FileStatus.STAGED))),
    tuple(
        sorted(
            [
                "status",
                "size",
                "mtime",
                "crc32",
                "attempts",
                "error",
                "next_attempt_at",
                "claimed_by",
                "claimed_until",
                "updated_at",
            ]
        )
    ),
)


class _NotAllMoved(Exception):
    """A group of files of which some could not be recorded verified."""


#: The columns a new file row is given, in the order `_insert_files` gives them.
_NEW_FILE_COLUMNS = (
    "cart_id",
    "archive_id",
    "path",
    "hashtype",
    "hashsum",
    "status",
    "attempts",
    "polls",
    "updated_at",
)


def _insert_files(
    connection: Connection, cart_id: int, orders: Sequence[FileOrder], stamp: datetime
) -> None:
    """Insert a new cart's file rows through the driver's own executemany, a few thousand
    rows a statement (the parameters of 100,000 rows at once held about 80 MB more at the
    peak of the POST). SQLAlchemy's executemany prepares every row's parameters in Python,
    each through its column's bind processor: in process, 100,000 rows took 1.1 to 1.55 s
    that way and 0.93 to 1.2 s this way, the rest being SQLite's own inserts. Here no
    value needs converting but the time stamp, the same for every row, converted once as
    SQLAlchemy would. (The drivers cartd runs on take `?` (sqlite3) or `%s` (psycopg,
    PyMySQL).)"""
    dialect = connection.dialect
    placeholder = "?" if dialect.paramstyle == "qmark" else "%s"
    convert = files.c.updated_at.type.dialect_impl(dialect).bind_processor(dialect)
    stamped = convert(stamp) if convert is not None else stamp
    # Made of constant names only: every value goes as a parameter.
    sql = (
        f"INSERT INTO {files.name} ({', '.join(_NEW_FILE_COLUMNS)})"  # noqa: S608
        f" VALUES ({', '.join([placeholder] * len(_NEW_FILE_COLUMNS))})"
    )
    for first in range(0, len(orders), INSERT_CHUNK):
        connection.exec_driver_sql(
            sql, _new_file_rows(cart_id, orders[first : first + INSERT_CHUNK], stamped)
        )


def _new_file_rows(cart_id: int, orders: Sequence[FileOrder], stamp: Any) -> list[tuple[Any, ...]]:
    waiting = FileStatus.WAITING.value
    return [
        (cart_id, order.archive_id, order.path, order.hashtype, order.hashsum, waiting, 0, 0, stamp)
        for order in orders
    ]


class CartStore:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._writer = Writer(engine)
        # psycopg switches autocommit on and off without asking the server; PyMySQL sends
        # a SET each way, and SQLite's BEGIN is in-process, so only PostgreSQL gains.
        self._autocommit_reads = engine.dialect.name == "postgresql"

    @contextmanager
    def _reading(self, *, snapshot: bool = False) -> Iterator[Connection]:
        """A connection to read with. Unless `snapshot` is asked for (statements that
        must see the same state), each statement is its own transaction, which on
        PostgreSQL spares the BEGIN and ROLLBACK that would wrap a lone SELECT."""
        with self.engine.connect() as connection:
            if self._autocommit_reads and not snapshot:
                connection.execution_options(isolation_level="AUTOCOMMIT")
            yield connection

    @contextmanager
    def _writing(self) -> Iterator[Connection]:
        """A transaction that writes; on SQLite it takes the write lock at BEGIN."""
        with self._writer.begin() as connection:
            yield connection

    # -- carts ---------------------------------------------------------------------------

    def create_cart(
        self,
        uid: str,
        bundle: bool,
        orders: Sequence[FileOrder],
        callback: str | None = None,
    ) -> tuple[Cart, list[int]]:
        """Store a cart and its files in one transaction; return it and its file ids in order."""
        stamp = now()
        with self._writing() as connection:
            result = connection.execute(
                carts.insert().values(
                    uid=uid,
                    status=CartStatus.WAITING.value,
                    bundle=bundle,
                    created_at=stamp,
                    updated_at=stamp,
                    last_used_at=stamp,
                    callback=callback,
                )
            )
            key = result.inserted_primary_key
            assert key is not None
            cart_id = int(key[0])
            _insert_files(connection, cart_id, orders, stamp)
            file_ids = list(
                connection.scalars(
                    select(files.c.id).where(files.c.cart_id == cart_id).order_by(files.c.id)
                )
            )
            row = connection.execute(select(carts).where(carts.c.id == cart_id)).one()
            return _cart(row), file_ids

    def latest_cart(self, uid: str) -> Cart | None:
        """The newest live cart of that uid: the one HEAD and GET act on."""
        with self._reading() as connection:
            row = connection.execute(_LATEST_CART, {"uid": uid}).first()
            return _cart(row) if row else None

    def get_cart(self, cart_id: int) -> Cart | None:
        with self._reading() as connection:
            row = connection.execute(_GET_CART, {"cart_id": cart_id}).first()
            return _cart(row) if row else None

    def active_among(self, cart_ids: Collection[int]) -> set[int]:
        """Those of the carts that are still being made."""
        with self._reading() as connection:
            return set(
                connection.scalars(
                    select(carts.c.id).where(carts.c.id.in_(cart_ids), carts.c.status.in_(ACTIVE))
                )
            )

    def move_cart(
        self,
        cart_id: int,
        to: CartStatus,
        *,
        only_from: Iterable[CartStatus] | None = None,
        **fields: Any,
    ) -> bool:
        """Change a cart's status if the transition is allowed from where it is now, and
        only from `only_from` when given (a step that saw the cart waiting must not revive
        it from an error reached meanwhile).

        The move to READY stamps `ready_at` in the same UPDATE: the download's identity.
        A move to READY or ERROR queues the event for the cart's callback, if it has one,
        in the same transaction (`record_callback_event`).
        """
        allowed = cart_sources(to)
        if only_from is not None:
            assert set(only_from) <= allowed, (only_from, to)
            allowed = frozenset(only_from)
        sources = [status.value for status in allowed]
        stamp = now()
        if to is CartStatus.READY:
            fields = {"ready_at": stamp, **fields}
        with self._writing() as connection:
            result = connection.execute(
                carts.update()
                .where(carts.c.id == cart_id, carts.c.status.in_(sources))
                .values(status=to.value, updated_at=stamp, **fields)
            )
            if result.rowcount and to in CALLBACK_STATUSES:
                message = (fields.get("error") or "") if to is CartStatus.ERROR else ""
                record_callback_event(connection, cart_id, to, message, stamp)
            return bool(result.rowcount)

    def delete_uid(self, uid: str) -> list[int]:
        """Make every live cart of a uid gone; return the ids this call deleted, so their
        files can go too. Each cart moves by a guarded update: one that an eviction or
        another DELETE took meanwhile is theirs to clean up, not ours."""
        sources = [status.value for status in cart_sources(CartStatus.DELETED)]
        with self._writing() as connection:
            ids = connection.scalars(
                select(carts.c.id).where(carts.c.uid == uid, carts.c.status.in_(sources))
            ).all()
            return [
                cart_id
                for cart_id in ids
                if connection.execute(
                    carts.update()
                    .where(carts.c.id == cart_id, carts.c.status.in_(sources))
                    .values(status=CartStatus.DELETED.value, updated_at=now())
                ).rowcount
            ]

    def forget(self, cart_id: int) -> None:
        """Drop a deleted cart's rows for good, once its files are gone from the volume."""
        with self._writing() as connection:
            connection.execute(files.delete().where(files.c.cart_id == cart_id))
            connection.execute(carts.delete().where(carts.c.id == cart_id))

    # -- files ---------------------------------------------------------------------------

    def load_steps(self, file_ids: Sequence[int]) -> dict[int, tuple[CartFile, Cart]]:
        """Files and their carts: what pipeline steps start from. A file whose cart is
        gone is left out."""
        with self._reading() as connection:
            rows = connection.execute(_STEP_FILES, {"file_ids": list(file_ids)}).all()
            if not rows:
                return {}
            cart_ids = sorted({row.cart_id for row in rows})
            found = {
                row.id: _cart(row)
                for row in connection.execute(_STEP_CARTS, {"cart_ids": cart_ids})
            }
        return {row.id: (_file(row), found[row.cart_id]) for row in rows if row.cart_id in found}

    def files_of(self, cart_id: int) -> list[CartFile]:
        with self._reading() as connection:
            rows = connection.execute(
                select(*_FILE_COLUMNS).where(files.c.cart_id == cart_id).order_by(files.c.id)
            )
            return [_file(row) for row in rows]

    def file_rows(self, cart_id: int, page: int = 4096) -> Iterator[DownloadRow]:
        """The cart's files in its order as narrow rows, read `page` at a time, each page
        in a statement of its own (no connection is held between them)."""
        after = 0
        while True:
            with self._reading() as connection:
                rows = [
                    DownloadRow(*row)
                    for row in connection.execute(
                        select(
                            files.c.id,
                            files.c.path,
                            files.c.size,
                            files.c.mtime,
                            files.c.hashtype,
                            files.c.hashsum,
                        )
                        .where(files.c.cart_id == cart_id, files.c.id > after)
                        .order_by(files.c.id)
                        .limit(page)
                    )
                ]
            yield from rows
            if len(rows) < page:
                return
            after = rows[-1].id

    def open_file_ids(self, cart_id: int) -> list[int]:
        """The ids of the cart's files still waiting or staging, in its order: a new cart's
        first step hands them all out, and for a cart of 100,000 files the ids alone are
        a fraction of the rows."""
        with self._reading() as connection:
            return list(
                connection.scalars(
                    select(files.c.id)
                    .where(
                        files.c.cart_id == cart_id,
                        files.c.status.in_(OPEN),
                    )
                    .order_by(files.c.id)
                )
            )

    def any_unsized(self, cart_id: int) -> bool:
        """Whether a file of the cart has no size yet."""
        with self._reading() as connection:
            found = connection.execute(
                select(files.c.id)
                .where(files.c.cart_id == cart_id, files.c.size.is_(None))
                .limit(1)
            ).first()
        return found is not None

    def unsized_files(self, cart_id: int, limit: int) -> list[tuple[int, str]]:
        """At most `limit` of the cart's open files the archive has not been asked the
        size of (id, archive id), from its last file back: those sized ahead of the
        pulls, which go from its first on."""
        with self._reading() as connection:
            rows = connection.execute(
                select(files.c.id, files.c.archive_id)
                .where(
                    files.c.cart_id == cart_id,
                    files.c.size.is_(None),
                    files.c.status.in_(OPEN),
                    files.c.hashsum != "",
                )
                .order_by(files.c.id.desc())
                .limit(limit)
            )
            return [(row.id, row.archive_id) for row in rows]

    def files_from(self, cart_id: int, first_id: int, limit: int) -> list[CartFile]:
        """At most `limit` files of the cart, in its order, from the file `first_id` on:
        what a download of a cart being made asks while it waits for its next file."""
        with self._reading() as connection:
            rows = connection.execute(
                select(*_FILE_COLUMNS)
                .where(files.c.cart_id == cart_id, files.c.id >= first_id)
                .order_by(files.c.id)
                .limit(limit)
            )
            return [_file(row) for row in rows]

    def progress(self, cart_id: int) -> Progress:
        with self._reading() as connection:
            total, done, size_total, size_done, sized = connection.execute(
                _PROGRESS, {"cart_id": cart_id}
            ).one()
            return Progress(int(total), int(done), int(size_total), int(size_done), int(sized))

    def holding(self, cart_id: int, limit: int) -> list[CartFile]:
        """At most `limit` of the cart's files not verified yet, those that say most about
        what holds it up first: failed, then retrying, then on tape, then in cart order
        (the order a download waits for them in). One query over the cart's open files."""
        with self._reading() as connection:
            rows = connection.execute(_holding_statement(limit), {"cart_id": cart_id})
            return [_file(row) for row in rows]

    def move_file(
        self,
        file_id: int,
        to: FileStatus | None = None,
        *,
        expect: Iterable[FileStatus] | None = None,
        **fields: Any,
    ) -> bool:
        """Update a file's row if it is still in one of `expect` (default: the statuses that
        may go `to`) and its cart is still being worked on."""
        with self._writing() as connection:
            return self._move_file(connection, file_id, to, expect, fields)

    @staticmethod
    def _move_file(
        connection: Connection,
        file_id: int,
        to: FileStatus | None,
        expect: Iterable[FileStatus] | None,
        fields: dict[str, Any],
    ) -> bool:
        if expect is None:
            expect = file_sources(to) if to else ()
        values: dict[str, Any] = {"updated_at": now(), **fields}
        if to is not None:
            values["status"] = to.value
        statement = _move_file_statement(
            tuple(sorted(status.value for status in expect)), tuple(sorted(values))
        )
        parameters = {f"new_{name}": value for name, value in values.items()}
        result = connection.execute(statement, {"file_id": file_id, **parameters})
        return bool(result.rowcount)

    def record_verified(self, verified: Sequence[Verified]) -> set[int]:
        """Mark many files verified in one transaction, with their size, modification time
        and CRC-32, and end the claims on them.

        Returns the ids actually moved; a file whose cart was deleted or failed meanwhile
        is left as it is. One commit for a group of files is what makes a cart of many
        small files cheap: a commit costs more than the update it commits. The group is
        one `executemany` where the driver counts its rows: when every file moved, as
        nearly always, that is the answer; else it is undone and each file is moved on
        its own, to learn which.
        """
        stamp = now()
        rows = [
            {
                "file_id": file.file_id,
                "new_status": FileStatus.STAGED.value,
                "new_size": file.size,
                "new_mtime": file.mtime,
                "new_crc32": file.crc32,
                "new_attempts": 0,
                "new_error": None,
                "new_next_attempt_at": None,
                "new_claimed_by": None,
                "new_claimed_until": None,
                "new_updated_at": stamp,
            }
            for file in verified
        ]
        if len(rows) > 1 and self.engine.dialect.supports_sane_multi_rowcount:
            with contextlib.suppress(_NotAllMoved), self._writing() as connection:
                if connection.execute(_RECORD_VERIFIED, rows).rowcount != len(rows):
                    raise _NotAllMoved  # rolls the group back
                return {file.file_id for file in verified}
        moved = set()
        with self._writing() as connection:
            for file, row in zip(verified, rows, strict=True):
                if connection.execute(_RECORD_VERIFIED, row).rowcount:
                    moved.add(file.file_id)
        return moved

    def record_crc(self, file_id: int, crc32: int) -> None:
        """Record the CRC-32 of a verified file's bytes learned after it was verified (a row
        older than the column, a file of the original); no progress, so `updated_at` stays."""
        with self._writing() as connection:
            connection.execute(
                files.update()
                .where(files.c.id == file_id, _STAGED, files.c.crc32.is_(None))
                .values(crc32=crc32)
            )

    def redrive(self, cart_id: int) -> int | None:
        """Put every file of the cart not yet verified back to be driven now, in one
        transaction: `fixit`'s move, as the original's fixit re-drives any such file.

        A cart in error goes back to staging and its failed files to waiting with their
        tries, polls and error forgotten; files still waiting or staging are made due now
        with their tries reset and the archive asked afresh. "Due now" is `OVERDUE`, a
        time long past: the next sweep of any runner (the embedded one's, or a `cartd
        worker`'s, whose grace it has passed) sends them at once. Returns how many files were
        put back, or None when the cart is neither in error nor still being made (made
        ready, deleted or evicted meanwhile): then nothing is changed. The cart's row is
        written first, by a guarded update, so a racing eviction or DELETE either waits
        for this transaction or makes it change nothing.
        """
        assert CartStatus.ERROR in cart_sources(CartStatus.STAGING)
        assert FileStatus.ERROR in file_sources(FileStatus.WAITING)
        stamp = now()
        with self._writing() as connection:
            reopened = connection.execute(
                carts.update()
                .where(carts.c.id == cart_id, carts.c.status == CartStatus.ERROR.value)
                .values(status=CartStatus.STAGING.value, error=None, updated_at=stamp)
            ).rowcount
            if not reopened:
                touched = connection.execute(
                    carts.update()
                    .where(carts.c.id == cart_id, carts.c.status.in_(ACTIVE))
                    .values(
                        # A cart whose first step was lost is started here: its files
                        # size themselves.
                        status=case(
                            (carts.c.status == CartStatus.WAITING.value, CartStatus.STAGING.value),
                            else_=carts.c.status,
                        ),
                        updated_at=stamp,
                    )
                ).rowcount
                if not touched:
                    return None
            # The open files first, so the failed ones moved to waiting below are not
            # counted twice.
            due_now = connection.execute(
                files.update()
                .where(files.c.cart_id == cart_id, files.c.status.in_(OPEN))
                .values(attempts=0, on_disk=None, next_attempt_at=OVERDUE, updated_at=stamp)
            ).rowcount
            failed = connection.execute(
                files.update()
                .where(files.c.cart_id == cart_id, files.c.status == FileStatus.ERROR.value)
                .values(
                    status=FileStatus.WAITING.value,
                    attempts=0,
                    polls=0,
                    error=None,
                    on_disk=None,
                    next_attempt_at=OVERDUE,
                    updated_at=stamp,
                )
            ).rowcount
            return int(due_now) + int(failed)

    def count_by_status(self) -> dict[str, int]:
        """Live carts per status, every status present (zero when none)."""
        counts = {status.value: 0 for status in CartStatus if status is not CartStatus.DELETED}
        with self._reading() as connection:
            for status, count in connection.execute(
                select(carts.c.status, func.count(carts.c.id))
                .where(carts.c.status != CartStatus.DELETED.value)
                .group_by(carts.c.status)
            ):
                counts[status] = int(count)
        return counts

    def stuck(self, before: datetime) -> list[StuckCart]:
        """Carts still being made whose row and files' rows were all last written before
        `before`, with their counts and the files that hold them, in one query.

        Every step writes what it learns to the file's row (a poll of a file on tape
        too), and every move of the cart writes the cart's row: so a cart listed here
        has seen no step since `before`. A single pull longer than that writes nothing
        until it ends, so it too shows here.
        """
        before = before.astimezone(UTC)
        live = and_(carts.c.status.in_(ACTIVE), carts.c.updated_at < before)
        tally = (
            select(
                files.c.cart_id.label("cart_id"),
                func.count(files.c.id).label("total"),
                func.coalesce(func.sum(case((_STAGED, 1), else_=0)), 0).label("verified"),
                func.max(files.c.updated_at).label("last_file"),
            )
            .join(carts, carts.c.id == files.c.cart_id)
            .where(live)
            .group_by(files.c.cart_id)
            .subquery("tally")
        )
        holding = files.alias("holding")
        statement = (
            select(
                carts,
                tally.c.total,
                tally.c.verified,
                tally.c.last_file,
                *[column.label(f"file__{column.name}") for column in holding.c],
            )
            .join(tally, tally.c.cart_id == carts.c.id)
            .outerjoin(
                holding,
                and_(
                    holding.c.cart_id == carts.c.id,
                    holding.c.status != FileStatus.STAGED.value,
                ),
            )
            .where(live, tally.c.last_file < before)
            .order_by(carts.c.id, holding.c.id)
        )
        found: dict[int, StuckCart] = {}
        with self._reading() as connection:
            for row in connection.execute(statement):
                value = row._mapping
                cart_id = int(value["id"])
                if cart_id not in found:
                    cart = _cart(row)
                    last = max(cart.updated_at, _aware(value["last_file"]))
                    found[cart_id] = StuckCart(
                        cart, int(value["total"]), int(value["verified"]), last, []
                    )
                if value["file__id"] is not None:
                    found[cart_id].holding.append(
                        CartFile(
                            id=value["file__id"],
                            cart_id=cart_id,
                            archive_id=value["file__archive_id"],
                            path=value["file__path"],
                            hashtype=value["file__hashtype"],
                            hashsum=value["file__hashsum"],
                            status=FileStatus(value["file__status"]),
                            size=value["file__size"],
                            mtime=value["file__mtime"],
                            attempts=value["file__attempts"],
                            polls=value["file__polls"],
                            error=value["file__error"],
                            on_disk=value["file__on_disk"],
                        )
                    )
        return list(found.values())

    def live_carts(self) -> list[Cart]:
        with self._reading() as connection:
            rows = connection.execute(
                select(carts).where(carts.c.status != CartStatus.DELETED.value).order_by(carts.c.id)
            )
            return [_cart(row) for row in rows]

    def carts_of(self, uid: str) -> list[Cart]:
        with self._reading() as connection:
            rows = connection.execute(
                select(carts)
                .where(carts.c.uid == uid, carts.c.status != CartStatus.DELETED.value)
                .order_by(carts.c.id)
            )
            return [_cart(row) for row in rows]

    def restage(self, cart_id: int, file_ids: Sequence[int]) -> bool:
        """Send a ready cart back to staging for files found bad on the volume, in one
        transaction: the cart READY -> STAGING, those files STAGED -> WAITING (asked
        about afresh). False, changing nothing, when the cart is no longer ready (another
        request got there first, or it was deleted)."""
        cart_from = [status.value for status in cart_sources(CartStatus.STAGING)]
        file_from = [status.value for status in file_sources(FileStatus.WAITING)]
        stamp = now()
        with self._writing() as connection:
            moved = connection.execute(
                carts.update()
                .where(
                    carts.c.id == cart_id,
                    carts.c.status == CartStatus.READY.value,
                    carts.c.status.in_(cart_from),
                )
                .values(status=CartStatus.STAGING.value, ready_at=None, updated_at=stamp)
            )
            if not moved.rowcount:
                return False
            if file_ids:
                connection.execute(
                    files.update()
                    .where(
                        files.c.cart_id == cart_id,
                        files.c.id.in_(list(file_ids)),
                        files.c.status == FileStatus.STAGED.value,
                        files.c.status.in_(file_from),
                    )
                    .values(
                        status=FileStatus.WAITING.value,
                        on_disk=None,
                        attempts=0,
                        polls=0,
                        error=None,
                        next_attempt_at=None,
                        updated_at=stamp,
                    )
                )
            return True

    def lease_download(self, cart_id: int, until: float | None) -> None:
        """Mark a download under way until `until` (None: over), so eviction leaves the cart
        alone meanwhile; either way the cart was just used."""
        with self._writing() as connection:
            connection.execute(
                carts.update()
                .where(carts.c.id == cart_id)
                .values(download_lease_until=until, last_used_at=now())
            )

    def all_staged(self, cart_id: int) -> bool:
        with self._reading() as connection:
            return connection.scalar(_PENDING, {"cart_id": cart_id}) is None

    # -- claims --------------------------------------------------------------------------

    def claim_files(self, file_ids: Collection[int], token: str, until: float) -> set[int]:
        """Claim, for the step `token`, those of the files still open and not claimed by a
        live step; return the ids it now holds. A conditional UPDATE: of two workers
        racing for a file, the second re-checks the row once the first commits, and
        finds it claimed."""
        if not file_ids:
            return set()
        wall = time.time()
        ids = list(file_ids)
        claim = (
            files.update()
            .where(
                files.c.id.in_(ids),
                files.c.status.in_(OPEN),
                or_(files.c.claimed_until.is_(None), files.c.claimed_until < wall),
            )
            .values(claimed_by=token, claimed_until=until)
        )
        with self._writing() as connection:
            if connection.dialect.update_returning:  # one round-trip instead of two
                return set(connection.scalars(claim.returning(files.c.id)))
            connection.execute(claim)
            return set(
                connection.scalars(
                    select(files.c.id).where(files.c.id.in_(ids), files.c.claimed_by == token)
                )
            )

    def claim_cart(self, cart_id: int, token: str, until: float) -> bool:
        """Claim a cart for one step (its sizing pass, its bundle) if no live step has it."""
        wall = time.time()
        with self._writing() as connection:
            return bool(
                connection.execute(
                    carts.update()
                    .where(
                        carts.c.id == cart_id,
                        or_(carts.c.claimed_until.is_(None), carts.c.claimed_until < wall),
                    )
                    .values(claimed_by=token, claimed_until=until)
                ).rowcount
            )

    def renew_claims(
        self, token: str, file_ids: Collection[int], cart_ids: Collection[int], until: float
    ) -> None:
        """Extend a live step's claims."""
        with self._writing() as connection:
            self._set_claims(connection, token, file_ids, cart_ids, until, keep=True)

    def release_claims(
        self, token: str, file_ids: Collection[int], cart_ids: Collection[int]
    ) -> None:
        with self._writing() as connection:
            self._set_claims(connection, token, file_ids, cart_ids, None, keep=False)

    @staticmethod
    def _set_claims(
        connection: Connection,
        token: str,
        file_ids: Collection[int],
        cart_ids: Collection[int],
        until: float | None,
        *,
        keep: bool,
    ) -> None:
        values = {"claimed_until": until} if keep else {"claimed_by": None, "claimed_until": None}
        for table, ids in ((files, file_ids), (carts, cart_ids)):
            if ids:
                connection.execute(
                    table.update()
                    .where(table.c.id.in_(list(ids)), table.c.claimed_by == token)
                    .values(values)
                )

    def claim_holders(self) -> set[str]:
        """The steps holding claims now (live or not: see `release_holders`)."""
        with self._reading() as connection:
            return {
                holder
                for table in (files, carts)
                for holder in connection.scalars(
                    select(table.c.claimed_by).where(table.c.claimed_by.is_not(None)).distinct()
                )
            }

    def release_holders(self, holders: Collection[str]) -> None:
        """Drop every claim of steps known to be dead."""
        if not holders:
            return
        with self._writing() as connection:
            for table in (files, carts):
                connection.execute(
                    table.update()
                    .where(table.c.claimed_by.in_(list(holders)))
                    .values(claimed_by=None, claimed_until=None)
                )

    # -- recovery ------------------------------------------------------------------------

    def unfinished(self) -> tuple[list[tuple[int, int, float | None]], list[int], list[int]]:
        """Work a restarted process must pick up again.

        Returns the files still to be driven (with their cart and when they were due), the
        carts whose
        every file is staged but which never became ready, and deleted carts whose files
        may still be on the volume.
        """
        with self._reading(snapshot=True) as connection:
            due = [
                (int(file_id), int(cart_id), next_at)
                for file_id, cart_id, next_at in connection.execute(
                    select(files.c.id, files.c.cart_id, files.c.next_attempt_at)
                    .join(carts, carts.c.id == files.c.cart_id)
                    .where(carts.c.status.in_(ACTIVE), files.c.status.in_(OPEN))
                    .order_by(files.c.id)
                )
            ]
            not_done = (
                select(files.c.id)
                .where(files.c.cart_id == carts.c.id, files.c.status != FileStatus.STAGED.value)
                .exists()
            )
            finishing = list(
                connection.scalars(select(carts.c.id).where(carts.c.status.in_(ACTIVE), ~not_done))
            )
            deleted = list(
                connection.scalars(
                    select(carts.c.id).where(carts.c.status == CartStatus.DELETED.value)
                )
            )
            return due, finishing, deleted

    def unsized_carts(self, more_than: int) -> list[int]:
        """Carts being made with more than `more_than` open files the archive has not told
        the size of: those whose sizing ahead a restarted process takes up again."""
        with self._reading() as connection:
            return list(
                connection.scalars(
                    select(files.c.cart_id)
                    .join(carts, carts.c.id == files.c.cart_id)
                    .where(
                        carts.c.status.in_(ACTIVE),
                        files.c.status.in_(OPEN),
                        files.c.size.is_(None),
                    )
                    .group_by(files.c.cart_id)
                    .having(func.count() > more_than)
                    .order_by(files.c.cart_id)
                )
            )

    def overdue(self, grace: float, limit: int) -> Overdue:
        """Work whose task was lost: due more than `grace` seconds ago and still not done,
        or a file of a cart that a dead step worked on.

        What a distributed sweep re-drives. At most `limit` files are returned, the longest
        overdue first, and each is marked due now, so the next sweep leaves it alone for
        another `grace` seconds: a backlog of thousands of carts is re-driven a slice at a
        time instead of flooding the queue.

        A live step renews its claims every third of their length, so a lapsed claim
        means its step died (its worker killed mid-pull). The message of that step,
        delivered again while the claim still held, was dropped. So every open file of
        that cart that no live step holds is sent at once, not after `grace` (a file
        whose message is still on its way is sent twice: the claims make the second find
        it taken or done). The lapsed claims are cleared then, so the next sweep treats
        those files as any other.
        """
        wall = time.time()
        stamp = now()
        before = stamp - timedelta(seconds=grace)
        due_at = func.coalesce(files.c.next_attempt_at, 0.0)
        lapsed = and_(files.c.claimed_by.is_not(None), files.c.claimed_until < wall)
        dead = files.alias("dead")
        of_dead_steps = select(dead.c.cart_id).where(
            dead.c.claimed_by.is_not(None), dead.c.claimed_until < wall
        )
        late = and_(
            or_(files.c.claimed_until.is_(None), files.c.claimed_until < wall),
            or_(
                and_(files.c.next_attempt_at.is_not(None), files.c.next_attempt_at < wall - grace),
                and_(files.c.next_attempt_at.is_(None), files.c.updated_at < before),
                files.c.cart_id.in_(of_dead_steps),
            ),
        )
        unclaimed = or_(carts.c.claimed_until.is_(None), carts.c.claimed_until < wall)
        with self._writing() as connection:
            sizes = list(
                connection.scalars(
                    select(carts.c.id)
                    .where(
                        carts.c.status == CartStatus.WAITING.value,
                        carts.c.updated_at < before,
                        unclaimed,
                    )
                    .order_by(carts.c.id)
                    .limit(limit)
                )
            )
            file_ids = list(
                connection.scalars(
                    select(files.c.id)
                    .join(carts, carts.c.id == files.c.cart_id)
                    .where(
                        carts.c.status == CartStatus.STAGING.value,
                        files.c.status.in_(OPEN),
                        late,
                    )
                    .order_by(due_at, files.c.id)
                    .limit(limit)
                )
            )
            if file_ids:
                connection.execute(
                    files.update()
                    .where(files.c.id.in_(file_ids))
                    .values(next_attempt_at=wall, updated_at=stamp)
                )
            # Every lapsed claim, those of files no longer open too (one verified by the
            # step that found it in place), or their carts would be sent again each sweep.
            connection.execute(
                files.update().where(lapsed).values(claimed_by=None, claimed_until=None)
            )
            not_done = (
                select(files.c.id)
                .where(files.c.cart_id == carts.c.id, files.c.status != FileStatus.STAGED.value)
                .exists()
            )
            # A cart whose finishing step died (its claim lapsed: a worker killed while it
            # wrote the bundle) is finished again at once, as a file of a dead step is.
            cart_lapsed = and_(carts.c.claimed_by.is_not(None), carts.c.claimed_until < wall)
            finishes = list(
                connection.scalars(
                    select(carts.c.id)
                    .where(
                        carts.c.status.in_(ACTIVE),
                        or_(carts.c.updated_at < before, cart_lapsed),
                        unclaimed,
                        ~not_done,
                    )
                    .order_by(carts.c.id)
                    .limit(limit)
                )
            )
            if finishes:
                connection.execute(
                    carts.update()
                    .where(carts.c.id.in_(finishes), cart_lapsed)
                    .values(claimed_by=None, claimed_until=None)
                )
        return Overdue(sizes, file_ids, finishes)
