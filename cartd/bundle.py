"""The tar layout of a cart as pure functions: headers, sizes and the byte stream.

Knowing every member's header and size up front gives the exact length of the
tar before a byte is sent, and lets the same layout be streamed from staged
files or written once to the volume. The folder layout is `cartd.folders`'; the
range logic, shared with the zip, is `cartd.segments`'.
"""

from __future__ import annotations

import tarfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from cartd.folders import Entry, Inline, walk
from cartd.segments import Content, Layout, Segment, iter_range

BLOCK = 512
END_OF_ARCHIVE = b"\0" * (2 * BLOCK)
#: Part of every download's ETag: a change of how paths become member names changes it.
LAYOUT_VERSION = "2"


@dataclass(frozen=True)
class Member:
    name: str
    size: int
    source: Path | None  # None for a folder or an inline file
    header: bytes
    mtime: float = 0.0  # of the source when it was verified
    data: bytes | None = None  # an inline file's contents

    @property
    def length(self) -> int:
        """Bytes this member takes in the tar: header, content, padding."""
        return len(self.header) + self.size + padding(self.size)


def padding(size: int) -> int:
    return -size % BLOCK


def _header(name: str, *, size: int, mtime: float, folder: bool) -> bytes:
    info = tarfile.TarInfo(name)
    info.size = 0 if folder else size
    info.mtime = int(mtime)
    info.type = tarfile.DIRTYPE if folder else tarfile.REGTYPE
    info.mode = 0o755 if folder else 0o644
    return info.tobuf(format=tarfile.PAX_FORMAT, encoding="utf-8", errors="surrogateescape")


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
    contents = [start + len(member.header) for start, member in files]
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
