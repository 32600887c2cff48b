"""The download of a cart still being made (`Prefer: wait`): the tar (or zip) it will be
once ready, sent as its files are pulled and verified.

Once the archive has told the size and modification time of every file, the layout is
fixed: its length and its tag are known, and they are those of the download after
ready. The stream sends the bytes in order up to the first byte it cannot send yet, then
waits for that file. It never sleeps: it yields a `Pause`, which its reader waits out
holding neither a thread nor a database connection.

A file counts as verified once its copy is in place on the volume with the size and
time announced (the pipeline moves a pull there only after its checksum matched; this
works whichever process pulled it, the volume being shared), or once the database, the
source of truth, says so; the database is also what tells a cart that failed or went.

In a tar, a file's header holds only what the archive told before the pull, so with
`early` (`cartd.stream_while_pulling`) the header and the bytes of the file are sent
while it is pulled, read from the pull's own file as it grows, all but its last
`HOLD_BACK` bytes, which wait for the checksum: a file whose checksum fails cuts the
stream inside its member, and no reader ever holds that file whole. The bytes sent early
are checked, once the file is in place, to be those of the copy verified. A zip's header
holds the file's CRC-32, so each zip member waits for its file to be verified.

A cart that fails or is deleted, or a file verified other than the headers announced,
stops the stream (`DownloadCut`): the client sees a body shorter than its
`Content-Length`, never a whole member that is not the final one, and may resume with
`Range`.
"""

from __future__ import annotations

import bisect
import os
from collections.abc import Generator, Iterator, Sequence
from dataclasses import dataclass

from cartd.db.store import CartStore
from cartd.errors import DownloadCut
from cartd.lazy import Computed
from cartd.segments import Layout
from cartd.service.backoff import Backoff
from cartd.service.layout import FileColumns
from cartd.status import CartStatus, FileStatus
from cartd.storage import Volume

#: Seconds between two looks at the database while a download waits for its next file:
#: a twentieth of a second at first, growing by half while nothing changes, at most half
#: a second. A look is two indexed queries.
POLL = Backoff(initial=0.05, factor=1.5, cap=0.5)
#: Seconds between two looks at the volume (a `stat`, and the pull's size): a file in
#: place or bytes newly pulled are sent within a few milliseconds.
TAIL = Backoff(initial=0.005, factor=1.5, cap=0.05)
#: Bytes at the end of each file, and of each answer, that wait for the file's checksum
#: when the rest is sent while it is pulled.
HOLD_BACK = 64 * 1024
#: Longest wait, while the connection is open, for the archive to tell a new cart's sizes
#: (and for its space to be held) before the answer; `Prefer: wait=N` shortens it.
SIZES_WAIT = 30.0
#: Seconds between two looks while waiting for the sizes: a look is two indexed queries,
#: and a small cart is sized within a tenth of a second, so the first looks come soon.
SIZES_POLL = Backoff(initial=0.02, factor=1.5, cap=0.25)
#: Files read from the database per look.
LOOK_AHEAD = 256


@dataclass(frozen=True)
class Pause:
    """Nothing to send for now: look again after `seconds`."""

    seconds: float


Pieces = Generator[bytes | Pause, None, None]


@dataclass(frozen=True, slots=True)
class Announced:
    """A file as the download's headers count it: the bytes that depend on it (its span in
    the layout), and what its header says of it."""

    file_id: int
    start: int  # the first byte that depends on it: its header's
    end: int  # the first byte after the last that does
    size: int
    mtime: float  # as the archive told it; a tar header holds it in whole seconds
    #: Where its own bytes begin, when its header may be sent before it is verified (a
    #: tar's); None when the header waits for the whole file (a zip's).
    content: int | None = None


