"""The tables. Their shape changes only through a migration in `migrations/versions`."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    BigInteger,
    Boolean,
    DateTime,
    Double,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class Base(DeclarativeBase):
    pass


class CartRow(Base):
    __tablename__ = "carts"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    uid: Mapped[str] = mapped_column(String(64), index=True)
    status: Mapped[str] = mapped_column(String(16), index=True)
    bundle: Mapped[bool] = mapped_column(Boolean)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    last_used_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    bundle_size: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    #: Bytes of the volume this cart holds for itself, grown as its files are sized (see
    #: `SpaceLedger.grow`); NULL before its first growth and once it ended for want of space.
    reserved_bytes: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    #: Unix time until which a download is under way; such a cart is never evicted.
    #: (Unix times are DOUBLE: MySQL's FLOAT is single precision, 128 s apart today.)
    download_lease_until: Mapped[float | None] = mapped_column(Double, nullable=True)
    #: When the cart last became ready: its download's identity (ETag, Last-Modified,
    #: default name), which no later write to the row may change.
    ready_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    #: The step (size pass or bundle) working on the cart, and the Unix time its claim
    #: ends unless renewed: two workers never size or bundle one cart at once.
    claimed_by: Mapped[str | None] = mapped_column(String(64), nullable=True, index=True)
    claimed_until: Mapped[float | None] = mapped_column(Double, nullable=True)
    #: The URL the order asked to be told at when the cart becomes ready or fails.
    callback: Mapped[str | None] = mapped_column(Text, nullable=True)


class FileRow(Base):
    __tablename__ = "cart_files"
    __table_args__ = (
        # Whether a cart has a file left to verify, or to size, is asked after every
        # batch of steps: one index lookup, whatever the size of the cart. The second
        # also holds all a cart's progress counts (`HEAD`) without reading its rows.
        Index("ix_cart_files_cart_status", "cart_id", "status"),
        Index("ix_cart_files_progress", "cart_id", "size", "status"),
        # The other rows naming the same archive file with the same checksum, which share
        # one recall and one copy on the volume (`cartd.db.copies`).
        Index("ix_cart_files_hashsum", "hashsum"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    cart_id: Mapped[int] = mapped_column(ForeignKey("carts.id", ondelete="CASCADE"), index=True)
    archive_id: Mapped[str] = mapped_column(String(1024))
    path: Mapped[str] = mapped_column(Text)
    hashtype: Mapped[str] = mapped_column(String(32))
    hashsum: Mapped[str] = mapped_column(String(256))
    status: Mapped[str] = mapped_column(String(16), index=True)
    size: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    mtime: Mapped[float | None] = mapped_column(Double, nullable=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    polls: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[float | None] = mapped_column(Double, nullable=True)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    # Columns added by later migrations come last, where ALTER TABLE puts them.
    #: What the archive's last HEAD said: readable now (True) or on tape (False).
    on_disk: Mapped[bool | None] = mapped_column(Boolean, nullable=True)
    #: The step working on the file, and the Unix time its claim ends unless renewed:
    #: two workers never pull one file at once.
    claimed_by: Mapped[str | None] = mapped_column(String(64), nullable=True, index=True)
    claimed_until: Mapped[float | None] = mapped_column(Double, nullable=True)
    #: The verified bytes' CRC-32, for a zip's headers; NULL until known (`cartd.service.crcs`).
    crc32: Mapped[int | None] = mapped_column(BigInteger, nullable=True)


class VolumeLockRow(Base):
    """One row, locked by every space reservation so that two cannot interleave."""

    __tablename__ = "volume_lock"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)


class OriginalImportRow(Base):
    """One cart of the original Pacifica Cartd's tables that `dbsync` has dealt with, so that
    it is brought over once: a second `dbsync` finds it here and leaves it alone, even
    once cartd has deleted the cart it became."""

    __tablename__ = "original_imports"

    #: The cart's id in the original's `cart` table.
    original_id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    #: The cart it became here; NULL when none was made (deleted in the original, or a uid
    #: cartd cannot serve). Not a foreign key: cartd forgets a deleted cart's row.
    cart_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    #: What became of it (`cartd.db.original.Outcome`).
    outcome: Mapped[str] = mapped_column(String(16))
    imported_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class CallbackEventRow(Base):
    """An event to send to a cart's callback: the outbox. Written in the transaction that
    makes the cart ready or failed, so a process that dies before sending it loses
    nothing; deleted once delivered or given up. It outlives its cart's rows (no foreign
    key): a cart deleted after it became ready still has that told."""

    __tablename__ = "callback_events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    #: The event's identity, in its body and `X-Cartd-Event-Id`: the same on every try,
    #: so a receiver can drop a second delivery.
    event_id: Mapped[str] = mapped_column(String(36), unique=True)
    cart_id: Mapped[int] = mapped_column(Integer)
    uid: Mapped[str] = mapped_column(String(64))
    url: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(16))
    message: Mapped[str] = mapped_column(Text)
    files_total: Mapped[int] = mapped_column(Integer)
    bytes_total: Mapped[int] = mapped_column(BigInteger)
    ordered_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    occurred_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    #: Unix time of the next try.
    next_attempt_at: Mapped[float] = mapped_column(Double, index=True)
    last_error: Mapped[str | None] = mapped_column(Text, nullable=True)
    #: The sender trying it now, and until when (as a file's claim): one sender at a time.
    claimed_by: Mapped[str | None] = mapped_column(String(64), nullable=True, index=True)
    claimed_until: Mapped[float | None] = mapped_column(Double, nullable=True)
