"""Rows that name the same archive file: the queries behind one recall for many carts.

Two rows of `cart_files` are copies of one another when they name the same archive file
with the same checksum: the same (archive id, hash type, hash sum), the sum non-empty
(sums are stored lower case, as orders are parsed). Their verified bytes are the same,
so the volume keeps them once, hard-linked into each cart's folder
(`cartd.service.sharing`), and the space ledger counts them once (`duplicate_bytes`,
`already_counted`, `freed_together`, used by `cartd.db.space`).

Which row recalls the file is a fact of the database, so it holds across processes and
workers: the *lead* is the open row (waiting or staging) of an active cart with the
lowest id, a row that asked the archive to stage the file (staging) before any other:
a file on tape keeps its lead, even against a row of lower id made open again later.
Every other open row waits for a verified copy to link, and the step that records a
copy verified makes the rows waiting on it due at once (`wake`). When the lead's cart
fails or is deleted, the next takes over at its next step.
"""

from __future__ import annotations

import time
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field

from sqlalchemy import Connection, Engine, and_, bindparam, case, func, select
from sqlalchemy.sql import ColumnElement, FromClause
from sqlalchemy.sql.elements import BindParameter
from sqlalchemy.sql.selectable import Exists

from cartd.db.engine import Writer
from cartd.db.store import ACTIVE, OPEN, carts, files, now
from cartd.status import CartStatus, FileStatus

#: Not deleted: a cart whose files are (or may be) on the volume.
LIVE = carts.c.status != CartStatus.DELETED.value
#: A live cart that holds space on the volume.
HOLDING = and_(LIVE, carts.c.reserved_bytes.is_not(None))


def _same_file(one: FromClause, other: FromClause) -> ColumnElement[bool]:
    """`other` names the archive file `one` names, with the same checksum."""
    return and_(
        other.c.hashsum == one.c.hashsum,
        other.c.archive_id == one.c.archive_id,
        other.c.hashtype == one.c.hashtype,
        one.c.hashsum != "",
    )


def _holding(owner: FromClause) -> ColumnElement[bool]:
    return owner.c.reserved_bytes.is_not(None)


@dataclass(frozen=True)
class Donor:
    """A verified copy in a live cart: its bytes are at the volume's path for
    (cart id, file id), with this size and modification time unless changed since."""

    file_id: int
    cart_id: int
    size: int
    mtime: float
    crc32: int | None = None


@dataclass(frozen=True)
class Copies:
    """What one file's step learns of the other rows naming the same archive file."""

    donors: list[Donor] = field(default_factory=list)
    #: The lead, when it is another row (open, in an active cart, staging or of lower id):
    #: the file waits for it rather than recall the file a second time.
    lead: int | None = None


NONE = Copies()

# The statements asked at every batch, built once: building one (its aliases' columns, its
# cache key) costs more Python than running it does on SQLite.
_MINE = files.alias("mine")
_OTHER = files.alias("other")
_OWNER = carts.alias("owner")
_IDS: BindParameter[list[int]] = bindparam("file_ids", expanding=True)
_COPIES_OF_MINE = _MINE.join(files, and_(_same_file(_MINE, files), files.c.id != _MINE.c.id)).join(
    carts, carts.c.id == files.c.cart_id
)
_LOOKUP = (
    select(
        _MINE.c.id.label("for_id"),
        _MINE.c.status.label("for_status"),
        files.c.id,
        files.c.cart_id,
        files.c.status,
        files.c.size,
        files.c.mtime,
        files.c.crc32,
        carts.c.status.label("cart_status"),
    )
    .select_from(_COPIES_OF_MINE)
    .where(_MINE.c.id.in_(_IDS), LIVE)
    .order_by(_MINE.c.id, files.c.id)
)
# The statuses are tested in Python on what this finds: given them, SQLite's planner, which
# has no statistics, walks every open row of the status index (all of a large cart being
# made) instead of looking each verified row's copies up by hash sum.
_WAKE = (
    select(files.c.id, files.c.status, carts.c.status.label("cart_status"))
    .select_from(_COPIES_OF_MINE)
    .where(_MINE.c.id.in_(_IDS))
)


def _copy_where(*conditions: ColumnElement[bool]) -> Exists:
    """Whether a row `_OTHER` (of the cart `_OWNER`) names the archive file of the
    `cart_files` row at hand, with the same checksum, and meets `conditions`."""
    return (
        select(_OTHER.c.id)
        .select_from(_OTHER.join(_OWNER, _OWNER.c.id == _OTHER.c.cart_id))
        .where(_same_file(files, _OTHER), *conditions)
        .exists()
    )


_COUNTED_ELSEWHERE = _copy_where(
    _OTHER.c.size.is_not(None),
    _OTHER.c.id.not_in(_IDS),
    _OWNER.c.status != CartStatus.DELETED.value,
    _holding(_OWNER),
)
#: Each file's key, and whether a copy of it is counted already (see `already_counted`).
_COUNTED = select(
    files.c.id,
    files.c.archive_id,
    files.c.hashtype,
    files.c.hashsum,
    _COUNTED_ELSEWHERE.label("counted"),
).where(files.c.id.in_(_IDS), files.c.hashsum != "")


