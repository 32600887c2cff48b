"""A download as a row of byte segments, whatever its format: bytes fixed up front (a
tar's headers, a zip's central directory), bytes made only when they are sent, and the
verified files' contents.

Every segment's length is known before a byte is sent, so the download's exact length
is, and any byte range is produced reading only the files it covers. The tar
(`cartd.bundle`) and the zip (`cartd.zip_layout`) are each a sequence of segments; this
module is what they share: the range logic and the checked reads of the volume's files.
"""

from __future__ import annotations

import bisect
import functools
import itertools
import os
from array import array
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass

from cartd.errors import SourceChanged

#: A file on the volume: a string for the files of a download's layout (a cart of
#: 100,000 files would otherwise hold as many `Path` objects), or a `Path`.
FilePath = str | os.PathLike[str]

#: Seconds a file's modification time may differ from the one recorded when it was
#: verified: filesystems that keep whole seconds must not make every file look changed,
#: while a write in place sets it to the moment of the write.
MTIME_TOLERANCE = 1.0


def unchanged(stat: os.stat_result, size: int, mtime: float) -> bool:
    """A cheap check that a file is still the one verified at `size` bytes with the
    modification time `mtime` (which the pipeline gave it before moving it into place)."""
    return stat.st_size == size and abs(stat.st_mtime_ns / 1e9 - mtime) <= MTIME_TOLERANCE


@dataclass(frozen=True, slots=True)
class Content:
    """A verified file's bytes: read only when a range covers them, and checked against
    the size and modification time it was verified with."""

    name: str  # for messages: the member it is the content of
    source: FilePath
    size: int
    mtime: float


@dataclass(frozen=True, slots=True)
class Later:
    """Bytes of a known length made only when they are sent: a zip's header holds its
    file's CRC-32, which a download of a cart being made learns once the file is verified,
    and which a range that does not cover the header never needs; a tar's plain header
    is made when sent rather than held, for each of a large cart's files."""

    length: int
    make: Callable[[], bytes]


Segment = bytes | Content | Later


@dataclass(frozen=True)
class Layout:
    """A download's segments, and for each file in the order given the bytes that depend
    on it: from its header (which holds its size, in a zip its CRC) up to `end`.

    `contents` is where each file's own bytes begin, in a layout whose header of a file
    holds only what is known before the file is pulled (a tar's: size and time), so that
    a download may send it, and the bytes as they are pulled, before the file is verified
    (`cartd.service.live`). None where a header waits for the whole file (a zip's CRC).
    """

    segments: Sequence[Segment]
    spans: Sequence[tuple[int, int]]
    contents: Sequence[int] | None = None
    #: `starts`, when the maker of the layout knows them without a walk of its segments.
    known_starts: array[int] | None = None

    @property
    def size(self) -> int:
        return self.starts[-1]

    @functools.cached_property
    def starts(self) -> array[int]:
        """Where each segment begins, and (last) where the layout ends: 8 bytes each
        rather than a list's 40, for the few segments of each of 100,000 files."""
        if self.known_starts is not None:
            return self.known_starts
        return array("q", itertools.accumulate(map(length, self.segments), initial=0))

    def range(self, chunk_size: int, start: int, end: int) -> Iterator[bytes]:
        """`iter_range` of the segments, found by bisection rather than by a walk from
        the first: a download of a cart of 100,000 files asks for many short ranges."""
        first = bisect.bisect_left(self.starts, start)  # an empty file at `start` included
        if first == len(self.starts) or self.starts[first] > start:
            first -= 1
        following = (self.segments[index] for index in range(first, len(self.segments)))
        offset = self.starts[first]
        return _joined(_pieces(following, chunk_size, start - offset, end - offset), chunk_size)


def length(segment: Segment) -> int:
    if isinstance(segment, bytes):
        return len(segment)
    if isinstance(segment, Content):
        return segment.size
    return segment.length


def total(segments: Iterable[Segment]) -> int:
    return sum(length(segment) for segment in segments)


def read_checked(
    path: FilePath,
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
    # A bare descriptor, not a file object: a download of 100,000 small files makes that
    # many of these, and a file object costs three more system calls each.
    try:
        descriptor = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as exc:
        raise SourceChanged(f"{name}: {exc.strerror}") from exc
    try:
        if not intact(os.fstat(descriptor)):
            raise SourceChanged(f"{name}: not the file verified")
        position, end = offset, offset + length
        while position < end:
            chunk = os.pread(descriptor, min(chunk_size, end - position), position)
            if not chunk:
                raise SourceChanged(f"{name}: shorter than verified")
            if not intact(os.fstat(descriptor)):
                raise SourceChanged(f"{name}: changed while read")
            position += len(chunk)
            yield chunk
    finally:
        os.close(descriptor)


def read_content(
    content: Content, chunk_size: int, offset: int = 0, length: int | None = None
) -> Iterator[bytes]:
    """`length` bytes (default: to its end) of a file from `offset`, checked against its
    verified size and modification time."""
    return read_checked(
        content.source,
        offset,
        content.size - offset if length is None else length,
        chunk_size,
        intact=lambda stat: unchanged(stat, content.size, content.mtime),
        name=content.name,
    )


def iter_range(
    segments: Sequence[Segment], chunk_size: int, start: int = 0, end: int | None = None
) -> Iterator[bytes]:
    """The bytes from `start` up to `end` (default: all of them), as chunks of about
    `chunk_size`. Only the files the range covers are read, from where it starts in them.
    Raises `SourceChanged` rather than send a wrong byte. Small pieces (headers, small
    files) are joined so a download of many small files is not sent a few hundred bytes
    at a time."""
    return _joined(
        _pieces(segments, chunk_size, start, total(segments) if end is None else end), chunk_size
    )


def _joined(pieces: Iterable[bytes], chunk_size: int) -> Iterator[bytes]:
    buffer = bytearray()
    for piece in pieces:
        if not buffer and len(piece) >= chunk_size:
            yield piece
            continue
        buffer += piece
        if len(buffer) >= chunk_size:
            yield bytes(buffer)
            buffer.clear()
    if buffer:
        yield bytes(buffer)


def _pieces(segments: Iterable[Segment], chunk_size: int, start: int, end: int) -> Iterator[bytes]:
    position = 0
    for segment in segments:
        size = length(segment)
        low, high = max(start, position), min(end, position + size)
        # An empty file in range is still opened: a vanished one must stop the stream.
        if low < high or (isinstance(segment, Content) and start <= position < end):
            if isinstance(segment, Content):
                yield from read_content(segment, chunk_size, low - position, high - low)
            elif isinstance(segment, Later):
                made = segment.make()
                assert len(made) == segment.length, "a segment made as long as announced"
                yield made[low - position : high - position]
            else:
                yield segment[low - position : high - position]
        position += size
        if position >= end:
            return
