"""Plain records handed between the layers: what a cart and its files are, not how stored."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import NamedTuple

from cartd.status import CartStatus, FileStatus


@dataclass(frozen=True, slots=True)
class CartFile:
    id: int
    cart_id: int
    archive_id: str
    path: str
    hashtype: str
    hashsum: str
    status: FileStatus
    size: int | None
    mtime: float | None
    attempts: int
    polls: int
    error: str | None
    on_disk: bool | None = None
    next_attempt_at: float | None = None  # Unix time the next step is due
    crc32: int | None = None  # of the verified bytes, once known


class DownloadRow(NamedTuple):
    """What a download's layout and tag need of a file, read a page at a time: a cart of
    100,000 files is then never held as as many `CartFile`s."""

    id: int
    path: str
    size: int | None
    mtime: float | None
    hashtype: str
    hashsum: str


@dataclass(frozen=True)
class Verified:
    """A file whose bytes were found to be the ones ordered, as its row records it."""

    file_id: int
    size: int
    mtime: float
    crc32: int | None = None  # of those bytes, when the step that verified them knows it


@dataclass(frozen=True)
class Cart:
    id: int
    uid: str
    status: CartStatus
    bundle: bool
    error: str | None
    created_at: datetime
    updated_at: datetime
    last_used_at: datetime
    bundle_size: int | None
    reserved_bytes: int | None = None
    download_lease_until: float | None = None
    ready_at: datetime | None = None  # when it last became ready


@dataclass(frozen=True)
class Progress:
    """Counts a person polling a cart wants to see."""

    files_total: int
    files_staged: int
    bytes_total: int  # of the files whose size the archive has told us
    bytes_staged: int
    files_sized: int  # whose size the archive has told: `bytes_total` is final once all are


@dataclass(frozen=True)
class StuckCart:
    """A cart still being made that has recorded no progress for a while (`cartd stuck`)."""

    cart: Cart
    files_total: int
    files_verified: int
    last_progress: datetime  # the newest write to the cart's row or any of its files' rows
    holding: list[CartFile]  # its files not verified yet, in order


@dataclass(frozen=True)
class CallbackEvent:
    """One event of the outbox: what a cart's callback is told, and how its sending goes."""

    id: int  # the outbox row
    event_id: str  # the event's identity, the same on every try
    cart_id: int
    uid: str
    url: str
    status: CartStatus  # READY or ERROR
    message: str  # the cart's error; empty when ready
    files_total: int
    bytes_total: int  # of the files sized (all of them, when ready)
    ordered_at: datetime  # the cart's creation: tells two carts of one uid apart
    occurred_at: datetime  # when the cart became ready or failed
    attempts: int  # tries made so far
