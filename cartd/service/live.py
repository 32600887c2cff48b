"""The download of a cart still being made (`Prefer: wait`): the tar (or zip) it will be
once ready, sent as its files are verified.

Once the archive has told the size and modification time of every file, the layout is
fixed: its length and its tag are known, and they are those of the download after
ready. The stream sends the bytes in order up to the first byte it cannot vouch for yet,
the header of the first file not verified (a header holds its file's size and time, a
zip's its CRC-32 too, so it waits for the file; and a zip's central directory, holding
every file's, waits for them all), then looks at the database, the only source of truth (the
file may be verified by a worker in another process), again after a pause that grows
while nothing changes. It never sleeps: it yields a `Pause`, which its reader waits out
holding neither a thread nor a database connection.

A cart that fails or is deleted, or a file verified other than the headers announced,
stops the stream (`DownloadCut`): the client sees a body shorter than its
`Content-Length`, never a byte that is not the final one, and may resume with `Range`.
"""

from __future__ import annotations

from collections.abc import Generator, Sequence
from dataclasses import dataclass

from cartd.db.store import CartStore
from cartd.errors import DownloadCut
from cartd.records import CartFile
from cartd.segments import Segment, iter_range
from cartd.service.backoff import Backoff
from cartd.status import CartStatus, FileStatus

#: Seconds between two looks at the database while a download waits for its next file:
#: a twentieth of a second at first, growing by half while nothing changes, at most half
#: a second. A look is two indexed queries; a later look is time the client waits idle
#: (with pauses of up to 2 s, a 1 GiB file was sent up to a second after it was verified).
POLL = Backoff(initial=0.05, factor=1.5, cap=0.5)
#: Longest wait, while the connection is open, for the archive to tell a new cart's sizes
#: (and for its space to be held) before the answer; `Prefer: wait=N` shortens it.
SIZES_WAIT = 30.0
#: Seconds between two looks while waiting for the sizes.
SIZES_POLL = Backoff(initial=0.1, factor=1.5, cap=1.0)
#: Files read from the database per look.
LOOK_AHEAD = 256


@dataclass(frozen=True)
class Pause:
    """Nothing to send for now: look again after `seconds`."""

    seconds: float


Pieces = Generator[bytes | Pause, None, None]


@dataclass(frozen=True)
class Announced:
    """A file as the download's headers count it: the bytes that depend on it (its span in
    the layout), and what its header says of it."""

    file_id: int
    archive_id: str
    start: int  # the first byte that depends on it: its header's
    end: int  # the first byte after the last that does
    size: int
    mtime: int  # whole seconds, as a tar header holds it


def announce(spans: Sequence[tuple[int, int]], files: Sequence[CartFile]) -> list[Announced]:
    """The files of a layout made from `files` (in their order), with their spans in it."""
    assert len(spans) == len(files), "one file member per file, in order"
    return [
        Announced(file.id, file.archive_id, start, end, file.size or 0, int(file.mtime or 0.0))
        for file, (start, end) in zip(files, spans, strict=True)
    ]


def live_pieces(
    store: CartStore,
    cart_id: int,
    segments: Sequence[Segment],
    announced: Sequence[Announced],
    chunk_size: int,
    start: int,
    end: int,
) -> Pieces:
    """The bytes from `start` to `end`, those that depend on a file once it is verified as
    announced, and pauses while waiting for one. Only the files the range touches are
    waited for. Raises `DownloadCut` (and `SourceChanged` from the reads)."""
    needed = [file for file in announced if file.end > start and file.start < end]
    verified = 0  # of `needed`, those known verified as announced
    position, looks = start, 0
    while position < end:
        vouched = needed[verified].start if verified < len(needed) else end
        if vouched > position:
            stop = min(vouched, end)
            yield from iter_range(segments, chunk_size, position, stop)
            position = stop
            continue
        found = _verified_next(store, cart_id, needed[verified:])
        if found:
            verified, looks = verified + found, 0
            continue
        yield Pause(POLL.delay(looks))
        looks += 1


def _verified_next(store: CartStore, cart_id: int, waiting: Sequence[Announced]) -> int:
    """How many of `waiting`, from the first, are verified as announced; raises
    `DownloadCut` for a cart that failed or went, or a file verified otherwise."""
    cart = store.get_cart(cart_id)
    if cart is None or cart.status is CartStatus.DELETED:
        raise DownloadCut("the cart was deleted while it was downloaded")
    if cart.status is CartStatus.ERROR:
        raise DownloadCut(f"the cart failed while it was downloaded: {cart.error}")
    rows = {row.id: row for row in store.files_from(cart_id, waiting[0].file_id, LOOK_AHEAD)}
    count = 0
    for want in waiting[:LOOK_AHEAD]:
        row = rows.get(want.file_id)
        if row is None:
            raise DownloadCut("the cart was deleted while it was downloaded")
        if row.status is not FileStatus.STAGED:
            break
        if row.size != want.size or int(row.mtime or 0.0) != want.mtime:
            raise DownloadCut(
                f"file {want.archive_id} was verified at {row.size} bytes, modified at"
                f" {int(row.mtime or 0.0)}, not as the download announced it"
                f" ({want.size} bytes, {want.mtime})"
            )
        count += 1
    return count
