"""The download of a cart being made, as a plain generator over a real database: the
bytes of the tar after ready, each file's once it is verified as announced, pauses
meanwhile, and a cut (never a wrong byte) when the cart fails or a file is otherwise."""

from __future__ import annotations

import io
import itertools
import os
import zipfile
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

from cartd.bundle import Member, iter_tar, member_starts, tar_layout, tar_size
from cartd.db.store import CartStore
from cartd.errors import DownloadCut
from cartd.records import Cart, CartFile, Verified
from cartd.schemas import FileOrder, Packing
from cartd.segments import Layout, iter_range
from cartd.service.crcs import Crcs
from cartd.service.layout import FileColumns, cart_layout, cart_members
from cartd.service.live import (
    HOLD_BACK,
    POLL,
    TAIL,
    Announcements,
    Pause,
    Pieces,
    announce,
    live_pieces,
)
from cartd.status import CartStatus
from cartd.storage import Volume
from tests.unit.conftest import size_files

MTIME = 1_600_000_000.0
CONTENTS = {"a/1.bin": os.urandom(3000), "a/b/2.bin": b"", "3.bin": os.urandom(70_000)}


@dataclass
class Being:
    """A cart being made: every size known, no file verified yet."""

    store: CartStore
    volume: Volume
    cart: Cart
    files: list[CartFile]
    members: Sequence[Member]
    announced: Announcements

    def verify(self, index: int, size: int | None = None, mtime: float = MTIME) -> None:
        """Put file `index` in place and record it verified (at `size`, `mtime`)."""
        file = self.files[index]
        path = self.volume.file_path(self.cart.id, file.id)
        path.parent.mkdir(parents=True, exist_ok=True)
        data = CONTENTS[file.path]
        size = len(data) if size is None else size
        path.write_bytes(data[:size].ljust(size, b"x"))
        os.utime(path, (mtime, mtime))
        moved = self.store.record_verified([Verified(file.id, size, mtime)])
        assert moved == {file.id}

    def pieces(self, start: int = 0, end: int | None = None, *, early: bool = True) -> Pieces:
        size = tar_size(self.members)
        return live_pieces(
            self.store,
            self.volume,
            self.cart.id,
            tar_layout(self.members),
            self.announced,
            1024,
            start,
            size if end is None else end,
            early=early,
        )

    def pulling(self, index: int, data: bytes) -> Path:
        """A pull of file `index` under way, `data` written so far."""
        file = self.files[index]
        path = self.volume.partial_path(self.cart.id, file.id)
        path.write_bytes(data)
        return path

    def third_pulling(self, *, early: bool = True) -> tuple[Pieces, bytes, Path]:
        """The first two files verified; a download from the start, read up to the third
        file; then a pull of the third file under way, all its bytes written."""
        self.verify(0)
        self.verify(1)
        pieces = self.pieces(early=early)
        before, _ = take(pieces)
        return pieces, before, self.pulling(2, CONTENTS["3.bin"])

    def move_into_place(self, index: int, pull: Path) -> None:
        """What the pipeline does with a pull whose checksum matched."""
        file = self.files[index]
        os.utime(pull, (MTIME, MTIME))
        self.volume.commit(pull, self.volume.file_path(self.cart.id, file.id))


@pytest.fixture
def being(store: CartStore, tmp_path: Path) -> Being:
    orders = [FileOrder(f"id{n}", path, "md5", "0" * 32) for n, path in enumerate(CONTENTS)]
    cart, file_ids = store.create_cart("live", False, orders)
    sizes = zip(file_ids, CONTENTS.values(), strict=True)
    size_files(store, [(file_id, len(data), MTIME, True) for file_id, data in sizes])
    files = store.files_of(cart.id)
    volume = Volume(tmp_path / "volume")
    members = cart_members(cart, files, volume, top="data")
    return Being(
        store, volume, cart, files, members, announce(tar_layout(members), FileColumns.of(files))
    )


def take(pieces: Pieces) -> tuple[bytes, bool]:
    """The bytes that come before the next pause (or the end), and whether it paused."""
    got = bytearray()
    for piece in pieces:
        if isinstance(piece, Pause):
            assert 0 < piece.seconds <= 2
            return bytes(got), True
        got += piece
    return bytes(got), False


