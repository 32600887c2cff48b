"""The tar layout: exact size known up front, a stream that tarfile (and so
pacifica-downloader, which reads with mode 'r|') accepts, and no wrong byte sent."""

from __future__ import annotations

import io
import os
import random
import string
import tarfile
from dataclasses import dataclass
from pathlib import Path

import pytest

from cartd.bundle import Member, _header, iter_tar, layout, tar_size
from cartd.errors import SourceChanged, UnsafeName
from cartd.folders import NAME_MAX, Entry, member_path, top_folder
from cartd.segments import Later, length

TOP = "data_2024_01_02"
FOLDER_MTIME = 1_700_000_000
LONG_NAME = "l" * 120 + ".txt"


@dataclass(frozen=True)
class Staged:
    path: str
    content: bytes
    mtime: float


FILES = (
    Staged("top.txt", b"hello\n", 1_600_000_000),
    Staged("dir/sub/nested.bin", bytes(range(256)) * 4 + b"tail", 1_600_000_001.9),
    Staged(f"dir/{LONG_NAME}", b"long name", 1_600_000_002),
    Staged("donn\u00e9es/caf\u00e9 \u65e5\u672c.txt", "\u00e9t\u00e9".encode(), 1_600_000_003),
    Staged("dir/empty", b"", 1_600_000_004),
    Staged("exact512.bin", b"\x01" * 512, 1_600_000_005),
)

EXPECTED_NAMES = [
    TOP,
    f"{TOP}/top.txt",
    f"{TOP}/dir",
    f"{TOP}/dir/sub",
    f"{TOP}/dir/sub/nested.bin",
    f"{TOP}/dir/{LONG_NAME}",
    f"{TOP}/donn\u00e9es",
    f"{TOP}/donn\u00e9es/caf\u00e9 \u65e5\u672c.txt",
    f"{TOP}/dir/empty",
    f"{TOP}/exact512.bin",
]


def stage(root: Path, files: tuple[Staged, ...] = FILES) -> list[Entry]:
    """Write each file under a flat staging name with the archive's modification time, as
    the volume keeps them."""
    root.mkdir(parents=True, exist_ok=True)
    entries = []
    for number, staged in enumerate(files):
        source = root / f"staged-{number}"
        source.write_bytes(staged.content)
        os.utime(source, (staged.mtime, staged.mtime))
        entries.append(Entry(staged.path, len(staged.content), staged.mtime, source))
    return entries


@pytest.fixture
def members(tmp_path: Path) -> list[Member]:
    return layout(TOP, stage(tmp_path / "volume"), FOLDER_MTIME)


def stream_read(data: bytes) -> list[tuple[tarfile.TarInfo, bytes | None]]:
    """Read the tar front to back, as pacifica-downloader does."""
    found: list[tuple[tarfile.TarInfo, bytes | None]] = []
    with tarfile.open(fileobj=io.BytesIO(data), mode="r|") as tar:
        for info in tar:
            content = None
            if info.isfile():
                handle = tar.extractfile(info)
                assert handle is not None
                content = handle.read()
            found.append((info, content))
    return found


def test_layout_orders_folders_before_what_they_hold(members: list[Member]) -> None:
    assert [m.name for m in members] == EXPECTED_NAMES
    seen: set[str] = set()
    for member in members:
        parent = member.name.rpartition("/")[0]
        assert not parent or parent in seen, member.name
        seen.add(member.name)


@pytest.mark.parametrize("chunk_size", [1, 7, 511, 512, 513, 4096, 1 << 20])
def test_tar_size_is_the_exact_stream_length(members: list[Member], chunk_size: int) -> None:
    data = b"".join(iter_tar(members, chunk_size))
    assert tar_size(members) == len(data)
    assert len(data) % 512 == 0


def test_stream_is_the_same_whatever_the_chunk_size(members: list[Member]) -> None:
    reference = b"".join(iter_tar(members, 1 << 20))
    for chunk_size in (1, 7, 512, 1000, 65536):
        assert b"".join(iter_tar(members, chunk_size)) == reference


