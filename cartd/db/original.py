"""The original Pacifica Cartd's tables (0.7.0, its schema 2.0), read with SQLAlchemy Core,
and the ledger of which of its carts `cartd dbsync` has brought over.

cartd reads the original's `cart` and `file` tables and never writes them (nor its
`cartsystem` and `carttasks`): left as they are, the original can be started again on
its database should the move to cartd be undone. A cart brought over is written in one
transaction with its ledger row (`original_imports`), so it is brought over once.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import cast

from sqlalchemy import (
    Boolean,
    Column,
    Connection,
    DateTime,
    Engine,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    func,
    inspect,
    select,
)

from cartd.db.engine import Writer
from cartd.db.models import OriginalImportRow
from cartd.db.store import carts, files, now
from cartd.status import CartStatus, FileStatus

imports = cast(Table, OriginalImportRow.__table__)

# The original's peewee models (`pacifica/cartd/orm.py`), as much of them as is read here.
# Their own metadata: cartd's migrations must never create or compare them.
_theirs = MetaData()
their_carts = Table(
    "cart",
    _theirs,
    Column("id", Integer, primary_key=True),
    Column("cart_uid", String(255)),
    Column("bundle_path", String(255)),  # its folder or tar on the volume, once ready
    Column("bundle", Boolean),  # absent before the original's schema 1.0
    Column("creation_date", DateTime),  # naive, the original host's local time
    Column("updated_date", DateTime),
    Column("deleted_date", DateTime),  # set when deleted (and status 'deleted')
    Column("status", Text),  # waiting, staging, ready, error, deleted
    Column("error", Text),
)
their_files = Table(
    "file",
    _theirs,
    Column("id", Integer, primary_key=True),
    Column("cart_id", Integer),
    Column("file_name", String(255)),  # the archive's id
    Column("bundle_path", String(255)),  # the path in the bundle, one leading '/' dropped
    Column("hash_type", String(255)),
    Column("hash_value", String(255)),
    Column("status", Text),  # waiting, staging, staged, error
    Column("error", Text),
)


class Outcome(StrEnum):
    """What became of one of the original's carts."""

    READY = "ready"  # downloadable here as it was there
    RESUMED = "resumed"  # still being made (or its volume copy was gone): cartd makes it
    ERROR = "error"  # in error here, with the original's message or why it could not come
    DELETED = "deleted"  # deleted there: nothing to bring
    SKIPPED = "skipped"  # its uid cannot name a cart of cartd: nothing brought


@dataclass(frozen=True)
class TheirFile:
    id: int
    archive_id: str
    path: str
    hashtype: str
    hashsum: str
    status: str
    error: str


@dataclass(frozen=True)
class TheirCart:
    id: int
    uid: str
    status: str
    error: str
    bundle: bool
    bundle_path: str
    created: datetime  # in UTC
    updated: datetime
    deleted: bool
    files: list[TheirFile]


@dataclass(frozen=True)
class NewFile:
    archive_id: str
    path: str
    hashtype: str
    hashsum: str
    status: FileStatus
    size: int | None = None
    mtime: float | None = None
    error: str | None = None


@dataclass(frozen=True)
class NewCart:
    """The cart an original cart becomes, as its rows will say."""

    uid: str
    status: CartStatus
    bundle: bool
    error: str | None
    created_at: datetime
    updated_at: datetime
    files: list[NewFile]
    ready_at: datetime | None = None
    bundle_size: int | None = None
    reserved_bytes: int | None = None


#: Puts a new cart's files on the volume, given its id and its files' ids in order; run
#: inside the cart's transaction, so a failure there brings nothing over.
Placer = Callable[[int, Sequence[int]], None]


def _utc(value: datetime | None) -> datetime:
    """The original wrote `datetime.now()`: naive local time, taken as this host's."""
    if value is None:
        return now()
    return value.astimezone(UTC)


