"""The tar layout of a cart as pure functions: headers, sizes and the byte stream.

Knowing every member's header and size up front gives the exact length of the
tar before a byte is sent, and lets the same layout be streamed from staged
files or written once to the volume.
"""

from __future__ import annotations

import hashlib
import os
import re
import tarfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from cartd.errors import SourceChanged, UnsafeName

BLOCK = 512
END_OF_ARCHIVE = b"\0" * (2 * BLOCK)
#: Part of every download's ETag: a change of how paths become member names changes it.
LAYOUT_VERSION = "2"
#: Most bytes one file name may have on common filesystems (NAME_MAX).
NAME_MAX = 255
_DRIVE = re.compile(r"[A-Za-z]:")


#: Seconds a file's modification time may differ from the one recorded when it was
#: verified: filesystems that keep whole seconds must not make every file look changed,
#: while a write in place sets it to the moment of the write.
MTIME_TOLERANCE = 1.0


def unchanged(stat: os.stat_result, size: int, mtime: float) -> bool:
    """A cheap check that a file is still the one verified at `size` bytes with the
    modification time `mtime` (which the pipeline gave it before moving it into place)."""
    return stat.st_size == size and abs(stat.st_mtime_ns / 1e9 - mtime) <= MTIME_TOLERANCE


@dataclass(frozen=True)
class Member:
    name: str
    size: int
    source: Path | None  # None for a folder
    header: bytes
    mtime: float = 0.0  # of the source when it was verified

    @property
    def length(self) -> int:
        """Bytes this member takes in the tar: header, content, padding."""
        return len(self.header) + self.size + padding(self.size)


@dataclass(frozen=True)
class Entry:
    """One staged file to put in the tar."""

    path: str  # inside the top folder
    size: int
    mtime: float
    source: Path


def padding(size: int) -> int:
    return -size % BLOCK


def _header(name: str, *, size: int, mtime: float, folder: bool) -> bytes:
    info = tarfile.TarInfo(name)
    info.size = 0 if folder else size
    info.mtime = int(mtime)
    info.type = tarfile.DIRTYPE if folder else tarfile.REGTYPE
    info.mode = 0o755 if folder else 0o644
    return info.tobuf(format=tarfile.PAX_FORMAT, encoding="utf-8", errors="surrogateescape")


def top_folder(name: str) -> str:
    """The tar's top folder for a download named `name`: the name without its `.tar`
    ending. Raises `UnsafeName` for one an extractor would not keep as one folder of the
    place it extracts into."""
    top = name[: -len(".tar")] if name.endswith(".tar") and name != ".tar" else name
    if top in {"", ".", ".."}:
        raise UnsafeName(f"{name!r} would make the tar's top folder {top!r}")
    if "/" in top or "\\" in top:
        raise UnsafeName("'/' and '\\' separate folders for some extractors")
    if _DRIVE.match(top):
        raise UnsafeName("a name starting with a drive letter ('C:') is absolute on Windows")
    if len(top.encode("utf-8", "surrogatepass")) > NAME_MAX:
        raise UnsafeName(f"the top folder would be longer than {NAME_MAX} bytes")
    return top


def member_path(path: str) -> str:
    """A file's path below the top folder as every extractor will read it.

    An order's path has no empty, `.` or `..` segment (they are refused before it is
    stored), and is raised here if it ever did. A backslash, an ordinary character for
    POSIX but a separator for Windows extractors, becomes `_`; a segment longer than a
    file name may be is shortened, keeping its extension, with a digest of the whole
    segment so that two long names stay apart.
    """
    parts = path.split("/")
    if any(part in {"", ".", ".."} for part in parts):
        raise UnsafeName(f"{path!r} has an empty, '.' or '..' segment")
    return "/".join(_segment(part.replace("\\", "_")) for part in parts)


def _segment(part: str) -> str:
    encoded = part.encode("utf-8", "surrogatepass")
    if len(encoded) <= NAME_MAX:
        return part
    stem, dot, extension = part.rpartition(".")
    keep = f".{extension}" if dot and stem and len(extension.encode()) <= 16 else ""
    suffix = f"~{hashlib.sha256(encoded).hexdigest()[:16]}{keep}"
    room = NAME_MAX - len(suffix.encode("utf-8", "surrogatepass"))
    head, size = [], 0
    for character in part:
        size += len(character.encode("utf-8", "surrogatepass"))
        if size > room:
            break
        head.append(character)
    return "".join(head) + suffix