def test_stream_mode_reader_sees_every_folder_and_file(members: list[Member]) -> None:
    found = stream_read(b"".join(iter_tar(members, 7)))
    assert [info.name for info, _ in found] == EXPECTED_NAMES

    top, _ = found[0]
    assert top.isdir()
    assert top.mtime == FOLDER_MTIME

    by_name = {info.name: (info, content) for info, content in found}
    for folder in (f"{TOP}/dir", f"{TOP}/dir/sub", f"{TOP}/donn\u00e9es"):
        info, _ = by_name[folder]
        assert info.isdir()
        assert info.mtime == FOLDER_MTIME
    for staged in FILES:
        info, content = by_name[f"{TOP}/{staged.path}"]
        assert info.isfile()
        assert content == staged.content
        assert info.size == len(staged.content)
        assert info.mtime == int(staged.mtime)


def test_random_access_reader_agrees(members: list[Member]) -> None:
    data = b"".join(iter_tar(members, 512))
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as tar:
        assert tar.getnames() == EXPECTED_NAMES
        handle = tar.extractfile(f"{TOP}/dir/{LONG_NAME}")
        assert handle is not None
        assert handle.read() == b"long name"


def test_layout_of_no_files_is_just_the_top_folder() -> None:
    members = layout("empty-cart", [], FOLDER_MTIME)
    data = b"".join(iter_tar(members, 512))
    assert len(data) == tar_size(members)
    assert [info.name for info, _ in stream_read(data)] == ["empty-cart"]


@pytest.mark.parametrize("chunk_size", [512, 1000, 4096, 1 << 20])
def test_chunks_are_joined_up_to_the_chunk_size(members: list[Member], chunk_size: int) -> None:
    chunks = list(iter_tar(members, chunk_size))
    assert all(chunks)
    assert all(len(chunk) >= chunk_size for chunk in chunks[:-1])


def test_many_small_files_are_not_sent_in_tiny_pieces(tmp_path: Path) -> None:
    files = tuple(Staged(f"f{n:03}", b"x" * 10, 1_600_000_000) for n in range(200))
    members = layout(TOP, stage(tmp_path, files), FOLDER_MTIME)
    chunk_size = 64 * 1024
    chunks = list(iter_tar(members, chunk_size))
    total = tar_size(members)
    assert sum(map(len, chunks)) == total
    assert len(chunks) <= total // chunk_size + 1


def test_truncated_source_raises_source_changed(tmp_path: Path) -> None:
    entries = stage(tmp_path)
    members = layout(TOP, entries, FOLDER_MTIME)
    nested = entries[1].source
    nested.write_bytes(nested.read_bytes()[:100])
    with pytest.raises(SourceChanged):
        b"".join(iter_tar(members, 7))


def test_source_emptied_raises_source_changed(tmp_path: Path) -> None:
    entries = stage(tmp_path)
    members = layout(TOP, entries, FOLDER_MTIME)
    entries[5].source.write_bytes(b"")
    with pytest.raises(SourceChanged):
        list(iter_tar(members, 1 << 20))


def test_a_source_rewritten_in_place_at_its_size_raises_source_changed(tmp_path: Path) -> None:
    entries = stage(tmp_path)
    members = layout(TOP, entries, FOLDER_MTIME)
    nested = entries[1].source
    nested.write_bytes(bytes(len(nested.read_bytes())))  # same size, other bytes, mtime now
    with pytest.raises(SourceChanged):
        b"".join(iter_tar(members, 7))


def test_a_source_changed_while_it_is_read_stops_before_its_next_chunk(tmp_path: Path) -> None:
    big = Staged("big.bin", b"b" * 10_000, 1_600_000_000)
    entries = stage(tmp_path, (big,))
    members = layout(TOP, entries, FOLDER_MTIME)
    chunks = iter_tar(members, 1024)
    sent = next(chunks) + next(chunks)
    with entries[0].source.open("r+b") as handle:  # written in place, size kept
        handle.seek(5_000)
        handle.write(b"X" * 100)
    with pytest.raises(SourceChanged):
        sent += b"".join(chunks)
    assert b"X" not in sent