class OriginalTables:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._writer = Writer(engine)

    def present(self) -> bool:
        """Whether the database holds the original's carts."""
        with self.engine.connect() as connection:
            found = inspect(connection)
            return found.has_table("cart") and found.has_table("file")

    def pending(self) -> int:
        """How many of the original's carts `dbsync` has not dealt with yet."""
        if not self.present():
            return 0
        with self.engine.connect() as connection:
            counted = select(func.count()).select_from(their_carts)
            if inspect(connection).has_table(imports.name):
                counted = counted.where(their_carts.c.id.not_in(select(imports.c.original_id)))
            return int(connection.scalar(counted) or 0)

    def not_imported(self) -> Iterator[TheirCart]:
        """The original's carts not dealt with yet, oldest first (so that of two carts of
        one uid the newer stays the one served), each with its files."""
        with self.engine.connect() as connection:
            has_bundle = any(
                column["name"] == "bundle"
                for column in inspect(connection).get_columns(their_carts.name)
            )
            ids = list(
                connection.scalars(
                    select(their_carts.c.id)
                    .where(their_carts.c.id.not_in(select(imports.c.original_id)))
                    .order_by(their_carts.c.creation_date, their_carts.c.id)
                )
            )
        for cart_id in ids:
            with self.engine.connect() as connection:
                yield self._read(connection, cart_id, has_bundle)

    @staticmethod
    def _read(connection: Connection, cart_id: int, has_bundle: bool) -> TheirCart:
        columns = [column for column in their_carts.c if has_bundle or column.name != "bundle"]
        row = connection.execute(select(*columns).where(their_carts.c.id == cart_id)).one()
        their = [
            TheirFile(
                id=file.id,
                archive_id=str(file.file_name),
                path=file.bundle_path or "",
                hashtype=file.hash_type or "",
                hashsum=file.hash_value or "",
                status=file.status or "",
                error=file.error or "",
            )
            for file in connection.execute(
                select(their_files)
                .where(their_files.c.cart_id == cart_id)
                .order_by(their_files.c.id)
            )
        ]
        return TheirCart(
            id=row.id,
            uid=row.cart_uid or "",
            status=row.status or "",
            error=row.error or "",
            bundle=bool(row.bundle) if has_bundle else False,
            bundle_path=row.bundle_path or "",
            created=_utc(row.creation_date),
            updated=_utc(row.updated_date),
            deleted=row.deleted_date is not None or row.status == "deleted",
            files=their,
        )

    def bring_over(
        self, original_id: int, outcome: Outcome, cart: NewCart | None, place: Placer
    ) -> int | None:
        """Write the cart an original cart becomes (if any) and its ledger row, in one
        transaction, with `place` run before it commits; return the new cart's id. Does
        nothing when another `dbsync` got there first."""
        with self._writer.begin() as connection:
            done = connection.scalar(
                select(imports.c.original_id).where(imports.c.original_id == original_id)
            )
            if done is not None:
                return None
            cart_id = None
            if cart is not None:
                key = connection.execute(
                    carts.insert().values(
                        uid=cart.uid,
                        status=cart.status.value,
                        bundle=cart.bundle,
                        error=cart.error,
                        created_at=cart.created_at,
                        updated_at=cart.updated_at,
                        last_used_at=cart.updated_at,
                        ready_at=cart.ready_at,
                        bundle_size=cart.bundle_size,
                        reserved_bytes=cart.reserved_bytes,
                    )
                ).inserted_primary_key
                assert key is not None
                cart_id = int(key[0])
                file_ids = []
                for file in cart.files:  # one at a time: their ids, in order, are needed
                    file_key = connection.execute(
                        files.insert().values(
                            cart_id=cart_id,
                            archive_id=file.archive_id,
                            path=file.path,
                            hashtype=file.hashtype,
                            hashsum=file.hashsum,
                            status=file.status.value,
                            size=file.size,
                            mtime=file.mtime,
                            error=file.error,
                            attempts=0,
                            polls=0,
                            updated_at=cart.updated_at,
                        )
                    ).inserted_primary_key
                    assert file_key is not None
                    file_ids.append(int(file_key[0]))
                place(cart_id, file_ids)
            connection.execute(
                imports.insert().values(
                    original_id=original_id,
                    cart_id=cart_id,
                    outcome=outcome.value,
                    imported_at=now(),
                )
            )
            return cart_id
