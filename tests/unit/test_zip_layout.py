"""The zip layout: the tar's folders and files as a stored zip that Python's zipfile and
Info-ZIP's `unzip -t` read back whole, its exact length known up front, any range a slice
of the whole, zip64 records where a value needs them, and a CRC asked for only when a
header that holds it is sent."""

from __future__ import annotations

import io
import os
import struct
import subprocess
import zipfile
import zlib
from collections.abc import Callable
from pathlib import Path

import pytest

from cartd.bundle import layout, tar_layout
from cartd.errors import SourceChanged
from cartd.folders import Entry, Inline
from cartd.segments import Layout, iter_range, length
from cartd.zip_layout import Limits, zip_layout
from tests.unit.test_bundle import EXPECTED_NAMES, FILES, FOLDER_MTIME, TOP, Staged, stage

#: Every value from 1 on takes its zip64 form.
ALL_ZIP64 = Limits(field=1, count=1)


def crcs(entries: list[Entry]) -> Callable[[int], int]:
    return lambda index: zlib.crc32(entries[index].source.read_bytes())


def whole(plan: Layout, chunk_size: int = 1 << 20) -> bytes:
    data = b"".join(iter_range(plan.segments, chunk_size))
    assert len(data) == plan.size
    return data


def unzip_test(tmp_path: Path, data: bytes) -> str:
    path = tmp_path / "cart.zip"
    path.write_bytes(data)
    done = subprocess.run(
        ["unzip", "-t", str(path)], capture_output=True, text=True, check=False, timeout=60
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


@pytest.mark.parametrize("limits", [Limits(), ALL_ZIP64], ids=["plain", "zip64"])
def test_zipfile_and_unzip_read_back_the_tars_folders_and_files(
    tmp_path: Path, limits: Limits
) -> None:
    entries = stage(tmp_path / "volume")
    plan = zip_layout(TOP, entries, FOLDER_MTIME, crc_of=crcs(entries), limits=limits)
    data = whole(plan)
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        assert archive.testzip() is None
        infos = archive.infolist()
        assert [info.filename.rstrip("/") for info in infos] == EXPECTED_NAMES
        files = {f"{TOP}/{staged.path}" for staged in FILES}
        for info in infos:
            assert info.compress_type == zipfile.ZIP_STORED
            assert info.is_dir() == (info.filename.rstrip("/") not in files)
            assert info.flag_bits & 0x08 == 0, "no data descriptor"
            assert bool(info.flag_bits & 0x800) == (not info.filename.isascii())
        for staged in FILES:
            info = archive.getinfo(f"{TOP}/{staged.path}")
            assert archive.read(info) == staged.content
            assert info.external_attr >> 16 == 0o100644
            # The local header, which streaming readers go by, says what the directory does.
            local = data[info.header_offset : info.header_offset + 30]
            assert struct.unpack_from("<I", local, 14)[0] == info.CRC == zlib.crc32(staged.content)
        top = archive.getinfo(f"{TOP}/")
        assert top.external_attr >> 16 == 0o040755
    if limits is ALL_ZIP64:
        assert b"PK\x06\x06" in data[-100:]
        assert b"PK\x06\x07" in data[-100:]
    else:
        assert b"PK\x06\x06" not in data[-100:]
    report = unzip_test(tmp_path, data)
    assert "No errors detected" in report


def test_modification_times_are_kept_in_utc_and_dos_dates_clamped(tmp_path: Path) -> None:
    files = (
        Staged("new.txt", b"n", 1_600_000_001),  # 2020-09-13 12:26:41 UTC
        Staged("old.txt", b"o", 100),  # before DOS dates begin
    )
    entries = stage(tmp_path, files)
    plan = zip_layout(TOP, entries, FOLDER_MTIME, crc_of=crcs(entries))
    with zipfile.ZipFile(io.BytesIO(whole(plan))) as archive:
        assert archive.getinfo(f"{TOP}/new.txt").date_time == (2020, 9, 13, 12, 26, 40)
        assert archive.getinfo(f"{TOP}/old.txt").date_time == (1980, 1, 1, 0, 0, 0)
    out = tmp_path / "out"
    zipped = tmp_path / "t.zip"
    zipped.write_bytes(whole(plan))
    subprocess.run(["unzip", "-q", str(zipped), "-d", str(out)], check=True, timeout=60)
    assert (out / TOP / "new.txt").stat().st_mtime == 1_600_000_001, "exact, from the UT field"
    assert (out / TOP / "old.txt").stat().st_mtime == 100


@pytest.mark.parametrize("limits", [Limits(), ALL_ZIP64], ids=["plain", "zip64"])
def test_every_split_into_ranges_is_the_whole(tmp_path: Path, limits: Limits) -> None:
    """Cut at each segment's edges (and a byte either side), and again 37 bytes on: the
    three ranges, each made on its own, are the whole."""
    entries = stage(tmp_path)
    plan = zip_layout(TOP, entries, FOLDER_MTIME, crc_of=crcs(entries), limits=limits)
    data = whole(plan)
    position, cuts = 0, {1, plan.size - 1}
    for segment in plan.segments:
        position += length(segment)
        cuts.update({position - 1, position, position + 1})
    for cut in sorted(cut for cut in cuts if 0 < cut < plan.size):
        then = min(cut + 37, plan.size)
        parts = [(0, cut), (cut, then), (then, plan.size)]
        got = [b"".join(iter_range(plan.segments, 7, start, end)) for start, end in parts]
        assert b"".join(got) == data, cut
        assert got[1] == data[cut:then]


def test_a_crc_is_asked_for_only_when_a_header_holding_it_is_sent(tmp_path: Path) -> None:
    entries = stage(tmp_path)
    asked: list[int] = []

    def crc_of(index: int) -> int:
        asked.append(index)
        return zlib.crc32(entries[index].source.read_bytes())

    plan = zip_layout(TOP, entries, FOLDER_MTIME, crc_of=crc_of)
    assert not asked, "laying it out needs no CRC"
    start, _ = plan.spans[1]
    data = whole(plan)
    asked.clear()
    offset = data.index(FILES[1].content)
    end = offset + len(FILES[1].content)
    assert b"".join(iter_range(plan.segments, 64, offset, end)) == FILES[1].content
    assert not asked, "the file's bytes alone need no CRC"
    assert b"".join(iter_range(plan.segments, 64, start, offset)) == data[start:offset]
    assert asked == [1], "its local header holds its CRC"


def test_each_file_span_runs_from_its_local_header_to_the_end(tmp_path: Path) -> None:
    entries = stage(tmp_path)
    plan = zip_layout(TOP, entries, FOLDER_MTIME, crc_of=crcs(entries))
    data = whole(plan)
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        offsets = [archive.getinfo(f"{TOP}/{staged.path}").header_offset for staged in FILES]
    assert plan.spans == [(offset, plan.size) for offset in offsets]


class RangeReader(io.RawIOBase):
    """A layout as a seekable file that reads only the ranges asked for: a zip of a
    4 GiB sparse file is listed and its later members read without reading the big one."""

    def __init__(self, plan: Layout) -> None:
        self.plan, self.position = plan, 0

    def seekable(self) -> bool:
        return True

    def readable(self) -> bool:
        return True

    def seek(self, offset: int, whence: int = 0) -> int:
        base = {0: 0, 1: self.position, 2: self.plan.size}[whence]
        self.position = base + offset
        return self.position

    def tell(self) -> int:
        return self.position

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        end = min(self.position + len(buffer), self.plan.size)
        data = b"".join(iter_range(self.plan.segments, 1 << 16, self.position, end))
        buffer[: len(data)] = data
        self.position += len(data)
        return len(data)


def test_a_file_of_4_gib_and_the_members_after_it_take_zip64_records(tmp_path: Path) -> None:
    big = tmp_path / "big"
    with big.open("wb") as handle:
        handle.truncate(4 * 1024**3 + 10)  # sparse: nothing is written or read
    os.utime(big, (1_600_000_000, 1_600_000_000))
    small = stage(
        tmp_path / "small", (Staged("after/small.txt", b"after the big one", 1_600_000_000),)
    )
    entries = [Entry("big.bin", 4 * 1024**3 + 10, 1_600_000_000, big), *small]
    crc = [0x12345678, zlib.crc32(b"after the big one")]
    plan = zip_layout(TOP, entries, FOLDER_MTIME, crc_of=crc.__getitem__)
    with zipfile.ZipFile(RangeReader(plan)) as archive:
        infos = {info.filename: info for info in archive.infolist()}
        assert infos[f"{TOP}/big.bin"].file_size == 4 * 1024**3 + 10
        assert infos[f"{TOP}/big.bin"].CRC == 0x12345678
        after = infos[f"{TOP}/after/small.txt"]
        assert after.header_offset > 0xFFFFFFFF
        assert infos[f"{TOP}/after/"].header_offset > 0xFFFFFFFF
        assert archive.read(after) == b"after the big one"
    tail = b"".join(iter_range(plan.segments, 4096, plan.size - 200))
    assert b"PK\x06\x06" in tail, "the central directory starts past 4 GiB: zip64 end records"


def test_many_members_take_a_zip64_count(tmp_path: Path) -> None:
    files = tuple(Staged(f"f{n}", b"%d" % n, 1_600_000_000) for n in range(20))
    entries = stage(tmp_path, files)
    plan = zip_layout(TOP, entries, FOLDER_MTIME, crc_of=crcs(entries), limits=Limits(count=10))
    data = whole(plan)
    assert data[-22 + 8 : -22 + 12] == b"\xff\xff\xff\xff", "the count says: see zip64"
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        assert len(archive.namelist()) == 21
        assert archive.testzip() is None
    unzip_test(tmp_path, data)


def test_an_inline_file_follows_the_top_folder_in_the_zip_and_the_tar(tmp_path: Path) -> None:
    entries = stage(tmp_path)
    manifest = Inline("manifest-md5.txt", b"0123  top.txt\n", FOLDER_MTIME)
    plan = zip_layout(TOP, entries, FOLDER_MTIME, crc_of=crcs(entries), inline=[manifest])
    with zipfile.ZipFile(io.BytesIO(whole(plan))) as archive:
        assert archive.namelist()[:3] == [f"{TOP}/", f"{TOP}/manifest-md5.txt", f"{TOP}/top.txt"]
        assert archive.read(f"{TOP}/manifest-md5.txt") == manifest.data
        assert archive.testzip() is None
    assert len(plan.spans) == len(entries), "only staged files have spans"
    members = layout(TOP, entries, FOLDER_MTIME, [manifest])
    assert [member.name for member in members[:2]] == [TOP, f"{TOP}/manifest-md5.txt"]
    assert len(tar_layout(members).spans) == len(entries)


def test_a_changed_file_stops_the_zip_rather_than_send_a_wrong_byte(tmp_path: Path) -> None:
    entries = stage(tmp_path)
    plan = zip_layout(TOP, entries, FOLDER_MTIME, crc_of=lambda index: 0)
    entries[1].source.write_bytes(b"short")
    with pytest.raises(SourceChanged):
        b"".join(iter_range(plan.segments, 64))
