"""The tar layout of a cart as pure functions: headers, sizes and the byte stream.

Knowing every member's header and size up front gives the exact length of the
tar before a byte is sent, and lets the same layout be streamed from staged
files or written once to the volume. The folder layout is `cartd.folders`'; the
range logic, shared with the zip, is `cartd.segments`'.
"""

from __future__ import annotations

import tarfile
from array import array
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from cartd.folders import Entry, Inline, walk
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


def layout(
    top: str, entries: Iterable[Entry], folder_mtime: float, inline: Iterable[Inline] = ()
) -> list[Member]:
    """Members in order (`cartd.folders.walk`): each folder before what it holds, the
    inline files after the top folder, the files in the order given."""
    members = []
    for node in walk(top, entries, inline):
        item = node.item
        if item is None:
            header = _header(node.name, size=0, mtime=folder_mtime, folder=True)
            members.append(Member(node.name, 0, None, header))
        elif isinstance(item, Inline):
            size = len(item.data)
            header = _header(node.name, size=size, mtime=item.mtime, folder=False)
            members.append(Member(node.name, size, None, header, item.mtime, item.data))
        else:
            header = _header(node.name, size=item.size, mtime=item.mtime, folder=False)
            members.append(Member(node.name, item.size, item.source, header, item.mtime))
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


def tar_layout(members: list[Member]) -> Layout:
    """The tar as segments, each file's span its member: header, content and padding."""
    files = [
        (start, member)
        for start, member in zip(member_starts(members), members, strict=True)
        if member.source is not None
    ]
    spans = [(start, start + member.length) for start, member in files]
    contents = array("q", (start + length(member.header) for start, member in files))
    return Layout(list(_segments(members)), spans, contents)


def iter_tar(
    members: list[Member], chunk_size: int, start: int = 0, end: int | None = None
) -> Iterator[bytes]:
    """The tar's bytes from `start` up to `end` (default: all of it), as chunks of about
    `chunk_size` (`cartd.segments.iter_range`)."""
    return iter_range(list(_segments(members)), chunk_size, start, end)


def _segments(members: list[Member]) -> Iterator[Segment]:
    """The tar in order: headers, contents, padding, the end."""
    for member in members:
        yield member.header
        if member.source is not None:
            yield Content(member.name, member.source, member.size, member.mtime)
        elif member.data is not None:
            yield member.data
        else:
            continue
        if padding(member.size):
            yield b"\0" * padding(member.size)
    yield END_OF_ARCHIVE