class Announcements(Computed[Announced]):
    """The files of a layout in their order, each made when asked for (a download of a
    cart of 100,000 files reads them one after another): `files[first:stop]`."""

    def __init__(self, layout: Layout, files: FileColumns, first: int = 0, stop: int = -1) -> None:
        self.layout, self.files = layout, files
        self.first, self.stop = first, len(files) if stop < 0 else stop

    def __len__(self) -> int:
        return self.stop - self.first

    def item(self, index: int) -> Announced:
        at = self.first + index
        start, end = self.layout.spans[at]
        content = None if self.layout.contents is None else self.layout.contents[at]
        files = self.files
        return Announced(files.ids[at], start, end, files.sizes[at], files.mtimes[at], content)

    def touched(self, start: int, end: int) -> Announcements:
        """Those whose bytes the range from `start` to `end` touches (spans are in order)."""
        spans = self.layout.spans
        first = bisect.bisect_right(
            range(self.first, self.stop), start, key=lambda at: spans[at][1]
        )
        stop = bisect.bisect_left(range(self.first, self.stop), end, key=lambda at: spans[at][0])
        return Announcements(
            self.layout, self.files, self.first + first, self.first + max(first, stop)
        )

    def after(self, count: int) -> Announcements:
        """Those after the first `count`."""
        return Announcements(self.layout, self.files, min(self.first + count, self.stop), self.stop)


def announce(layout: Layout, files: FileColumns) -> Announcements:
    """The files of a layout made from `files` (in their order), with their spans in it."""
    assert len(layout.spans) == len(files), "one file member per file, in order"
    return Announcements(layout, files)


def live_pieces(
    store: CartStore,
    volume: Volume,
    cart_id: int,
    layout: Layout,
    announced: Announcements,
    chunk_size: int,
    start: int,
    end: int,
    *,
    early: bool = True,
) -> Pieces:
    """The bytes from `start` to `end`, those that depend on a file once it is verified as
    announced (with `early`, a tar member's while it is pulled, but for its last bytes),
    and pauses while waiting. Only the files the range touches are waited for. Raises
    `DownloadCut` (and `SourceChanged` from the reads)."""
    needed = announced.touched(start, end)
    progress = _Progress(store, volume, cart_id, needed)
    position, waits = start, 0
    try:
        while position < end:
            vouched = progress.vouched(end)
            if vouched > position:
                stop = min(vouched, end)
                yield from layout.range(chunk_size, position, stop)
                position, waits = stop, 0
                continue
            if progress.learn():
                waits = 0
                continue
            want = needed[progress.done]
            # A file no longer than what is held back has nothing but its header to send
            # early: it is not worth looking for its pull.
            if early and want.content is not None and want.size > HOLD_BACK:
                sent = 0
                for piece in progress.pulled(want, layout, chunk_size, position, end):
                    sent += len(piece)
                    yield piece
                if sent:
                    position, waits = position + sent, 0
                    continue
            pause = Pause(TAIL.delay(waits))
            progress.waited += pause.seconds
            yield pause
            waits += 1
    finally:
        progress.close()


