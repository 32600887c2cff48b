"""Every query cartd runs. Status changes are conditional updates guarded by the transitions
in `cartd.status`, so two workers racing for the same change cannot both win it."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Engine, case, delete, func, insert, select, update
from sqlalchemy.orm import Session, sessionmaker

from cartd.db.models import CartRow, FileRow
from cartd.records import Cart, CartFile, Progress
from cartd.schemas import FileOrder
from cartd.status import CartStatus, FileStatus, cart_sources, file_sources


def now() -> datetime:
    return datetime.now(UTC)


def _aware(value: datetime) -> datetime:
    """SQLite and MySQL hand back naive datetimes, PostgreSQL its session's zone; ours are UTC."""
    return value.astimezone(UTC) if value.tzinfo else value.replace(tzinfo=UTC)


def _cart(row: CartRow) -> Cart:
    return Cart(
        id=row.id,
        uid=row.uid,
        status=CartStatus(row.status),
        bundle=row.bundle,
        error=row.error,
        created_at=_aware(row.created_at),
        updated_at=_aware(row.updated_at),
        last_used_at=_aware(row.last_used_at),
        bundle_size=row.bundle_size,
    )


def _file(row: FileRow) -> CartFile:
    return CartFile(
        id=row.id,
        cart_id=row.cart_id,
        archive_id=row.archive_id,
        path=row.path,
        hashtype=row.hashtype,
        hashsum=row.hashsum,
        status=FileStatus(row.status),
        size=row.size,
        mtime=row.mtime,
        attempts=row.attempts,
        polls=row.polls,
        error=row.error,
    )