@pytest.mark.parametrize("index", [0, 4], ids=["file", "empty-file"])
def test_missing_source_raises_source_changed(tmp_path: Path, index: int) -> None:
    entries = stage(tmp_path)
    members = layout(TOP, entries, FOLDER_MTIME)
    entries[index].source.unlink()
    with pytest.raises(SourceChanged):
        list(iter_tar(members, 512))


def test_bytes_before_a_vanished_file_are_a_prefix_of_the_good_stream(tmp_path: Path) -> None:
    entries = stage(tmp_path)
    members = layout(TOP, entries, FOLDER_MTIME)
    good = b"".join(iter_tar(members, 7))
    entries[3].source.unlink()
    sent = bytearray()

    def send_all() -> None:
        for chunk in iter_tar(members, 7):
            sent.extend(chunk)

    with pytest.raises(SourceChanged):
        send_all()
    assert good.startswith(bytes(sent))
    assert len(sent) < len(good)


def test_any_range_of_the_tar_is_that_slice_of_the_whole(tmp_path: Path) -> None:
    entries = stage(tmp_path)
    members = layout(TOP, entries, FOLDER_MTIME)
    whole = b"".join(iter_tar(members, 1 << 20))
    size = tar_size(members)
    assert len(whole) == size
    # Every member boundary, one byte either side, and across several members.
    edges = {0, 1, size - 1, size}
    position = 0
    for member in members:
        position += member.length
        edges.update({position - 1, position, position + 1})
    cuts = sorted(edge for edge in edges if 0 <= edge <= size)
    for start in cuts:
        for end in cuts:
            if start < end:
                got = b"".join(iter_tar(members, 7, start, end))
                assert got == whole[start:end], (start, end)


def test_a_range_reads_only_the_files_it_covers(tmp_path: Path) -> None:
    entries = stage(tmp_path)
    members = layout(TOP, entries, FOLDER_MTIME)
    whole = b"".join(iter_tar(members, 1 << 20))
    entries[1].source.unlink()  # nested.bin, early in the tar
    tail = tar_size(members) - 2000
    assert b"".join(iter_tar(members, 64, tail)) == whole[tail:]
    with pytest.raises(SourceChanged):
        b"".join(iter_tar(members, 64, 0, tail))


def test_a_file_of_another_size_than_verified_stops_a_range_within_it(tmp_path: Path) -> None:
    entries = stage(tmp_path)
    members = layout(TOP, entries, FOLDER_MTIME)
    entries[1].source.write_bytes(bytes(range(256)) * 8)  # longer than verified
    nested = [member.source for member in members].index(entries[1].source)
    content = sum(member.length for member in members[:nested]) + length(members[nested].header)
    with pytest.raises(SourceChanged):
        b"".join(iter_tar(members, 64, content + 10, content + 20))


@pytest.mark.parametrize(
    ("name", "top"),
    [
        ("mydata.tar", "mydata"),
        ("data", "data"),
        (".tar", ".tar"),
        ("a.tar.tar", "a.tar"),
        ("...", "..."),
        ("x..tar", "x."),
        ("donn\u00e9es.tar", "donn\u00e9es"),
    ],
)
def test_the_top_folder_is_the_name_without_its_tar_ending(name: str, top: str) -> None:
    assert top_folder(name) == top


@pytest.mark.parametrize("name", ["..tar", "...tar", "..", ".", "a\\b.tar", "..\\x", "C:x.tar"])
def test_a_top_folder_that_would_not_stay_one_folder_is_refused(name: str) -> None:
    with pytest.raises(UnsafeName):
        top_folder(name)