def settle(pieces: Pieces, seconds: float = 2 * POLL.cap) -> tuple[bytes, bool]:
    """The bytes that come while the reader waits out `seconds` of pauses (time enough
    for a look at the database), and whether it was still pausing then."""
    got, waited = bytearray(), 0.0
    for piece in pieces:
        if isinstance(piece, Pause):
            waited += piece.seconds
            if waited >= seconds:
                return bytes(got), True
        else:
            got += piece
    return bytes(got), False


def test_each_file_is_sent_once_verified_and_the_whole_is_the_tar_after_ready(
    being: Being,
) -> None:
    pieces = being.pieces()
    before, paused = take(pieces)
    assert paused
    # Folders first: fixed bytes; the first file's header waits for the file.
    assert before
    assert len(before) == being.announced[0].start
    assert take(pieces) == (b"", True), "nothing new: a pause again"
    being.verify(0)
    first, paused = take(pieces)
    assert paused
    assert len(before + first) == being.announced[1].start
    being.verify(2)  # out of order: the second still holds it up
    assert take(pieces) == (b"", True)
    being.verify(1)
    rest, paused = take(pieces)
    assert not paused
    whole = before + first + rest
    assert whole == b"".join(iter_tar(being.members, 1024))


def test_a_range_waits_only_for_the_files_it_covers(being: Being) -> None:
    third = being.announced[2]
    being.verify(2)
    got, paused = take(being.pieces(third.start + 10, third.end))
    assert not paused, "the first two files are not needed"
    being.verify(0)
    being.verify(1)
    assert got == b"".join(iter_tar(being.members, 1024))[third.start + 10 : third.end]


def test_a_cart_that_fails_cuts_the_stream_with_its_error(being: Being) -> None:
    pieces = being.pieces()
    take(pieces)
    being.store.move_cart(being.cart.id, CartStatus.ERROR, error="file id1: checksum mismatch")
    with pytest.raises(DownloadCut, match="checksum mismatch"):
        settle(pieces)


def test_a_deleted_cart_cuts_the_stream(being: Being) -> None:
    pieces = being.pieces()
    take(pieces)
    being.store.delete_uid("live")
    with pytest.raises(DownloadCut, match="deleted"):
        settle(pieces)


@pytest.mark.parametrize("other", [{"size": 2999}, {"mtime": MTIME + 5}])
def test_a_file_verified_other_than_announced_cuts_before_its_header(
    being: Being, other: dict[str, float]
) -> None:
    pieces = being.pieces()
    before, _ = take(pieces)
    being.verify(0, **other)
    with pytest.raises(
        DownloadCut, match=r"file id0 was verified .* not as the download announced"
    ):
        settle(pieces)
    assert len(before) == being.announced[0].start, "not a byte of its header was sent"


def test_pauses_grow_while_nothing_changes(being: Being) -> None:
    pieces = being.pieces()
    take(pieces)
    seconds = [piece.seconds for piece in itertools.islice(pieces, 12) if isinstance(piece, Pause)]
    assert len(seconds) == 12
    assert seconds == sorted(seconds)
    assert seconds[-1] == TAIL.cap > seconds[0] > TAIL.initial  # take() ate the first


def whole_tar(being: Being) -> bytes:
    return b"".join(iter_tar(being.members, 1024))


def test_a_file_being_pulled_is_sent_as_it_grows_but_for_its_last_bytes(being: Being) -> None:
    data = CONTENTS["3.bin"]
    being.verify(0)
    being.verify(1)
    third = being.announced[2]
    assert third.content is not None
    pieces = being.pieces()
    before, paused = take(pieces)
    assert paused
    assert len(before) == third.start, "its header waits for its pull to begin"
    pull = being.pulling(2, data[:2500])
    got, paused = take(pieces)
    assert paused
    assert len(before + got) == third.content + 2048, "its header, the whole chunks written"
    with pull.open("ab") as handle:
        handle.write(data[2500:])
    more, paused = take(pieces)
    assert paused
    sent = before + got + more
    assert len(sent) == third.content + len(data) - HOLD_BACK, "its last bytes wait"
    being.move_into_place(2, pull)
    rest, paused = take(pieces)
    assert not paused
    assert sent + rest == whole_tar(being)


def test_without_early_sending_a_file_being_pulled_waits_for_its_checksum(being: Being) -> None:
    pieces, before, pull = being.third_pulling(early=False)
    assert take(pieces) == (b"", True)
    being.move_into_place(2, pull)
    rest, paused = take(pieces)
    assert not paused
    assert before + rest == whole_tar(being)