class CartStore:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._sessions = sessionmaker(engine, expire_on_commit=False)

    def _session(self) -> Session:
        return self._sessions()

    def create_cart(
        self, uid: str, bundle: bool, files: Sequence[FileOrder]
    ) -> tuple[Cart, list[int]]:
        """Store a cart and its files in one transaction; return it and its file ids in order."""
        stamp = now()
        with self._session() as session, session.begin():
            row = CartRow(
                uid=uid,
                status=CartStatus.WAITING.value,
                bundle=bundle,
                created_at=stamp,
                updated_at=stamp,
                last_used_at=stamp,
            )
            session.add(row)
            session.flush()
            session.execute(
                insert(FileRow),
                [
                    {
                        "cart_id": row.id,
                        "archive_id": order.archive_id,
                        "path": order.path,
                        "hashtype": order.hashtype,
                        "hashsum": order.hashsum,
                        "status": FileStatus.WAITING.value,
                        "attempts": 0,
                        "polls": 0,
                        "updated_at": stamp,
                    }
                    for order in files
                ],
            )
            file_ids = list(
                session.scalars(
                    select(FileRow.id).where(FileRow.cart_id == row.id).order_by(FileRow.id)
                )
            )
            return _cart(row), file_ids

    def latest_cart(self, uid: str) -> Cart | None:
        """The newest live cart of that uid: the one HEAD and GET act on."""
        with self._session() as session:
            row = session.scalars(
                select(CartRow)
                .where(CartRow.uid == uid, CartRow.status != CartStatus.DELETED.value)
                .order_by(CartRow.id.desc())
                .limit(1)
            ).first()
            return _cart(row) if row else None

    def get_cart(self, cart_id: int) -> Cart | None:
        with self._session() as session:
            row = session.get(CartRow, cart_id)
            return _cart(row) if row else None

    def get_file(self, file_id: int) -> CartFile | None:
        with self._session() as session:
            row = session.get(FileRow, file_id)
            return _file(row) if row else None

    def files_of(self, cart_id: int) -> list[CartFile]:
        with self._session() as session:
            rows = session.scalars(
                select(FileRow).where(FileRow.cart_id == cart_id).order_by(FileRow.id)
            )
            return [_file(row) for row in rows]

    def progress(self, cart_id: int) -> Progress:
        staged = FileRow.status == FileStatus.STAGED.value
        size = func.coalesce(FileRow.size, 0)
        with self._session() as session:
            total, done, size_total, size_done = session.execute(
                select(
                    func.count(FileRow.id),
                    func.coalesce(func.sum(case((staged, 1), else_=0)), 0),
                    func.coalesce(func.sum(size), 0),
                    func.coalesce(func.sum(case((staged, size), else_=0)), 0),
                ).where(FileRow.cart_id == cart_id)
            ).one()
            return Progress(int(total), int(done), int(size_total), int(size_done))

    def move_cart(self, cart_id: int, to: CartStatus, **fields: Any) -> bool:
        """Change a cart's status if the transition is allowed from where it is now."""
        sources = [status.value for status in cart_sources(to)]
        with self._session() as session, session.begin():
            result = session.execute(
                update(CartRow)
                .where(CartRow.id == cart_id, CartRow.status.in_(sources))
                .values(status=to.value, updated_at=now(), **fields)
            )
            return bool(result.rowcount)  # type: ignore[attr-defined]

    def update_cart(self, cart_id: int, **fields: Any) -> None:
        with self._session() as session, session.begin():
            session.execute(update(CartRow).where(CartRow.id == cart_id).values(**fields))

    def touch(self, cart_id: int) -> None:
        """A download counts as use, for eviction by least recent use."""
        self.update_cart(cart_id, last_used_at=now())

    def move_file(
        self,
        file_id: int,
        to: FileStatus | None = None,
        *,
        expect: Iterable[FileStatus] | None = None,
        **fields: Any,
    ) -> bool:
        """Update a file's row, only if it is still in one of `expect` (default: may go `to`)."""
        if expect is None:
            expect = file_sources(to) if to else ()
        values: dict[str, Any] = {"updated_at": now(), **fields}
        if to is not None:
            values["status"] = to.value
        with self._session() as session, session.begin():
            result = session.execute(
                update(FileRow)
                .where(FileRow.id == file_id, FileRow.status.in_([s.value for s in expect]))
                .values(**values)
            )
            return bool(result.rowcount)  # type: ignore[attr-defined]

    def all_staged(self, cart_id: int) -> bool:
        with self._session() as session:
            pending = session.scalar(
                select(func.count(FileRow.id)).where(
                    FileRow.cart_id == cart_id, FileRow.status != FileStatus.STAGED.value
                )
            )
            return pending == 0

    def delete_uid(self, uid: str) -> list[int]:
        """Make every live cart of a uid gone; return their ids so their files can go too."""
        with self._session() as session, session.begin():
            ids = list(
                session.scalars(
                    select(CartRow.id).where(
                        CartRow.uid == uid, CartRow.status != CartStatus.DELETED.value
                    )
                )
            )
            if ids:
                session.execute(
                    update(CartRow)
                    .where(CartRow.id.in_(ids))
                    .values(status=CartStatus.DELETED.value, updated_at=now())
                )
            return ids

    def forget(self, cart_id: int) -> None:
        """Drop a deleted cart's rows for good, once its files are gone from the volume."""
        with self._session() as session, session.begin():
            session.execute(delete(FileRow).where(FileRow.cart_id == cart_id))
            session.execute(delete(CartRow).where(CartRow.id == cart_id))

    def unfinished(self) -> tuple[list[tuple[int, float | None]], list[int], list[int]]:
        """Work a restarted process must pick up again.

        Returns the files still to be driven (with when they were due), the carts whose
        every file is staged but which never became ready, and deleted carts whose files
        may still be on the volume.
        """
        active = [s.value for s in CartStatus if s.is_active]
        open_files = [FileStatus.WAITING.value, FileStatus.STAGING.value]
        with self._session() as session:
            files = [
                (file_id, due)
                for file_id, due in session.execute(
                    select(FileRow.id, FileRow.next_attempt_at)
                    .join(CartRow, CartRow.id == FileRow.cart_id)
                    .where(CartRow.status.in_(active), FileRow.status.in_(open_files))
                    .order_by(FileRow.id)
                )
            ]
            not_done = (
                select(FileRow.id)
                .where(FileRow.cart_id == CartRow.id, FileRow.status != FileStatus.STAGED.value)
                .exists()
            )
            finishing = list(
                session.scalars(select(CartRow.id).where(CartRow.status.in_(active), ~not_done))
            )
            deleted = list(
                session.scalars(
                    select(CartRow.id).where(CartRow.status == CartStatus.DELETED.value)
                )
            )
            return files, finishing, deleted

    def carts_older_than(self, age: timedelta) -> list[Cart]:
        with self._session() as session:
            rows = session.scalars(
                select(CartRow).where(
                    CartRow.status != CartStatus.DELETED.value,
                    CartRow.last_used_at < now() - age,
                )
            )
            return [_cart(row) for row in rows]