def layout(top: str, entries: Iterable[Entry], folder_mtime: float) -> list[Member]:
    """Members in order: each folder before what it holds, files in the order given.

    Every member name is `top` or below it, whatever the entries' paths (`member_path`).
    """
    members = [Member(top, 0, None, _header(top, size=0, mtime=folder_mtime, folder=True))]
    folders = {top}
    for entry in entries:
        parts = member_path(entry.path).split("/")
        for depth in range(1, len(parts)):
            folder = "/".join([top, *parts[:depth]])
            if folder not in folders:
                folders.add(folder)
                header = _header(folder, size=0, mtime=folder_mtime, folder=True)
                members.append(Member(folder, 0, None, header))
        name = "/".join([top, *parts])
        header = _header(name, size=entry.size, mtime=entry.mtime, folder=False)
        members.append(Member(name, entry.size, entry.source, header, entry.mtime))
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


def read_checked(
    path: Path,
    offset: int,
    length: int,
    chunk_size: int,
    *,
    intact: Callable[[os.stat_result], bool],
    name: str,
) -> Iterator[bytes]:
    """`length` bytes of a file from `offset`, the file checked with `intact` when opened
    and after every read, so that bytes written in place meanwhile are never sent. Once
    open, a file deleted meanwhile is still read whole. Raises `SourceChanged`."""
    try:
        handle = path.open("rb")
    except OSError as exc:
        raise SourceChanged(f"{name}: {exc.strerror}") from exc
    with handle:
        descriptor = handle.fileno()
        if not intact(os.fstat(descriptor)):
            raise SourceChanged(f"{name}: not the file verified")
        handle.seek(offset)
        remaining = length
        while remaining > 0:
            chunk = handle.read(min(chunk_size, remaining))
            if not chunk:
                raise SourceChanged(f"{name}: shorter than verified")
            if not intact(os.fstat(descriptor)):
                raise SourceChanged(f"{name}: changed while read")
            remaining -= len(chunk)
            yield chunk


def _content(member: Member, chunk_size: int, offset: int, length: int) -> Iterator[bytes]:
    """`length` bytes of a member's file from `offset`, checked against its verified size
    and modification time."""
    assert member.source is not None
    return read_checked(
        member.source,
        offset,
        length,
        chunk_size,
        intact=lambda stat: unchanged(stat, member.size, member.mtime),
        name=member.name,
    )


def iter_tar(
    members: list[Member], chunk_size: int, start: int = 0, end: int | None = None
) -> Iterator[bytes]:
    """The tar's bytes from `start` up to `end` (default: all of it), as chunks of about
    `chunk_size`. Only the files the range covers are read, from where it starts in them.
    Raises `SourceChanged` rather than send a wrong byte. Small pieces (headers, small
    files) are joined so a cart of many small files is not sent a few hundred bytes at a
    time."""
    buffer = bytearray()
    for piece in _pieces(members, chunk_size, start, tar_size(members) if end is None else end):
        if not buffer and len(piece) >= chunk_size:
            yield piece
            continue
        buffer += piece
        if len(buffer) >= chunk_size:
            yield bytes(buffer)
            buffer.clear()
    if buffer:
        yield bytes(buffer)


def _pieces(members: list[Member], chunk_size: int, start: int, end: int) -> Iterator[bytes]:
    position = 0
    for member, fixed in _segments(members):
        length = member.size if member is not None else len(fixed)
        low, high = max(start, position), min(end, position + length)
        # An empty file in range is still opened: a vanished one must stop the stream.
        if low < high or (member is not None and start <= position < end):
            if member is not None:
                yield from _content(member, chunk_size, low - position, high - low)
            else:
                yield fixed[low - position : high - position]
        position += length
        if position >= end:
            return


def _segments(members: list[Member]) -> Iterator[tuple[Member | None, bytes]]:
    """The tar in order: fixed bytes (headers, padding, the end), or a member's content."""
    for member in members:
        yield None, member.header
        if member.source is None:
            continue
        yield member, b""
        if padding(member.size):
            yield None, b"\0" * padding(member.size)
    yield None, END_OF_ARCHIVE