class _Progress:
    """What a download knows of the files it waits for, in order: how many are verified
    as announced, and the pull it reads of the next one."""

    def __init__(
        self, store: CartStore, volume: Volume, cart_id: int, needed: Announcements
    ) -> None:
        self.store, self.volume, self.cart_id, self.needed = store, volume, cart_id, needed
        self.done = 0  # of `needed`, those known verified as announced
        self.pull: _Pull | None = None  # of `needed[done]`, once its bytes are read
        #: Looks at the database so far without news, and the seconds paused since the
        #: last (counted in pauses, not read off a clock: what the reader waited out).
        self.looks, self.waited = 0, float("inf")

    def vouched(self, end: int) -> int:
        """The end of the bytes that may be sent as they are: up to the first file that
        is not known verified."""
        return self.needed[self.done].start if self.done < len(self.needed) else end

    def learn(self) -> bool:
        """Whether more files are known verified: on the volume at once, in the database
        once its next look is due."""
        found = 0
        while self.done + found < len(self.needed) and self._in_place(
            self.needed[self.done + found]
        ):
            found += 1
        if not found and self.waited >= POLL.delay(self.looks):
            found = _verified_next(self.store, self.cart_id, self.needed.after(self.done))
            self.looks, self.waited = (0 if found else self.looks + 1), 0.0
        for _ in range(found):
            self._confirm(self.needed[self.done])
            self.done += 1
        return found > 0

    def _in_place(self, want: Announced) -> bool:
        if want.content is None:
            return False  # a zip header's CRC is the database's: it is told there
        return self.volume.holds(self.cart_id, want.file_id, want.size, want.mtime)

    def _confirm(self, want: Announced) -> None:
        """A file is verified: the bytes already sent of it while it was pulled must be
        those of the verified copy. Raises `DownloadCut` where they are not."""
        pull, self.pull = self.pull, None
        if pull is None:
            return
        with pull:
            if pull.sent and not pull.is_copy_of(self.volume.file_name(self.cart_id, want.file_id)):
                raise DownloadCut(
                    f"file {_archive_id(self.store, self.cart_id, want.file_id)} was pulled"
                    " again after part of it was sent, and the bytes differ: download the"
                    " cart again from its start"
                )

    def pulled(
        self, want: Announced, layout: Layout, chunk_size: int, position: int, end: int
    ) -> Iterator[bytes]:
        """The bytes of `want` from `position` that its pull has written so far: its
        header once the pull has begun, then its contents but for the last `HOLD_BACK`
        bytes (and never the answer's last `HOLD_BACK`)."""
        assert want.content is not None
        if self.pull is None:
            self.pull = _Pull.open(self.volume.partials(self.cart_id, want.file_id))
            if self.pull is None:
                return
        if position < want.content:
            stop = min(want.content, end)
            yield from layout.range(chunk_size, position, stop)
            position = stop
        limit = min(want.content + want.size - HOLD_BACK, end - HOLD_BACK)
        yield from self.pull.read(position - want.content, limit - want.content, chunk_size)

    def close(self) -> None:
        if self.pull is not None:
            self.pull.close()
            self.pull = None


class _Pull:
    """One pull of a file as it is written, through a descriptor of its own: the bytes
    read are those of this pull even once it is moved into place (or abandoned)."""

    def __init__(self, descriptor: int) -> None:
        self.descriptor = descriptor
        self.sent = 0  # bytes of the file read from here, from its first

    @classmethod
    def open(cls, paths: Sequence[os.PathLike[str]]) -> _Pull | None:
        for path in paths:
            try:
                return cls(os.open(path, os.O_RDONLY))
            except FileNotFoundError:
                continue  # moved into place or abandoned meanwhile
        return None

    def read(self, offset: int, limit: int, chunk_size: int) -> Iterator[bytes]:
        """What is written from `offset` up to `limit`, in whole chunks but for the last
        (each piece sent costs about as much as a chunk's bytes: no dribbling)."""
        available = min(limit, os.fstat(self.descriptor).st_size)
        if available < limit:
            available -= (available - offset) % chunk_size
        while offset < available:
            chunk = os.pread(self.descriptor, min(chunk_size, available - offset), offset)
            if not chunk:
                return
            offset += len(chunk)
            self.sent = max(self.sent, offset)
            yield chunk

    def is_copy_of(self, path: str) -> bool:
        """Whether the bytes read from here are those of the file at `path`: the very file
        (the pull moved into place), else compared byte for byte (another pull of the same
        file was moved there: this one's bytes may still be right)."""
        try:
            target = os.open(path, os.O_RDONLY)
        except FileNotFoundError:
            return False
        try:
            if os.fstat(target).st_ino == os.fstat(self.descriptor).st_ino:
                return True
            offset = 0
            while offset < self.sent:
                length = min(1024 * 1024, self.sent - offset)
                if os.pread(target, length, offset) != os.pread(self.descriptor, length, offset):
                    return False
                offset += length
            return True
        finally:
            os.close(target)

    def close(self) -> None:
        os.close(self.descriptor)

    def __enter__(self) -> _Pull:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


def _archive_id(store: CartStore, cart_id: int, file_id: int) -> str:
    """A file's id in the archive, for a message (the download holds only its own id)."""
    rows = store.files_from(cart_id, file_id, 1)
    return rows[0].archive_id if rows else f"#{file_id}"


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
        if row.size != want.size or int(row.mtime or 0.0) != int(want.mtime):
            raise DownloadCut(
                f"file {row.archive_id} was verified at {row.size} bytes, modified at"
                f" {int(row.mtime or 0.0)}, not as the download announced it"
                f" ({want.size} bytes, {int(want.mtime)})"
            )
        count += 1
    return count
