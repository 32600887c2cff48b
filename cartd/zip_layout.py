"""The zip layout of a cart as pure functions: the same folders and files as the tar
(`cartd.folders`), stored (not compressed), every length known up front.

Each member is a local header and the file's bytes; the central directory follows, then
the end records. No data descriptors (flag bit 3): a local header holds its file's size
and CRC-32, so readers that read a zip front to back without its central directory
(Java's `ZipInputStream`, `bsdtar` from a pipe) can read stored members, which they
cannot when the sizes come after the data. The CRC comes from `crc_of`, called only when
a header is sent, so a download of a cart being made sends a file's header once the file
is verified, as the tar does.

Zip64 records are written only where a value needs them: a file of 4 GiB or more, a
member or the central directory starting 4 GiB or more into the archive, 65,535 members
or more. A cart below all of those is a plain zip that every reader, old ones included,
opens; the bytes still depend only on the sizes, so the length is known before the first
byte. `Limits` lowers the thresholds, so that tests write zip64 records for small carts.

Names are UTF-8 (flag bit 11 when not ASCII). Times are the DOS fields in UTC, which keep
two-second steps between 1980 and 2107, and the extended timestamp field (`UT`), which
Info-ZIP's `unzip` reads to give each file its exact modification time.
"""

from __future__ import annotations

import struct
import time
import zlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import partial

from cartd.folders import Entry, Inline, walk
from cartd.segments import Content, Later, Layout, Segment, length

#: Part of a zip download's ETag: a change of how its bytes are laid out changes it.
ZIP_LAYOUT_VERSION = "1"


@dataclass(frozen=True)
class Limits:
    """From which value a field takes its zip64 form: a size or an offset from 0xFFFFFFFF,
    the count of members from 0xFFFF (those values mean "see the zip64 record")."""

    field: int = 0xFFFFFFFF
    count: int = 0xFFFF


LIMITS = Limits()

#: What a local header and a central directory record share, from "version needed" to
#: "extra field length".
_COMMON = struct.Struct("<HHHHHIIIHH")
#: What a central directory record adds: comment length, disk, internal and external
#: attributes, the local header's offset.
_CENTRAL_TAIL = struct.Struct("<HHHII")
_END64 = struct.Struct("<IQHHIIQQQQ")
_LOCATOR = struct.Struct("<IIQI")
_END = struct.Struct("<IHHHHIIH")
_ZIP64 = 0x0001
_TIMESTAMP = 0x5455
#: Made by Unix (so readers apply the modes) with the 4.5 format, the first with zip64.
_MADE_BY = (3 << 8) | 45
_NEEDED, _NEEDED_ZIP64 = 20, 45
_UTF8 = 0x0800
_FILE_MODE = 0o100644 << 16
_FOLDER_MODE = (0o040755 << 16) | 0x10  # and the MS-DOS folder bit
#: The range of DOS dates: 1980-01-01 00:00:00 to 2107-12-31 23:59:58, UTC.
_DOS_FIRST, _DOS_LAST = 315_532_800, 4_354_819_198


@dataclass(frozen=True)
class _Member:
    """One entry of the zip: what its headers say, and what follows its local header."""

    name: bytes
    flags: int
    size: int
    mtime: int
    external: int
    crc: Callable[[], int]
    content: Segment | None  # the file's bytes; None for a folder
    index: int  # of a staged file in the entries given, else -1


def _fixed(value: int) -> Callable[[], int]:
    return lambda: value


def _members(
    top: str,
    entries: list[Entry],
    inline: Iterable[Inline],
    folder_mtime: float,
    crc_of: Callable[[int], int],
) -> list[_Member]:
    members = []
    for node in walk(top, entries, inline):
        item = node.item
        name = node.name if item is not None else f"{node.name}/"
        encoded = name.encode("utf-8", "surrogateescape")
        flags = 0 if name.isascii() else _UTF8
        if item is None:
            members.append(
                _Member(encoded, flags, 0, int(folder_mtime), _FOLDER_MODE, _fixed(0), None, -1)
            )
        elif isinstance(item, Inline):
            crc = _fixed(zlib.crc32(item.data))
            size = len(item.data)
            members.append(
                _Member(encoded, flags, size, int(item.mtime), _FILE_MODE, crc, item.data, -1)
            )
        else:
            content = Content(node.name, item.source, item.size, item.mtime)
            crc = partial(crc_of, node.index)
            members.append(
                _Member(
                    encoded, flags, item.size, int(item.mtime), _FILE_MODE, crc, content, node.index
                )
            )
    return members


def _dos_time(mtime: int) -> tuple[int, int]:
    moment = time.gmtime(min(max(mtime, _DOS_FIRST), _DOS_LAST))
    day = (moment.tm_year - 1980) << 9 | moment.tm_mon << 5 | moment.tm_mday
    clock = moment.tm_hour << 11 | moment.tm_min << 5 | moment.tm_sec // 2
    return clock, day


