"""The tar layout of a cart as pure functions: headers, sizes and the byte stream.

Knowing every member's header and size up front gives the exact length of the
tar before a byte is sent, and lets the same layout be streamed from staged
files or written once to the volume.
"""

from __future__ import annotations

import tarfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

BLOCK = 512
END_OF_ARCHIVE = b"\0" * (2 * BLOCK)


class SourceChanged(Exception):
    """A staged file is gone or not the size it was verified at: the stream must stop."""


@dataclass(frozen=True)
class Member:
    name: str
    size: int
    source: Path | None  # None for a folder
    header: bytes

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


def layout(top: str, entries: Iterable[Entry], folder_mtime: float) -> list[Member]:
    """Members in order: each folder before what it holds, files in the order given."""
    members = [Member(top, 0, None, _header(top, size=0, mtime=folder_mtime, folder=True))]
    folders = {top}
    for entry in entries:
        parts = entry.path.split("/")
        for depth in range(1, len(parts)):
            folder = "/".join([top, *parts[:depth]])
            if folder not in folders:
                folders.add(folder)
                header = _header(folder, size=0, mtime=folder_mtime, folder=True)
                members.append(Member(folder, 0, None, header))
        name = f"{top}/{entry.path}"
        header = _header(name, size=entry.size, mtime=entry.mtime, folder=False)
        members.append(Member(name, entry.size, entry.source, header))
    return members


def tar_size(members: Iterable[Member]) -> int:
    return sum(member.length for member in members) + len(END_OF_ARCHIVE)


def _content(member: Member, chunk_size: int) -> Iterator[bytes]:
    assert member.source is not None
    remaining = member.size
    try:
        handle = member.source.open("rb")
    except OSError as exc:
        raise SourceChanged(f"{member.name}: {exc.strerror}") from exc
    with handle:
        while remaining > 0:
            chunk = handle.read(min(chunk_size, remaining))
            if not chunk:
                raise SourceChanged(f"{member.name}: shorter than verified")
            remaining -= len(chunk)
            yield chunk


def iter_tar(members: list[Member], chunk_size: int) -> Iterator[bytes]:
    """The tar as chunks of about `chunk_size`. Raises `SourceChanged` rather than send a
    wrong byte. Small pieces (headers, small files) are joined so a cart of many small
    files is not sent a few hundred bytes at a time."""
    buffer = bytearray()
    for piece in _pieces(members, chunk_size):
        if not buffer and len(piece) >= chunk_size:
            yield piece
            continue
        buffer += piece
        if len(buffer) >= chunk_size:
            yield bytes(buffer)
            buffer.clear()
    if buffer:
        yield bytes(buffer)


def _pieces(members: list[Member], chunk_size: int) -> Iterator[bytes]:
    for member in members:
        yield member.header
        if member.source is None:
            continue
        yield from _content(member, chunk_size)
        if padding(member.size):
            yield b"\0" * padding(member.size)
    yield END_OF_ARCHIVE