def test_a_backslash_is_no_separator_in_a_member_path() -> None:
    assert member_path("..\\..\\evil.txt") == ".._.._evil.txt"
    assert member_path("a/b\\c") == "a/b_c"


@pytest.mark.parametrize("path", ["..", "a/../b", "./a", "a//b", "/a", ""])
def test_a_member_path_that_could_leave_its_folder_is_refused(path: str) -> None:
    with pytest.raises(UnsafeName):
        member_path(path)


def test_long_segments_are_shortened_apart_keeping_their_extension() -> None:
    long = "\u00e9" * 200  # 400 bytes
    one, two = member_path(f"{long}/{long}1.txt"), member_path(f"{long}/{long}2.txt")
    for path in (one, two):
        assert all(len(part.encode()) <= NAME_MAX for part in path.split("/"))
        assert path.endswith(".txt")
    assert one.split("/")[0] == two.split("/")[0], "the same folder stays the same folder"
    assert one != two
    assert member_path("s" * NAME_MAX) == "s" * NAME_MAX


def test_every_member_is_inside_the_top_folder_and_reads_back_whole(tmp_path: Path) -> None:
    long = "n" * 300
    staged = (
        Staged("..\\up.txt", b"1", 1_600_000_000),
        Staged(f"{long}/{long}.bin", b"2", 1_600_000_000),
        Staged("\u65e5\u672c/x.txt", b"3", 1_600_000_000),
    )
    members = layout(TOP, stage(tmp_path, staged), FOLDER_MTIME)
    data = b"".join(iter_tar(members, 4096))
    names = [info.name for info, _ in stream_read(data)]
    assert names == [member.name for member in members]
    assert names[0] == TOP
    for name in names[1:]:
        parts = name.split("/")
        assert parts[0] == TOP
        assert "\\" not in name
        assert all(part not in {"", ".", ".."} for part in parts)
        assert all(len(part.encode()) <= NAME_MAX for part in parts)
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        tar.extractall(tmp_path / "out", filter="data")
    assert sorted(p.read_bytes() for p in (tmp_path / "out").rglob("*") if p.is_file()) == [
        b"1",
        b"2",
        b"3",
    ]


def _tarfile_header(name: str, *, size: int, mtime: float, folder: bool) -> bytes:
    info = tarfile.TarInfo(name)
    info.size = 0 if folder else size
    info.mtime = int(mtime)
    info.type = tarfile.DIRTYPE if folder else tarfile.REGTYPE
    info.mode = 0o755 if folder else 0o644
    return info.tobuf(format=tarfile.PAX_FORMAT, encoding="utf-8", errors="surrogateescape")


@pytest.mark.parametrize("folder", [False, True])
def test_every_header_is_byte_for_byte_the_one_tarfile_writes(folder: bool) -> None:
    """Headers are made without `tarfile` where they are plain ustar blocks; whatever the
    name, size or time, the bytes (and so every download's tag) are `tarfile`'s."""
    rng = random.Random(13)
    names = [
        "a",
        "top/a b/c.txt",
        "x" * 99,
        "x" * 100,
        "x" * 101,
        "top/" + "y" * 95 + "/",
        "caf\u00e9/na\u00efve.bin",
        "emoji/\U0001f600.dat",
        "\udcff-surrogate",
    ] + [
        "".join(rng.choice(string.printable[:94]) for _ in range(rng.randint(1, 120)))
        for _ in range(300)
    ]
    sizes = [0, 1, 511, 512, 8**11 - 1, 8**11, 5 * 1024**4]
    mtimes = [0.0, 1.9, 1_700_000_000.7, 8**11 - 1, 8**11]
    for index, name in enumerate(names):
        size, mtime = sizes[index % len(sizes)], mtimes[index % len(mtimes)]
        header = _header(name, size=size, mtime=mtime, folder=folder)
        made = header.make() if isinstance(header, Later) else header
        assert made == _tarfile_header(name, size=size, mtime=mtime, folder=folder), name