class CopyStore:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._writer = Writer(engine)

    def lookup(self, file_ids: Collection[int]) -> dict[int, Copies]:
        """The copies of each of the files, in one query (an index lookup per file); files
        that have none are left out."""
        if not file_ids:
            return {}
        donors: dict[int, list[Donor]] = {}
        # Each file's open copies, itself included: (staging first, then by id, the id).
        rivals: dict[int, list[tuple[bool, int]]] = {}
        with self.engine.connect() as connection:
            for row in connection.execute(_LOOKUP, {"file_ids": list(file_ids)}):
                for_id = int(row.for_id)
                if for_id not in rivals:
                    rivals[for_id] = [(row.for_status != FileStatus.STAGING.value, for_id)]
                if row.status == FileStatus.STAGED.value:
                    if row.size is not None and row.mtime is not None:
                        donors.setdefault(for_id, []).append(
                            Donor(
                                int(row.id),
                                int(row.cart_id),
                                int(row.size),
                                float(row.mtime),
                                None if row.crc32 is None else int(row.crc32),
                            )
                        )
                elif row.status in OPEN and row.cart_status in ACTIVE:
                    rivals[for_id].append((row.status != FileStatus.STAGING.value, int(row.id)))
        found = {}
        for file_id, open_copies in rivals.items():
            lead = min(open_copies)[1]
            if file_id in donors or lead != file_id:
                found[file_id] = Copies(donors.get(file_id, []), None if lead == file_id else lead)
        return found

    def wake(self, verified: Sequence[int]) -> list[int]:
        """The open rows of active carts that name the same archive files as `verified`
        (just recorded verified), made due now: they were waiting for a copy to link."""
        if not verified:
            return []
        with self.engine.connect() as connection:
            found = sorted(
                {
                    int(row.id)
                    for row in connection.execute(_WAKE, {"file_ids": list(verified)})
                    if row.status in OPEN and row.cart_status in ACTIVE
                }
            )
        if not found:
            return []
        with self._writer.begin() as connection:
            connection.execute(
                files.update()
                .where(files.c.id.in_(found), files.c.status.in_(OPEN))
                .values(next_attempt_at=time.time(), updated_at=now())
            )
        return found


# -- counting shared bytes once (the space ledger's queries) ------------------------------


def duplicate_bytes(connection: Connection, held: ColumnElement[bool]) -> int:
    """Bytes that a sum over rows counts more than once: for each archive file named by
    several of the rows `held` selects (a condition on `cart_files` joined with
    `carts`), its size times the rows beyond the first."""
    per_file = (
        select(func.count(files.c.id).label("copies"), func.max(files.c.size).label("size"))
        .select_from(files.join(carts, carts.c.id == files.c.cart_id))
        .where(held, files.c.size.is_not(None), files.c.hashsum != "")
        .group_by(files.c.archive_id, files.c.hashtype, files.c.hashsum)
        .having(func.count(files.c.id) > 1)
        .subquery()
    )
    total = connection.scalar(
        select(func.coalesce(func.sum(per_file.c.size * (per_file.c.copies - 1)), 0))
    )
    return int(total or 0)


def already_counted(connection: Connection, new: Mapping[int, int]) -> int:
    """Bytes of files about to be sized (file id -> size) that need no new room on the
    volume: the same archive file with the same checksum is already sized in a live cart
    holding space (the files' own cart included), or comes earlier among `new`. One query:
    each file's key, and whether such a copy is counted already."""
    if not new:
        return 0
    rows = connection.execute(_COUNTED, {"file_ids": list(new)})
    found = {int(row.id): row for row in rows}
    seen: set[tuple[str, str, str]] = set()
    shared = 0
    for ident, size in new.items():
        row = found.get(ident)
        if row is None:
            continue
        key = (row.archive_id, row.hashtype, row.hashsum)
        if row.counted or key in seen:
            shared += size
        seen.add(key)
    return shared


def freed_together(connection: Connection, cart_ids: Collection[int], *, keeping: int) -> int:
    """Bytes that evicting all of the carts together frees: what those holding space
    reserve, less the bytes of their files that a live cart outside them holding space (or
    the cart `keeping`, whose reservation is being made) still names. Carts that name the
    same files free them only together, so the set is asked as a whole."""
    chosen = list(cart_ids)
    if not chosen:
        return 0
    holders = and_(carts.c.id.in_(chosen), _holding(carts))
    held = connection.scalar(
        select(func.coalesce(func.sum(carts.c.reserved_bytes), 0)).where(holders)
    )
    mine = and_(
        files.c.cart_id.in_(select(carts.c.id).where(holders).scalar_subquery()),
        files.c.size.is_not(None),
    )
    rows = connection.scalar(select(func.coalesce(func.sum(files.c.size), 0)).where(mine))
    named_elsewhere = _copy_where(
        _OTHER.c.cart_id.not_in(chosen),
        _OWNER.c.status != CartStatus.DELETED.value,
        _holding(_OWNER) | (_OWNER.c.id == keeping),
    )
    # One copy per archive file; a row without a checksum shares with nothing.
    per_file = (
        select(func.max(files.c.size).label("size"))
        .where(mine, ~named_elsewhere)
        .group_by(
            files.c.archive_id,
            files.c.hashtype,
            files.c.hashsum,
            case((files.c.hashsum == "", files.c.id), else_=0),
        )
        .subquery()
    )
    alone = connection.scalar(select(func.coalesce(func.sum(per_file.c.size), 0)))
    return max(0, int(held or 0) - int(rows or 0) + int(alone or 0))