def _timestamp(mtime: int) -> bytes:
    """The extended timestamp field (modification time only), when a signed 32-bit
    Unix time holds it."""
    if not -(2**31) <= mtime < 2**31:
        return b""
    return struct.pack("<HHBi", _TIMESTAMP, 5, 1, mtime)


def _zip64(*values: int) -> bytes:
    if not values:
        return b""
    return struct.pack(f"<HH{len(values)}Q", _ZIP64, 8 * len(values), *values)


def _field(value: int, limits: Limits) -> int:
    return value if value < limits.field else 0xFFFFFFFF


def _common(member: _Member, limits: Limits, crc: int, wide: list[int]) -> tuple[bytes, bytes]:
    """The fields a local header and a central record share, and the extra field: the
    zip64 field with the `wide` values (those too large for their own fields, in the
    format's order), then the timestamp."""
    extra = _zip64(*wide) + _timestamp(member.mtime)
    clock, day = _dos_time(member.mtime)
    size = _field(member.size, limits)
    needed = _NEEDED_ZIP64 if wide else _NEEDED
    stored = 0
    fields = _COMMON.pack(
        needed, member.flags, stored, clock, day, crc, size, size, len(member.name), len(extra)
    )
    return fields, extra


def _local(member: _Member, limits: Limits, crc: int) -> bytes:
    """The local header: a zip64 file has both sizes in its zip64 field, as the format
    asks of a local header."""
    wide = [member.size, member.size] if member.size >= limits.field else []
    fields, extra = _common(member, limits, crc, wide)
    return struct.pack("<I", 0x04034B50) + fields + member.name + extra


def _central(member: _Member, offset: int, limits: Limits, crc: int) -> bytes:
    """The central directory's record: its zip64 field holds just the values too large
    for their own fields."""
    wide = [member.size, member.size] if member.size >= limits.field else []
    if offset >= limits.field:
        wide.append(offset)
    fields, extra = _common(member, limits, crc, wide)
    tail = _CENTRAL_TAIL.pack(0, 0, 0, member.external, _field(offset, limits))
    return struct.pack("<IH", 0x02014B50, _MADE_BY) + fields + tail + member.name + extra


#: Where the CRC-32 lies in a local header and in a central directory record.
_LOCAL_CRC, _CENTRAL_CRC = 14, 16


def _header(build: Callable[[int], bytes], member: _Member, crc_at: int) -> Segment:
    """A header as bytes when its CRC is fixed (folders, inline files), else as bytes made
    when sent: laid out once, the CRC `crc_of` gives then put in its place."""
    if member.index < 0:
        return build(member.crc())
    header = build(0)
    return Later(len(header), partial(_with_crc, header, crc_at, member.crc))


def _with_crc(header: bytes, at: int, crc: Callable[[], int]) -> bytes:
    return header[:at] + struct.pack("<I", crc()) + header[at + 4 :]


def _end(count: int, size: int, offset: int, limits: Limits) -> bytes:
    """The end records: the zip64 ones first when a value needs them."""
    records = b""
    if count >= limits.count or size >= limits.field or offset >= limits.field:
        end64 = offset + size
        records += _END64.pack(
            0x06064B50, _END64.size - 12, _MADE_BY, _NEEDED_ZIP64, 0, 0, count, count, size, offset
        )
        records += _LOCATOR.pack(0x07064B50, 0, end64, 1)
    entries = count if count < limits.count else 0xFFFF
    return records + _END.pack(
        0x06054B50, 0, 0, entries, entries, _field(size, limits), _field(offset, limits), 0
    )


def zip_layout(
    top: str,
    entries: Iterable[Entry],
    folder_mtime: float,
    *,
    crc_of: Callable[[int], int],
    inline: Iterable[Inline] = (),
    limits: Limits = LIMITS,
) -> Layout:
    """The zip as segments. `crc_of(index)` gives the CRC-32 of `entries[index]`, and is
    asked only when one of its headers is sent. Each file's span runs from its local
    header to the end: the central directory holds its CRC too."""
    members = _members(top, list(entries), inline, folder_mtime, crc_of)
    segments: list[Segment] = []
    offsets = []
    position = 0
    for member in members:
        offsets.append(position)
        header = _header(partial(_local, member, limits), member, _LOCAL_CRC)
        segments.append(header)
        position += length(header)
        if member.content is not None:
            segments.append(member.content)
            position += member.size
    directory = position
    for member, offset in zip(members, offsets, strict=True):
        record = _header(partial(_central, member, offset, limits), member, _CENTRAL_CRC)
        segments.append(record)
        position += length(record)
    ending = _end(len(members), position - directory, directory, limits)
    segments.append(ending)
    end = position + len(ending)
    spans = [
        (offset, end) for member, offset in zip(members, offsets, strict=True) if member.index >= 0
    ]
    return Layout(segments, spans)
