"""The tar layout of a cart as pure functions: headers, sizes and the byte stream.

Knowing every member's header and size up front gives the exact length of the
tar before a byte is sent, and lets the same layout be streamed from staged
files or written once to the volume. The folder layout is `cartd.folders`'; the
range logic, shared with the zip, is `cartd.segments`'.
"""

from __future__ import annotations

import tarfile
from array import array
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

from cartd.folders import Entry, Inline, walk
from cartd.lazy import Computed
from cartd.segments import Content, FilePath, Later, Layout, Segment, iter_range, length

BLOCK = 512
END_OF_ARCHIVE = b"\0" * (2 * BLOCK)
#: Part of every download's ETag: a change of how paths become member names changes it.
LAYOUT_VERSION = "2"


@dataclass(frozen=True, slots=True)
class Member:
    name: str
    size: int
    source: FilePath | None  # None for a folder or an inline file
    header: Segment  # bytes, or a plain block made when sent
    mtime: float = 0.0  # of the source when it was verified
    data: bytes | None = None  # an inline file's contents

    @property
    def length(self) -> int:
        """Bytes this member takes in the tar: header, content, padding."""
        return length(self.header) + self.size + padding(self.size)


def padding(size: int) -> int:
    return -size % BLOCK


def _header(name: str, *, size: int, mtime: float, folder: bool) -> Segment:
    """A member's header as `tarfile` writes it in the PAX format. In the common case (an
    ASCII name of at most 100 bytes, a size and time that fit their fields) it is one
    plain ustar block, made here only when it is sent (`Later`): a layout of 100,000
    files then holds no header bytes, and a block costs a twentieth of `tarfile`'s time.
    Any other is made by `tarfile` (an extended header first)."""
    stamp = int(mtime)
    size = 0 if folder else size
    full = name + "/" if folder and not name.endswith("/") else name
    if (
        len(full) <= _NAME_FIELD
        and full.isascii()
        and 0 <= size < _FIELD_MAX
        and 0 <= stamp < _FIELD_MAX
    ):
        return Later(BLOCK, _PlainHeader(full, size, stamp, folder))
    info = tarfile.TarInfo(name)
    info.size = size
    info.mtime = stamp
    info.type = tarfile.DIRTYPE if folder else tarfile.REGTYPE
    info.mode = 0o755 if folder else 0o644
    return info.tobuf(format=tarfile.PAX_FORMAT, encoding="utf-8", errors="surrogateescape")


@dataclass(frozen=True, slots=True)
class _PlainHeader:
    """What a plain ustar block is made from, held for each member until it is sent: a
    third of the memory of a `functools.partial` of `_ustar` and its arguments."""

    name: str
    size: int
    stamp: int
    folder: bool

    def __call__(self) -> bytes:
        return _ustar(self.name, self.size, self.stamp, self.folder)


def _ustar(name: str, size: int, stamp: int, folder: bool) -> bytes:
    """A plain ustar block, byte for byte the one `tarfile` makes for it."""
    block = bytearray(
        b"".join(
            (
                name.encode("ascii").ljust(_NAME_FIELD, b"\0"),
                _DIR_FIELDS if folder else _FILE_FIELDS,
                b"%011o\0" % size,
                b"%011o\0" % stamp,
                _AFTER_TIMES_DIR if folder else _AFTER_TIMES_FILE,
            )
        )
    )
    # The checksum counts its own field as spaces, which it holds until written.
    block[148:155] = b"%06o\0" % sum(block)
    return bytes(block)


_NAME_FIELD = 100
#: Sizes and times below this fit a ustar field of 12 (11 octal digits).
_FIELD_MAX = 8**11


def _fields(folder: bool) -> tuple[bytes, bytes]:
    """The parts of a plain ustar block that do not depend on the member's name, size
    and time, taken from one `tarfile` makes (so they are this Python's, device fields
    and all): mode, uid and gid before the size and time; after them the checksum field
    (as spaces), the type, the link name, magic, owner names, devices, prefix, padding."""
    info = tarfile.TarInfo("a")
    info.type = tarfile.DIRTYPE if folder else tarfile.REGTYPE
    info.mode = 0o755 if folder else 0o644
    block = info.tobuf(format=tarfile.PAX_FORMAT, encoding="utf-8", errors="surrogateescape")
    assert len(block) == BLOCK, "a short ASCII name needs no extended header"
    return block[_NAME_FIELD:124], b" " * 8 + block[156:]


_FILE_FIELDS, _AFTER_TIMES_FILE = _fields(folder=False)
_DIR_FIELDS, _AFTER_TIMES_DIR = _fields(folder=True)