def test_a_file_that_fails_after_part_of_it_was_sent_cuts_its_member(being: Being) -> None:
    pieces, _, pull = being.third_pulling()
    assert take(pieces)[0]
    pull.unlink()  # the checksum did not match
    being.store.move_cart(being.cart.id, CartStatus.ERROR, error="file id2: checksum mismatch")
    with pytest.raises(DownloadCut, match="checksum mismatch"):
        settle(pieces)


@pytest.mark.parametrize("same", [True, False])
def test_a_file_pulled_again_after_part_of_it_was_sent_is_checked_against_what_was_sent(
    being: Being, same: bool
) -> None:
    data = CONTENTS["3.bin"]
    being.verify(0)
    being.verify(1)
    pieces = being.pieces()
    before, _ = take(pieces)
    first = being.pulling(2, data if same else bytes(len(data)))
    sent, _ = take(pieces)
    assert len(sent) > 512
    first.unlink()  # that pull was cut short; another one is moved into place
    being.move_into_place(2, being.pulling(2, data))
    if same:
        rest, paused = take(pieces)
        assert not paused
        assert before + sent + rest == whole_tar(being)
    else:
        with pytest.raises(DownloadCut, match="file id2 was pulled again"):
            settle(pieces)


def test_an_answer_never_ends_on_bytes_not_verified(being: Being) -> None:
    being.verify(0)
    being.verify(1)
    third = being.announced[2]
    assert third.content is not None
    end = third.content + 500
    pieces = being.pieces(third.start, end)
    pull = being.pulling(2, CONTENTS["3.bin"])
    got, paused = take(pieces)
    assert paused
    assert len(got) == third.content - third.start, "the header only"
    being.move_into_place(2, pull)
    rest, paused = take(pieces)
    assert not paused
    assert got + rest == whole_tar(being)[third.start : end]


def test_member_starts_place_each_member_end_to_end(being: Being) -> None:
    starts = member_starts(being.members)
    assert starts[0] == 0
    assert [b - a for a, b in itertools.pairwise(starts)] == [
        member.length for member in being.members[:-1]
    ]
    assert [file.start for file in being.announced] == [
        start for start, member in zip(starts, being.members, strict=True) if member.source
    ]


def zip_of(being: Being, *, being_made: bool) -> Layout:
    """The cart's zip as a download makes it: while being made, or once ready."""
    files = being.files if being_made else being.store.files_of(being.cart.id)
    crcs = Crcs(being.store, being.volume, files, 1024, being_made=being_made)
    return cart_layout(
        being.cart, files, being.volume, "data", packing=Packing.ZIP, inline=[], crc_of=crcs
    )


def test_a_zip_sends_each_header_once_its_file_is_verified_and_its_directory_last(
    being: Being,
) -> None:
    """A file's local header holds its CRC-32 (learned from its row once verified, here
    from its bytes: the row has none); the central directory holds every file's."""
    live = zip_of(being, being_made=True)
    announced = announce(live, FileColumns.of(being.files))
    pieces = live_pieces(
        being.store, being.volume, being.cart.id, live, announced, 1024, 0, live.size
    )
    before, paused = settle(pieces)
    assert paused
    assert len(before) == announced[0].start
    being.verify(0)
    being.verify(2)
    first, paused = settle(pieces)
    assert paused, "the second file holds up its header and the directory"
    assert len(before + first) == announced[1].start
    tail = live.size - 40  # in the central directory: a range there waits for every file
    directory = live_pieces(
        being.store, being.volume, being.cart.id, live, announced, 1024, tail, live.size
    )
    assert settle(directory) == (b"", True)
    being.verify(1)
    rest, paused = settle(pieces)
    assert not paused
    ready = zip_of(being, being_made=False)
    assert before + first + rest == b"".join(iter_range(ready.segments, 1 << 20))
    with zipfile.ZipFile(io.BytesIO(before + first + rest)) as archive:
        assert archive.testzip() is None
        assert {name: archive.read(f"data/{name}") for name in CONTENTS} == CONTENTS
    recorded = [file.crc32 for file in being.store.files_of(being.cart.id)]
    assert recorded == [zlib.crc32(data) for data in CONTENTS.values()]