class TarMembers(Computed[Member]):
    """A tar's members in order, held as columns rather than a `Member` each: 100,000
    files held as a `Member` each, with its header's maker and its source path, took
    about 45 MB, and take 12 as columns. A `Member` is made when one is asked for.
    Names are held below the top folder, which they all share."""

    def __init__(self, top: str, sources: Sequence[FilePath]) -> None:
        self.top = top
        #: Where the file of each entry (by its index in the walk's entries) is.
        self.sources = sources
        self._below: list[str] = []  # each member's name without `top/`; "" for `top`
        self._sizes = array("q")
        self._mtimes = array("d")
        self._entries = array("q")  # a file member's entry index; -1 for any other
        self._inline: dict[int, bytes] = {}  # an inline member's contents
        self._extended: dict[int, bytes] = {}  # a header that is not one plain block

    def add(
        self, name: str, size: int, mtime: float, *, entry: int = -1, data: bytes | None = None
    ) -> None:
        """One more member: a folder, an inline file (`data`) or the file of an entry."""
        index = len(self._below)
        folder = entry < 0 and data is None
        header = _header(name, size=size, mtime=mtime, folder=folder)
        if isinstance(header, bytes):
            self._extended[index] = header
        if data is not None:
            self._inline[index] = data
        self._below.append(name[len(self.top) + 1 :])
        self._sizes.append(size)
        self._mtimes.append(mtime)
        self._entries.append(entry)

    def __len__(self) -> int:
        return len(self._below)

    def item(self, index: int) -> Member:
        below = self._below[index]
        name = f"{self.top}/{below}" if below else self.top
        size, mtime, entry = self._sizes[index], self._mtimes[index], self._entries[index]
        data = self._inline.get(index)
        folder = entry < 0 and data is None
        extended = self._extended.get(index)
        header = (
            _header(name, size=size, mtime=mtime, folder=folder) if extended is None else extended
        )
        source = self.sources[entry] if entry >= 0 else None
        return Member(name, size, source, header, 0.0 if folder else mtime, data)


def layout(
    top: str,
    entries: Iterable[Entry],
    folder_mtime: float,
    inline: Iterable[Inline] = (),
    *,
    sources: Sequence[FilePath] | None = None,
) -> TarMembers:
    """Members in order (`cartd.folders.walk`): each folder before what it holds, the
    inline files after the top folder, the files in the order given. `sources`, when
    given, says where each entry's file is (by its index) in place of its `source`: a
    sequence that makes each path when asked spares a large cart's download holding one
    for each of its files."""
    kept: list[FilePath] = []
    members = TarMembers(top, kept if sources is None else sources)
    for node in walk(top, entries, inline):
        item = node.item
        if item is None:
            members.add(node.name, 0, folder_mtime)
        elif isinstance(item, Inline):
            members.add(node.name, len(item.data), item.mtime, data=item.data)
        else:
            if sources is None:
                kept.append(item.source)
            members.add(node.name, item.size, item.mtime, entry=node.index)
    return members


def tar_size(members: Iterable[Member]) -> int:
    return sum(member.length for member in members) + len(END_OF_ARCHIVE)


def member_starts(members: Iterable[Member]) -> list[int]:
    """Where each member begins in the tar (its header's first byte); each ends where the
    next begins, the last where the end-of-archive blocks do."""
    starts, position = [], 0
    for member in members:
        starts.append(position)
        position += member.length
    return starts


def tar_layout(members: Sequence[Member]) -> Layout:
    """The tar as segments, each file's span its member: header, content and padding."""
    starts, files, position = array("q"), array("q"), 0
    for index, member in enumerate(members):
        header = length(member.header)
        starts.extend((position, position + header, position + header + member.size))
        position += member.length
        if member.source is not None:
            files.append(index)
    starts.extend((position, position + len(END_OF_ARCHIVE)))
    return Layout(_TarSegments(members), _Spans(starts, files), _Contents(starts, files), starts)


def iter_tar(
    members: Sequence[Member], chunk_size: int, start: int = 0, end: int | None = None
) -> Iterator[bytes]:
    """The tar's bytes from `start` up to `end` (default: all of it), as chunks of about
    `chunk_size` (`cartd.segments.iter_range`)."""
    return iter_range(_TarSegments(members), chunk_size, start, end)


#: Segments of each member: its header, its contents and its padding (the last two
#: empty for a folder), so that the segments of member `m` are `3m` to `3m + 2`.
_PARTS = 3
_ZEROS = bytes(BLOCK)


class _TarSegments(Computed[Segment]):
    """The tar in order, made as it is read: each member's segments, then the end."""

    def __init__(self, members: Sequence[Member]) -> None:
        self._members = members
        self._last: tuple[int, Member] | None = None  # its three segments are read in turn

    def __len__(self) -> int:
        return len(self._members) * _PARTS + 1

    def item(self, index: int) -> Segment:
        number, part = divmod(index, _PARTS)
        if number == len(self._members):
            return END_OF_ARCHIVE
        member = self._member(number)
        if part == 0:
            return member.header
        if part == 2:
            return _ZEROS[: padding(member.size)]
        if member.source is not None:
            return Content(member.name, member.source, member.size, member.mtime)
        return member.data or b""

    def _member(self, number: int) -> Member:
        last = self._last
        if last is None or last[0] != number:
            last = self._last = (number, self._members[number])
        return last[1]


class _Spans(Computed[tuple[int, int]]):
    """Each file's span in a tar laid out by `tar_layout`: its member."""

    def __init__(self, starts: array[int], files: array[int]) -> None:
        self._starts, self._files = starts, files

    def __len__(self) -> int:
        return len(self._files)

    def item(self, index: int) -> tuple[int, int]:
        first = self._files[index] * _PARTS
        return self._starts[first], self._starts[first + _PARTS]


class _Contents(Computed[int]):
    """Where each file's own bytes begin in a tar laid out by `tar_layout`."""

    def __init__(self, starts: array[int], files: array[int]) -> None:
        self._starts, self._files = starts, files

    def __len__(self) -> int:
        return len(self._files)

    def item(self, index: int) -> int:
        return self._starts[self._files[index] * _PARTS + 1]
